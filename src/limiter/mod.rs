//! Pure rate-limiting algorithms.
//!
//! Nothing in here touches Redis or reads a clock: every function takes the
//! previous state, the quota, the current time and the cost of the request,
//! and returns a [`Decision`] together with the state to store (if any). The
//! commands read the state from the key, call one of these functions and write
//! back what it returns, which keeps the arithmetic testable without a server.

pub mod fixed_window;
pub mod gcra;
pub mod sliding_window;
pub mod token_bucket;

#[cfg(test)]
pub(crate) mod testing {
    //! What the algorithms' tests share.

    use super::{Decision, Outcome};

    /// The outcome a table row expects.
    pub fn expected<S>(
        (allowed, remaining, limit): (bool, u64, u64),
        (retry_after_ms, reset_after_ms): (Option<u64>, u64),
        store: Option<S>,
    ) -> Outcome<S> {
        Outcome {
            decision: Decision {
                allowed,
                remaining,
                limit,
                retry_after_ms,
                reset_after_ms,
            },
            store,
        }
    }

    /// One step of a replay: its time, its cost, the state it met, its
    /// outcome.
    pub type Step<S, D> = (u64, u64, Option<S>, Outcome<S, D>);

    /// Replays `requests` (wait `.0` ms, then ask `.1` units) on one key from
    /// `start_ms`, keeping what each outcome asks to store, as the store
    /// does.
    pub fn replay<S: Copy, D: Copy>(
        start_ms: u64,
        requests: &[(u64, u64)],
        decide: impl Fn(Option<S>, u64, u64) -> Outcome<S, D>,
    ) -> Vec<Step<S, D>> {
        let mut state = None;
        let mut now_ms = start_ms;
        let mut log = Vec::new();
        for &(wait_ms, cost) in requests {
            now_ms += wait_ms;
            let outcome = decide(state, cost, now_ms);
            log.push((now_ms, cost, state, outcome));
            if outcome.store.is_some() {
                state = outcome.store;
            }
        }
        log
    }
}

/// Largest accepted `limit` (and `cost`): 10^15.
///
/// Counts stay far below `i64::MAX`, so a stored counter can always take one
/// more admitted cost without overflowing, and every reply integer is exact
/// in clients whose numbers are IEEE doubles (JavaScript: 2^53 ≈ 9·10^15).
pub const MAX_LIMIT: u64 = 1_000_000_000_000_000;

/// Largest accepted `cost`, the same bound as [`MAX_LIMIT`].
pub const MAX_COST: u64 = MAX_LIMIT;

/// Largest accepted `period`, in seconds: 10^9 s, about 31.7 years.
pub const MAX_PERIOD_S: u64 = 1_000_000_000;

/// `a × b`, exact: the product of two `u64` always fits a `u128`.
fn wide_mul(a: u64, b: u64) -> u128 {
    u128::from(a).saturating_mul(u128::from(b))
}

/// `a / b` rounded down. Divisors here are limits and periods, never 0; a 0
/// would give 0 rather than a panic.
fn div_floor(a: u128, b: u128) -> u128 {
    a.checked_div(b).unwrap_or(0)
}

/// `a / b` rounded up (0 for `b == 0`, as [`div_floor`]).
fn div_ceil(a: u128, b: u128) -> u128 {
    let quotient = div_floor(a, b);
    if a.checked_rem(b).unwrap_or(0) > 0 {
        quotient.saturating_add(1)
    } else {
        quotient
    }
}

/// Narrows a value that the argument bounds keep within `u64`.
fn narrow(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// How many units a key may admit per period.
///
/// Only valid quotas can be built, so the algorithms never see a zero limit,
/// a zero period or values large enough to overflow their arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    limit: u64,
    period_ms: u64,
}

impl Quota {
    /// A quota of `limit` units per `period_s` seconds, or `None` when either
    /// is zero or above [`MAX_LIMIT`] / [`MAX_PERIOD_S`].
    pub fn new(limit: u64, period_s: u64) -> Option<Quota> {
        if !(1..=MAX_LIMIT).contains(&limit) || !(1..=MAX_PERIOD_S).contains(&period_s) {
            return None;
        }
        Some(Quota {
            limit,
            period_ms: period_s.checked_mul(1000)?,
        })
    }

    /// Units admitted per period.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Length of the period in milliseconds.
    pub fn period_ms(&self) -> u64 {
        self.period_ms
    }
}

/// The result of deciding one request: what to reply, and what to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<S, D = Decision> {
    /// What to reply.
    pub decision: D,
    /// The state the key must hold afterwards, or `None` when it stays as it is.
    pub store: Option<S>,
}

/// The answer to one request. Being denied is a normal outcome, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request was admitted (and, for a check, counted).
    pub allowed: bool,
    /// Units still admissible in the current window after this request.
    pub remaining: u64,
    /// The limit that was applied.
    pub limit: u64,
    /// Milliseconds until the same request would be admitted; `None` when it
    /// was admitted, or when its cost can never fit.
    pub retry_after_ms: Option<u64>,
    /// Milliseconds until the window is empty again; 0 when there is none.
    pub reset_after_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_rejects_out_of_range_values() {
        assert!(Quota::new(0, 1).is_none());
        assert!(Quota::new(1, 0).is_none());
        assert!(Quota::new(MAX_LIMIT + 1, 1).is_none());
        assert!(Quota::new(1, MAX_PERIOD_S + 1).is_none());
        let q = Quota::new(MAX_LIMIT, MAX_PERIOD_S).unwrap();
        assert_eq!(q.limit(), MAX_LIMIT);
        assert_eq!(q.period_ms(), MAX_PERIOD_S * 1000);
    }
}
