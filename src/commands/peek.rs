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

use super::limits::{parse, Mode, Request, LIMIT_ARGS};
use super::{decision_fields, Command};
use crate::error::Error;
use crate::metadata::{CommandDocs, KeySpec};
use crate::server::{self, Access, Ctx, Key, RString};
use crate::stats::{CommandStats, STATS};

/// What `COMMAND DOCS` and `COMMAND INFO` say of RATELIMIT.PEEK.
pub const DOCS: CommandDocs = CommandDocs {
    summary: c"Says what RATELIMIT.CHECK would answer, counting nothing",
    complexity: c"O(1)",
    since: c"0.1.0",
    arity: -4,
    keys: &[KeySpec::ONE_READ],
    acl_categories: c"read fast",
    args: &LIMIT_ARGS,
};

/// RATELIMIT.PEEK.
pub struct Peek;

impl Command for Peek {
    const STATS: &'static CommandStats = &STATS.peek;
    type Reply = [i64; 5];

    fn run(ctx: Ctx, args: &[RString]) -> Result<[i64; 5], Error> {
        let Request { key, limit } = parse(args)?;
        let now_ms = server::now_ms()?;
        let key = Key::open(ctx, key, Access::Read)?;
        let answer = limit.ask(&key, now_ms, Mode::Look)?;
        STATS.algorithm(limit.chosen.id()).peeks.bump();
        Ok(decision_fields(answer.look()?))
    }
}
