//! `RATELIMIT.CHECK`: count a request against a fixed-window limit.
//!
//! # Format
//! ```text
//! RATELIMIT.CHECK key limit period [COST cost]
//! ```
//! - `limit`: units admitted per window, 1 to 10^15.
//! - `period`: window length in seconds, 1 to 10^9.
//! - `cost`: units this request takes, 0 to 10^15, default 1. `COST 0` only
//!   looks and writes nothing.
//!
//! # Returns
//! An array of five integers: `allowed` (1/0), `remaining`, `limit`,
//! `retry_after_ms` (-1 when allowed or when the cost can never fit) and
//! `reset_after_ms` (0 when there is no window).

use std::ffi::c_int;

use redis_module::raw;

use super::{dispatch, Reply};
use crate::args::{is_option, parse_in_range, Arg};
use crate::error::Error;
use crate::limiter::{fixed_window, Quota, MAX_COST, MAX_LIMIT, MAX_PERIOD_S};
use crate::server::{self, Ctx, Key, RString};
use crate::store;

/// The parsed arguments of one call.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a, A> {
    /// The key holding the limiter's state.
    pub key: &'a A,
    /// Limit and period.
    pub quota: Quota,
    /// Units this request takes.
    pub cost: u64,
}

/// Parses `RATELIMIT.CHECK key limit period [COST cost]`, the command name
/// included. Options are case-insensitive; an unknown, repeated or
/// incomplete option is a syntax error.
pub fn parse<A: Arg>(args: &[A]) -> Result<Request<'_, A>, Error> {
    let [_, key, limit, period, options @ ..] = args else {
        return Err(Error::WrongArity);
    };
    let limit = parse_in_range(limit, 1, MAX_LIMIT).ok_or(Error::InvalidLimit)?;
    let period_s = parse_in_range(period, 1, MAX_PERIOD_S).ok_or(Error::InvalidPeriod)?;
    let quota = Quota::new(limit, period_s).ok_or(Error::Internal)?;

    let mut cost = None;
    let mut options = options.iter();
    while let Some(option) = options.next() {
        if is_option(option, "COST") && cost.is_none() {
            let value = options.next().ok_or(Error::Syntax)?;
            cost = Some(parse_in_range(value, 0, MAX_COST).ok_or(Error::InvalidCost)?);
        } else {
            return Err(Error::Syntax);
        }
    }
    Ok(Request {
        key,
        quota,
        cost: cost.unwrap_or(1),
    })
}

/// Runs one call: the whole check happens with the key open, so it is atomic
/// like any single Redis command.
fn run(ctx: Ctx, args: &[RString]) -> Result<Reply, Error> {
    let request = parse(args)?;
    let now_ms = server::now_ms()?;
    let mut key = Key::open(ctx, request.key)?;
    let stored = store::load_fixed_window(&key)?;
    let outcome = fixed_window::check(stored, request.quota, request.cost, now_ms);
    if let Some(window) = outcome.store {
        store::save_fixed_window(ctx, &mut key, stored, window)?;
    }
    Ok(Reply::Decision(outcome.decision))
}

/// The entry point the server calls.
pub extern "C" fn command(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    dispatch(ctx, argv, argc, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs<'a>(args: &'a [&'a str]) -> Result<Request<'a, &'a str>, Error> {
        parse(args)
    }

    #[test]
    fn parses_the_minimal_form() {
        let args = ["RATELIMIT.CHECK", "k", "10", "60"];
        let r = parse_strs(&args).unwrap();
        assert_eq!(*r.key, "k");
        assert_eq!(r.quota, Quota::new(10, 60).unwrap());
        assert_eq!(r.cost, 1);
    }

    #[test]
    fn parses_cost_in_any_case() {
        for word in ["COST", "cost", "Cost"] {
            let args = ["RATELIMIT.CHECK", "k", "10", "60", word, "0"];
            assert_eq!(parse_strs(&args).unwrap().cost, 0);
        }
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
            (&["RATELIMIT.CHECK", "k", "10", "60", "COST"], Error::Syntax),
            (
                &["RATELIMIT.CHECK", "k", "10", "60", "COST", "-1"],
                Error::InvalidCost,
            ),
            (
                &["RATELIMIT.CHECK", "k", "10", "60", "COST", "x"],
                Error::InvalidCost,
            ),
            (
                &[
                    "RATELIMIT.CHECK",
                    "k",
                    "10",
                    "60",
                    "COST",
                    "1000000000000001",
                ],
                Error::InvalidCost,
            ),
            (
                &["RATELIMIT.CHECK", "k", "10", "60", "COST", "1", "COST", "1"],
                Error::Syntax,
            ),
            (
                &["RATELIMIT.CHECK", "k", "10", "60", "WEIGHT", "1"],
                Error::Syntax,
            ),
            (&["RATELIMIT.CHECK", "k", "10", "60", "1"], Error::Syntax),
        ];
        for (args, expected) in cases {
            assert_eq!(parse_strs(args).unwrap_err(), *expected, "{args:?}");
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
