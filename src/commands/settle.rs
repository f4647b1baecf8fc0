//! `RATELIMIT.SETTLE`: charge a held request's actual cost.
//!
//! # Format
//! ```text
//! RATELIMIT.SETTLE holds id numkeys key [key ...]
//!     LIMIT limit period ACTUAL actual [ALGORITHM FIXED|SLIDING|TOKEN]
//!     [BURST burst] [LIMIT ...]
//! ```
//! Each key is charged `actual` less what RESERVE held on it under `id`:
//! a refund when the actual cost is smaller (into the window the estimate
//! was charged to: a fixed window only while it lasts, a sliding window's
//! current or previous count, a bucket never above full), a charge when it
//! is larger, taken even past the limit (a debt). SETTLE never denies. A
//! key the hold has and SETTLE does not name keeps its estimate.
//!
//! # Returns
//! `[status, [allowed, remaining, limit, retry_after_ms, reset_after_ms] …]`:
//! status 1 when the hold was live and is now settled, 0 when the id holds
//! nothing (unknown, or expired and refunded: `actual` is charged in full),
//! 2 when it was settled already (nothing is charged). Then each limit as
//! PEEK of one unit shows it after the settle, in key order.

use super::holds::holds_apart;
use super::limits::{counted_positions, parse_counted, Limit, Mode};
use super::{decision_fields, Command, KeyPositions};
use crate::args::Arg;
use crate::error::Error;
use crate::limiter::holds::Record;
use crate::limiter::leases::check_id;
use crate::metadata::{ArgDocs, ArgKind, CommandDocs, KeySpec};
use crate::server::{self, Access, Ctx, Key, RString, Replier, WriteReply};
use crate::stats::{CommandStats, STATS};
use crate::store::holds::{plan, read, Change, HoldsKey, Opened};

/// Where `numkeys` is.
const NUMKEYS_AT: usize = 3;
/// Arguments one key takes at least: itself and `LIMIT limit period ACTUAL
/// actual`.
const ARGS_PER_KEY: usize = 6;

/// What `COMMAND DOCS` and `COMMAND INFO` say of RATELIMIT.SETTLE.
pub const DOCS: CommandDocs = CommandDocs {
    summary: c"Charges a held request its actual cost: a refund below the estimate, a debt above it",
    complexity: c"O(N) where N is the number of keys; O(N+H) when a hold has expired, H the holds of the holds key",
    since: c"0.3.0",
    arity: -10,
    keys: &[
        KeySpec::ONE_UPDATED,
        KeySpec::Counted {
            flags: KeySpec::UPDATED,
            first: 3, // NUMKEYS_AT
        },
    ],
    acl_categories: c"write slow",
    args: &[
        ArgDocs::required(c"holds", ArgKind::Key),
        ArgDocs::required(c"id", ArgKind::String),
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
                        token: Some(c"ACTUAL"),
                        ..ArgDocs::required(c"actual", ArgKind::Integer)
                    },
                    ArgDocs::option(c"algorithm", c"ALGORITHM", ArgKind::Algorithm),
                    ArgDocs::option(c"burst", c"BURST", ArgKind::Integer),
                ]),
            )
        },
    ],
};

/// RATELIMIT.SETTLE.
pub struct Settle;

/// SETTLE's reply.
pub struct SettleReply {
    status: i64,
    each: Vec<[i64; 5]>,
}

impl WriteReply for SettleReply {
    fn write(&self, out: &mut Replier) {
        out.array(2);
        out.integer(self.status);
        out.array(self.each.len());
        for fields in &self.each {
            fields.write(out);
        }
    }
}

impl Command for Settle {
    const STATS: &'static CommandStats = &STATS.settle;
    type Reply = SettleReply;

    /// Every key is opened and its change planned before anything changes.
    fn run(ctx: Ctx, args: &[RString]) -> Result<SettleReply, Error> {
        let [_, holds_name, id, numkeys, rest @ ..] = args else {
            return Err(Error::WrongArity);
        };
        if rest.len() < ARGS_PER_KEY {
            return Err(Error::WrongArity);
        }
        check_id(id.bytes())?;
        let request = parse_counted(numkeys, rest, &["ACTUAL"])?;
        let mut actuals = Vec::with_capacity(request.keys.len());
        for (key, group) in request.pairs() {
            let (_, actual) = group.amount.ok_or(Error::MissingActual)?;
            actuals.push((key, group.chosen, actual));
        }
        holds_apart(holds_name, request.keys)?;

        let now_ms = server::now_ms()?;
        let Opened {
            mut holds,
            swept,
            value,
        } = HoldsKey::open(ctx, holds_name, id, now_ms)?;
        STATS.holds_expired.add(swept.expired);
        let record = value.as_ref().map(read).transpose()?;
        let status = match &record {
            Some(Record::Live(_)) => 1,
            Some(Record::Settled { .. }) => 2,
            None => 0,
        };

        let mut keys = Vec::with_capacity(actuals.len());
        for &(name, chosen, actual) in &actuals {
            let key = Key::open(ctx, name, Access::ReadWrite)?;
            // A hold settled already changes nothing: only the look remains.
            let change = match &record {
                Some(Record::Live(live)) => {
                    let held = live.held_at(name.bytes());
                    Some(match actual.checked_sub(held) {
                        Some(more) => Change::Force(more),
                        None => Change::Refund {
                            units: held.saturating_sub(actual),
                            charged_at_ms: live.charged_at_ms,
                        },
                    })
                }
                Some(Record::Settled { .. }) => None,
                None => Some(Change::Force(actual)),
            };
            let adjustment = match change {
                Some(change) => plan(&key, chosen, change, now_ms)?,
                None => None,
            };
            keys.push((key, chosen, adjustment));
        }
        for (key, _, adjustment) in keys.iter_mut() {
            if let Some(adjustment) = adjustment {
                adjustment.apply(ctx, key)?;
                server::notify(ctx, c"ratelimit.settle", key.name());
            }
        }
        match record {
            Some(Record::Live(live)) => {
                let deadline_ms = now_ms.saturating_add(live.ttl_ms);
                let settled = live.settled(deadline_ms);
                holds.put(ctx, id, &settled, deadline_ms, deadline_ms, now_ms)?;
                server::notify(ctx, c"ratelimit.settle", holds.name());
                STATS.settle_settled.bump();
            }
            Some(Record::Settled { .. }) => STATS.settle_repeated.bump(),
            None => STATS.settle_unknown.bump(),
        }

        let mut each = Vec::with_capacity(keys.len());
        for (key, chosen, _) in &keys {
            let limit = Limit {
                chosen: *chosen,
                cost: 1,
            };
            each.push(decision_fields(limit.ask(key, now_ms, Mode::Look)?.look()?));
        }
        Ok(SettleReply { status, each })
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
