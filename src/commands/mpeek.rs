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
//! would be admitted now and the binding limit, as MCHECK would decide
//! them, and each limit's PEEK for its cost (`remaining` and
//! `reset_after_ms` with nothing deducted, as every read-only command
//! replies them). MPEEK of one key is PEEK of that key. Nothing is written.

use super::limits::{key_positions, parse_multi, Mode, MultiReply, MULTI_ARGS};
use super::{Command, KeyPositions};
use crate::error::Error;
use crate::limiter::all_of;
use crate::metadata::{CommandDocs, KeySpec};
use crate::server::{self, Access, Ctx, Key, RString};
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
        let request = parse_multi(args)?;
        let now_ms = server::now_ms()?;
        let mut charged = Vec::with_capacity(request.keys.len());
        let mut shown = Vec::with_capacity(request.keys.len());
        for (name, limit) in request.pairs() {
            let key = Key::open(ctx, name, Access::Read)?;
            let answer = limit.ask(&key, now_ms, Mode::Look)?;
            charged.push(answer.charged);
            shown.push(answer.look()?);
        }
        let combined = all_of::combine(&charged).ok_or(Error::Internal("MPEEK with no limits"))?;
        Ok(MultiReply::new(combined, shown))
    }

    fn key_positions(args: &[RString]) -> Option<KeyPositions> {
        Some(KeyPositions {
            fixed: None,
            counted: key_positions(args),
        })
    }
}
