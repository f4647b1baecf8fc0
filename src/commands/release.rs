//! `RATELIMIT.RELEASE`: end leases.
//!
//! # Format
//! ```text
//! RATELIMIT.RELEASE key id [id ...]
//! ```
//!
//! # Returns
//! How many of the given leases were live and are now ended: 0 for unknown
//! or already expired ids, never an error. Registered without `deny-oom`:
//! releasing frees memory and must work when the server is full.

use super::Command;
use crate::args::Arg;
use crate::error::Error;
use crate::limiter::leases::{self, check_id};
use crate::metadata::{ArgDocs, ArgKind, CommandDocs, KeySpec};
use crate::server::{self, Access, Ctx, Key, RString};
use crate::stats::{CommandStats, STATS};
use crate::store::leases::KeyLeases;
use redis_module::raw;

/// What `COMMAND DOCS` and `COMMAND INFO` say of RATELIMIT.RELEASE.
pub const DOCS: CommandDocs = CommandDocs {
    summary: c"Ends leases taken with RATELIMIT.ACQUIRE",
    complexity: c"O(M log N) for M ids and N live leases",
    since: c"0.2.0",
    arity: -3,
    keys: &[KeySpec::Range {
        flags: raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_DELETE,
        first: 1,
        last: 0,
    }],
    acl_categories: c"write fast",
    args: &[
        ArgDocs::required(c"key", ArgKind::Key),
        ArgDocs {
            multiple: true,
            ..ArgDocs::required(c"id", ArgKind::String)
        },
    ],
};

/// RATELIMIT.RELEASE.
pub struct Release;

impl Command for Release {
    const STATS: &'static CommandStats = &STATS.release;
    type Reply = i64;

    fn run(ctx: Ctx, args: &[RString]) -> Result<i64, Error> {
        let [_, key, ids @ ..] = args else {
            return Err(Error::WrongArity);
        };
        if ids.is_empty() {
            return Err(Error::WrongArity);
        }
        let ids = ids
            .iter()
            .map(|id| check_id(id.bytes()))
            .collect::<Result<Vec<&[u8]>, Error>>()?;
        let now_ms = server::now_ms()?;
        let mut key = Key::open(ctx, key, Access::ReadWrite)?;
        let (released, pruned) =
            KeyLeases::change(ctx, &mut key, |set| leases::release(set, &ids, now_ms))?;
        STATS.leases_expired.add(pruned);
        STATS.leases_released.add(released);
        if released > 0 {
            server::notify(ctx, c"ratelimit.release", key.name());
        }
        Ok(super::reply_int(released))
    }
}
