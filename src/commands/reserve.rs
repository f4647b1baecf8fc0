//! `RATELIMIT.RESERVE`: MCHECK that holds an estimate under an id, to be
//! settled with the actual cost once it is known.
//!
//! # Format
//! ```text
//! RATELIMIT.RESERVE holds id ttl_ms numkeys key [key ...]
//!     LIMIT limit period [COST cost | HOLD estimate]
//!     [ALGORITHM FIXED|SLIDING|TOKEN] [BURST burst] [LIMIT ...]
//! ```
//! - `holds`: the hash that records holds, in the limiter keys' slot.
//! - `id`: 1 to 64 bytes, not `NOW`: the request's idempotency key.
//! - `ttl_ms`: how long the hold lives unsettled (at most the
//!   `hold-max-ttl-ms` option); then the next command on `holds` refunds it.
//! - The keys and groups as MCHECK's. A `COST` group is charged for good;
//!   a `HOLD` group is charged the estimate, at most `hold-max-percent` of
//!   the limit's capacity, and remembered under `id`.
//!
//! All or nothing, as MCHECK: a denied RESERVE charges and records nothing.
//! A RESERVE of an id already recorded charges nothing and replies what the
//! first one replied.
//!
//! # Returns
//! MCHECK's seven elements, then `held` (the units held under `id`: the
//! least among the HOLD limits; 0 when denied) and `hold_ttl_ms` (ms until
//! the hold expires; -1 when nothing is held).

use super::holds::holds_apart;
use super::limits::{charge_all, counted_positions, parse_counted, Limit};
use super::{Command, KeyPositions};
use crate::args::{bounded, Arg};
use crate::config::{HOLD_MAX_PERCENT, HOLD_MAX_TTL_MS};
use crate::error::Error;
use crate::limiter::holds::{self, held_for, FirstReply, Hold, Live, Record, TTL_MS};
use crate::limiter::leases::check_id;
use crate::metadata::{ArgDocs, ArgKind, CommandDocs, KeySpec};
use crate::server::{self, Ctx, RString, Replier, WriteReply};
use crate::stats::{CommandStats, STATS};
use crate::store::holds::{read, HoldsKey, Opened};
use std::sync::atomic::Ordering::Relaxed;

/// Where `numkeys` is.
const NUMKEYS_AT: usize = 4;
/// Arguments one key takes at least: itself and `LIMIT limit period`.
const ARGS_PER_KEY: usize = 4;

/// What `COMMAND DOCS` and `COMMAND INFO` say of RATELIMIT.RESERVE.
pub const DOCS: CommandDocs = CommandDocs {
    summary: c"Counts a request against several rate limits, holding an estimate under an id until it is settled",
    complexity: c"O(N) where N is the number of keys; O(N+H) when a hold has expired, H the holds of the holds key",
    since: c"0.3.0",
    arity: -9,
    keys: &[
        KeySpec::ONE_UPDATED,
        KeySpec::Counted {
            flags: KeySpec::UPDATED,
            first: 4, // NUMKEYS_AT
        },
    ],
    acl_categories: c"write slow",
    args: &[
        ArgDocs::required(c"holds", ArgKind::Key),
        ArgDocs::required(c"id", ArgKind::String),
        ArgDocs::required(c"ttl_ms", ArgKind::Integer),
        ArgDocs::required(c"numkeys", ArgKind::Integer),
        ArgDocs {
            multiple: true,
            key_spec: Some(1),
            ..ArgDocs::required(c"key", ArgKind::Key)
        },
        ArgDocs {
            token: Some(c"LIMIT"),
            multiple: true,
            ..ArgDocs::required(
                c"limit",
                ArgKind::Block(&[
                    ArgDocs::required(c"limit", ArgKind::Integer),
                    ArgDocs::required(c"period", ArgKind::Integer),
                    ArgDocs {
                        optional: true,
                        ..ArgDocs::required(
                            c"units",
                            ArgKind::OneOf(&[
                                ArgDocs::option(c"cost", c"COST", ArgKind::Integer),
                                ArgDocs::option(c"estimate", c"HOLD", ArgKind::Integer),
                            ]),
                        )
                    },
                    ArgDocs::option(c"algorithm", c"ALGORITHM", ArgKind::Algorithm),
                    ArgDocs::option(c"burst", c"BURST", ArgKind::Integer),
                ]),
            )
        },
    ],
};

/// RATELIMIT.RESERVE.
pub struct Reserve;

/// RESERVE's reply.
pub struct ReserveReply {
    /// MCHECK's reply (the first one, for a replay).
    pub first: FirstReply,
    /// Units held under the id.
    pub held: u64,
    /// Ms until the hold expires; `None` when nothing is held.
    pub hold_ttl_ms: Option<u64>,
}

impl WriteReply for ReserveReply {
    fn write(&self, out: &mut Replier) {
        out.array(9);
        for &value in &self.first.head {
            out.integer(value);
        }
        out.array(self.first.each.len());
        for fields in &self.first.each {
            fields.write(out);
        }
        out.integer(super::reply_int(self.held));
        out.integer(self.hold_ttl_ms.map_or(-1, super::reply_int));
    }
}

impl Command for Reserve {
    const STATS: &'static CommandStats = &STATS.reserve;
    type Reply = ReserveReply;

    fn run(ctx: Ctx, args: &[RString]) -> Result<ReserveReply, Error> {
        let [_, holds_name, id, ttl_ms, numkeys, rest @ ..] = args else {
            return Err(Error::WrongArity);
        };
        if rest.len() < ARGS_PER_KEY {
            return Err(Error::WrongArity);
        }
        check_id(id.bytes())?;
        let ttl_ms = bounded(ttl_ms, &TTL_MS)?;
        let request = parse_counted(numkeys, rest, &["COST", "HOLD"])?;
        holds_apart(holds_name, request.keys)?;
        let percent = HOLD_MAX_PERCENT.load(Relaxed);
        let ttl_ms = ttl_ms.min(HOLD_MAX_TTL_MS.load(Relaxed));

        let now_ms = server::now_ms()?;
        let Opened {
            mut holds,
            swept,
            value,
        } = HoldsKey::open(ctx, holds_name, id, now_ms)?;
        STATS.holds_expired.add(swept.expired);
        if let Some(value) = value {
            let record = read(&value)?;
            let first = record.first_reply().ok_or(Error::NotHolds)?;
            STATS.reserve_replayed.bump();
            return Ok(match record {
                Record::Live(live) => ReserveReply {
                    first,
                    held: live.held(),
                    hold_ttl_ms: Some(live.deadline_ms.saturating_sub(now_ms)),
                },
                Record::Settled { .. } => ReserveReply {
                    first,
                    held: 0,
                    hold_ttl_ms: None,
                },
            });
        }

        let mut held = Vec::new();
        let mut limits = Vec::with_capacity(request.keys.len());
        for (key, group) in request.pairs() {
            let cost = match group.amount {
                Some(("HOLD", estimate)) => {
                    let units = held_for(estimate, group.chosen.capacity(), percent);
                    held.push(Hold {
                        chosen: group.chosen,
                        held: units,
                        key: key.bytes(),
                    });
                    units
                }
                Some((_, cost)) => cost,
                None => 1,
            };
            limits.push((
                key,
                Limit {
                    chosen: group.chosen,
                    cost,
                },
            ));
        }
        let charged = charge_all(ctx, limits.into_iter(), now_ms, c"ratelimit.reserve")?;
        let (head, each) = charged.reply.fields();
        let first = FirstReply { head, each };
        if !charged.reply.allowed() {
            STATS.reserve_denied.bump();
            charged.denied_event(ctx);
            return Ok(ReserveReply {
                first,
                held: 0,
                hold_ttl_ms: None,
            });
        }
        STATS.reserve_allowed.bump();
        let live = Live {
            deadline_ms: now_ms.saturating_add(ttl_ms),
            charged_at_ms: now_ms,
            ttl_ms,
            holds: held,
            reply: &[],
        };
        let record = holds::encode_new(&live, &first);
        holds.put(
            ctx,
            id,
            &record,
            live.deadline_ms,
            live.keep_until_ms(),
            now_ms,
        )?;
        server::notify(ctx, c"ratelimit.reserve", holds.name());
        Ok(ReserveReply {
            first,
            held: live.held(),
            hold_ttl_ms: Some(ttl_ms),
        })
    }

    fn key_positions(args: &[RString]) -> Option<KeyPositions> {
        Some(KeyPositions {
            fixed: (args.len() > 1).then_some(1),
            counted: counted_positions(args, NUMKEYS_AT, ARGS_PER_KEY),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_spec_counts_from_numkeys() {
        let [_, KeySpec::Counted { first, .. }] = DOCS.keys else {
            panic!("no counted key spec");
        };
        assert_eq!(usize::try_from(*first).unwrap(), NUMKEYS_AT);
    }
}
