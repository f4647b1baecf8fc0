//! `RATELIMIT.RESET`: forget limiters.
//!
//! # Format
//! ```text
//! RATELIMIT.RESET key [key …]
//! ```
//!
//! # Returns
//! The number of keys removed. Missing keys are skipped. If any key holds
//! something that is not limiter state (another type, or a string of no
//! limiter's layout), the reply is `WRONGTYPE` and nothing is removed. Each
//! removal propagates as `DEL`.

use super::Command;
use crate::error::Error;
use crate::metadata::{ArgDocs, ArgKind, CommandDocs, KeySpec};
use crate::server::{self, Access, Ctx, Key, RString, Value};
use crate::stats::{CommandStats, STATS};
use crate::store;
use redis_module::raw;

/// What `COMMAND DOCS` and `COMMAND INFO` say of RATELIMIT.RESET.
pub const DOCS: CommandDocs = CommandDocs {
    summary: c"Removes the state of rate limiters",
    complexity: c"O(N) where N is the number of keys",
    since: c"0.1.0",
    arity: -2,
    keys: &[KeySpec::Range {
        flags: raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_DELETE,
        first: 1,
        last: -1,
    }],
    acl_categories: c"write keyspace slow",
    args: &[ArgDocs {
        multiple: true,
        ..ArgDocs::required(c"key", ArgKind::Key)
    }],
};

/// RATELIMIT.RESET.
pub struct Reset;

impl Command for Reset {
    const STATS: &'static CommandStats = &STATS.reset;
    type Reply = i64;

    fn run(ctx: Ctx, args: &[RString]) -> Result<i64, Error> {
        let [_, keys @ ..] = args else {
            return Err(Error::WrongArity);
        };
        if keys.is_empty() {
            return Err(Error::WrongArity);
        }
        // Check every key before removing any: all or nothing.
        for name in keys {
            store::holds_limiter_state_or_nothing(&Key::open(ctx, name, Access::Read)?)?;
        }
        let mut removed: i64 = 0;
        for name in keys {
            let mut key = Key::open(ctx, name, Access::ReadWrite)?;
            // A key named twice is gone the second time.
            if matches!(key.value()?, Value::Empty) {
                continue;
            }
            key.delete()?;
            server::replicate_del(ctx, name)?;
            server::signal_modified(ctx, name)?;
            server::notify(ctx, c"ratelimit.reset", name);
            removed = removed.saturating_add(1);
        }
        STATS.keys_reset.add(removed.unsigned_abs());
        Ok(removed)
    }
}
