//! Sliding window counter: a fixed window that remembers the one before it.
//!
//! ```text
//!        previous window          current window
//!   |------------------------|------------------------|
//!                  |<---------- period ---------->|
//!                  sliding window                 now
//!                            |<-- elapsed -->|
//!
//!   estimate = previous × (period − elapsed) / period + current
//! ```
//!
//! Windows of `period` are aligned to the UNIX epoch. The units admitted in
//! the previous window are assumed to have arrived evenly, so the part of
//! them still inside the sliding window is weighted by how much of it
//! overlaps. A request of `cost` is admitted when `estimate + cost <= limit`.
//! Unlike a fixed window, a client cannot pass twice the limit around a
//! window boundary.
//!
//! All arithmetic is on integers, in "unit-milliseconds": the estimate times
//! the period. Nothing is rounded until the reply, so `retry_after_ms` is the
//! exact first millisecond at which the request would pass.
//!
//! The state is the two counts and the end of its usefulness: counts of
//! window `w` matter until window `w + 1` is over, so that is the key's
//! expiry, `(w + 2) × period`, and the expiry tells which window the counts
//! belong to.

use super::layout::{decode_u64, Encoded, Layout};
use super::{
    div_floor, narrow, wide_mul, without_burst, Algorithm, Decision, Kind, Outcome, Quota,
    MAX_COUNT,
};
use crate::error::Error;

/// The sliding window with its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindow {
    quota: Quota,
}

impl Kind for SlidingWindow {
    const NAME: &'static str = "SLIDING";
    const CHOSEN_BY: &'static str = "ALGORITHM SLIDING";
    type State = Stored;
}

impl Algorithm for SlidingWindow {
    fn new(quota: Quota, burst: Option<u64>) -> Result<Self, Error> {
        Ok(SlidingWindow {
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

    /// Counts `units` in the current window, as CHECK sees it.
    fn force(&self, stored: Option<Stored>, units: u64, now_ms: u64) -> Option<Stored> {
        if units == 0 {
            return None;
        }
        let mut counts = counts_at(stored, self.quota.period_ms(), now_ms);
        counts.current = counts.current.saturating_add(units).min(MAX_COUNT);
        Some(stored_from(counts, self.quota.period_ms()))
    }

    /// Takes `units` off the count of the window charged at `charged_at_ms`:
    /// the current count while that window lasts, the previous one in the
    /// window after it, nothing later.
    fn refund(
        &self,
        stored: Option<Stored>,
        units: u64,
        charged_at_ms: u64,
        now_ms: u64,
    ) -> Option<Stored> {
        stored?;
        let period_ms = self.quota.period_ms();
        let mut counts = counts_at(stored, period_ms, now_ms);
        let charged_window = charged_at_ms.checked_div(period_ms).unwrap_or(0);
        let count = if charged_window == counts.window {
            &mut counts.current
        } else if charged_window.saturating_add(1) == counts.window {
            &mut counts.previous
        } else {
            return None;
        };
        let given_back = units.min(*count);
        if given_back == 0 {
            return None;
        }
        *count = count.saturating_sub(given_back);
        Some(stored_from(counts, period_ms))
    }
}

/// The state that keeps `counts`, expiring when they stop mattering.
fn stored_from(counts: Counts, period_ms: u64) -> Stored {
    Stored {
        previous: counts.previous,
        current: counts.current,
        expires_at_ms: Some(window_start(counts.window.saturating_add(2), period_ms)),
    }
}

/// What a key holds: the counts of one window and of the window before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Units admitted in the window before the counts' window.
    pub previous: u64,
    /// Units admitted in the counts' window.
    pub current: u64,
    /// When the counts stop mattering (absolute UNIX ms): the end of the
    /// window after theirs. `None` when the key has no expiry.
    pub expires_at_ms: Option<u64>,
}

/// `S<previous>:<current>`, both counts as INCR writes them.
impl Layout for Stored {
    fn decode(value: &[u8], expires_at_ms: Option<u64>) -> Option<Self> {
        let counts = value.strip_prefix(b"S")?;
        let colon = counts.iter().position(|&b| b == b':')?;
        let (previous, current) = counts.split_at_checked(colon)?;
        Some(Self {
            previous: decode_u64(previous)?,
            current: decode_u64(current.strip_prefix(b":")?)?,
            expires_at_ms,
        })
    }

    fn encode(&self, out: &mut Encoded, _replaced_len: usize) -> Option<()> {
        out.push(b"S")?;
        out.push_u64(self.previous)?;
        out.push(b":")?;
        out.push_u64(self.current)
    }

    fn expires_at_ms(&self) -> Option<u64> {
        self.expires_at_ms
    }
}

/// The counts as seen from one window.
#[derive(Debug, Clone, Copy)]
struct Counts {
    /// Index of the window (UNIX ms / period) the counts are seen from.
    window: u64,
    /// Milliseconds elapsed in that window.
    elapsed_ms: u64,
    previous: u64,
    current: u64,
    /// The stored expiry is not the one these counts call for (none, or
    /// beyond this window's bound): a request that counts stores the right
    /// one, admitted or not.
    fix_expiry: bool,
}

/// Decides a request of `cost` units at `now_ms` against the state a key
/// holds (`None` for a missing key). A cost of 0 only looks.
pub fn check(stored: Option<Stored>, quota: Quota, cost: u64, now_ms: u64) -> Outcome<Stored> {
    let period_ms = quota.period_ms();
    let limit = quota.limit();
    let counts = counts_at(stored, period_ms, now_ms);

    // In unit-milliseconds: the weighted estimate, and what the limit allows.
    let budget = wide_mul(limit, period_ms);
    let used = weighted(counts, period_ms);
    let asked = wide_mul(cost, period_ms);
    let fits = used.saturating_add(asked) <= budget;

    let mut after = counts;
    if fits {
        // `fits` bounds `current + cost` by `limit`.
        after.current = counts.current.saturating_add(cost);
    }
    let store = (cost > 0 && (fits || counts.fix_expiry)).then(|| stored_from(after, period_ms));

    let remaining = div_floor(
        budget.saturating_sub(weighted(after, period_ms)),
        u128::from(period_ms),
    );
    let retry_after_ms = if fits || cost > limit {
        None
    } else {
        Some(first_admitting_ms(counts, quota, cost).saturating_sub(now_ms))
    };
    Outcome {
        decision: Decision {
            allowed: fits,
            remaining: narrow(remaining),
            limit,
            retry_after_ms,
            reset_after_ms: empty_at_ms(after, period_ms).saturating_sub(now_ms),
        },
        store,
    }
}

/// The counts of `stored` seen from the window containing `now_ms`.
fn counts_at(stored: Option<Stored>, period_ms: u64, now_ms: u64) -> Counts {
    let now_window = now_ms.checked_div(period_ms).unwrap_or(0);
    let mut counts = Counts {
        window: now_window,
        elapsed_ms: now_ms.checked_rem(period_ms).unwrap_or(0),
        previous: 0,
        current: 0,
        fix_expiry: false,
    };
    let Some(stored) = stored else {
        return counts;
    };
    // The counts' window ends one period before their expiry. Counts that
    // would belong to a window this clock has not reached (the period was
    // shortened, or the key was made by hand), and counts without expiry,
    // are taken as this window's: they then end with this window's bound.
    let bound_ms = window_start(now_window.saturating_add(2), period_ms);
    let stored_window = match stored.expires_at_ms {
        Some(expires_at_ms) if expires_at_ms <= bound_ms => expires_at_ms
            .saturating_sub(1)
            .checked_div(period_ms)
            .unwrap_or(0)
            .saturating_sub(1),
        _ => {
            counts.fix_expiry = true;
            now_window
        }
    };
    if stored_window == now_window {
        counts.previous = stored.previous;
        counts.current = stored.current;
    } else if stored_window.saturating_add(1) == now_window {
        counts.previous = stored.current;
    }
    counts
}

/// `previous × (period − elapsed) + current × period`: the estimate in
/// unit-milliseconds.
fn weighted(counts: Counts, period_ms: u64) -> u128 {
    let previous_weight = period_ms.saturating_sub(counts.elapsed_ms);
    wide_mul(counts.previous, previous_weight).saturating_add(wide_mul(counts.current, period_ms))
}

/// Start of window `window`, in UNIX ms.
fn window_start(window: u64, period_ms: u64) -> u64 {
    window.saturating_mul(period_ms)
}

/// The first instant (UNIX ms) at which a request of `cost <= limit` fits,
/// if nothing else is admitted meanwhile.
fn first_admitting_ms(counts: Counts, quota: Quota, cost: u64) -> u64 {
    let period_ms = quota.period_ms();
    let limit = quota.limit();
    let start_ms = window_start(counts.window, period_ms);
    // Later in this window: previous × (period − e) <= (limit − current − cost) × period.
    if let Some(room) = limit
        .checked_sub(counts.current)
        .and_then(|r| r.checked_sub(cost))
    {
        if let Some(elapsed_ms) = first_fitting_elapsed(counts.previous, room, period_ms) {
            return start_ms.saturating_add(elapsed_ms.max(counts.elapsed_ms));
        }
    }
    // In the next window, where `current` has become the previous count.
    let next_start_ms = start_ms.saturating_add(period_ms);
    let room = limit.saturating_sub(cost);
    if let Some(elapsed_ms) = first_fitting_elapsed(counts.current, room, period_ms) {
        return next_start_ms.saturating_add(elapsed_ms);
    }
    // Two windows on, nothing is left.
    next_start_ms.saturating_add(period_ms)
}

/// The smallest elapsed time `e` in `0..period` with
/// `previous × (period − e) <= room × period`, if any.
fn first_fitting_elapsed(previous: u64, room: u64, period_ms: u64) -> Option<u64> {
    if previous == 0 {
        return Some(0);
    }
    let allowance = div_floor(wide_mul(room, period_ms), u128::from(previous));
    let elapsed_ms = narrow(u128::from(period_ms).saturating_sub(allowance));
    (elapsed_ms < period_ms).then_some(elapsed_ms)
}

/// When the estimate drops to zero if nothing else is admitted (UNIX ms):
/// the end of the next window while this one has counts, the end of this
/// one while only the previous has, or now.
fn empty_at_ms(counts: Counts, period_ms: u64) -> u64 {
    let start_ms = window_start(counts.window, period_ms);
    if counts.current > 0 {
        start_ms.saturating_add(period_ms.saturating_mul(2))
    } else if counts.previous > 0 {
        start_ms.saturating_add(period_ms)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::testing::{common_properties, expected, replay};
    use proptest::prelude::*;

    fn quota(limit: u64, period_s: u64) -> Quota {
        Quota::new(limit, period_s).unwrap()
    }

    #[test]
    fn the_state_is_both_counts_after_a_tag() {
        use crate::limiter::layout::testing::round_trip;
        let counts = |previous, current, end| Stored {
            previous,
            current,
            expires_at_ms: Some(end),
        };
        round_trip(counts(12, 3, 60_000), b"S12:3");
        round_trip(
            counts(i64::MAX as u64, i64::MAX as u64, 1),
            b"S9223372036854775807:9223372036854775807",
        );
        for foreign in [
            &b"S"[..],
            b"S1",
            b"S:1",
            b"S1:",
            b"S1:2:3",
            b"S-1:2",
            b"s1:2",
            b"5",
        ] {
            assert_eq!(Stored::decode(foreign, None), None, "{foreign:?}");
        }
    }

    fn stored(previous: u64, current: u64, expires_at_ms: u64) -> Option<Stored> {
        Some(Stored {
            previous,
            current,
            expires_at_ms: Some(expires_at_ms),
        })
    }

    /// One row: the state, the request, and everything that comes out.
    struct Row {
        stored: Option<Stored>,
        limit: u64,
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
        // Period 10 s throughout: window w covers [w × 10 000, (w + 1) × 10 000).
        #[rustfmt::skip]
        let rows = [
            // 0: a missing key: counts in the current window, expiry two windows on
            Row { stored: None, limit: 10, cost: 1, now_ms: 12_000, allowed: true, remaining: 9, retry_after_ms: None, reset_after_ms: 18_000, store: stored(0, 1, 30_000) },
            // 1: same window: the current count grows, the expiry stays
            Row { stored: stored(0, 1, 30_000), limit: 10, cost: 2, now_ms: 15_000, allowed: true, remaining: 7, retry_after_ms: None, reset_after_ms: 15_000, store: stored(0, 3, 30_000) },
            // 2: next window, 25% in: previous 8 weighs 6 (8 × 0.75), plus 1
            Row { stored: stored(0, 8, 30_000), limit: 10, cost: 1, now_ms: 22_500, allowed: true, remaining: 3, retry_after_ms: None, reset_after_ms: 17_500, store: stored(8, 1, 40_000) },
            // 3: remaining is floored: 8 × 0.7 = 5.6, + 1 = 6.6 → 3.4 left → 3
            Row { stored: stored(0, 8, 30_000), limit: 10, cost: 1, now_ms: 23_000, allowed: true, remaining: 3, retry_after_ms: None, reset_after_ms: 17_000, store: stored(8, 1, 40_000) },
            // 4: denied: 8 × 0.75 + 4 = 10; a cost of 1 fits once 8 × (1 − e) <= 5, at e = 3.75 s
            Row { stored: stored(8, 4, 40_000), limit: 10, cost: 1, now_ms: 22_500, allowed: false, remaining: 0, retry_after_ms: Some(1_250), reset_after_ms: 17_500, store: None },
            // 5: the current count alone is full: wait for the next window, and
            //    there until 10 × (1 − e) <= 9, at e = 1 s
            Row { stored: stored(0, 10, 40_000), limit: 10, cost: 1, now_ms: 25_000, allowed: false, remaining: 0, retry_after_ms: Some(6_000), reset_after_ms: 15_000, store: None },
            // 6: a cost equal to the limit must wait for both windows to empty
            Row { stored: stored(0, 1, 40_000), limit: 10, cost: 10, now_ms: 25_000, allowed: false, remaining: 9, retry_after_ms: Some(15_000), reset_after_ms: 15_000, store: None },
            // 7: a cost above the limit never fits
            Row { stored: None, limit: 10, cost: 11, now_ms: 25_000, allowed: false, remaining: 10, retry_after_ms: None, reset_after_ms: 0, store: None },
            // 8: cost 0 looks and stores nothing
            Row { stored: stored(0, 4, 40_000), limit: 10, cost: 0, now_ms: 25_000, allowed: true, remaining: 6, retry_after_ms: None, reset_after_ms: 15_000, store: None },
            // 9: two windows later everything is forgotten
            Row { stored: stored(9, 9, 30_000), limit: 10, cost: 1, now_ms: 31_000, allowed: true, remaining: 9, retry_after_ms: None, reset_after_ms: 19_000, store: stored(0, 1, 50_000) },
            // 10: only the previous window has counts: empty at the end of this one
            Row { stored: stored(0, 5, 30_000), limit: 10, cost: 0, now_ms: 24_000, allowed: true, remaining: 7, retry_after_ms: None, reset_after_ms: 6_000, store: None },
            // 11: counts expiring beyond this window's bound (the period was
            //     shortened) are this window's, and a denied request stores that
            Row { stored: stored(3, 9, 50_000), limit: 10, cost: 2, now_ms: 25_000, allowed: false, remaining: 0, retry_after_ms: Some(6_112), reset_after_ms: 15_000, store: stored(3, 9, 40_000) },
            // 12: no expiry: the counts are this window's
            Row { stored: Some(Stored { previous: 0, current: 9, expires_at_ms: None }), limit: 10, cost: 1, now_ms: 25_000, allowed: true, remaining: 0, retry_after_ms: None, reset_after_ms: 15_000, store: stored(0, 10, 40_000) },
            // 13: ... and a denied request stores its expiry, so it ends
            Row { stored: Some(Stored { previous: 0, current: 10, expires_at_ms: None }), limit: 10, cost: 1, now_ms: 25_000, allowed: false, remaining: 0, retry_after_ms: Some(6_000), reset_after_ms: 15_000, store: stored(0, 10, 40_000) },
            // 14: ... but a look stores nothing
            Row { stored: stored(3, 9, 50_000), limit: 10, cost: 0, now_ms: 25_000, allowed: false, remaining: 0, retry_after_ms: Some(1_667), reset_after_ms: 15_000, store: None },
            // 15: counts ending exactly at the bound are this window's as they are
            Row { stored: stored(3, 9, 40_000), limit: 10, cost: 1, now_ms: 25_000, allowed: false, remaining: 0, retry_after_ms: Some(5_000), reset_after_ms: 15_000, store: None },
        ];
        for (i, row) in rows.iter().enumerate() {
            let outcome = check(row.stored, quota(row.limit, 10), row.cost, row.now_ms);
            let expected = expected(
                (row.allowed, row.remaining, row.limit),
                (row.retry_after_ms, row.reset_after_ms),
                row.store,
            );
            assert_eq!(outcome, expected, "row {i}");
        }
    }

    #[test]
    fn the_largest_arguments_do_not_overflow() {
        use crate::limiter::{MAX_COST, MAX_LIMIT, MAX_PERIOD_S};
        let q = quota(MAX_LIMIT, MAX_PERIOD_S);
        let now_ms = u64::MAX / 2;
        let full = check(None, q, MAX_COST, now_ms);
        assert!(full.decision.allowed);
        let next = check(full.store, q, 1, now_ms);
        assert!(!next.decision.allowed);
        assert!(next.decision.retry_after_ms.is_some());
        let at = check(
            stored(u64::MAX, u64::MAX, u64::MAX),
            q,
            MAX_COST,
            u64::MAX - 1,
        );
        assert!(!at.decision.allowed);
    }

    /// A simulated run: wait, then ask `cost`.
    fn requests() -> impl Strategy<Value = Vec<(u64, u64)>> {
        prop::collection::vec((0u64..2_500, 0u64..6), 1..150)
    }

    proptest! {
        #[test]
        fn never_more_than_limit_in_an_aligned_window(
            limit in 1u64..12, period_s in 1u64..4, start_ms in 0u64..10_000, reqs in requests()
        ) {
            let q = quota(limit, period_s);
            let period_ms = q.period_ms();
            let mut per_window = std::collections::BTreeMap::<u64, u64>::new();
            for (now_ms, cost, _, outcome) in replay(start_ms, &reqs, |state, cost, now_ms| check(state, q, cost, now_ms)) {
                if outcome.decision.allowed {
                    *per_window.entry(now_ms / period_ms).or_default() += cost;
                }
            }
            for (&w, &admitted) in &per_window {
                prop_assert!(admitted <= limit, "window {w} admitted {admitted}");
            }
        }

        #[test]
        fn the_estimate_never_exceeds_the_limit(
            limit in 1u64..12, period_s in 1u64..4, start_ms in 0u64..10_000, reqs in requests()
        ) {
            let q = quota(limit, period_s);
            let period_ms = q.period_ms();
            let mut per_window = std::collections::BTreeMap::<u64, u64>::new();
            for (now_ms, cost, _, outcome) in replay(start_ms, &reqs, |state, cost, now_ms| check(state, q, cost, now_ms)) {
                if outcome.decision.allowed && cost > 0 {
                    let w = now_ms / period_ms;
                    *per_window.entry(w).or_default() += cost;
                    // Recompute the estimate from scratch, in unit-ms.
                    let previous = per_window.get(&(w.wrapping_sub(1))).copied().unwrap_or(0);
                    let current = per_window[&w];
                    let elapsed = now_ms % period_ms;
                    let estimate = previous as u128 * (period_ms - elapsed) as u128 + current as u128 * period_ms as u128;
                    prop_assert!(estimate <= limit as u128 * period_ms as u128);
                }
            }
        }

        #[test]
        fn retry_and_remaining_are_exact(
            limit in 1u64..12, period_s in 1u64..4, start_ms in 0u64..10_000, reqs in requests()
        ) {
            let algorithm = SlidingWindow::new(quota(limit, period_s), None).unwrap();
            common_properties(algorithm, start_ms, &reqs)?;
        }

        #[test]
        fn reset_after_is_when_the_estimate_is_zero(
            limit in 1u64..12, period_s in 1u64..4, start_ms in 0u64..10_000, reqs in requests()
        ) {
            let q = quota(limit, period_s);
            for (now_ms, _, _, outcome) in replay(start_ms, &reqs, |state, cost, now_ms| check(state, q, cost, now_ms)) {
                let Some(state) = outcome.store else { continue };
                let reset_ms = outcome.decision.reset_after_ms;
                prop_assert!(reset_ms >= 1);
                prop_assert!(check(Some(state), q, 0, now_ms + reset_ms - 1).decision.remaining < limit);
                let at = check(Some(state), q, 0, now_ms + reset_ms).decision;
                prop_assert_eq!(at.remaining, limit);
                prop_assert_eq!(at.reset_after_ms, 0);
                // The key expires exactly then: the state no longer matters.
                prop_assert_eq!(state.expires_at_ms, Some(now_ms + reset_ms));
            }
        }
    }
}
