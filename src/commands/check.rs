//! `RATELIMIT.CHECK`: count a request against a limit.
//!
//! # Format
//! ```text
//! RATELIMIT.CHECK key limit period [COST cost] [ALGORITHM FIXED|SLIDING|TOKEN] [BURST burst]
//! ```
//! - `limit`: units admitted per period, 1 to 10^15.
//! - `period`: in seconds, 1 to 10^9.
//! - `COST cost`: units this request takes, 0 to 10^15, default 1. `COST 0`
//!   only looks and writes nothing.
//! - `ALGORITHM`: `FIXED` window (default), `SLIDING` window, or `TOKEN`
//!   bucket.
//! - `BURST burst`: the bucket's size with `TOKEN`, 1 to 10^15, default
//!   `limit`.
//!
//! Options come in any order, in any case; a repeated or unknown one is a
//! syntax error.
//!
//! # Returns
//! An array of five integers: `allowed` (1/0), `remaining`, `limit`,
//! `retry_after_ms` (-1 when allowed or when the cost can never fit) and
//! `reset_after_ms` (0 when nothing is counted).

use super::{decision_fields, denied_event, entry_point, Reply};
use crate::args::{is_keyword, parse_in_range, Arg};
use crate::error::Error;
use crate::limiter::token_bucket::Bucket;
use crate::limiter::{
    fixed_window, sliding_window, token_bucket, Quota, MAX_COST, MAX_LIMIT, MAX_PERIOD_S,
};
use crate::metadata::{ArgDocs, ArgKind, CommandDocs, KeySpec};
use crate::server::{self, Access, Ctx, Key, RString};
use crate::stats::STATS;
use crate::store;
use redis_module::raw;

/// What `COMMAND DOCS` and `COMMAND INFO` say of RATELIMIT.CHECK.
pub const DOCS: CommandDocs = CommandDocs {
    summary: c"Counts a request against a rate limit and says whether it is allowed",
    complexity: c"O(1)",
    since: c"0.1.0",
    arity: -4,
    keys: KeySpec {
        flags: raw::REDISMODULE_CMD_KEY_RW
            | raw::REDISMODULE_CMD_KEY_ACCESS
            | raw::REDISMODULE_CMD_KEY_UPDATE,
        first: 1,
        last: 0,
    },
    acl_categories: c"write fast",
    args: &LIMIT_ARGS,
};

/// The arguments of CHECK and PEEK.
pub const LIMIT_ARGS: [ArgDocs; 6] = [
    ArgDocs::required(c"key", ArgKind::Key),
    ArgDocs::required(c"limit", ArgKind::Integer),
    ArgDocs::required(c"period", ArgKind::Integer),
    ArgDocs::option(c"cost", c"COST", ArgKind::Integer),
    ArgDocs {
        choices: &[
            ArgDocs::choice(c"fixed", c"FIXED"),
            ArgDocs::choice(c"sliding", c"SLIDING"),
            ArgDocs::choice(c"token", c"TOKEN"),
        ],
        ..ArgDocs::option(c"algorithm", c"ALGORITHM", ArgKind::OneOf)
    },
    ArgDocs::option(c"burst", c"BURST", ArgKind::Integer),
];

/// Which algorithm decides, with its own parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Fixed window: at most `limit` per window of `period`.
    Fixed,
    /// Sliding window counter.
    Sliding,
    /// Token bucket of the given size, refilled at `limit` per `period`.
    Token(Bucket),
}

/// The parsed arguments of a CHECK (or PEEK) call.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a, A> {
    /// The key holding the limiter's state.
    pub key: &'a A,
    /// Limit and period.
    pub quota: Quota,
    /// Units this request takes.
    pub cost: u64,
    /// The algorithm and its parameters.
    pub algorithm: Algorithm,
}

/// Parses `RATELIMIT.CHECK key limit period [COST cost] [ALGORITHM …]
/// [BURST burst]`, the command name included. RATELIMIT.PEEK takes the same
/// arguments.
pub fn parse<A: Arg>(args: &[A]) -> Result<Request<'_, A>, Error> {
    let [_, key, limit, period, options @ ..] = args else {
        return Err(Error::WrongArity);
    };
    let limit = parse_in_range(limit, 1, MAX_LIMIT).ok_or(Error::InvalidLimit)?;
    let period_s = parse_in_range(period, 1, MAX_PERIOD_S).ok_or(Error::InvalidPeriod)?;
    let quota = Quota::new(limit, period_s).ok_or(Error::Internal)?;

    let (mut cost, mut algorithm, mut burst) = (None, None, None);
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let value = options.next().ok_or(Error::Syntax)?;
        let option = option.bytes();
        if is_keyword(option, "COST") && cost.is_none() {
            cost = Some(parse_in_range(value, 0, MAX_COST).ok_or(Error::InvalidCost)?);
        } else if is_keyword(option, "ALGORITHM") && algorithm.is_none() {
            algorithm = Some(parse_algorithm(value.bytes())?);
        } else if is_keyword(option, "BURST") && burst.is_none() {
            burst = Some(parse_in_range(value, 1, MAX_LIMIT).ok_or(Error::InvalidBurst)?);
        } else {
            return Err(Error::Syntax);
        }
    }

    let algorithm = match (algorithm.unwrap_or(Name::Fixed), burst) {
        (Name::Token, burst) => Algorithm::Token(
            Bucket::new(quota, burst.unwrap_or(limit)).ok_or(Error::BurstTooLarge)?,
        ),
        (_, Some(_)) => return Err(Error::BurstWithoutToken),
        (Name::Fixed, None) => Algorithm::Fixed,
        (Name::Sliding, None) => Algorithm::Sliding,
    };
    Ok(Request {
        key,
        quota,
        cost: cost.unwrap_or(1),
        algorithm,
    })
}

/// The algorithm named by `ALGORITHM`, before its parameters are known.
enum Name {
    Fixed,
    Sliding,
    Token,
}

fn parse_algorithm(value: &[u8]) -> Result<Name, Error> {
    if is_keyword(value, "FIXED") {
        Ok(Name::Fixed)
    } else if is_keyword(value, "SLIDING") {
        Ok(Name::Sliding)
    } else if is_keyword(value, "TOKEN") {
        Ok(Name::Token)
    } else {
        Err(Error::InvalidAlgorithm)
    }
}

/// Runs one call: the whole check happens with the key open, so it is
/// atomic like any single Redis command.
fn run(ctx: Ctx, args: &[RString]) -> Result<Reply, Error> {
    let Request {
        key,
        quota,
        cost,
        algorithm,
    } = parse(args)?;
    let now_ms = server::now_ms()?;
    let mut key = Key::open(ctx, key, Access::ReadWrite)?;
    let event = c"ratelimit.check";
    let (decision, stats) = match algorithm {
        Algorithm::Fixed => (
            store::update(ctx, &mut key, event, |stored| {
                fixed_window::check(stored, quota, cost, now_ms)
            })?,
            &STATS.fixed,
        ),
        Algorithm::Sliding => (
            store::update(ctx, &mut key, event, |stored| {
                sliding_window::check(stored, quota, cost, now_ms)
            })?,
            &STATS.sliding,
        ),
        Algorithm::Token(bucket) => (
            store::update(ctx, &mut key, event, |stored| {
                token_bucket::check(stored, bucket, cost, now_ms)
            })?,
            &STATS.token,
        ),
    };
    if cost == 0 {
        // A look, not a request: counted with PEEK's looks, never denied.
        stats.peeks.bump();
    } else {
        stats.decided(decision.allowed);
        if !decision.allowed {
            denied_event(ctx, key.name());
        }
    }
    Ok(Reply::Array(decision_fields(decision)))
}

entry_point!(run, &STATS.check);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs<'a>(args: &'a [&'a str]) -> Result<Request<'a, &'a str>, Error> {
        parse(args)
    }

    fn with(options: &[&'static str]) -> Result<Request<'static, &'static str>, Error> {
        let mut args = vec!["RATELIMIT.CHECK", "k", "10", "60"];
        args.extend_from_slice(options);
        let args: &'static [&'static str] = Box::leak(args.into_boxed_slice());
        parse(args)
    }

    #[test]
    fn parses_the_minimal_form() {
        let args = ["RATELIMIT.CHECK", "k", "10", "60"];
        let r = parse_strs(&args).unwrap();
        assert_eq!(*r.key, "k");
        assert_eq!(r.quota, Quota::new(10, 60).unwrap());
        assert_eq!(r.cost, 1);
        assert_eq!(r.algorithm, Algorithm::Fixed);
    }

    #[test]
    fn parses_options_in_any_order_and_case() {
        let quota = Quota::new(10, 60).unwrap();
        let r = with(&["burst", "20", "Cost", "0", "algorithm", "token"]).unwrap();
        assert_eq!(r.cost, 0);
        assert_eq!(
            r.algorithm,
            Algorithm::Token(Bucket::new(quota, 20).unwrap())
        );
        let r = with(&["ALGORITHM", "TOKEN"]).unwrap();
        assert_eq!(
            r.algorithm,
            Algorithm::Token(Bucket::new(quota, 10).unwrap())
        );
        assert_eq!(
            with(&["ALGORITHM", "Sliding"]).unwrap().algorithm,
            Algorithm::Sliding
        );
        assert_eq!(
            with(&["algorithm", "fixed"]).unwrap().algorithm,
            Algorithm::Fixed
        );
    }

    #[test]
    fn rejects_bad_arguments_with_the_right_error() {
        let cases: &[(&[&str], Error)] = &[
            (&["RATELIMIT.CHECK"], Error::WrongArity),
            (&["RATELIMIT.CHECK", "k"], Error::WrongArity),
            (&["RATELIMIT.CHECK", "k", "10"], Error::WrongArity),
            (&["RATELIMIT.CHECK", "k", "0", "60"], Error::InvalidLimit),
            (&["RATELIMIT.CHECK", "k", "-1", "60"], Error::InvalidLimit),
            (&["RATELIMIT.CHECK", "k", "ten", "60"], Error::InvalidLimit),
            (&["RATELIMIT.CHECK", "k", "1.5", "60"], Error::InvalidLimit),
            (
                &["RATELIMIT.CHECK", "k", "1000000000000001", "60"],
                Error::InvalidLimit,
            ),
            (
                &["RATELIMIT.CHECK", "k", "99999999999999999999", "60"],
                Error::InvalidLimit,
            ),
            (&["RATELIMIT.CHECK", "k", "10", "0"], Error::InvalidPeriod),
            (
                &["RATELIMIT.CHECK", "k", "10", "1000000001"],
                Error::InvalidPeriod,
            ),
            (&["RATELIMIT.CHECK", "k", "10", "60s"], Error::InvalidPeriod),
        ];
        for (args, expected) in cases {
            assert_eq!(parse_strs(args).unwrap_err(), *expected, "{args:?}");
        }
        let options: &[(&[&'static str], Error)] = &[
            (&["COST"], Error::Syntax),
            (&["COST", "-1"], Error::InvalidCost),
            (&["COST", "x"], Error::InvalidCost),
            (&["COST", "1000000000000001"], Error::InvalidCost),
            (&["COST", "1", "COST", "1"], Error::Syntax),
            (&["WEIGHT", "1"], Error::Syntax),
            (&["1"], Error::Syntax),
            (&["ALGORITHM"], Error::Syntax),
            (&["ALGORITHM", "LEAKY"], Error::InvalidAlgorithm),
            (&["ALGORITHM", "TOKEN", "ALGORITHM", "TOKEN"], Error::Syntax),
            (
                &["ALGORITHM", "FIXED", "algorithm", "SLIDING"],
                Error::Syntax,
            ),
            (&["BURST", "5"], Error::BurstWithoutToken),
            (
                &["BURST", "5", "ALGORITHM", "SLIDING"],
                Error::BurstWithoutToken,
            ),
            (&["ALGORITHM", "TOKEN", "BURST", "0"], Error::InvalidBurst),
            (
                &["ALGORITHM", "TOKEN", "BURST", "1000000000000001"],
                Error::InvalidBurst,
            ),
            (
                &["ALGORITHM", "TOKEN", "BURST", "5", "BURST", "5"],
                Error::Syntax,
            ),
            // 10 per minute refills 10^14 tokens in 1.9 million years.
            (
                &["ALGORITHM", "TOKEN", "BURST", "100000000000000"],
                Error::BurstTooLarge,
            ),
        ];
        for (options, expected) in options {
            assert_eq!(with(options).unwrap_err(), *expected, "{options:?}");
        }
    }

    #[test]
    fn accepts_the_documented_bounds() {
        let args = [
            "RATELIMIT.CHECK",
            "k",
            "1000000000000000",
            "1000000000",
            "COST",
            "1000000000000000",
        ];
        let r = parse_strs(&args).unwrap();
        assert_eq!(r.quota.limit(), MAX_LIMIT);
        assert_eq!(r.cost, MAX_COST);
    }
}
