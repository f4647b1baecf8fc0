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

use super::{decision_fields, denied_event, Command};
use crate::args::{bounded, is_keyword, Arg};
use crate::error::Error;
use crate::limiter::{
    Algorithm, Chosen, Decision, Quota, Visit, BURST, COST, DEFAULT_ALGORITHM, LIMIT, PERIOD_S,
};
use crate::metadata::{ArgDocs, ArgKind, CommandDocs, KeySpec};
use crate::server::{self, Access, Ctx, Key, RString};
use crate::stats::STATS;
use crate::store;

/// What `COMMAND DOCS` and `COMMAND INFO` say of RATELIMIT.CHECK.
pub const DOCS: CommandDocs = CommandDocs {
    summary: c"Counts a request against a rate limit and says whether it is allowed",
    complexity: c"O(1)",
    since: c"0.1.0",
    arity: -4,
    keys: &[KeySpec::ONE_UPDATED],
    acl_categories: c"write fast",
    args: &LIMIT_ARGS,
};

/// The arguments of CHECK and PEEK.
pub const LIMIT_ARGS: [ArgDocs; 6] = [
    ArgDocs::required(c"key", ArgKind::Key),
    ArgDocs::required(c"limit", ArgKind::Integer),
    ArgDocs::required(c"period", ArgKind::Integer),
    ArgDocs::option(c"cost", c"COST", ArgKind::Integer),
    ArgDocs::option(c"algorithm", c"ALGORITHM", ArgKind::Algorithm),
    ArgDocs::option(c"burst", c"BURST", ArgKind::Integer),
];

/// One limit as a request states it: the algorithm with its parameters, and
/// the units the request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The algorithm and its parameters.
    pub chosen: Chosen,
    /// Units this request takes.
    pub cost: u64,
}

/// The parsed arguments of a CHECK (or PEEK) call.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a, A> {
    /// The key holding the limiter's state.
    pub key: &'a A,
    /// What the request asks of it.
    pub limit: Limit,
}

/// Parses `RATELIMIT.CHECK key limit period [COST cost] [ALGORITHM …]
/// [BURST burst]`, the command name included. RATELIMIT.PEEK takes the same
/// arguments.
pub fn parse<A: Arg>(args: &[A]) -> Result<Request<'_, A>, Error> {
    let [_, key, limit, period, options @ ..] = args else {
        return Err(Error::WrongArity);
    };
    Ok(Request {
        key,
        limit: parse_limit(limit, period, options)?,
    })
}

/// Parses `limit period [COST cost] [ALGORITHM …] [BURST burst]`: what
/// CHECK takes after its key.
pub fn parse_limit<A: Arg>(limit: &A, period: &A, options: &[A]) -> Result<Limit, Error> {
    let limit = bounded(limit, &LIMIT)?;
    let period_s = bounded(period, &PERIOD_S)?;
    let quota = Quota::new(limit, period_s)?;

    let (mut cost, mut algorithm, mut burst) = (None, None, None);
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let value = options.next().ok_or(Error::Syntax)?;
        let option = option.bytes();
        if is_keyword(option, "COST") && cost.is_none() {
            cost = Some(bounded(value, &COST)?);
        } else if is_keyword(option, "ALGORITHM") && algorithm.is_none() {
            algorithm = Some(Chosen::named(value.bytes()).ok_or(Error::InvalidAlgorithm)?);
        } else if is_keyword(option, "BURST") && burst.is_none() {
            burst = Some(bounded(value, &BURST)?);
        } else {
            return Err(Error::Syntax);
        }
    }
    Ok(Limit {
        chosen: Chosen::new(algorithm.unwrap_or(DEFAULT_ALGORITHM), quota, burst)?,
        cost: cost.unwrap_or(1),
    })
}

/// RATELIMIT.CHECK.
pub struct Check;

impl Command for Check {
    const STATS: &'static crate::stats::CommandStats = &STATS.check;
    type Reply = [i64; 5];

    /// The whole check happens with the key open, so it is atomic like any
    /// single Redis command.
    fn run(ctx: Ctx, args: &[RString]) -> Result<[i64; 5], Error> {
        let Request { key, limit } = parse(args)?;
        let now_ms = server::now_ms()?;
        let mut key = Key::open(ctx, key, Access::ReadWrite)?;
        let decision = limit.chosen.visit(Decide {
            ctx,
            key: &mut key,
            cost: limit.cost,
            now_ms,
        })?;
        let stats = STATS.algorithm(limit.chosen.id());
        if limit.cost == 0 {
            // A look, not a request: counted with PEEK's looks, never denied.
            stats.peeks.bump();
        } else {
            stats.decided(decision.allowed);
            if !decision.allowed {
                denied_event(ctx, key.name());
            }
        }
        Ok(decision_fields(decision))
    }
}

/// A check of the key against the chosen algorithm, stored and propagated.
struct Decide<'k, 'a> {
    ctx: Ctx,
    key: &'k mut Key<'a>,
    cost: u64,
    now_ms: u64,
}

impl Visit for Decide<'_, '_> {
    type Output = Result<Decision, Error>;

    fn visit<A: Algorithm>(self, algorithm: A) -> Self::Output {
        store::update::<A, _>(self.ctx, self.key, c"ratelimit.check", |stored| {
            algorithm.check(stored, self.cost, self.now_ms)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::limiter::{Id, MAX_COST, MAX_LIMIT};

    fn parse_strs<'a>(args: &'a [&'a str]) -> Result<Request<'a, &'a str>, Error> {
        parse(args)
    }

    /// Algorithm `id` at 10 per 60 s.
    fn chosen(id: Id, burst: Option<u64>) -> Chosen {
        Chosen::new(id, Quota::new(10, 60).unwrap(), burst).unwrap()
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
        assert_eq!(r.limit.cost, 1);
        assert_eq!(r.limit.chosen, chosen(Id::Fixed, None));
    }

    #[test]
    fn parses_options_in_any_order_and_case() {
        let r = with(&["burst", "20", "Cost", "0", "algorithm", "token"]).unwrap();
        assert_eq!(r.limit.cost, 0);
        assert_eq!(r.limit.chosen, chosen(Id::Token, Some(20)));
        let r = with(&["ALGORITHM", "TOKEN"]).unwrap();
        assert_eq!(r.limit.chosen, chosen(Id::Token, Some(10)));
        assert_eq!(
            with(&["ALGORITHM", "Sliding"]).unwrap().limit.chosen,
            chosen(Id::Sliding, None)
        );
        assert_eq!(
            with(&["algorithm", "fixed"]).unwrap().limit.chosen,
            chosen(Id::Fixed, None)
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
        let quota = Quota::new(MAX_LIMIT, 1_000_000_000).unwrap();
        assert_eq!(r.limit.chosen, Chosen::new(Id::Fixed, quota, None).unwrap());
        assert_eq!(r.limit.cost, MAX_COST);
    }
}
