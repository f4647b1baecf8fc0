//! `RATELIMIT.EXTEND`: give a live hold a new deadline (a long stream).
//!
//! # Format
//! ```text
//! RATELIMIT.EXTEND holds id ttl_ms
//! ```
//!
//! # Returns
//! Ms until the hold now expires (`ttl_ms`, at most the `hold-max-ttl-ms`
//! option), or 0 when the id holds nothing (unknown, expired or settled).

use super::Command;
use crate::args::{bounded, Arg};
use crate::config::HOLD_MAX_TTL_MS;
use crate::error::Error;
use crate::limiter::holds::{Record, TTL_MS};
use crate::limiter::leases::check_id;
use crate::metadata::{ArgDocs, ArgKind, CommandDocs, KeySpec};
use crate::server::{self, Ctx, RString};
use crate::stats::{CommandStats, STATS};
use crate::store::holds::{read, HoldsKey, Opened};
use std::sync::atomic::Ordering::Relaxed;

/// What `COMMAND DOCS` and `COMMAND INFO` say of RATELIMIT.EXTEND.
pub const DOCS: CommandDocs = CommandDocs {
    summary: c"Moves the deadline of a live hold to ttl_ms from now",
    complexity: c"O(1); O(H) when a hold has expired, H the holds of the holds key",
    since: c"0.3.0",
    arity: 4,
    keys: &[KeySpec::ONE_UPDATED],
    acl_categories: c"write slow",
    args: &[
        ArgDocs::required(c"holds", ArgKind::Key),
        ArgDocs::required(c"id", ArgKind::String),
        ArgDocs::required(c"ttl_ms", ArgKind::Integer),
    ],
};

/// RATELIMIT.EXTEND.
pub struct Extend;

impl Command for Extend {
    const STATS: &'static CommandStats = &STATS.extend;
    type Reply = i64;

    fn run(ctx: Ctx, args: &[RString]) -> Result<i64, Error> {
        let [_, holds_name, id, ttl_ms] = args else {
            return Err(Error::WrongArity);
        };
        check_id(id.bytes())?;
        let ttl_ms = bounded(ttl_ms, &TTL_MS)?.min(HOLD_MAX_TTL_MS.load(Relaxed));
        let now_ms = server::now_ms()?;
        let Opened {
            mut holds,
            swept,
            value,
        } = HoldsKey::open(ctx, holds_name, id, now_ms)?;
        STATS.holds_expired.add(swept.expired);
        let Some(value) = value else {
            return Ok(0);
        };
        let Record::Live(mut live) = read(&value)? else {
            return Ok(0);
        };
        live.deadline_ms = now_ms.saturating_add(ttl_ms);
        live.ttl_ms = ttl_ms;
        let record = live.encode();
        holds.put(
            ctx,
            id,
            &record,
            live.deadline_ms,
            live.keep_until_ms(),
            now_ms,
        )?;
        STATS.holds_extended.bump();
        server::notify(ctx, c"ratelimit.extend", holds.name());
        Ok(super::reply_int(ttl_ms))
    }
}
