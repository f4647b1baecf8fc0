//! `RATELIMIT.MPEEK`: what an MCHECK would answer, charging nothing.
//!
//! # Format
//! ```text
//! RATELIMIT.MPEEK numkeys key [key ...] LIMIT limit period [COST cost]
//!     [ALGORITHM FIXED|SLIDING|TOKEN] [BURST burst] [LIMIT ...]
//! ```
//! The arguments of RATELIMIT.MCHECK. Registered `readonly`: it runs on
//! replicas and in read-only scripts (`EVAL_RO`, `FCALL_RO`).
//!
//! # Returns
//! MCHECK's seven elements for the state as it is: whether the request
//! would be admitted now, the binding limit, and each limit's numbers as
//! MCHECK would reply them (as charged when it would be admitted, as a
//! PEEK when not). Nothing is written.

use super::mcheck::{ask_all, key_positions, parse, MultiReply, MULTI_ARGS};
use super::Command;
use crate::error::Error;
use crate::metadata::{CommandDocs, KeySpec};
use crate::server::{self, Access, Ctx, RString};
use crate::stats::{CommandStats, STATS};
use redis_module::raw;

/// What `COMMAND DOCS` and `COMMAND INFO` say of RATELIMIT.MPEEK.
pub const DOCS: CommandDocs = CommandDocs {
    summary: c"Says what RATELIMIT.MCHECK would answer, counting nothing",
    complexity: c"O(N) where N is the number of keys",
    since: c"0.2.0",
    arity: -6,
    keys: &[KeySpec::Counted {
        flags: raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS,
        first: 1,
    }],
    acl_categories: c"read fast",
    args: &MULTI_ARGS,
};

/// RATELIMIT.MPEEK.
pub struct MPeek;

impl Command for MPeek {
    const STATS: &'static CommandStats = &STATS.mpeek;
    type Reply = MultiReply;

    fn run(ctx: Ctx, args: &[RString]) -> Result<MultiReply, Error> {
        let request = parse(args)?;
        let now_ms = server::now_ms()?;
        let (combined, asked) = ask_all(ctx, &request, Access::Read, now_ms)?;
        Ok(MultiReply::new(
            combined,
            asked.iter().map(|(_, a)| &a.each),
        ))
    }

    fn key_positions(args: &[RString]) -> Option<std::ops::Range<usize>> {
        Some(key_positions(args))
    }
}
