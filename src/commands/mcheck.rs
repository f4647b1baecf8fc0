//! `RATELIMIT.MCHECK`: several limits, charged all together or not at all.
//!
//! # Format
//! ```text
//! RATELIMIT.MCHECK numkeys key [key ...] LIMIT limit period [COST cost]
//!     [ALGORITHM FIXED|SLIDING|TOKEN] [BURST burst] [LIMIT ...]
//! ```
//! - `numkeys`: 1 to [`MAX_KEYS`], then exactly that many keys, each named
//!   once.
//! - One `LIMIT` group per key, in key order: what CHECK takes after its key,
//!   with its own `COST` (default 1), `ALGORITHM` and `BURST`.
//!
//! Each key keeps exactly the state CHECK keeps, so CHECK, PEEK and RESET
//! work on the same keys, and `MCHECK 1 k LIMIT 10 60` is `CHECK k 10 60`.
//! One clock reading serves the whole call: the request is admitted only if
//! every limit admits its own cost at that instant, and then every limit is
//! charged; otherwise none is (see [`all_of`](crate::limiter::all_of) for
//! the one exception, a counter without expiry), and nothing is charged or
//! propagated.
//!
//! # Returns
//! An array of seven elements: `allowed` (1/0, the whole request), then the
//! binding limit's `remaining`, `limit`, `retry_after_ms` and
//! `reset_after_ms` (CHECK's meaning), the binding limit's 1-based position,
//! and an array of each limit's own five integers, in key order: as charged
//! (CHECK's reply) when admitted, as that limit's PEEK for its cost when not.

use super::limits::{charge_all, key_positions, parse_multi, MultiReply, MULTI_ARGS};
use super::{Command, KeyPositions};
use crate::error::Error;
use crate::metadata::{CommandDocs, KeySpec};
use crate::server::{self, Ctx, RString};
use crate::stats::{CommandStats, STATS};

/// What `COMMAND DOCS` and `COMMAND INFO` say of RATELIMIT.MCHECK.
pub const DOCS: CommandDocs = CommandDocs {
    summary: c"Counts a request against several rate limits, all of them or none",
    complexity: c"O(N) where N is the number of keys",
    since: c"0.2.0",
    arity: -6,
    keys: &[KeySpec::Counted {
        flags: KeySpec::UPDATED,
        first: 1,
    }],
    acl_categories: c"write fast",
    args: &MULTI_ARGS,
};

/// RATELIMIT.MCHECK.
pub struct MCheck;

impl Command for MCheck {
    const STATS: &'static CommandStats = &STATS.mcheck;
    type Reply = MultiReply;

    fn run(ctx: Ctx, args: &[RString]) -> Result<MultiReply, Error> {
        let request = parse_multi(args)?;
        let now_ms = server::now_ms()?;
        let charged = charge_all(ctx, request.pairs(), now_ms, c"ratelimit.check")?;
        let looks_only = request.pairs().all(|(_, limit)| limit.cost == 0);
        if !looks_only {
            STATS.mcheck_decided(charged.reply.allowed());
            charged.denied_event(ctx);
        }
        Ok(charged.reply)
    }

    fn key_positions(args: &[RString]) -> Option<KeyPositions> {
        Some(KeyPositions {
            fixed: None,
            counted: key_positions(args),
        })
    }
}
