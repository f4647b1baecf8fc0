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

use super::limits::{parse, Answer, Mode, Request, LIMIT_ARGS};
use super::{decision_fields, denied_event, Command};
use crate::error::Error;
use crate::metadata::{CommandDocs, KeySpec};
use crate::server::{self, Access, Ctx, Key, RString};
use crate::stats::STATS;

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
        let Answer { charged, write, .. } = limit.ask(&key, now_ms, Mode::Charge)?;
        if let Some(write) = write {
            write.apply(ctx, &mut key)?;
            server::notify(ctx, c"ratelimit.check", key.name());
        }
        let stats = STATS.algorithm(limit.chosen.id());
        if limit.cost == 0 {
            // A look, not a request: counted with PEEK's looks, never denied.
            stats.peeks.bump();
        } else {
            stats.decided(charged.allowed);
            if !charged.allowed {
                denied_event(ctx, key.name());
            }
        }
        Ok(decision_fields(charged))
    }
}
