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
//! charged; otherwise none is (see [`all_of`] for the one exception, a
//! counter without expiry), and nothing is charged or propagated.
//!
//! # Returns
//! An array of seven elements: `allowed` (1/0, the whole request), then the
//! binding limit's `remaining`, `limit`, `retry_after_ms` and
//! `reset_after_ms` (CHECK's meaning), the binding limit's 1-based position,
//! and an array of each limit's own five integers, in key order: as charged
//! when admitted, as that limit's PEEK for its cost when not.

use super::check::{parse_limit, Limit};
use super::{decision_fields, denied_event, Command};
use crate::args::{bounded, is_keyword, Arg};
use crate::error::Error;
use crate::limiter::all_of::{self, Combined, Each};
use crate::limiter::{Algorithm, Bound, Decision, Visit};
use crate::metadata::{ArgDocs, ArgKind, CommandDocs, KeySpec};
use crate::server::{self, Access, Ctx, Key, RString, Replier, WriteReply};
use crate::stats::{CommandStats, STATS};
use crate::store::{self, Write};
use redis_module::raw;

/// The most keys one call may name.
pub const MAX_KEYS: usize = 16;

/// `numkeys`.
const NUMKEYS: Bound = Bound {
    min: 1,
    max: MAX_KEYS as u64,
    error: Error::InvalidNumKeys,
};

/// What `COMMAND DOCS` and `COMMAND INFO` say of RATELIMIT.MCHECK.
pub const DOCS: CommandDocs = CommandDocs {
    summary: c"Counts a request against several rate limits, all of them or none",
    complexity: c"O(N) where N is the number of keys",
    since: c"0.2.0",
    arity: -6,
    keys: &[KeySpec::Counted {
        flags: raw::REDISMODULE_CMD_KEY_RW
            | raw::REDISMODULE_CMD_KEY_ACCESS
            | raw::REDISMODULE_CMD_KEY_UPDATE,
        first: 1,
    }],
    acl_categories: c"write fast",
    args: &MULTI_ARGS,
};

/// The arguments of MCHECK and MPEEK.
pub const MULTI_ARGS: [ArgDocs; 3] = [
    ArgDocs::required(c"numkeys", ArgKind::Integer),
    ArgDocs {
        multiple: true,
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
                ArgDocs::option(c"cost", c"COST", ArgKind::Integer),
                ArgDocs::option(c"algorithm", c"ALGORITHM", ArgKind::Algorithm),
                ArgDocs::option(c"burst", c"BURST", ArgKind::Integer),
            ]),
        )
    },
];

/// The parsed arguments of an MCHECK (or MPEEK) call.
pub struct Request<'a, A> {
    /// The keys, each with its limit.
    pub keys: &'a [A],
    limits: [Option<Limit>; MAX_KEYS],
}

impl<'a, A> Request<'a, A> {
    /// Each key with its limit, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&'a A, Limit)> + '_ {
        self.keys.iter().zip(self.limits.iter().flatten().copied())
    }
}

/// Where the keys are: after `numkeys`, as many as it says (when it says a
/// number the arguments can hold).
pub fn key_positions<A: Arg>(args: &[A]) -> std::ops::Range<usize> {
    let count = args
        .get(1)
        .and_then(|n| bounded(n, &NUMKEYS).ok())
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n < args.len().saturating_sub(1))
        .unwrap_or(0);
    2..count.saturating_add(2)
}

/// Parses `RATELIMIT.MCHECK numkeys key … LIMIT … [LIMIT …]`, the command
/// name included. Errors come in argument order: `numkeys`, then each group
/// (CHECK's messages), then a key named twice.
pub fn parse<A: Arg>(args: &[A]) -> Result<Request<'_, A>, Error> {
    // At least `numkeys key LIMIT limit period`: the arity the server checks
    // itself where it takes command info (7.0+), so that Redis 6.2 gives the
    // same error for a call cut short.
    let [_, numkeys, rest @ ..] = args else {
        return Err(Error::WrongArity);
    };
    if rest.len() < 4 {
        return Err(Error::WrongArity);
    }
    let count = usize::try_from(bounded(numkeys, &NUMKEYS)?).map_err(|_| Error::InvalidNumKeys)?;
    let (keys, mut groups) = rest.split_at_checked(count).ok_or(Error::GroupPerKey)?;
    let mut limits = [None; MAX_KEYS];
    for slot in limits.iter_mut().take(count) {
        let [keyword, limit, period, tail @ ..] = groups else {
            return Err(match groups.first() {
                Some(word) if is_keyword(word.bytes(), "LIMIT") => Error::Syntax,
                _ => Error::GroupPerKey,
            });
        };
        if !is_keyword(keyword.bytes(), "LIMIT") {
            return Err(Error::GroupPerKey);
        }
        // The group's options run to the next LIMIT, in name-value pairs.
        let mut len = 0;
        while let Some(word) = tail.get(len) {
            if is_keyword(word.bytes(), "LIMIT") {
                break;
            }
            len = len.saturating_add(2);
        }
        let (options, next) = tail.split_at_checked(len).unwrap_or((tail, &[]));
        *slot = Some(parse_limit(limit, period, options)?);
        groups = next;
    }
    if !groups.is_empty() {
        return Err(Error::GroupPerKey);
    }
    for (i, key) in keys.iter().enumerate() {
        if keys
            .iter()
            .skip(i.saturating_add(1))
            .any(|k| k.bytes() == key.bytes())
        {
            return Err(Error::DuplicateKey);
        }
    }
    Ok(Request { keys, limits })
}

/// One limit's answer, and the write it would make.
pub(crate) struct Asked {
    pub each: Each,
    pub write: Option<Write>,
}

/// Asks a key's limit, storing nothing yet.
pub(crate) struct Ask<'k, 'a> {
    pub key: &'k Key<'a>,
    pub cost: u64,
    pub now_ms: u64,
}

impl Visit for Ask<'_, '_> {
    type Output = Result<Asked, Error>;

    fn visit<A: Algorithm>(self, algorithm: A) -> Self::Output {
        let loaded = store::load::<A>(self.key)?;
        let outcome = algorithm.check(loaded.state, self.cost, self.now_ms);
        let write = match outcome.store {
            Some(next) => Some(Write::plan(&loaded, next)?),
            None => None,
        };
        Ok(Asked {
            each: Each {
                charged: outcome.decision,
                looked: algorithm.peek(loaded.state, self.cost, self.now_ms),
            },
            write,
        })
    }
}

/// Opens every key with `access` and asks each limit: the verdict, each
/// answer and each write, nothing written yet. Any key that cannot be read
/// (another type, another kind) fails the whole call.
pub(crate) fn ask_all<'a>(
    ctx: Ctx,
    request: &Request<'a, RString>,
    access: Access,
    now_ms: u64,
) -> Result<(Combined, Vec<(Key<'a>, Asked)>), Error> {
    let mut asked = Vec::with_capacity(request.keys.len());
    for (name, limit) in request.pairs() {
        let key = Key::open(ctx, name, access)?;
        let answer = limit.chosen.visit(Ask {
            key: &key,
            cost: limit.cost,
            now_ms,
        })?;
        asked.push((key, answer));
    }
    let each: Vec<Each> = asked.iter().map(|(_, a)| a.each).collect();
    let combined = all_of::combine(&each).ok_or(Error::Internal("MCHECK with no limits"))?;
    Ok((combined, asked))
}

/// MCHECK's and MPEEK's reply.
pub struct MultiReply {
    allowed: bool,
    binding: usize,
    shown: Vec<Decision>,
}

impl MultiReply {
    /// The reply for `combined` over `each`.
    pub(crate) fn new<'e>(combined: Combined, each: impl Iterator<Item = &'e Each>) -> MultiReply {
        MultiReply {
            allowed: combined.allowed,
            binding: combined.binding,
            shown: each.map(|e| combined.shown(e)).collect(),
        }
    }

    /// The seven elements' integers for the head, and each limit's five.
    pub fn fields(&self) -> ([i64; 6], Vec<[i64; 5]>) {
        let each: Vec<[i64; 5]> = self.shown.iter().copied().map(decision_fields).collect();
        let [_, remaining, limit, retry, reset] =
            each.get(self.binding).copied().unwrap_or_default();
        let position = i64::try_from(self.binding.saturating_add(1)).unwrap_or(0);
        (
            [
                i64::from(self.allowed),
                remaining,
                limit,
                retry,
                reset,
                position,
            ],
            each,
        )
    }
}

impl WriteReply for MultiReply {
    fn write(&self, out: &mut Replier) {
        let (head, each) = self.fields();
        out.array(7);
        for value in head {
            out.integer(value);
        }
        out.array(each.len());
        for fields in &each {
            fields.write(out);
        }
    }
}

/// RATELIMIT.MCHECK.
pub struct MCheck;

impl Command for MCheck {
    const STATS: &'static CommandStats = &STATS.mcheck;
    type Reply = MultiReply;

    fn run(ctx: Ctx, args: &[RString]) -> Result<MultiReply, Error> {
        let request = parse(args)?;
        let now_ms = server::now_ms()?;
        let (combined, mut asked) = ask_all(ctx, &request, Access::ReadWrite, now_ms)?;
        for (key, answer) in asked.iter_mut() {
            let Some(write) = answer
                .write
                .as_ref()
                .filter(|_| combined.stores(&answer.each))
            else {
                continue;
            };
            write.apply(ctx, key)?;
            server::notify(ctx, c"ratelimit.check", key.name());
        }
        let looks_only = request.pairs().all(|(_, limit)| limit.cost == 0);
        if !looks_only {
            STATS.mcheck_decided(combined.allowed);
            if !combined.allowed {
                if let Some((key, _)) = asked.get(combined.binding) {
                    denied_event(ctx, key.name());
                }
            }
        }
        Ok(MultiReply::new(
            combined,
            asked.iter().map(|(_, a)| &a.each),
        ))
    }

    fn key_positions(args: &[RString]) -> Option<std::ops::Range<usize>> {
        Some(key_positions(args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::{Chosen, Id, Quota};

    fn parse_strs<'a>(args: &'a [&'a str]) -> Result<Request<'a, &'a str>, Error> {
        parse(args)
    }

    fn limit(id: Id, limit: u64, period_s: u64, burst: Option<u64>, cost: u64) -> Limit {
        Limit {
            chosen: Chosen::new(id, Quota::new(limit, period_s).unwrap(), burst).unwrap(),
            cost,
        }
    }

    #[test]
    fn parses_one_group_per_key_in_key_order() {
        let args = [
            "RATELIMIT.MCHECK",
            "2",
            "{u}:rps",
            "{u}:tpm",
            "LIMIT",
            "10",
            "1",
            "limit",
            "100000",
            "60",
            "COST",
            "750",
            "ALGORITHM",
            "TOKEN",
            "burst",
            "200000",
        ];
        let r = parse_strs(&args).unwrap();
        let pairs: Vec<_> = r.pairs().map(|(k, l)| (*k, l)).collect();
        assert_eq!(
            pairs,
            [
                ("{u}:rps", limit(Id::Fixed, 10, 1, None, 1)),
                ("{u}:tpm", limit(Id::Token, 100_000, 60, Some(200_000), 750)),
            ]
        );
        let one = parse_strs(&["RATELIMIT.MCHECK", "1", "k", "LIMIT", "10", "60"]).unwrap();
        assert_eq!(one.pairs().count(), 1);
    }

    #[test]
    fn rejects_malformed_calls_with_the_right_error() {
        // The arguments after the command name, split at spaces.
        #[rustfmt::skip]
        let cases: &[(&str, Error)] = &[
            // Fewer than `numkeys key LIMIT limit period`, as the server's
            // arity check (-6) says where it makes one.
            ("", Error::WrongArity),
            ("1", Error::WrongArity),
            ("1 a LIMIT 1", Error::WrongArity),
            ("0 k LIMIT 1 1", Error::InvalidNumKeys),
            ("17 k LIMIT 1 1", Error::InvalidNumKeys),
            ("x k LIMIT 1 1", Error::InvalidNumKeys),
            ("-1 k LIMIT 1 1", Error::InvalidNumKeys),
            // More keys than arguments, fewer groups than keys, more groups.
            ("5 a b c d", Error::GroupPerKey),
            ("2 a b LIMIT 1 1", Error::GroupPerKey),
            ("1 a LIMIT 1 1 LIMIT 2 2", Error::GroupPerKey),
            // A group that does not start with LIMIT.
            ("1 a 1 1 1", Error::GroupPerKey),
            ("1 a COST 1 1", Error::GroupPerKey),
            // A group cut short.
            ("2 a b LIMIT 1", Error::Syntax),
            ("2 a b LIMIT 1 LIMIT 1 1", Error::InvalidPeriod),
            // CHECK's own errors, in argument order.
            ("1 a LIMIT 0 1", Error::InvalidLimit),
            ("1 a LIMIT 1 0", Error::InvalidPeriod),
            ("1 a LIMIT 1 1 COST", Error::Syntax),
            ("1 a LIMIT 1 1 COST -1", Error::InvalidCost),
            ("1 a LIMIT 1 1 COST 1 COST 1", Error::Syntax),
            ("1 a LIMIT 1 1 ALGORITHM LEAKY", Error::InvalidAlgorithm),
            ("1 a LIMIT 1 1 BURST 5", Error::BurstWithoutToken),
            ("1 a LIMIT 1 1 WEIGHT 5", Error::Syntax),
            ("2 a b LIMIT 1 1 LIMIT x 1", Error::InvalidLimit),
            // The same key twice, once the groups are read.
            ("2 a a LIMIT 1 1 LIMIT 1 1", Error::DuplicateKey),
            ("2 a a LIMIT 1 1 LIMIT 0 1", Error::InvalidLimit),
        ];
        for (args, expected) in cases {
            let args: Vec<&str> = std::iter::once("RATELIMIT.MCHECK")
                .chain(args.split_whitespace())
                .collect();
            assert_eq!(parse_strs(&args).err(), Some(*expected), "{args:?}");
        }
    }

    #[test]
    fn finds_the_keys_after_numkeys() {
        let args = [
            "RATELIMIT.MCHECK",
            "2",
            "a",
            "b",
            "LIMIT",
            "1",
            "1",
            "LIMIT",
            "1",
            "1",
        ];
        assert_eq!(key_positions(&args), 2..4);
        assert_eq!(key_positions(&["RATELIMIT.MCHECK", "x", "a"]), 2..2);
        assert_eq!(key_positions(&["RATELIMIT.MCHECK", "5", "a"]), 2..2);
    }

    #[test]
    fn replies_the_binding_limit_first_then_each() {
        let d = |allowed, remaining, retry: Option<u64>| Decision {
            allowed,
            remaining,
            limit: 10,
            retry_after_ms: retry,
            reset_after_ms: 900,
        };
        let each = [
            Each {
                charged: d(true, 5, None),
                looked: d(true, 6, None),
            },
            Each {
                charged: d(false, 0, Some(300)),
                looked: d(false, 0, Some(300)),
            },
        ];
        let combined = all_of::combine(&each).unwrap();
        let (head, shown) = MultiReply::new(combined, each.iter()).fields();
        assert_eq!(head, [0, 0, 10, 300, 900, 2]);
        assert_eq!(shown, [[1, 6, 10, -1, 900], [0, 0, 10, 300, 900]]);
    }
}
