//! GCRA exactly as redis-cell's `CL.THROTTLE` computes it, for
//! `RATELIMIT.THROTTLE`.
//!
//! ```text
//!   T   emission interval: period / count_per_period, the time between
//!       requests in the nominal equally spaced schedule
//!   τ   delay tolerance: T × (max_burst + 1), how far ahead of that
//!       schedule a client may run
//!   tat theoretical arrival time: when the schedule has caught up (now
//!       when the key is absent)
//!
//!   new_tat = max(tat, now) + T × quantity
//!   admitted when now >= new_tat − τ
//! ```
//!
//! This is the token bucket of [`super::token_bucket`] in another dress; it
//! is kept separately so that every integer of the reply is the one
//! redis-cell gives for the same calls: time in nanoseconds, `T` computed
//! through a double as redis-cell does, `remaining` from whole microseconds.
//! Where redis-cell goes wrong this does not: no overflow (the arguments are
//! bounded and the arithmetic is 128-bit), no division by zero.

use super::layout::{Encoded, Layout};
use super::{Bound, Kind, Outcome, MAX_COST, MAX_LIMIT, MAX_PERIOD_S, PERIOD_S};
use crate::decimal::parse_padded_u64;
use crate::error::Error;

/// Nanoseconds in a millisecond.
pub const NS_PER_MS: u64 = 1_000_000;
/// Nanoseconds in a second.
pub const NS_PER_S: u64 = 1_000_000_000;
/// [`NS_PER_MS`] for the 128-bit arithmetic.
const NS_PER_MS_WIDE: i128 = NS_PER_MS as i128;

/// The longest delay tolerance: the longest period, so every state fits a
/// key's expiry.
const MAX_TOLERANCE_NS: i128 = MAX_PERIOD_S as i128 * NS_PER_S as i128;

/// THROTTLE's `max_burst`: the bucket holds `max_burst + 1`, at most
/// [`MAX_LIMIT`].
pub const MAX_BURST: Bound = Bound {
    min: 0,
    max: MAX_LIMIT - 1,
    error: Error::InvalidMaxBurst,
};
/// THROTTLE's `count_per_period`.
pub const COUNT_PER_PERIOD: Bound = Bound {
    min: 1,
    max: MAX_LIMIT,
    error: Error::InvalidCountPerPeriod,
};
/// THROTTLE's `quantity`.
pub const QUANTITY: Bound = Bound {
    min: 0,
    max: MAX_COST,
    error: Error::InvalidQuantity,
};

/// A throttle's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// T, in ns.
    emission_interval_ns: i128,
    /// τ, in ns.
    tolerance_ns: i128,
    /// max_burst + 1: how many requests fit at once.
    limit: u64,
}

impl Kind for Throttle {
    const NAME: &'static str = "THROTTLE";
    const CHOSEN_BY: &'static str = "RATELIMIT.THROTTLE";
    type State = Stored;
}

impl Throttle {
    /// A throttle admitting `max_burst + 1` at once and `count_per_period`
    /// per `period_s` seconds: each within its bound ([`MAX_BURST`],
    /// [`COUNT_PER_PERIOD`], [`PERIOD_S`]), with an emission interval of at
    /// least a nanosecond and a full bucket refilled within the longest
    /// period.
    pub fn new(max_burst: u64, count_per_period: u64, period_s: u64) -> Result<Throttle, Error> {
        let max_burst = MAX_BURST.check(max_burst)?;
        let count_per_period = COUNT_PER_PERIOD.check(count_per_period)?;
        let period_ns = PERIOD_S.check(period_s)?.saturating_mul(NS_PER_S);
        // redis-cell: `((ns as f64) / (n as f64)) as i64`. The same double
        // arithmetic gives the same interval for every argument.
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        let emission_interval_ns = ((period_ns as f64) / (count_per_period as f64)) as i64;
        if emission_interval_ns <= 0 {
            return Err(Error::ThrottleRateTooHigh);
        }
        // The bound keeps max_burst + 1 within MAX_LIMIT.
        let limit = max_burst.saturating_add(1);
        let tolerance_ns = i128::from(emission_interval_ns).saturating_mul(i128::from(limit));
        if tolerance_ns > MAX_TOLERANCE_NS {
            return Err(Error::ThrottleBurstTooLarge);
        }
        Ok(Throttle {
            emission_interval_ns: i128::from(emission_interval_ns),
            tolerance_ns,
            limit,
        })
    }
}

/// What a key holds: the theoretical arrival time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The theoretical arrival time rounded up to the millisecond (absolute
    /// UNIX ms): the key's expiry. `None` when the key has no expiry, which
    /// is read as an absent key.
    pub tat_ms: Option<u64>,
    /// How many nanoseconds before `tat_ms` the arrival time really is
    /// (below 10^6).
    pub early_ns: u64,
}

/// `G<ns>`, the nanoseconds zero-padded to the width of the value replaced.
impl Layout for Stored {
    fn decode(value: &[u8], expires_at_ms: Option<u64>) -> Option<Self> {
        Some(Self {
            early_ns: parse_padded_u64(value.strip_prefix(b"G")?)?,
            tat_ms: expires_at_ms,
        })
    }

    fn encode(&self, out: &mut Encoded, replaced_len: usize) -> Option<()> {
        out.push(b"G")?;
        out.push_padded(self.early_ns, replaced_len.saturating_sub(1))
    }

    fn expires_at_ms(&self) -> Option<u64> {
        self.tat_ms
    }
}

/// The answer, in CL.THROTTLE's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request was refused.
    pub limited: bool,
    /// max_burst + 1.
    pub limit: u64,
    /// Requests that would still be admitted at once.
    pub remaining: u64,
    /// When a refused request would be admitted, in ns; `None` when admitted
    /// or when it can never be.
    pub retry_after_ns: Option<u64>,
    /// When the bucket is full again, in ns.
    pub reset_after_ns: u64,
}

/// Decides a request of `quantity` at `now_ms` against the state a key
/// holds. A quantity of 0 only looks.
pub fn check(
    stored: Option<Stored>,
    throttle: Throttle,
    quantity: u64,
    now_ms: u64,
) -> Outcome<Stored, Verdict> {
    let interval = throttle.emission_interval_ns;
    let tolerance = throttle.tolerance_ns;
    let now = i128::from(now_ms).saturating_mul(NS_PER_MS_WIDE);
    let tat_stored = stored
        .and_then(|s| {
            let tat_ms = i128::from(s.tat_ms?);
            let early = i128::from(s.early_ns).min(NS_PER_MS_WIDE.saturating_sub(1));
            Some(tat_ms.saturating_mul(NS_PER_MS_WIDE).saturating_sub(early))
        })
        .unwrap_or(now)
        .max(now);
    // An arrival time beyond τ from now was reached under slower or larger
    // parameters; under these it is at most τ away. Never the case for
    // parameters that did not change, so redis-cell's answers stand.
    let tat_bound = now.saturating_add(tolerance);
    let fix_expiry = tat_stored > tat_bound;
    let tat = tat_stored.min(tat_bound);
    let increment = interval.saturating_mul(i128::from(quantity));
    let new_tat = tat.saturating_add(increment);
    // diff = now − (new_tat − τ): negative means "too early".
    let diff = now.saturating_sub(new_tat.saturating_sub(tolerance));
    let limited = diff < 0;

    let (ttl, store) = if limited {
        // A limited request that counts stores a clamped arrival time.
        let store = (quantity > 0 && fix_expiry).then(|| stored_at(tat));
        (tat.saturating_sub(now), store)
    } else {
        let store = (quantity > 0).then(|| stored_at(new_tat));
        (new_tat.saturating_sub(now), store)
    };
    let retry_after_ns = (limited && increment <= tolerance).then(|| narrow(diff.saturating_neg()));

    Outcome {
        decision: Verdict {
            limited,
            limit: throttle.limit,
            remaining: remaining(tolerance.saturating_sub(ttl), interval).min(throttle.limit),
            retry_after_ns,
            reset_after_ns: narrow(ttl),
        },
        store,
    }
}

/// The state for arrival time `tat_ns`: rounded up to the millisecond, and
/// the nanoseconds it was rounded by.
fn stored_at(tat_ns: i128) -> Stored {
    let tat_ms = ceil_div(tat_ns, NS_PER_MS_WIDE);
    Stored {
        tat_ms: Some(narrow(tat_ms)),
        early_ns: narrow(tat_ms.saturating_mul(NS_PER_MS_WIDE).saturating_sub(tat_ns)),
    }
}

/// `(τ − ttl) / T` as redis-cell computes it: in whole microseconds through
/// a double, truncated, and 0 unless `τ − ttl > −T`. Below a microsecond per
/// request (where redis-cell divides by zero) the exact quotient is used.
fn remaining(next_ns: i128, interval_ns: i128) -> u64 {
    if next_ns <= interval_ns.saturating_neg() {
        return 0;
    }
    let interval_us = interval_ns / 1000;
    if interval_us == 0 {
        return narrow(next_ns.checked_div(interval_ns).unwrap_or(0));
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_precision_loss,
        clippy::cast_sign_loss
    )]
    let remaining = ((next_ns / 1000) as f64 / interval_us as f64) as u64;
    remaining
}

/// `a / b` rounded up, for positive `b`.
fn ceil_div(a: i128, b: i128) -> i128 {
    let quotient = a.checked_div(b).unwrap_or(0);
    if a.checked_rem(b).unwrap_or(0) > 0 {
        quotient.saturating_add(1)
    } else {
        quotient
    }
}

/// Narrows a non-negative value the bounds keep within `u64`.
fn narrow(value: i128) -> u64 {
    u64::try_from(value.max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_state_the_bounds_in_force() {
        for bound in [MAX_BURST, COUNT_PER_PERIOD, QUANTITY] {
            let text = bound.error.message().unwrap().as_str().to_string();
            assert!(text.contains(&bound.max.to_string()), "{text}");
        }
    }
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    /// redis-cell's own test table (`it_rate_limits`): limit 5 (max_burst 4),
    /// one per second, every call answered as CL.THROTTLE answers it.
    #[test]
    fn answers_as_redis_cell_does() {
        let throttle = Throttle::new(4, 1, 1).unwrap();
        let start_ms = 1_700_000_000_000;
        // (case, ms after start, quantity, limited, remaining, reset_after ns, retry_after ns)
        type Case = (u32, u64, u64, bool, u64, u64, Option<u64>);
        #[rustfmt::skip]
        let cases: [Case; 15] = [
            (0, 0, 6, true, 5, 0, None),
            (1, 0, 1, false, 4, S, None),
            (2, 0, 1, false, 3, 2 * S, None),
            (3, 0, 1, false, 2, 3 * S, None),
            (4, 0, 1, false, 1, 4 * S, None),
            (5, 0, 1, false, 0, 5 * S, None),
            (6, 0, 1, true, 0, 5 * S, Some(S)),
            (7, 3000, 1, false, 2, 3000 * MS, None),
            (8, 3100, 1, false, 1, 3900 * MS, None),
            (9, 4000, 1, false, 1, 4000 * MS, None),
            (10, 8000, 1, false, 4, 1000 * MS, None),
            (11, 9500, 1, false, 4, 1000 * MS, None),
            (12, 9500, 0, false, 4, S, None),
            (13, 9500, 2, false, 2, 3 * S, None),
            (14, 9500, 5, true, 2, 3 * S, Some(3 * S)),
        ];
        let mut state = None;
        for (case, after_ms, quantity, limited, remaining, reset_after_ns, retry_after_ns) in cases
        {
            let outcome = check(state, throttle, quantity, start_ms + after_ms);
            let expected = Verdict {
                limited,
                limit: 5,
                remaining,
                retry_after_ns,
                reset_after_ns,
            };
            assert_eq!(outcome.decision, expected, "case {case}");
            if outcome.store.is_some() {
                state = outcome.store;
            }
        }
    }

    #[test]
    fn an_arrival_time_beyond_the_tolerance_is_clamped_and_stored() {
        // Reached under one per 100 s: 500 s away. Under one per second with
        // a burst of 5, τ is 5 s: the state is taken as 5 s away.
        let throttle = Throttle::new(4, 1, 1).unwrap();
        let stored = Some(Stored {
            tat_ms: Some(510_000),
            early_ns: 0,
        });
        let limited = check(stored, throttle, 1, 10_000);
        assert!(limited.decision.limited);
        assert_eq!(limited.decision.reset_after_ns, 5 * S);
        assert_eq!(limited.decision.retry_after_ns, Some(S));
        assert_eq!(
            limited.store,
            Some(Stored {
                tat_ms: Some(15_000),
                early_ns: 0
            })
        );
        // A look sees the same and stores nothing.
        let look = check(stored, throttle, 0, 10_000);
        assert_eq!(look.decision.reset_after_ns, 5 * S);
        assert_eq!(look.store, None);
        // One interval later, a request passes.
        assert!(!check(limited.store, throttle, 1, 11_000).decision.limited);
    }

    #[test]
    fn computes_the_interval_through_a_double_like_redis_cell() {
        // 10^18 / 3 is not a double: redis-cell's interval is the truncated
        // double quotient, not the integer one.
        let throttle = Throttle::new(0, 3, 1_000_000_000).unwrap();
        let expected = ((1e18_f64) / 3.0) as i64;
        assert_eq!(throttle.emission_interval_ns, i128::from(expected));
        assert_ne!(expected, 1_000_000_000_000_000_000 / 3);
    }

    #[test]
    fn refuses_throttles_it_cannot_compute_or_store() {
        assert_eq!(
            Throttle::new(0, 2_000_000_000, 1),
            Err(Error::ThrottleRateTooHigh)
        );
        assert!(Throttle::new(0, 1_000_000_000, 1).is_ok());
        assert_eq!(
            Throttle::new(1, 1, MAX_PERIOD_S),
            Err(Error::ThrottleBurstTooLarge)
        );
        assert!(Throttle::new(0, 1, MAX_PERIOD_S).is_ok());
        assert_eq!(
            Throttle::new(MAX_LIMIT - 1, 1, 1),
            Err(Error::ThrottleBurstTooLarge)
        );
        // Each argument's own range comes first, in argument order.
        assert_eq!(Throttle::new(MAX_LIMIT, 0, 0), Err(Error::InvalidMaxBurst));
        assert_eq!(
            Throttle::new(0, MAX_LIMIT + 1, 0),
            Err(Error::InvalidCountPerPeriod)
        );
        assert_eq!(Throttle::new(0, 1, 0), Err(Error::InvalidPeriod));
    }

    #[test]
    fn the_state_is_the_early_nanoseconds_after_a_tag_at_a_kept_width() {
        use crate::limiter::layout::testing::round_trip;
        round_trip(
            Stored {
                tat_ms: Some(10_334),
                early_ns: 999_999,
            },
            b"G999999",
        );
        let cell = Stored {
            tat_ms: Some(1),
            early_ns: 42,
        };
        let mut out = Encoded::new();
        cell.encode(&mut out, 7).unwrap();
        assert_eq!(out.as_bytes(), b"G000042");
        assert_eq!(Stored::decode(b"G000042", Some(1)), Some(cell));
        for foreign in [&b"G"[..], b"Gx", b"G1 ", b"g1", b"T1"] {
            assert_eq!(Stored::decode(foreign, None), None, "{foreign:?}");
        }
    }

    #[test]
    fn remaining_follows_redis_cell_even_where_it_truncates() {
        // T = 333 333 333 ns, τ − ttl = 999 999 998 ns: redis-cell compares
        // whole microseconds, 999 999 / 333 333 = 3, where the exact
        // quotient is 2.99...
        assert_eq!(remaining(999_999_998, 333_333_333), 3);
        assert_eq!(remaining(-1, 333_333_333), 0);
        assert_eq!(remaining(-333_333_333, 333_333_333), 0);
        // Below a microsecond per request: the exact quotient.
        assert_eq!(remaining(2_500, 500), 5);
    }

    fn requests() -> impl Strategy<Value = Vec<(u64, u64)>> {
        prop::collection::vec((0u64..1_500, 0u64..4), 1..150)
    }

    proptest! {
        #[test]
        fn admits_at_most_the_burst_plus_the_rate_over_any_interval(
            max_burst in 0u64..6, count in 1u64..6, period_s in 1u64..3, reqs in requests()
        ) {
            let throttle = Throttle::new(max_burst, count, period_s).unwrap();
            let mut state = None;
            let mut now_ms = 1_000_000u64;
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for (wait_ms, quantity) in reqs {
                now_ms += wait_ms;
                let outcome = check(state, throttle, quantity, now_ms);
                if !outcome.decision.limited && quantity > 0 {
                    admitted.push((now_ms, quantity));
                }
                if outcome.store.is_some() {
                    state = outcome.store;
                }
            }
            // Over [t_i, t_j]: at most (max_burst + 1) + span / T requests.
            let interval = throttle.emission_interval_ns;
            for i in 0..admitted.len() {
                let mut sum = 0i128;
                for j in i..admitted.len() {
                    sum += admitted[j].1 as i128;
                    let span_ns = (admitted[j].0 - admitted[i].0) as i128 * NS_PER_MS_WIDE;
                    prop_assert!(sum * interval <= (max_burst as i128 + 1) * interval + span_ns);
                }
            }
        }

        #[test]
        fn retry_after_is_when_the_request_passes(
            max_burst in 0u64..6, count in 1u64..6, period_s in 1u64..3, reqs in requests()
        ) {
            let throttle = Throttle::new(max_burst, count, period_s).unwrap();
            let mut state = None;
            let mut now_ms = 1_000_000u64;
            for (wait_ms, quantity) in reqs {
                now_ms += wait_ms;
                let outcome = check(state, throttle, quantity, now_ms);
                if let Some(retry_ns) = outcome.decision.retry_after_ns {
                    let at_ms = now_ms + retry_ns.div_ceil(MS);
                    prop_assert!(check(state, throttle, quantity, at_ms - 1).decision.limited);
                    prop_assert!(!check(state, throttle, quantity, at_ms).decision.limited);
                }
                if outcome.store.is_some() {
                    state = outcome.store;
                }
            }
        }
    }
}
