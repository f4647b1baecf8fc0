//! `RATELIMIT.THROTTLE`, also `CL.THROTTLE` on request: redis-cell's command.
//!
//! # Format
//! ```text
//! RATELIMIT.THROTTLE key max_burst count_per_period period [quantity]
//! ```
//! - `max_burst`: requests beyond the steady rate allowed at once, 0 to
//!   10^15 − 1 (the bucket holds `max_burst + 1`).
//! - `count_per_period`, `period`: the rate, 1 to 10^15 per 1 to 10^9
//!   seconds.
//! - `quantity`: requests this call counts, 0 to 10^15, default 1; 0 only
//!   looks.
//!
//! # Returns
//! What redis-cell's `CL.THROTTLE` answers, integer for integer: `limited`
//! (1 when refused), `max_burst + 1`, `remaining`, `retry_after` and
//! `reset_after` in seconds, rounded up (`retry_after` is -1 when admitted,
//! or when the quantity can never fit).

use super::{denied_event, reply_int, Command};
use crate::args::{bounded, Arg};
use crate::error::Error;
use crate::limiter::gcra::{
    self, Throttle as Gcra, Verdict, COUNT_PER_PERIOD, MAX_BURST, NS_PER_MS, NS_PER_S, QUANTITY,
};
use crate::limiter::{Id, PERIOD_S};
use crate::metadata::{ArgDocs, ArgKind, CommandDocs, KeySpec};
use crate::server::{self, Access, Ctx, Key, RString};
use crate::stats::{CommandStats, STATS};
use crate::store;

/// What `COMMAND DOCS` and `COMMAND INFO` say of RATELIMIT.THROTTLE.
pub const DOCS: CommandDocs = CommandDocs {
    summary: c"Counts a request against a GCRA limit, answering as redis-cell's CL.THROTTLE",
    complexity: c"O(1)",
    since: c"0.1.0",
    arity: -5,
    keys: &[KeySpec::ONE_UPDATED],
    acl_categories: c"write fast",
    args: &[
        ArgDocs::required(c"key", ArgKind::Key),
        ArgDocs::required(c"max_burst", ArgKind::Integer),
        ArgDocs::required(c"count_per_period", ArgKind::Integer),
        ArgDocs::required(c"period", ArgKind::Integer),
        ArgDocs {
            optional: true,
            ..ArgDocs::required(c"quantity", ArgKind::Integer)
        },
    ],
};

/// The parsed arguments of one call.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a, A> {
    /// The key holding the throttle's state.
    pub key: &'a A,
    /// Burst and rate.
    pub throttle: Gcra,
    /// Requests this call counts.
    pub quantity: u64,
}

/// Parses `RATELIMIT.THROTTLE key max_burst count_per_period period
/// [quantity]`, the command name included.
pub fn parse<A: Arg>(args: &[A]) -> Result<Request<'_, A>, Error> {
    let (key, max_burst, count, period, quantity) = match args {
        [_, key, max_burst, count, period] => (key, max_burst, count, period, None),
        [_, key, max_burst, count, period, quantity] => {
            (key, max_burst, count, period, Some(quantity))
        }
        _ => return Err(Error::WrongArity),
    };
    let max_burst = bounded(max_burst, &MAX_BURST)?;
    let count = bounded(count, &COUNT_PER_PERIOD)?;
    let period_s = bounded(period, &PERIOD_S)?;
    let quantity = match quantity {
        Some(q) => bounded(q, &QUANTITY)?,
        None => 1,
    };
    Ok(Request {
        key,
        throttle: Gcra::new(max_burst, count, period_s)?,
        quantity,
    })
}

/// RATELIMIT.THROTTLE, also registered as CL.THROTTLE on request.
pub struct Throttle;

impl Command for Throttle {
    const STATS: &'static CommandStats = &STATS.throttle;
    type Reply = [i64; 5];

    fn run(ctx: Ctx, args: &[RString]) -> Result<[i64; 5], Error> {
        let Request {
            key,
            throttle,
            quantity,
        } = parse(args)?;
        let now_ms = server::now_ms()?;
        let mut key = Key::open(ctx, key, Access::ReadWrite)?;
        let verdict = store::update::<Gcra, _>(ctx, &mut key, c"ratelimit.throttle", |stored| {
            gcra::check(stored, throttle, quantity, now_ms)
        })?;
        let stats = STATS.algorithm(Id::Throttle);
        if quantity == 0 {
            // A look, not a request.
            stats.peeks.bump();
        } else {
            stats.decided(!verdict.limited);
            if verdict.limited {
                denied_event(ctx, key.name());
            }
        }
        Ok(verdict_fields(verdict))
    }
}

/// CL.THROTTLE's five integers.
pub fn verdict_fields(v: Verdict) -> [i64; 5] {
    [
        i64::from(v.limited),
        reply_int(v.limit),
        reply_int(v.remaining),
        v.retry_after_ns
            .map_or(-1, |ns| reply_int(seconds_rounded_up(ns))),
        reply_int(seconds_rounded_up(v.reset_after_ns)),
    ]
}

/// Whole seconds, plus one when at least a millisecond is left over: how
/// redis-cell rounds, so that a fast client does not retry too early.
fn seconds_rounded_up(ns: u64) -> u64 {
    let seconds = ns / NS_PER_S;
    if (ns % NS_PER_S) / NS_PER_MS > 0 {
        seconds.saturating_add(1)
    } else {
        seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs<'a>(args: &'a [&'a str]) -> Result<Request<'a, &'a str>, Error> {
        parse(args)
    }

    #[test]
    fn parses_with_and_without_quantity() {
        let r = parse_strs(&["RATELIMIT.THROTTLE", "k", "15", "30", "60"]).unwrap();
        assert_eq!(r.quantity, 1);
        assert_eq!(r.throttle, Gcra::new(15, 30, 60).unwrap());
        let r = parse_strs(&["CL.THROTTLE", "k", "15", "30", "60", "0"]).unwrap();
        assert_eq!(r.quantity, 0);
    }

    #[test]
    fn rejects_bad_arguments_with_the_right_error() {
        let cases: &[(&[&str], Error)] = &[
            (&["RATELIMIT.THROTTLE", "k", "15", "30"], Error::WrongArity),
            (
                &["RATELIMIT.THROTTLE", "k", "15", "30", "60", "1", "2"],
                Error::WrongArity,
            ),
            (
                &["RATELIMIT.THROTTLE", "k", "-1", "30", "60"],
                Error::InvalidMaxBurst,
            ),
            (
                &["RATELIMIT.THROTTLE", "k", "1000000000000000", "30", "60"],
                Error::InvalidMaxBurst,
            ),
            (
                &["RATELIMIT.THROTTLE", "k", "15", "0", "60"],
                Error::InvalidCountPerPeriod,
            ),
            (
                &["RATELIMIT.THROTTLE", "k", "15", "x", "60"],
                Error::InvalidCountPerPeriod,
            ),
            (
                &["RATELIMIT.THROTTLE", "k", "15", "30", "0"],
                Error::InvalidPeriod,
            ),
            (
                &["RATELIMIT.THROTTLE", "k", "15", "30", "60", "-1"],
                Error::InvalidQuantity,
            ),
            (
                &["RATELIMIT.THROTTLE", "k", "15", "30", "60", "1.5"],
                Error::InvalidQuantity,
            ),
            (
                &["RATELIMIT.THROTTLE", "k", "0", "2000000000", "1"],
                Error::ThrottleRateTooHigh,
            ),
            (
                &["RATELIMIT.THROTTLE", "k", "1", "1", "1000000000"],
                Error::ThrottleBurstTooLarge,
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(parse_strs(args).unwrap_err(), *expected, "{args:?}");
        }
    }

    #[test]
    fn rounds_up_to_seconds_from_the_millisecond_as_redis_cell_does() {
        assert_eq!(seconds_rounded_up(0), 0);
        assert_eq!(seconds_rounded_up(999_999), 0);
        assert_eq!(seconds_rounded_up(1_000_000), 1);
        assert_eq!(seconds_rounded_up(1_000_000_000), 1);
        assert_eq!(seconds_rounded_up(1_000_999_999), 1);
        assert_eq!(seconds_rounded_up(1_001_000_000), 2);
    }

    #[test]
    fn replies_as_cl_throttle() {
        let v = Verdict {
            limited: true,
            limit: 16,
            remaining: 0,
            retry_after_ns: Some(1_500_000_000),
            reset_after_ns: 59_000_000_001,
        };
        assert_eq!(verdict_fields(v), [1, 16, 0, 2, 59]);
        let v = Verdict {
            limited: false,
            retry_after_ns: None,
            ..v
        };
        assert_eq!(verdict_fields(v), [0, 16, 0, -1, 59]);
    }
}
