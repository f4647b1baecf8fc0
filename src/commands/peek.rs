//! `RATELIMIT.PEEK`: what a CHECK would answer, without counting anything.
//!
//! # Format
//! ```text
//! RATELIMIT.PEEK key limit period [COST cost] [ALGORITHM FIXED|SLIDING|TOKEN] [BURST burst]
//! ```
//! The arguments of RATELIMIT.CHECK. Registered `readonly`: it runs on
//! replicas and in read-only scripts (`EVAL_RO`, `FCALL_RO`).
//!
//! # Returns
//! CHECK's five integers, for the state as it is: `allowed` says whether a
//! request of `cost` (default 1) would be admitted now, `remaining` is what
//! is admissible now with nothing deducted, `retry_after_ms` is when that
//! request would be admitted (-1 if now, or never), `reset_after_ms` is when
//! the limiter is empty again.

use super::check::LIMIT_ARGS;
use super::check::{parse, Algorithm, Request};
use super::{decision_fields, entry_point, Reply};
use crate::error::Error;
use crate::limiter::{fixed_window, sliding_window, token_bucket, Decision, Outcome};
use crate::metadata::{CommandDocs, KeySpec};
use crate::server::{self, Access, Ctx, Key, RString};
use crate::stats::STATS;
use crate::store::{self, Layout};
use redis_module::raw;

/// What `COMMAND DOCS` and `COMMAND INFO` say of RATELIMIT.PEEK.
pub const DOCS: CommandDocs = CommandDocs {
    summary: c"Says what RATELIMIT.CHECK would answer, counting nothing",
    complexity: c"O(1)",
    since: c"0.1.0",
    arity: -4,
    keys: KeySpec {
        flags: raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS,
        first: 1,
        last: 0,
    },
    acl_categories: c"read fast",
    args: &LIMIT_ARGS,
};

fn run(ctx: Ctx, args: &[RString]) -> Result<Reply, Error> {
    let Request {
        key,
        quota,
        cost,
        algorithm,
    } = parse(args)?;
    let now_ms = server::now_ms()?;
    let key = Key::open(ctx, key, Access::Read)?;
    let (decision, stats) = match algorithm {
        Algorithm::Fixed => (
            peek(&key, cost, |stored, cost| {
                fixed_window::check(stored, quota, cost, now_ms)
            })?,
            &STATS.fixed,
        ),
        Algorithm::Sliding => (
            peek(&key, cost, |stored, cost| {
                sliding_window::check(stored, quota, cost, now_ms)
            })?,
            &STATS.sliding,
        ),
        Algorithm::Token(bucket) => (
            peek(&key, cost, |stored, cost| {
                token_bucket::check(stored, bucket, cost, now_ms)
            })?,
            &STATS.token,
        ),
    };
    stats.peeks.bump();
    Ok(Reply::Array(decision_fields(decision)))
}

/// Asks the algorithm twice, storing nothing: whether `cost` would pass and
/// when, and what the state is with nothing taken.
fn peek<S: Layout>(
    key: &Key,
    cost: u64,
    decide: impl Fn(Option<S>, u64) -> Outcome<S>,
) -> Result<Decision, Error> {
    let stored = store::load::<S>(key)?;
    let asked = decide(stored, cost).decision;
    let now = decide(stored, 0).decision;
    Ok(Decision {
        remaining: now.remaining,
        reset_after_ms: now.reset_after_ms,
        ..asked
    })
}

entry_point!(run, &STATS.peek);
