//! Fixed window: the classic INCR + EXPIRE limiter, decided in one step.
//!
//! ```text
//!   first admitted request opens the window     the key expires: the window is over
//!   |<------------------------ period ------------------------>|
//!   t0                                                          t0 + period
//!   count = units admitted since t0, never more than limit
//! ```
//!
//! The state is the pair (count, end of window), which is exactly what an
//! INCR + EXPIRE counter leaves in Redis: the value and the key's expiry.
//! A request of `cost` units is admitted when `count + cost <= limit`; a
//! denied request changes nothing, so clients that keep retrying do not
//! push the window further away.

use super::layout::{decode_u64, Encoded, Layout};
use super::{without_burst, Algorithm, Decision, Kind, Outcome, Quota, MAX_COUNT};
use crate::error::Error;

/// The fixed window with its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedWindow {
    quota: Quota,
}

impl Kind for FixedWindow {
    const NAME: &'static str = "FIXED";
    const CHOSEN_BY: &'static str = "ALGORITHM FIXED";
    type State = Stored;
}

impl Algorithm for FixedWindow {
    fn new(quota: Quota, burst: Option<u64>) -> Result<Self, Error> {
        Ok(FixedWindow {
            quota: without_burst(quota, burst)?,
        })
    }

    fn check(&self, stored: Option<Stored>, cost: u64, now_ms: u64) -> Outcome<Stored> {
        check(stored, self.quota, cost, now_ms)
    }

    fn capacity(&self) -> u64 {
        self.quota.limit()
    }

    fn parameters(&self) -> (Quota, Option<u64>) {
        (self.quota, None)
    }

    /// Counts `units` in the window in force, as CHECK sees it, past the
    /// limit if need be.
    fn force(&self, stored: Option<Stored>, units: u64, now_ms: u64) -> Option<Stored> {
        if units == 0 {
            return None;
        }
        let (count, ends_at_ms, _) = window_at(stored, self.quota, now_ms);
        Some(Stored {
            count: count.saturating_add(units).min(MAX_COUNT),
            expires_at_ms: Some(ends_at_ms),
        })
    }

    /// Takes `units` off the count while the window charged at
    /// `charged_at_ms` lasts: a later window never pays for an earlier one.
    fn refund(
        &self,
        stored: Option<Stored>,
        units: u64,
        charged_at_ms: u64,
        now_ms: u64,
    ) -> Option<Stored> {
        let Stored {
            count,
            expires_at_ms: Some(ends_at_ms),
        } = stored?
        else {
            return None;
        };
        let starts_at_ms = ends_at_ms.saturating_sub(self.quota.period_ms());
        let charged_here = (starts_at_ms..ends_at_ms).contains(&charged_at_ms);
        let given_back = units.min(count);
        (charged_here && now_ms < ends_at_ms && given_back > 0).then(|| Stored {
            count: count.saturating_sub(given_back),
            expires_at_ms: Some(ends_at_ms),
        })
    }
}

/// What a key holds before a check: a counter and, usually, its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Units admitted in the window.
    pub count: u64,
    /// When the window ends (absolute UNIX time in ms, the key's expiry), or
    /// `None` for a counter stored without an expiry.
    pub expires_at_ms: Option<u64>,
}

/// The value is the count exactly as INCR writes it, with no tag, so the
/// key is what an INCR + EXPIRE counter leaves: `GET`, `TTL`, `DEL`, RDB and
/// AOF all work on it, and a server without the module can load it.
impl Layout for Stored {
    fn decode(value: &[u8], expires_at_ms: Option<u64>) -> Option<Self> {
        Some(Self {
            count: decode_u64(value)?,
            expires_at_ms,
        })
    }

    fn encode(&self, out: &mut Encoded, _replaced_len: usize) -> Option<()> {
        out.push_u64(self.count)
    }

    fn expires_at_ms(&self) -> Option<u64> {
        self.expires_at_ms
    }

    fn grown_from(&self, previous: &Self) -> Option<u64> {
        if previous.expires_at_ms != self.expires_at_ms {
            return None;
        }
        self.count.checked_sub(previous.count).filter(|&n| n > 0)
    }
}

/// Decides a request of `cost` units at `now_ms` against the state a key
/// holds (`None` for a missing key).
///
/// A cost of 0 only looks: it is answered like any request and never stores
/// anything. A counter without an expiry is taken as a window that starts
/// now; the first request that counts (admitted or not) stores that expiry,
/// otherwise such a counter would deny forever. Likewise a window that ends
/// later than one period from now (the period was shortened) ends one
/// period from now, and the first request that counts stores that.
pub fn check(stored: Option<Stored>, quota: Quota, cost: u64, now_ms: u64) -> Outcome<Stored> {
    let (count, ends_at_ms, expiry_to_store) = window_at(stored, quota, now_ms);

    let limit = quota.limit();
    // `count` may exceed `limit` when the limit was lowered: then nothing fits,
    // not even a look.
    let fits = limit.checked_sub(count).is_some_and(|room| cost <= room);
    let counts = cost > 0;
    // `fits` bounds the sum by `limit`, so it cannot saturate.
    let count_after = if fits {
        count.saturating_add(cost)
    } else {
        count
    };

    let store = if counts && (fits || expiry_to_store) {
        Some(Stored {
            count: count_after,
            expires_at_ms: Some(ends_at_ms),
        })
    } else {
        None
    };
    let retry_after_ms = if fits || cost > limit {
        None
    } else {
        Some(ends_at_ms.saturating_sub(now_ms))
    };
    let reset_after_ms = if count_after > 0 {
        ends_at_ms.saturating_sub(now_ms)
    } else {
        0
    };

    Outcome {
        decision: Decision {
            allowed: fits,
            remaining: limit.saturating_sub(count_after),
            limit,
            retry_after_ms,
            reset_after_ms,
        },
        store,
    }
}

/// The window in force at `now_ms`: its count, its end, and whether that
/// end must be stored even when nothing is admitted.
fn window_at(stored: Option<Stored>, quota: Quota, now_ms: u64) -> (u64, u64, bool) {
    let new_window_end_ms = now_ms.saturating_add(quota.period_ms());
    match stored {
        // A window ending later than one period from now was opened under a
        // longer period: it ends one period from now instead.
        Some(Stored {
            count,
            expires_at_ms: Some(end_ms),
        }) if end_ms > new_window_end_ms => (count, new_window_end_ms, true),
        Some(Stored {
            count,
            expires_at_ms: Some(end_ms),
        }) if end_ms > now_ms => (count, end_ms, false),
        Some(Stored {
            count,
            expires_at_ms: None,
        }) => (count, new_window_end_ms, count > 0),
        // No key, or a window that has ended (the key expires at `end_ms`,
        // inclusive): a counted request opens a new window.
        _ => (0, new_window_end_ms, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::testing::{common_properties, expected, replay};
    use crate::limiter::{MAX_COST, MAX_LIMIT, MAX_PERIOD_S};
    use proptest::prelude::*;

    fn quota(limit: u64, period_s: u64) -> Quota {
        Quota::new(limit, period_s).unwrap()
    }

    #[test]
    fn the_state_is_the_count_as_incr_writes_it() {
        use crate::limiter::layout::testing::round_trip;
        for count in [0, 1, 9, 10, 12345, i64::MAX as u64] {
            let state = Stored {
                count,
                expires_at_ms: Some(7),
            };
            round_trip(state, count.to_string().as_bytes());
        }
        // Never padded, whatever it replaces.
        let mut out = Encoded::new();
        let counter = Stored {
            count: 3,
            expires_at_ms: Some(1),
        };
        counter.encode(&mut out, 4).unwrap();
        assert_eq!(out.as_bytes(), b"3");
        for foreign in [
            &b""[..],
            b"hello",
            b"-1",
            b"042",
            b"+4",
            b"4.0",
            b" 4",
            b"9223372036854775808",
        ] {
            assert_eq!(Stored::decode(foreign, None), None, "{foreign:?}");
        }
    }

    #[test]
    fn growth_within_a_window_is_an_increment() {
        let at = |count, end| Stored {
            count,
            expires_at_ms: Some(end),
        };
        assert_eq!(at(5, 10).grown_from(&at(3, 10)), Some(2));
        assert_eq!(at(3, 10).grown_from(&at(3, 10)), None);
        assert_eq!(at(1, 20).grown_from(&at(3, 10)), None);
    }

    fn stored(count: u64, expires_at_ms: Option<u64>) -> Option<Stored> {
        Some(Stored {
            count,
            expires_at_ms,
        })
    }

    fn window(count: u64, ends_at_ms: u64) -> Option<Stored> {
        stored(count, Some(ends_at_ms))
    }

    /// One row: the state before, the request, and everything that comes out.
    struct Row {
        stored: Option<Stored>,
        limit: u64,
        period_s: u64,
        cost: u64,
        now_ms: u64,
        allowed: bool,
        remaining: u64,
        retry_after_ms: Option<u64>,
        reset_after_ms: u64,
        store: Option<Stored>,
    }

    #[test]
    fn decides_every_case_in_the_table() {
        #[rustfmt::skip]
        let rows = [
            // stored                    limit period cost  now      allowed rem retry        reset   store
            // 0: a missing key opens a window of one period
            Row { stored: None,                 limit: 5, period_s: 10, cost: 1, now_ms: 1_000, allowed: true,  remaining: 4, retry_after_ms: None,        reset_after_ms: 10_000, store: window(1, 11_000) },
            // 1: inside a window the end does not move
            Row { stored: stored(1, Some(11_000)), limit: 5, period_s: 10, cost: 1, now_ms: 4_000, allowed: true,  remaining: 3, retry_after_ms: None,        reset_after_ms: 7_000,  store: window(2, 11_000) },
            // 2: the last unit fits exactly
            Row { stored: stored(4, Some(11_000)), limit: 5, period_s: 10, cost: 1, now_ms: 4_000, allowed: true,  remaining: 0, retry_after_ms: None,        reset_after_ms: 7_000,  store: window(5, 11_000) },
            // 3: a full window denies until it ends, and stores nothing
            Row { stored: stored(5, Some(11_000)), limit: 5, period_s: 10, cost: 1, now_ms: 4_000, allowed: false, remaining: 0, retry_after_ms: Some(7_000), reset_after_ms: 7_000,  store: None },
            // 4: at its end instant the window is over
            Row { stored: stored(5, Some(11_000)), limit: 5, period_s: 10, cost: 1, now_ms: 11_000, allowed: true, remaining: 4, retry_after_ms: None,        reset_after_ms: 10_000, store: window(1, 21_000) },
            // 5: one millisecond earlier it is not
            Row { stored: stored(5, Some(11_000)), limit: 5, period_s: 10, cost: 1, now_ms: 10_999, allowed: false, remaining: 0, retry_after_ms: Some(1),   reset_after_ms: 1,      store: None },
            // 6: a cost takes several units at once
            Row { stored: stored(1, Some(11_000)), limit: 5, period_s: 10, cost: 3, now_ms: 2_000, allowed: true,  remaining: 1, retry_after_ms: None,        reset_after_ms: 9_000,  store: window(4, 11_000) },
            // 7: a cost that does not fit is denied whole
            Row { stored: stored(3, Some(11_000)), limit: 5, period_s: 10, cost: 3, now_ms: 2_000, allowed: false, remaining: 2, retry_after_ms: Some(9_000), reset_after_ms: 9_000,  store: None },
            // 8: a cost above the limit can never fit: no retry time
            Row { stored: None,                 limit: 5, period_s: 10, cost: 6, now_ms: 1_000, allowed: false, remaining: 5, retry_after_ms: None,        reset_after_ms: 0,      store: None },
            // 9: cost 0 on a missing key looks and creates nothing
            Row { stored: None,                 limit: 5, period_s: 10, cost: 0, now_ms: 1_000, allowed: true,  remaining: 5, retry_after_ms: None,        reset_after_ms: 0,      store: None },
            // 10: cost 0 inside a window reports it unchanged
            Row { stored: stored(2, Some(11_000)), limit: 5, period_s: 10, cost: 0, now_ms: 1_000, allowed: true,  remaining: 3, retry_after_ms: None,        reset_after_ms: 10_000, store: None },
            // 11: a counter without expiry gets a window starting now
            Row { stored: stored(3, None),      limit: 5, period_s: 10, cost: 1, now_ms: 1_000, allowed: true,  remaining: 1, retry_after_ms: None,        reset_after_ms: 10_000, store: window(4, 11_000) },
            // 12: ... and gets it even when the request is denied
            Row { stored: stored(9, None),      limit: 5, period_s: 10, cost: 1, now_ms: 1_000, allowed: false, remaining: 0, retry_after_ms: Some(10_000), reset_after_ms: 10_000, store: window(9, 11_000) },
            // 13: ... but not from a cost-0 look
            Row { stored: stored(9, None),      limit: 5, period_s: 10, cost: 0, now_ms: 1_000, allowed: false, remaining: 0, retry_after_ms: Some(10_000), reset_after_ms: 10_000, store: None },
            // 14: a count above the limit (the limit was lowered) denies
            Row { stored: stored(8, Some(11_000)), limit: 5, period_s: 10, cost: 1, now_ms: 1_000, allowed: false, remaining: 0, retry_after_ms: Some(10_000), reset_after_ms: 10_000, store: None },
            // 15: the largest values do not overflow
            Row { stored: stored(u64::MAX, Some(u64::MAX)), limit: MAX_LIMIT, period_s: MAX_PERIOD_S, cost: MAX_COST, now_ms: u64::MAX - 1, allowed: false, remaining: 0, retry_after_ms: Some(1), reset_after_ms: 1, store: None },
            // 16: a new window near the end of time saturates instead of wrapping
            Row { stored: None,                 limit: 5, period_s: 10, cost: 1, now_ms: u64::MAX - 5, allowed: true, remaining: 4, retry_after_ms: None,     reset_after_ms: 5,      store: window(1, u64::MAX) },
            // 17: a window opened under a longer period ends one (new) period from now
            Row { stored: stored(3, Some(3_601_000)), limit: 3, period_s: 1, cost: 1, now_ms: 1_000, allowed: false, remaining: 0, retry_after_ms: Some(1_000), reset_after_ms: 1_000, store: window(3, 2_000) },
            // 18: ... and a look sees it so, storing nothing
            Row { stored: stored(3, Some(3_601_000)), limit: 3, period_s: 1, cost: 0, now_ms: 1_000, allowed: true, remaining: 0, retry_after_ms: None, reset_after_ms: 1_000, store: None },
            // 19: ... an admitted request counts in the shortened window
            Row { stored: stored(1, Some(3_601_000)), limit: 3, period_s: 1, cost: 1, now_ms: 1_000, allowed: true, remaining: 1, retry_after_ms: None, reset_after_ms: 1_000, store: window(2, 2_000) },
            // 20: a window ending exactly one period from now is kept
            Row { stored: stored(3, Some(2_000)), limit: 3, period_s: 1, cost: 1, now_ms: 1_000, allowed: false, remaining: 0, retry_after_ms: Some(1_000), reset_after_ms: 1_000, store: None },
        ];
        for (i, row) in rows.iter().enumerate() {
            let outcome = check(
                row.stored,
                quota(row.limit, row.period_s),
                row.cost,
                row.now_ms,
            );
            let expected = expected(
                (row.allowed, row.remaining, row.limit),
                (row.retry_after_ms, row.reset_after_ms),
                row.store,
            );
            assert_eq!(outcome, expected, "row {i}");
        }
    }

    /// A request in a simulated run: time advances by `wait_ms`, then `cost` is asked.
    fn requests() -> impl Strategy<Value = Vec<(u64, u64)>> {
        prop::collection::vec((0u64..3_000, 0u64..8), 1..200)
    }

    proptest! {
        #[test]
        fn never_admits_more_than_limit_per_window(limit in 1u64..10, period_s in 1u64..4, reqs in requests()) {
            let quota = quota(limit, period_s);
            let log = replay(1_000_000, &reqs, |state, cost, now_ms| check(state, quota, cost, now_ms));
            // Every admitted unit belongs to the window whose end was stored with it;
            // sum them per window.
            let mut per_window = std::collections::BTreeMap::<u64, u64>::new();
            for (_, cost, _, outcome) in &log {
                if outcome.decision.allowed && *cost > 0 {
                    let end = outcome.store.unwrap().expires_at_ms.unwrap();
                    *per_window.entry(end).or_default() += cost;
                }
            }
            for (end, admitted) in per_window {
                prop_assert!(admitted <= limit, "window ending at {end} admitted {admitted}");
            }
        }

        #[test]
        fn retry_and_remaining_are_exact(limit in 1u64..10, period_s in 1u64..4, reqs in requests()) {
            let algorithm = FixedWindow::new(quota(limit, period_s), None).unwrap();
            common_properties(algorithm, 1_000_000, &reqs)?;
        }

        #[test]
        fn reset_after_is_when_the_window_is_empty(limit in 1u64..10, period_s in 1u64..4, reqs in requests()) {
            let quota = quota(limit, period_s);
            for (now_ms, _, _, outcome) in replay(1_000_000, &reqs, |state, cost, now_ms| check(state, quota, cost, now_ms)) {
                let Some(w) = outcome.store else { continue };
                let state = Some(w);
                let reset_ms = outcome.decision.reset_after_ms;
                prop_assert!(reset_ms >= 1);
                let before = check(state, quota, 0, now_ms + reset_ms - 1).decision;
                let at = check(state, quota, 0, now_ms + reset_ms).decision;
                prop_assert_eq!(before.remaining, limit.saturating_sub(w.count));
                prop_assert_eq!(at.remaining, limit);
                prop_assert_eq!(at.reset_after_ms, 0);
            }
        }

        #[test]
        fn cost_zero_never_stores(limit in 1u64..10, period_s in 1u64..4, count in 0u64..20, end in prop::option::of(0u64..5_000), now_ms in 0u64..5_000) {
            let outcome = check(stored(count, end), quota(limit, period_s), 0, now_ms);
            prop_assert_eq!(outcome.store, None);
        }

        #[test]
        fn a_denied_request_stores_at_most_an_expiry(limit in 1u64..10, count in 0u64..20, end in prop::option::of(0u64..5_000), cost in 0u64..20, now_ms in 0u64..5_000) {
            let outcome = check(stored(count, end), quota(limit, 3), cost, now_ms);
            if !outcome.decision.allowed {
                if let Some(w) = outcome.store {
                    // Only a missing expiry, or one beyond a period from now,
                    // is fixed: to one period from now.
                    prop_assert!(end.is_none_or(|end| end > now_ms + 3_000));
                    prop_assert_eq!(w.count, count);
                    prop_assert_eq!(w.expires_at_ms, Some(now_ms + 3_000));
                }
            }
        }
    }
}
