//! Token bucket: up to `burst` requests at once, refilled at `limit` per
//! `period`.
//!
//! ```text
//!   tokens
//!   burst |‾‾‾‾‾\            ____/‾‾‾‾‾‾   refill: limit tokens per period
//!         |      \      ____/
//!         |       \____/                   a request takes `cost` tokens,
//!       0 +-----------------------> time   or is denied and takes none
//! ```
//!
//! The bucket is kept as a single instant, the time at which it will be full
//! again (the "theoretical arrival time" of GCRA, which is the same
//! algorithm). A request of `cost` moves that instant `cost` token-times
//! later, and is admitted when the bucket would still hold at least nothing:
//! when `full_at - now <= burst` token-times.
//!
//! Time is counted in ticks of `1 / limit` milliseconds, so one token takes
//! exactly `period_ms` ticks to refill whatever the rate: 1000 per second,
//! 3 per second and 1 per day are all exact, and nothing is rounded until
//! the reply. The key's expiry is the instant the bucket is full, rounded up
//! to the millisecond; the few ticks it was rounded by are the stored value.

use super::layout::{Encoded, Layout};
use super::{
    div_ceil, div_floor, narrow, wide_mul, Algorithm, Decision, Kind, Outcome, Quota, BURST,
    MAX_PERIOD_S,
};
use crate::decimal::parse_padded_u64;
use crate::error::Error;

/// A token bucket: its quota refills it, `burst` is its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    quota: Quota,
    burst: u64,
}

/// The longest a bucket may take to refill completely: as long as the
/// longest period, so every state fits a key's expiry.
const MAX_REFILL_MS: u64 = MAX_PERIOD_S * 1000;

impl TokenBucket {
    /// A bucket of `burst` tokens (within [`BURST`]) refilled by `quota`,
    /// refused when a refill would take longer than the longest period.
    pub fn with_burst(quota: Quota, burst: u64) -> Result<TokenBucket, Error> {
        let burst = BURST.check(burst)?;
        // refill time = burst × period / limit <= MAX_REFILL_MS
        if wide_mul(burst, quota.period_ms()) > wide_mul(MAX_REFILL_MS, quota.limit()) {
            return Err(Error::BurstTooLarge);
        }
        Ok(TokenBucket { quota, burst })
    }
}

impl Kind for TokenBucket {
    const NAME: &'static str = "TOKEN";
    const CHOSEN_BY: &'static str = "ALGORITHM TOKEN";
    type State = Stored;
}

impl Algorithm for TokenBucket {
    /// Without `BURST`, the bucket holds one period's worth.
    fn new(quota: Quota, burst: Option<u64>) -> Result<Self, Error> {
        TokenBucket::with_burst(quota, burst.unwrap_or(quota.limit()))
    }

    fn check(&self, stored: Option<Stored>, cost: u64, now_ms: u64) -> Outcome<Stored> {
        check(stored, *self, cost, now_ms)
    }

    fn capacity(&self) -> u64 {
        self.burst
    }

    fn parameters(&self) -> (Quota, Option<u64>) {
        (self.quota, Some(self.burst))
    }

    /// Takes `units` tokens, down to an empty bucket and no further: a
    /// bucket keeps no debt beyond empty (CHECK reads a longer refill as a
    /// bucket emptied under other parameters).
    fn force(&self, stored: Option<Stored>, units: u64, now_ms: u64) -> Option<Stored> {
        if units == 0 {
            return None;
        }
        let ticks = Ticks::of(*self, now_ms);
        let (full_at, _) = ticks.full_at(stored);
        let taken = full_at.saturating_add(wide_mul(units, self.quota.period_ms()));
        Some(ticks.stored(taken.min(ticks.now.saturating_add(ticks.capacity))))
    }

    /// Gives back `units` tokens, up to a full bucket; when they were taken
    /// does not matter.
    fn refund(
        &self,
        stored: Option<Stored>,
        units: u64,
        _charged_at_ms: u64,
        now_ms: u64,
    ) -> Option<Stored> {
        stored?;
        let ticks = Ticks::of(*self, now_ms);
        let (full_at, fix_expiry) = ticks.full_at(stored);
        let given_back = full_at
            .saturating_sub(wide_mul(units, self.quota.period_ms()))
            .max(ticks.now);
        (given_back < full_at || fix_expiry).then(|| ticks.stored(given_back))
    }
}

/// A bucket's time in ticks of `1 / limit` ms at one instant.
struct Ticks {
    per_ms: u128,
    capacity: u128,
    now: u128,
    limit: u64,
}

impl Ticks {
    fn of(bucket: TokenBucket, now_ms: u64) -> Ticks {
        Ticks {
            per_ms: u128::from(bucket.quota.limit()),
            capacity: wide_mul(bucket.burst, bucket.quota.period_ms()),
            now: wide_mul(now_ms, bucket.quota.limit()),
            limit: bucket.quota.limit(),
        }
    }

    /// When the bucket `stored` is full again, never before now, and never
    /// later than a whole refill from now: a bucket emptied under slower or
    /// larger parameters is only empty under these. With it, whether the
    /// stored time was later than that (so a request that counts must store
    /// the clamped one).
    fn full_at(&self, stored: Option<Stored>) -> (u128, bool) {
        let full_at_stored = stored
            .and_then(|s| {
                let full_at_ms = s.full_at_ms?;
                let early = u128::from(s.early_ticks).min(self.per_ms.saturating_sub(1));
                Some(wide_mul(full_at_ms, self.limit).saturating_sub(early))
            })
            .unwrap_or(self.now)
            .max(self.now);
        let full_bound = self.now.saturating_add(self.capacity);
        (full_at_stored.min(full_bound), full_at_stored > full_bound)
    }

    /// The state of a bucket full at `full_at` ticks.
    fn stored(&self, full_at: u128) -> Stored {
        let full_at_ms = div_ceil(full_at, self.per_ms);
        Stored {
            full_at_ms: Some(narrow(full_at_ms)),
            early_ticks: narrow(
                full_at_ms
                    .saturating_mul(self.per_ms)
                    .saturating_sub(full_at),
            ),
        }
    }
}

/// What a key holds: when the bucket will be full again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The instant the bucket is full again, rounded up to the millisecond
    /// (absolute UNIX ms): the key's expiry. `None` when the key has no
    /// expiry, which is read as a full bucket.
    pub full_at_ms: Option<u64>,
    /// How many ticks of `1 / limit` ms before `full_at_ms` the bucket is
    /// really full (below `limit`).
    pub early_ticks: u64,
}

/// `T<ticks>`, the ticks zero-padded to the width of the value replaced.
impl Layout for Stored {
    fn decode(value: &[u8], expires_at_ms: Option<u64>) -> Option<Self> {
        Some(Self {
            early_ticks: parse_padded_u64(value.strip_prefix(b"T")?)?,
            full_at_ms: expires_at_ms,
        })
    }

    fn encode(&self, out: &mut Encoded, replaced_len: usize) -> Option<()> {
        out.push(b"T")?;
        out.push_padded(self.early_ticks, replaced_len.saturating_sub(1))
    }

    fn expires_at_ms(&self) -> Option<u64> {
        self.full_at_ms
    }
}

/// Decides a request of `cost` tokens at `now_ms` against the state a key
/// holds (`None` for a missing key: a full bucket). A cost of 0 only looks.
/// A bucket that would take longer than a whole refill to be full (the rate
/// or the burst was lowered) is taken as empty, and the first request that
/// counts stores that.
pub fn check(
    stored: Option<Stored>,
    bucket: TokenBucket,
    cost: u64,
    now_ms: u64,
) -> Outcome<Stored> {
    let ticks = Ticks::of(bucket, now_ms);
    let (ticks_per_ms, capacity, now) = (ticks.per_ms, ticks.capacity, ticks.now);
    let (full_at, fix_expiry) = ticks.full_at(stored);
    let token = u128::from(bucket.quota.period_ms());
    let asked = wide_mul(cost, bucket.quota.period_ms());
    let fits = full_at.saturating_sub(now).saturating_add(asked) <= capacity;
    let full_at_after = if fits {
        full_at.saturating_add(asked)
    } else {
        full_at
    };

    // A request that counts stores a clamped refill time, admitted or not.
    let store = (cost > 0 && (fits || fix_expiry)).then(|| ticks.stored(full_at_after));
    let retry_after_ms = if fits || cost > bucket.burst {
        None
    } else {
        // The first millisecond t with full_at + asked − t <= capacity.
        let admitting_ms = div_ceil(
            full_at.saturating_add(asked).saturating_sub(capacity),
            ticks_per_ms,
        );
        Some(narrow(admitting_ms).saturating_sub(now_ms))
    };
    let debt = full_at_after.saturating_sub(now);
    Outcome {
        decision: Decision {
            allowed: fits,
            remaining: narrow(div_floor(capacity.saturating_sub(debt), token)),
            limit: bucket.quota.limit(),
            retry_after_ms,
            reset_after_ms: narrow(div_ceil(debt, ticks_per_ms)),
        },
        store,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::testing::{common_properties, expected, replay};
    use proptest::prelude::*;

    fn bucket(limit: u64, period_s: u64, burst: u64) -> TokenBucket {
        TokenBucket::with_burst(Quota::new(limit, period_s).unwrap(), burst).unwrap()
    }

    #[test]
    fn the_state_is_the_early_ticks_after_a_tag_at_a_kept_width() {
        use crate::limiter::layout::testing::round_trip;
        round_trip(
            Stored {
                full_at_ms: Some(10_334),
                early_ticks: 2,
            },
            b"T2",
        );
        let token = Stored {
            full_at_ms: Some(1),
            early_ticks: 7,
        };
        let mut out = Encoded::new();
        token.encode(&mut out, 5).unwrap();
        assert_eq!(out.as_bytes(), b"T0007");
        assert_eq!(Stored::decode(b"T0007", Some(1)), Some(token));
        let mut out = Encoded::new();
        token.encode(&mut out, 1).unwrap();
        assert_eq!(out.as_bytes(), b"T7");
        for foreign in [&b"T"[..], b"T-1", b"T+1", b"t1", b"5", b"S1:2"] {
            assert_eq!(Stored::decode(foreign, None), None, "{foreign:?}");
        }
    }

    fn stored(full_at_ms: u64, early_ticks: u64) -> Option<Stored> {
        Some(Stored {
            full_at_ms: Some(full_at_ms),
            early_ticks,
        })
    }

    struct Row {
        stored: Option<Stored>,
        limit: u64,
        period_s: u64,
        burst: u64,
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
            // 0: a full bucket of 5, 1 token per second: one token taken, full again in 1 s
            Row { stored: None, limit: 1, period_s: 1, burst: 5, cost: 1, now_ms: 10_000, allowed: true, remaining: 4, retry_after_ms: None, reset_after_ms: 1_000, store: stored(11_000, 0) },
            // 1: four more at once: empty, full again in 5 s
            Row { stored: stored(11_000, 0), limit: 1, period_s: 1, burst: 5, cost: 4, now_ms: 10_000, allowed: true, remaining: 0, retry_after_ms: None, reset_after_ms: 5_000, store: stored(15_000, 0) },
            // 2: empty: the next token comes in 1 s
            Row { stored: stored(15_000, 0), limit: 1, period_s: 1, burst: 5, cost: 1, now_ms: 10_000, allowed: false, remaining: 0, retry_after_ms: Some(1_000), reset_after_ms: 5_000, store: None },
            // 3: 2.5 s later two tokens are back
            Row { stored: stored(15_000, 0), limit: 1, period_s: 1, burst: 5, cost: 0, now_ms: 12_500, allowed: true, remaining: 2, retry_after_ms: None, reset_after_ms: 2_500, store: None },
            // 4: a cost of 3 waits until the third token, 0.5 s on
            Row { stored: stored(15_000, 0), limit: 1, period_s: 1, burst: 5, cost: 3, now_ms: 12_500, allowed: false, remaining: 2, retry_after_ms: Some(500), reset_after_ms: 2_500, store: None },
            // 5: a cost above the burst never fits
            Row { stored: None, limit: 1, period_s: 1, burst: 5, cost: 6, now_ms: 10_000, allowed: false, remaining: 5, retry_after_ms: None, reset_after_ms: 0, store: None },
            // 6: 3 per second: one token is 333.33 ms, kept exactly as ticks of 1/3 ms
            Row { stored: None, limit: 3, period_s: 1, burst: 3, cost: 1, now_ms: 10_000, allowed: true, remaining: 2, retry_after_ms: None, reset_after_ms: 334, store: stored(10_334, 2) },
            // 7: a second one: full at 10 666.67 ms
            Row { stored: stored(10_334, 2), limit: 3, period_s: 1, burst: 3, cost: 1, now_ms: 10_000, allowed: true, remaining: 1, retry_after_ms: None, reset_after_ms: 667, store: stored(10_667, 1) },
            // 8: three at once empty the bucket: full at exactly 11 000
            Row { stored: None, limit: 3, period_s: 1, burst: 3, cost: 3, now_ms: 10_000, allowed: true, remaining: 0, retry_after_ms: None, reset_after_ms: 1_000, store: stored(11_000, 0) },
            // 9: ...and one token is back at 10 333.33, so at 10 334 ms
            Row { stored: stored(11_000, 0), limit: 3, period_s: 1, burst: 3, cost: 1, now_ms: 10_000, allowed: false, remaining: 0, retry_after_ms: Some(334), reset_after_ms: 1_000, store: None },
            // 10: a bucket that filled up long ago is full
            Row { stored: stored(5_000, 0), limit: 1, period_s: 1, burst: 5, cost: 0, now_ms: 10_000, allowed: true, remaining: 5, retry_after_ms: None, reset_after_ms: 0, store: None },
            // 11: 1 per day, burst 1
            Row { stored: None, limit: 1, period_s: 86_400, burst: 1, cost: 1, now_ms: 10_000, allowed: true, remaining: 0, retry_after_ms: None, reset_after_ms: 86_400_000, store: stored(86_410_000, 0) },
            // 12: burst larger than the limit: 10 at once, refilled at 2 per second
            Row { stored: None, limit: 2, period_s: 1, burst: 10, cost: 10, now_ms: 0, allowed: true, remaining: 0, retry_after_ms: None, reset_after_ms: 5_000, store: stored(5_000, 0) },
            // 13: no expiry is a full bucket
            Row { stored: Some(Stored { full_at_ms: None, early_ticks: 0 }), limit: 1, period_s: 1, burst: 2, cost: 0, now_ms: 0, allowed: true, remaining: 2, retry_after_ms: None, reset_after_ms: 0, store: None },
            // 14: emptied under a slower rate (full in 100 s): empty under 1 per second, burst 5
            Row { stored: stored(110_000, 0), limit: 1, period_s: 1, burst: 5, cost: 1, now_ms: 10_000, allowed: false, remaining: 0, retry_after_ms: Some(1_000), reset_after_ms: 5_000, store: stored(15_000, 0) },
            // 15: ... a look sees it so and stores nothing
            Row { stored: stored(110_000, 0), limit: 1, period_s: 1, burst: 5, cost: 0, now_ms: 10_000, allowed: true, remaining: 0, retry_after_ms: None, reset_after_ms: 5_000, store: None },
        ];
        for (i, row) in rows.iter().enumerate() {
            let b = bucket(row.limit, row.period_s, row.burst);
            let outcome = check(row.stored, b, row.cost, row.now_ms);
            let expected = expected(
                (row.allowed, row.remaining, row.limit),
                (row.retry_after_ms, row.reset_after_ms),
                row.store,
            );
            assert_eq!(outcome, expected, "row {i}");
        }
    }

    #[test]
    fn refuses_buckets_that_cannot_be_stored() {
        use crate::limiter::MAX_LIMIT;
        let quota = Quota::new(1, MAX_PERIOD_S).unwrap();
        assert!(TokenBucket::with_burst(quota, 1).is_ok());
        assert_eq!(TokenBucket::with_burst(quota, 2), Err(Error::BurstTooLarge));
        assert_eq!(TokenBucket::with_burst(quota, 0), Err(Error::InvalidBurst));
        let fast = Quota::new(MAX_LIMIT, 1).unwrap();
        assert!(TokenBucket::with_burst(fast, MAX_LIMIT).is_ok());
        assert_eq!(
            TokenBucket::with_burst(fast, MAX_LIMIT + 1),
            Err(Error::InvalidBurst)
        );
        assert_eq!(TokenBucket::new(fast, None).unwrap().burst, MAX_LIMIT);
    }

    #[test]
    fn the_largest_arguments_do_not_overflow() {
        use crate::limiter::MAX_LIMIT;
        let b = TokenBucket::with_burst(Quota::new(MAX_LIMIT, MAX_PERIOD_S).unwrap(), MAX_LIMIT)
            .unwrap();
        let now_ms = u64::MAX / 4;
        let first = check(None, b, MAX_LIMIT, now_ms);
        assert!(first.decision.allowed);
        let second = check(first.store, b, 1, now_ms);
        assert!(!second.decision.allowed);
        let odd = check(
            Some(Stored {
                full_at_ms: Some(u64::MAX),
                early_ticks: u64::MAX,
            }),
            b,
            1,
            u64::MAX,
        );
        assert!(odd.decision.allowed);
    }

    fn requests() -> impl Strategy<Value = Vec<(u64, u64)>> {
        prop::collection::vec((0u64..1_500, 0u64..5), 1..150)
    }

    proptest! {
        #[test]
        fn admits_at_most_burst_plus_the_refill_over_any_interval(
            limit in 1u64..8, period_s in 1u64..3, burst in 1u64..8, reqs in requests()
        ) {
            let b = bucket(limit, period_s, burst);
            let period_ms = period_s * 1000;
            let admitted: Vec<(u64, u64)> = replay(1_000_000, &reqs, |state, cost, now_ms| check(state, b, cost, now_ms))
                .into_iter()
                .filter(|(_, cost, _, o)| o.decision.allowed && *cost > 0)
                .map(|(t, cost, _, _)| (t, cost))
                .collect();
            // Over [t_i, t_j], at most burst + limit × (t_j - t_i) / period.
            for i in 0..admitted.len() {
                let mut sum = 0u128;
                for j in i..admitted.len() {
                    sum += admitted[j].1 as u128;
                    let span = (admitted[j].0 - admitted[i].0) as u128;
                    // sum × period <= burst × period + limit × span
                    prop_assert!(
                        sum * period_ms as u128 <= burst as u128 * period_ms as u128 + limit as u128 * span,
                        "{sum} admitted in {span} ms"
                    );
                }
            }
        }

        #[test]
        fn retry_and_remaining_are_exact(
            limit in 1u64..8, period_s in 1u64..3, burst in 1u64..8, reqs in requests()
        ) {
            common_properties(bucket(limit, period_s, burst), 1_000_000, &reqs)?;
        }

        #[test]
        fn the_key_expires_when_the_bucket_is_full(
            limit in 1u64..8, period_s in 1u64..3, burst in 1u64..8, reqs in requests()
        ) {
            let b = bucket(limit, period_s, burst);
            for (now_ms, _, _, outcome) in replay(1_000_000, &reqs, |state, cost, now_ms| check(state, b, cost, now_ms)) {
                let Some(state) = outcome.store else { continue };
                let reset_ms = outcome.decision.reset_after_ms;
                prop_assert_eq!(state.full_at_ms, Some(now_ms + reset_ms));
                prop_assert!(check(Some(state), b, 0, now_ms + reset_ms - 1).decision.remaining < burst);
                prop_assert_eq!(check(Some(state), b, 0, now_ms + reset_ms).decision.remaining, burst);
            }
        }
    }
}
