//! `RATELIMIT.RENEW`: move a live lease's deadline.
//!
//! # Format
//! ```text
//! RATELIMIT.RENEW key id lease_ms
//! ```
//!
//! # Returns
//! 1 when the lease was live and now ends `lease_ms` from now; 0 when it is
//! unknown or has ended (its slot may already be someone else's: ACQUIRE
//! again).

use super::Command;
use crate::args::{bounded, Arg};
use crate::error::Error;
use crate::limiter::leases::{self, check_id, LEASE_MS};
use crate::metadata::{ArgDocs, ArgKind, CommandDocs, KeySpec};
use crate::server::{self, Access, Ctx, Key, RString};
use crate::stats::{CommandStats, STATS};
use crate::store::leases::KeyLeases;
use redis_module::raw;

/// What `COMMAND DOCS` and `COMMAND INFO` say of RATELIMIT.RENEW.
pub const DOCS: CommandDocs = CommandDocs {
    summary: c"Moves the deadline of a live lease to lease_ms from now",
    complexity: c"O(log N) for N live leases",
    since: c"0.2.0",
    arity: 4,
    keys: &[KeySpec::Range {
        flags: raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_UPDATE,
        first: 1,
        last: 0,
    }],
    acl_categories: c"write fast",
    args: &[
        ArgDocs::required(c"key", ArgKind::Key),
        ArgDocs::required(c"id", ArgKind::String),
        ArgDocs::required(c"lease_ms", ArgKind::Integer),
    ],
};

/// RATELIMIT.RENEW.
pub struct Renew;

impl Command for Renew {
    const STATS: &'static CommandStats = &STATS.renew;
    type Reply = i64;

    fn run(ctx: Ctx, args: &[RString]) -> Result<i64, Error> {
        let [_, key, id, lease_ms] = args else {
            return Err(Error::WrongArity);
        };
        let id = check_id(id.bytes())?;
        let lease_ms = bounded(lease_ms, &LEASE_MS)?;
        let now_ms = server::now_ms()?;
        let mut key = Key::open(ctx, key, Access::ReadWrite)?;
        let (renewed, pruned) = KeyLeases::change(ctx, &mut key, |set| {
            leases::renew(set, id, lease_ms, now_ms)
        })?;
        STATS.leases_expired.add(pruned);
        if renewed {
            STATS.leases_renewed.bump();
            server::notify(ctx, c"ratelimit.renew", key.name());
        }
        Ok(i64::from(renewed))
    }
}
