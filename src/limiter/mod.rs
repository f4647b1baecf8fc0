//! Pure rate-limiting algorithms, and the one list of them.
//!
//! Nothing in here touches Redis or reads a clock: every algorithm takes the
//! previous state, its parameters, the current time and the cost of the
//! request, and returns a [`Decision`] together with the state to store (if
//! any). The commands read the state from the key, call the algorithm and
//! write back what it returns, which keeps the arithmetic testable without a
//! server.
//!
//! Each algorithm is one file here that declares everything about itself:
//! its name ([`Kind::NAME`]), its state and how that state is written in a key
//! ([`Layout`]), how its parameters are built and checked
//! ([`Algorithm::new`]) and its decision ([`Algorithm::check`]). The list at
//! the bottom of this file ([`kinds!`]) names them all; CHECK's and PEEK's
//! dispatch, RESET's notion of limiter state, the `ALGORITHM` choices in
//! `COMMAND DOCS`, the INFO counters and the error texts that list names are
//! all derived from it.
//!
//! The state layouts, one tagged string each, whose expiry is the moment the
//! state stops mattering:
//!
//! | kind | value | expiry |
//! | --- | --- | --- |
//! | `FIXED` | `<count>`, as INCR writes it | end of the window |
//! | `SLIDING` | `S<previous>:<current>` | end of the window after the counts' window |
//! | `TOKEN` | `T<ticks>`: ticks of 1/limit ms before the expiry at which the bucket is full | when the bucket is full again, rounded up to the ms |
//! | `THROTTLE` | `G<ns>`: nanoseconds before the expiry at which the bucket is full | the theoretical arrival time, rounded up to the ms |
//!
//! Concurrency leases ([`leases`]) are not a string: their key is a sorted
//! set, member = lease id, score = its deadline in UNIX ms, expiring with
//! its last lease.

pub mod all_of;
pub mod fixed_window;
pub mod gcra;
pub mod holds;
pub mod layout;
pub mod leases;
pub mod sliding_window;
pub mod token_bucket;

pub use layout::{Encoded, Layout};

pub use crate::args::Bound;
use crate::error::Error;
pub use fixed_window::FixedWindow;
pub use sliding_window::SlidingWindow;
pub use token_bucket::TokenBucket;

/// One kind of limiter state a key can hold.
pub trait Kind {
    /// Its name: the keyword after `ALGORITHM`, in upper case; in lower case,
    /// the prefix of its INFO counters.
    const NAME: &'static str;
    /// How a request reaches it, for the error that meets its key elsewhere.
    const CHOSEN_BY: &'static str;
    /// What a key of this kind holds.
    type State: Layout;
}

/// A kind that RATELIMIT.CHECK and PEEK can choose with `ALGORITHM`. The
/// value is the algorithm with its parameters, valid by construction.
pub trait Algorithm: Kind + Registered + Copy {
    /// The algorithm for CHECK's `limit`, `period` and `BURST`.
    fn new(quota: Quota, burst: Option<u64>) -> Result<Self, Error>;

    /// Decides a request of `cost` units at `now_ms` against the state a key
    /// holds (`None` for a missing key). A cost of 0 only looks.
    fn check(&self, stored: Option<Self::State>, cost: u64, now_ms: u64) -> Outcome<Self::State>;

    /// What [`Algorithm::check`] would answer for `cost`, storing nothing:
    /// whether it would pass and when, with `remaining` and
    /// `reset_after_ms` of the state as it is (nothing deducted).
    fn peek(&self, stored: Option<Self::State>, cost: u64, now_ms: u64) -> Decision {
        let asked = self.check(stored, cost, now_ms).decision;
        looked(asked, self.check(stored, 0, now_ms).decision)
    }

    /// The most one request can ever take: the limit of a window, the
    /// burst of a bucket. A held estimate is a share of it.
    fn capacity(&self) -> u64;

    /// The parameters it was made from: the quota and, for a bucket, its
    /// burst ([`Algorithm::new`] of these gives it back).
    fn parameters(&self) -> (Quota, Option<u64>);

    /// The state after `units` more are taken at `now_ms` whatever the
    /// limit says (a settled cost beyond its estimate: a debt); `None` when
    /// nothing changes. Counts stop at [`MAX_COUNT`].
    fn force(&self, stored: Option<Self::State>, units: u64, now_ms: u64) -> Option<Self::State>;

    /// The state after `units` charged at `charged_at_ms` are given back at
    /// `now_ms` (a settled cost below its estimate, or a hold that
    /// expired), as far as the state still holds them; `None` when nothing
    /// changes. A state whose expiry is `now_ms` or earlier is the empty
    /// state: the key is deleted.
    fn refund(
        &self,
        stored: Option<Self::State>,
        units: u64,
        charged_at_ms: u64,
        now_ms: u64,
    ) -> Option<Self::State>;
}

/// A look, from the decision of a check of the cost (`asked`) and of a
/// check of nothing (`as_is`): whether and when the request would pass,
/// with `remaining` and `reset_after_ms` of the state as it is. This is
/// what every read-only command (PEEK, MPEEK) replies for a limit.
pub fn looked(asked: Decision, as_is: Decision) -> Decision {
    Decision {
        remaining: as_is.remaining,
        reset_after_ms: as_is.reset_after_ms,
        ..asked
    }
}

/// A kind's place in the list; implemented by [`kinds!`] only.
pub trait Registered {
    /// Its entry.
    const ID: Id;
}

/// Work to do with whichever algorithm a request chose: [`Chosen::visit`]
/// calls [`Visit::visit`] with that algorithm's own type.
pub trait Visit {
    /// What the work gives back.
    type Output;
    /// Does the work with algorithm `A`.
    fn visit<A: Algorithm>(self, algorithm: A) -> Self::Output;
}

/// Declares the list of kinds: `Id` (every kind) and `Chosen` (an algorithm
/// CHECK can choose, with its parameters), and everything derived from the
/// list. Algorithms first, in the order they are listed to users; then the
/// kinds other commands keep.
macro_rules! kinds {
    (
        algorithms { $($alg:ident => $alg_ty:ty,)+ }
        others { $($other:ident => $other_ty:ty,)* }
    ) => {
        /// Every kind of limiter state, in the order users see them listed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Id {
            $(#[doc = concat!("[`", stringify!($alg_ty), "`]")] $alg,)+
            $(#[doc = concat!("[`", stringify!($other_ty), "`]")] $other,)*
        }

        impl Id {
            /// Every kind.
            pub const ALL: &'static [Id] = &[$(Id::$alg,)+ $(Id::$other,)*];

            /// Its name ([`Kind::NAME`]).
            pub fn name(self) -> &'static str {
                match self {
                    $(Id::$alg => <$alg_ty as Kind>::NAME,)+
                    $(Id::$other => <$other_ty as Kind>::NAME,)*
                }
            }

            /// How a request reaches it ([`Kind::CHOSEN_BY`]).
            pub fn chosen_by(self) -> &'static str {
                match self {
                    $(Id::$alg => <$alg_ty as Kind>::CHOSEN_BY,)+
                    $(Id::$other => <$other_ty as Kind>::CHOSEN_BY,)*
                }
            }

            /// Whether `value` is a state of this kind.
            pub fn is_state(self, value: &[u8]) -> bool {
                match self {
                    $(Id::$alg => <<$alg_ty as Kind>::State as Layout>::decode(value, None).is_some(),)+
                    $(Id::$other => <<$other_ty as Kind>::State as Layout>::decode(value, None).is_some(),)*
                }
            }
        }

        $(impl Registered for $alg_ty { const ID: Id = Id::$alg; })+
        $(impl Registered for $other_ty { const ID: Id = Id::$other; })*

        /// The algorithm a CHECK or PEEK chose, with its parameters.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Chosen {
            $(#[doc = concat!("[`", stringify!($alg_ty), "`]")] $alg($alg_ty),)+
        }

        impl Chosen {
            /// The names `ALGORITHM` takes.
            pub const NAMES: &'static [&'static str] = &[$(<$alg_ty as Kind>::NAME,)+];

            /// The error for a name `ALGORITHM` does not take.
            pub const UNKNOWN_NAME: Error = Error::InvalidAlgorithm(Chosen::NAMES);

            /// The algorithm named `name` (any case), if CHECK can choose it.
            pub fn named(name: &[u8]) -> Option<Id> {
                $(if name.eq_ignore_ascii_case(<$alg_ty as Kind>::NAME.as_bytes()) {
                    return Some(Id::$alg);
                })+
                None
            }

            /// Algorithm `id` with CHECK's parameters.
            pub fn new(id: Id, quota: Quota, burst: Option<u64>) -> Result<Chosen, Error> {
                match id {
                    $(Id::$alg => Ok(Chosen::$alg(<$alg_ty as Algorithm>::new(quota, burst)?)),)+
                    #[allow(unreachable_patterns)]
                    _ => Err(Chosen::UNKNOWN_NAME),
                }
            }

            /// Its entry in the list.
            pub fn id(&self) -> Id {
                match self {
                    $(Chosen::$alg(_) => Id::$alg,)+
                }
            }

            /// Does `work` with the chosen algorithm: the one place that
            /// turns the choice into a type.
            pub fn visit<V: Visit>(&self, work: V) -> V::Output {
                match *self {
                    $(Chosen::$alg(algorithm) => work.visit(algorithm),)+
                }
            }
        }
    };
}

// The list. Adding an algorithm: a new file in this folder implementing
// `Kind`, `Layout` for its state and `Algorithm`, and one line here.
kinds! {
    algorithms {
        Fixed => fixed_window::FixedWindow,
        Sliding => sliding_window::SlidingWindow,
        Token => token_bucket::TokenBucket,
    }
    others {
        Throttle => gcra::Throttle,
    }
}

impl Id {
    /// Its index in [`Id::ALL`], e.g. for a table of counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The kind whose state `value` is, if any (layouts never overlap).
    pub fn of_value(value: &[u8]) -> Option<Id> {
        Id::ALL.iter().copied().find(|id| id.is_state(value))
    }

    /// The error for a key that holds this kind's state when a command
    /// asked for `wanted`'s.
    pub fn wrong_kind(self, wanted: Id) -> Error {
        Error::WrongKind {
            held: self.name(),
            wanted: wanted.name(),
            held_chosen_by: self.chosen_by(),
        }
    }
}

/// The quota of an algorithm that takes no `BURST`.
pub fn without_burst(quota: Quota, burst: Option<u64>) -> Result<Quota, Error> {
    match burst {
        Some(_) => Err(Error::BurstWithoutToken),
        None => Ok(quota),
    }
}

/// The algorithm CHECK uses without `ALGORITHM`.
pub const DEFAULT_ALGORITHM: Id = Id::Fixed;

/// Largest accepted `limit` (and `cost`): 10^15.
///
/// Counts stay far below `i64::MAX`, so a stored counter can always take one
/// more admitted cost without overflowing, and every reply integer is exact
/// in clients whose numbers are IEEE doubles (JavaScript: 2^53 ≈ 9·10^15).
pub const MAX_LIMIT: u64 = 1_000_000_000_000_000;

/// The largest count a window keeps: a debt (RATELIMIT.SETTLE charging
/// past the limit) stops here, 2^53 - 1, exact in every client and in the
/// script fallback's doubles.
pub const MAX_COUNT: u64 = (1 << 53) - 1;

/// Largest accepted `cost`, the same bound as [`MAX_LIMIT`].
pub const MAX_COST: u64 = MAX_LIMIT;

/// Largest accepted `period`, in seconds: 10^9 s, about 31.7 years.
pub const MAX_PERIOD_S: u64 = 1_000_000_000;

/// CHECK's `limit`.
pub const LIMIT: Bound = Bound {
    min: 1,
    max: MAX_LIMIT,
    error: Error::InvalidLimit,
};
/// CHECK's `period`, in seconds.
pub const PERIOD_S: Bound = Bound {
    min: 1,
    max: MAX_PERIOD_S,
    error: Error::InvalidPeriod,
};
/// CHECK's `COST`.
pub const COST: Bound = Bound {
    min: 0,
    max: MAX_COST,
    error: Error::InvalidCost,
};
/// CHECK's `BURST`.
pub const BURST: Bound = Bound {
    min: 1,
    max: MAX_LIMIT,
    error: Error::InvalidBurst,
};

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
    /// A quota of `limit` units per `period_s` seconds, within [`LIMIT`] and
    /// [`PERIOD_S`].
    pub fn new(limit: u64, period_s: u64) -> Result<Quota, Error> {
        let limit = LIMIT.check(limit)?;
        let period_s = PERIOD_S.check(period_s)?;
        Ok(Quota {
            limit,
            period_ms: period_s.saturating_mul(1000),
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

    /// The properties every algorithm CHECK can choose keeps, over a replay
    /// of `requests` from `start_ms`: a retry time is exactly the first
    /// instant the same request is admitted; a request is denied without one
    /// only when an empty limiter could not take it either; and once a state
    /// is stored, exactly `remaining` more units fit at that instant.
    pub fn common_properties<A: super::Algorithm>(
        algorithm: A,
        start_ms: u64,
        requests: &[(u64, u64)],
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        use proptest::{prop_assert, prop_assert_eq};
        let admits = |state, cost, at_ms| algorithm.check(state, cost, at_ms).decision.allowed;
        for (now_ms, cost, state, outcome) in replay(start_ms, requests, |state, cost, now_ms| {
            algorithm.check(state, cost, now_ms)
        }) {
            let decision = outcome.decision;
            if !decision.allowed {
                // A denied check deducts nothing: it says what a look says.
                prop_assert_eq!(decision, algorithm.peek(state, cost, now_ms));
            }
            match decision.retry_after_ms {
                Some(retry_ms) => {
                    prop_assert!(!decision.allowed);
                    prop_assert!(retry_ms >= 1);
                    prop_assert!(!admits(state, cost, now_ms + retry_ms - 1));
                    prop_assert!(admits(state, cost, now_ms + retry_ms));
                }
                None => prop_assert!(
                    decision.allowed || !admits(None, cost, now_ms),
                    "denied without a retry time, though an empty limiter admits {cost}"
                ),
            }
            if let Some(next) = outcome.store {
                let remaining = decision.remaining;
                if remaining > 0 {
                    prop_assert!(admits(Some(next), remaining, now_ms));
                }
                prop_assert!(!admits(Some(next), remaining + 1, now_ms));
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn text(error: Error) -> String {
        error.message().unwrap().as_str().to_string()
    }

    #[test]
    fn messages_state_the_bounds_in_force() {
        for bound in [LIMIT, PERIOD_S, COST, BURST] {
            assert!(text(bound.error).contains(&bound.max.to_string()));
        }
        assert!(text(Error::BurstTooLarge).contains(&MAX_PERIOD_S.to_string()));
        assert_eq!(
            text(Chosen::UNKNOWN_NAME),
            "ERR ALGORITHM must be FIXED, SLIDING or TOKEN"
        );
        assert_eq!(
            text(Id::Sliding.wrong_kind(Id::Fixed)),
            "WRONGTYPE the key holds SLIDING limiter state, not FIXED; \
             use ALGORITHM SLIDING or RATELIMIT.RESET it"
        );
    }

    #[test]
    fn quota_rejects_out_of_range_values() {
        assert_eq!(Quota::new(0, 1), Err(Error::InvalidLimit));
        assert_eq!(Quota::new(1, 0), Err(Error::InvalidPeriod));
        assert_eq!(Quota::new(MAX_LIMIT + 1, 1), Err(Error::InvalidLimit));
        assert_eq!(Quota::new(1, MAX_PERIOD_S + 1), Err(Error::InvalidPeriod));
        let q = Quota::new(MAX_LIMIT, MAX_PERIOD_S).unwrap();
        assert_eq!(q.limit(), MAX_LIMIT);
        assert_eq!(q.period_ms(), MAX_PERIOD_S * 1000);
    }

    /// A state written by each kind, as its first admitted request leaves it.
    fn sample_states() -> Vec<(Id, Vec<u8>)> {
        use layout::testing::encode;
        let quota = Quota::new(5, 60).unwrap();
        let now_ms = 1_700_000_000_000;
        Id::ALL
            .iter()
            .map(|&id| {
                let value = match id {
                    Id::Throttle => {
                        let throttle = gcra::Throttle::new(4, 5, 60).unwrap();
                        encode(gcra::check(None, throttle, 1, now_ms).store.unwrap())
                    }
                    _ => {
                        struct Encode(u64);
                        impl Visit for Encode {
                            type Output = Vec<u8>;
                            fn visit<A: Algorithm>(self, a: A) -> Vec<u8> {
                                encode(a.check(None, 1, self.0).store.unwrap())
                            }
                        }
                        Chosen::new(id, quota, None).unwrap().visit(Encode(now_ms))
                    }
                };
                (id, value)
            })
            .collect()
    }

    #[test]
    fn every_kind_recognises_its_own_state_and_no_other() {
        for (id, value) in sample_states() {
            for &other in Id::ALL {
                assert_eq!(other.is_state(&value), other == id, "{id:?} {value:?}");
            }
            assert_eq!(Id::of_value(&value), Some(id));
        }
    }

    #[test]
    fn every_algorithm_can_be_chosen_by_name_in_any_case() {
        let quota = Quota::new(5, 60).unwrap();
        for &name in Chosen::NAMES {
            let id = Chosen::named(name.to_lowercase().as_bytes()).unwrap();
            assert_eq!(id.name(), name);
            assert_eq!(Chosen::new(id, quota, None).unwrap().id(), id);
            assert!(id.chosen_by().contains(name));
        }
        assert_eq!(Chosen::named(b"THROTTLE"), None);
        assert_eq!(Chosen::named(b"LEAKY"), None);
        assert_eq!(
            Chosen::new(Id::Throttle, quota, None),
            Err(Chosen::UNKNOWN_NAME)
        );
    }

    #[test]
    fn names_are_distinct_and_the_default_is_listed() {
        let names: std::collections::BTreeSet<_> = Id::ALL.iter().map(|id| id.name()).collect();
        assert_eq!(names.len(), Id::ALL.len());
        assert!(Chosen::NAMES.contains(&DEFAULT_ALGORITHM.name()));
        for (i, id) in Id::ALL.iter().enumerate() {
            assert_eq!(id.index(), i);
            // tests/registry.rs reads the names off the list's variants.
            assert_eq!(format!("{id:?}").to_uppercase(), id.name());
        }
    }

    mod changed_parameters {
        //! State made under some parameters never outlives the parameters
        //! in force: a shortened period or a lowered rate takes effect within
        //! one of its own bounds.

        use super::super::*;
        use proptest::prelude::*;

        /// Fills a key under `old`, then asks under `new` at `switch_ms`
        /// (storing what that asks to store), and says whether a request
        /// of 1 is admitted `after_ms` later.
        struct Replay {
            old_requests: Vec<(u64, u64)>,
            switch_ms: u64,
            after_ms: u64,
        }

        impl Replay {
            fn admits<A: Algorithm>(&self, old: A, new: A) -> bool {
                let mut state = None;
                let mut now_ms = 1_000_000;
                for &(wait_ms, cost) in &self.old_requests {
                    now_ms += wait_ms;
                    if let Some(next) = old.check(state, cost, now_ms).store {
                        state = Some(next);
                    }
                }
                now_ms += self.switch_ms;
                if let Some(next) = new.check(state, 1, now_ms).store {
                    state = Some(next);
                }
                new.check(state, 1, now_ms + self.after_ms).decision.allowed
            }
        }

        fn old_requests() -> impl Strategy<Value = Vec<(u64, u64)>> {
            prop::collection::vec((0u64..5_000, 0u64..50), 1..40)
        }

        proptest! {
            #[test]
            fn a_shorter_period_ends_a_fixed_window_within_the_new_period(
                reqs in old_requests(), limit in 1u64..50, old_s in 2u64..10_000, new_s in 1u64..4, switch_ms in 0u64..5_000,
            ) {
                let old = FixedWindow::new(Quota::new(limit, old_s).unwrap(), None).unwrap();
                let new = FixedWindow::new(Quota::new(limit, new_s).unwrap(), None).unwrap();
                let replay = Replay { old_requests: reqs, switch_ms, after_ms: new_s * 1000 };
                prop_assert!(replay.admits(old, new));
            }

            #[test]
            fn a_shorter_period_ends_a_sliding_window_within_two_new_periods(
                reqs in old_requests(), limit in 1u64..50, old_s in 2u64..10_000, new_s in 1u64..4, switch_ms in 0u64..5_000,
            ) {
                let old = SlidingWindow::new(Quota::new(limit, old_s).unwrap(), None).unwrap();
                let new = SlidingWindow::new(Quota::new(limit, new_s).unwrap(), None).unwrap();
                let replay = Replay { old_requests: reqs, switch_ms, after_ms: 2 * new_s * 1000 };
                prop_assert!(replay.admits(old, new));
            }

            #[test]
            fn a_lower_rate_or_burst_refills_a_bucket_within_the_new_refill_time(
                reqs in old_requests(), limit in 1u64..50, old_s in 2u64..10_000, burst in 1u64..50,
                new_limit in 1u64..10, new_burst in 1u64..10, switch_ms in 0u64..5_000,
            ) {
                let old = TokenBucket::new(Quota::new(limit, old_s).unwrap(), Some(burst.max(limit))).unwrap();
                let new = TokenBucket::new(Quota::new(new_limit, 1).unwrap(), Some(new_burst)).unwrap();
                let refill_ms = (new_burst * 1000).div_ceil(new_limit);
                let replay = Replay { old_requests: reqs, switch_ms, after_ms: refill_ms };
                prop_assert!(replay.admits(old, new));
            }

            #[test]
            fn a_lower_throttle_rate_is_in_force_within_the_new_tolerance(
                reqs in old_requests(), old_s in 2u64..10_000, new_burst in 0u64..5, switch_ms in 0u64..5_000,
            ) {
                let old = gcra::Throttle::new(40, 1, old_s).unwrap();
                let new = gcra::Throttle::new(new_burst, 1, 1).unwrap();
                let mut state = None;
                let mut now_ms = 1_000_000;
                for (wait_ms, cost) in reqs {
                    now_ms += wait_ms;
                    if let Some(next) = gcra::check(state, old, cost, now_ms).store {
                        state = Some(next);
                    }
                }
                now_ms += switch_ms;
                if let Some(next) = gcra::check(state, new, 1, now_ms).store {
                    state = Some(next);
                }
                let tolerance_ms = (new_burst + 1) * 1000;
                prop_assert!(!gcra::check(state, new, 1, now_ms + tolerance_ms).decision.limited);
            }
        }
    }
}
