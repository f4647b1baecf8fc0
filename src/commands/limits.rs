//! What CHECK, PEEK, MCHECK and MPEEK share: their arguments, the one way a
//! limit is asked ([`Ask`]), and the multi-limit reply.
//!
//! A limit is asked in one of two modes. [`Mode::Charge`] is CHECK's: the
//! decision for the cost and the write that charges it, planned and not
//! made. [`Mode::Look`] is PEEK's: the same decision, and the look that
//! every read-only command replies (`remaining` and `reset_after_ms` of the
//! state as it is, nothing deducted), with no write planned. MCHECK asks
//! each key as CHECK does and MPEEK each key as PEEK does, so MCHECK of one
//! key is CHECK and MPEEK of one key is PEEK by construction.

use crate::args::{bounded, is_keyword, Arg};
use crate::error::{Error, Word};
use crate::limiter::all_of::{self, Combined};
use crate::limiter::{
    self, holds, Algorithm, Bound, Chosen, Decision, Quota, Visit, BURST, COST, DEFAULT_ALGORITHM,
    LIMIT, PERIOD_S,
};
use crate::metadata::{ArgDocs, ArgKind};
use crate::server::{self, Access, Ctx, Key, RString, Replier, WriteReply};
use crate::store::{self, Write};

use super::{decision_fields, denied_event};
use std::ffi::CStr;

/// The arguments of CHECK and PEEK.
pub const LIMIT_ARGS: [ArgDocs; 6] = [
    ArgDocs::required(c"key", ArgKind::Key),
    ArgDocs::required(c"limit", ArgKind::Integer),
    ArgDocs::required(c"period", ArgKind::Integer),
    ArgDocs::option(c"cost", c"COST", ArgKind::Integer),
    ArgDocs::option(c"algorithm", c"ALGORITHM", ArgKind::Algorithm),
    ArgDocs::option(c"burst", c"BURST", ArgKind::Integer),
];

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

/// The most keys one MCHECK or MPEEK may name.
pub const MAX_KEYS: usize = 16;

/// `numkeys`.
pub const NUMKEYS: Bound = Bound {
    min: 1,
    max: MAX_KEYS as u64,
    error: Error::InvalidNumKeys,
};

/// Arguments one key takes at least: itself and `LIMIT limit period`.
const ARGS_PER_KEY: usize = 4;

/// One limit as a request states it: the algorithm with its parameters, and
/// the units the request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The algorithm and its parameters.
    pub chosen: Chosen,
    /// Units this request takes.
    pub cost: u64,
}

impl Limit {
    /// Asks this limit at `key`, open, at `now_ms`, in `mode`: the one
    /// load → decide path of CHECK, PEEK, MCHECK and MPEEK.
    pub fn ask(&self, key: &Key, now_ms: u64, mode: Mode) -> Result<Answer, Error> {
        self.chosen.visit(Ask {
            key,
            cost: self.cost,
            now_ms,
            mode,
        })
    }
}

/// The parsed arguments of a CHECK or PEEK call.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a, A> {
    /// The key holding the limiter's state.
    pub key: &'a A,
    /// What the request asks of it.
    pub limit: Limit,
}

/// Parses `<command> key limit period [COST cost] [ALGORITHM …]
/// [BURST burst]`, the command name included.
pub fn parse<A: Arg>(args: &[A]) -> Result<Request<'_, A>, Error> {
    let [_, key, limit, period, options @ ..] = args else {
        return Err(Error::WrongArity);
    };
    Ok(Request {
        key,
        limit: parse_limit(limit, period, options)?,
    })
}

/// Parses `limit period [COST cost] [ALGORITHM …] [BURST burst]`: what
/// CHECK takes after its key, and each of MCHECK's groups after `LIMIT`.
pub fn parse_limit<A: Arg>(limit: &A, period: &A, options: &[A]) -> Result<Limit, Error> {
    let group = parse_group(limit, period, options, &["COST"])?;
    Ok(Limit {
        chosen: group.chosen,
        cost: group.amount.map_or(1, |(_, units)| units),
    })
}

/// A `LIMIT` group as RESERVE and SETTLE state it: the algorithm with its
/// parameters, and the option that says its units, if given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// The algorithm and its parameters.
    pub chosen: Chosen,
    /// The units option given (`COST`, `HOLD` or `ACTUAL`) and its value.
    pub amount: Option<(&'static str, u64)>,
}

/// The options that say a group's units, and their bounds.
const AMOUNTS: [(&str, &Bound); 3] = [
    ("COST", &COST),
    ("HOLD", &holds::ESTIMATE),
    ("ACTUAL", &holds::ACTUAL),
];

/// Parses `limit period` and the options, where the units are said by one
/// of `amounts` (keywords of [`AMOUNTS`]) and two of them is an error.
pub fn parse_group<A: Arg>(
    limit: &A,
    period: &A,
    options: &[A],
    amounts: &[&'static str],
) -> Result<Group, Error> {
    let limit = bounded(limit, &LIMIT)?;
    let period_s = bounded(period, &PERIOD_S)?;
    let quota = Quota::new(limit, period_s)?;

    let (mut amount, mut algorithm, mut burst) = (None, None, None);
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let word = option.bytes();
        let keyword = match amounts.iter().find(|kw| is_keyword(word, kw)) {
            Some(keyword) => keyword,
            None => option_keyword(word, &["ALGORITHM", "BURST"])?,
        };
        let given = match keyword {
            "ALGORITHM" => algorithm.is_some(),
            "BURST" => burst.is_some(),
            _ => match amount {
                Some((given, _)) if given != keyword => return Err(Error::CostAndHold),
                given => given.is_some(),
            },
        };
        if given {
            return Err(Error::RepeatedOption(keyword));
        }
        let value = options.next().ok_or(Error::MissingValue(keyword))?;
        match keyword {
            "ALGORITHM" => {
                algorithm = Some(Chosen::named(value.bytes()).ok_or(Chosen::UNKNOWN_NAME)?);
            }
            "BURST" => burst = Some(bounded(value, &BURST)?),
            _ => {
                let bound = AMOUNTS
                    .iter()
                    .find(|(name, _)| *name == keyword)
                    .map_or(&COST, |(_, bound)| *bound);
                amount = Some((keyword, bounded(value, bound)?));
            }
        }
    }
    Ok(Group {
        chosen: Chosen::new(algorithm.unwrap_or(DEFAULT_ALGORITHM), quota, burst)?,
        amount,
    })
}

/// Which of `keywords` (any case) `word` is, or the error that names it.
pub fn option_keyword(word: &[u8], keywords: &[&'static str]) -> Result<&'static str, Error> {
    keywords
        .iter()
        .find(|keyword| is_keyword(word, keyword))
        .copied()
        .ok_or(Error::UnknownOption(Word::of(word)))
}

/// The parsed arguments of an MCHECK or MPEEK call.
pub struct MultiRequest<'a, A> {
    /// The keys, each with its limit.
    pub keys: &'a [A],
    groups: [Option<Group>; MAX_KEYS],
}

impl<'a, A> MultiRequest<'a, A> {
    /// Each key with its limit, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&'a A, Limit)> + '_ {
        self.keys
            .iter()
            .zip(self.groups.iter().flatten())
            .map(|(key, group)| {
                let cost = group.amount.map_or(1, |(_, units)| units);
                let chosen = group.chosen;
                (key, Limit { chosen, cost })
            })
    }
}

/// Keys counted by a `numkeys`, each with its `LIMIT` group.
pub struct Counted<'a, A> {
    /// The keys.
    pub keys: &'a [A],
    groups: [Option<Group>; MAX_KEYS],
}

impl<'a, A> Counted<'a, A> {
    /// Each key with its group, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&'a A, Group)> + '_ {
        self.keys.iter().zip(self.groups.iter().flatten().copied())
    }
}

/// Where the keys counted by the `numkeys` at `args[numkeys_at]` are: right
/// after it, as many as it says when the arguments can hold that many keys
/// with a group of at least `per_key` arguments each (the key included);
/// otherwise none, so that a malformed call is answered with its own error
/// (and, in Cluster, not CROSSSLOT over words that are not keys).
pub fn counted_positions<A: Arg>(
    args: &[A],
    numkeys_at: usize,
    per_key: usize,
) -> std::ops::Range<usize> {
    let first = numkeys_at.saturating_add(1);
    let after_numkeys = args.len().saturating_sub(first);
    let count = args
        .get(numkeys_at)
        .and_then(|n| bounded(n, &NUMKEYS).ok())
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n.saturating_mul(per_key) <= after_numkeys)
        .unwrap_or(0);
    first..count.saturating_add(first)
}

/// Where MCHECK's or MPEEK's keys are ([`counted_positions`]).
pub fn key_positions<A: Arg>(args: &[A]) -> std::ops::Range<usize> {
    counted_positions(args, 1, ARGS_PER_KEY)
}

/// Parses `<command> numkeys key … LIMIT … [LIMIT …]`, the command name
/// included. Errors come in argument order: `numkeys`, then each group
/// (CHECK's messages), then a key named twice.
pub fn parse_multi<A: Arg>(args: &[A]) -> Result<MultiRequest<'_, A>, Error> {
    // At least `numkeys key LIMIT limit period`: the arity the server checks
    // itself where it takes command info (7.0+), so that Redis 6.2 gives the
    // same error for a call cut short.
    let [_, numkeys, rest @ ..] = args else {
        return Err(Error::WrongArity);
    };
    if rest.len() < ARGS_PER_KEY {
        return Err(Error::WrongArity);
    }
    let Counted { keys, groups } = parse_counted(numkeys, rest, &["COST"])?;
    Ok(MultiRequest { keys, groups })
}

/// Parses `numkeys key … LIMIT … [LIMIT …]` (the words from `numkeys` on:
/// `numkeys` and `rest`), the units of each group said by one of
/// `amounts`. Errors come in argument order: `numkeys`, then each group,
/// then a key named twice.
pub fn parse_counted<'a, A: Arg>(
    numkeys: &A,
    rest: &'a [A],
    amounts: &[&'static str],
) -> Result<Counted<'a, A>, Error> {
    let count = usize::try_from(bounded(numkeys, &NUMKEYS)?).map_err(|_| Error::InvalidNumKeys)?;
    let (keys, mut words) = rest.split_at_checked(count).ok_or(Error::GroupPerKey)?;
    let mut groups = [None; MAX_KEYS];
    for slot in groups.iter_mut().take(count) {
        let [keyword, limit, period, tail @ ..] = words else {
            return Err(match words.first() {
                Some(word) if is_keyword(word.bytes(), "LIMIT") => Error::ShortGroup,
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
        *slot = Some(parse_group(limit, period, options, amounts)?);
        words = next;
    }
    if !words.is_empty() {
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
    Ok(Counted { keys, groups })
}

/// How a limit is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As CHECK: the decision for the cost, and the write that charges it.
    Charge,
    /// As PEEK: the decision for the cost and the look; nothing planned.
    Look,
}

/// A limit's answer.
pub struct Answer {
    /// Its decision as a check of the cost: admitted or not, and, when
    /// admitted, the numbers after charging.
    pub charged: Decision,
    /// In [`Mode::Look`]: what a read-only command replies for it.
    pub looked: Option<Decision>,
    /// In [`Mode::Charge`]: the change the check asks for, not made yet.
    pub write: Option<Write>,
}

impl Answer {
    /// What a read-only command replies for this limit.
    pub fn look(&self) -> Result<Decision, Error> {
        self.looked
            .ok_or(Error::Internal("a look at a limit asked to charge"))
    }
}

/// Asks the limit at an open key, through whichever algorithm was chosen:
/// the one load → decide path of CHECK, PEEK, MCHECK and MPEEK.
pub struct Ask<'k, 'a> {
    /// The key, open for reading (or writing, to charge).
    pub key: &'k Key<'a>,
    /// Units the request takes.
    pub cost: u64,
    /// The call's instant.
    pub now_ms: u64,
    /// Charge or look.
    pub mode: Mode,
}

impl Visit for Ask<'_, '_> {
    type Output = Result<Answer, Error>;

    fn visit<A: Algorithm>(self, algorithm: A) -> Self::Output {
        let loaded = store::load::<A>(self.key)?;
        let outcome = algorithm.check(loaded.state, self.cost, self.now_ms);
        Ok(match self.mode {
            Mode::Charge => Answer {
                charged: outcome.decision,
                looked: None,
                write: match outcome.store {
                    Some(next) => Some(Write::plan(&loaded, next)?),
                    None => None,
                },
            },
            Mode::Look => {
                let as_is = algorithm.check(loaded.state, 0, self.now_ms).decision;
                Answer {
                    charged: outcome.decision,
                    looked: Some(limiter::looked(outcome.decision, as_is)),
                    write: None,
                }
            }
        })
    }
}

/// MCHECK's and MPEEK's reply: the verdict, and each limit's five numbers
/// as the command shows them.
pub struct MultiReply {
    combined: Combined,
    shown: Vec<Decision>,
}

impl MultiReply {
    /// The reply for `combined`, showing `shown` for each limit in order.
    pub fn new(combined: Combined, shown: Vec<Decision>) -> MultiReply {
        MultiReply { combined, shown }
    }

    /// Whether the request was admitted.
    pub fn allowed(&self) -> bool {
        self.combined.allowed
    }

    /// The index of the binding limit.
    pub fn binding(&self) -> usize {
        self.combined.binding
    }

    /// The first six elements: the verdict, the binding limit's numbers
    /// and its position.
    pub fn head(&self) -> [i64; 6] {
        let [_, remaining, limit, retry, reset] = self
            .shown
            .get(self.combined.binding)
            .copied()
            .map(decision_fields)
            .unwrap_or_default();
        let position = i64::try_from(self.combined.binding.saturating_add(1)).unwrap_or(0);
        [
            i64::from(self.combined.allowed),
            remaining,
            limit,
            retry,
            reset,
            position,
        ]
    }

    /// Each limit's five integers, in order.
    pub fn each(&self) -> impl Iterator<Item = [i64; 5]> + '_ {
        self.shown.iter().copied().map(decision_fields)
    }

    /// The head's integers, and each limit's five.
    pub fn fields(&self) -> ([i64; 6], Vec<[i64; 5]>) {
        (self.head(), self.each().collect())
    }
}

impl WriteReply for MultiReply {
    fn write(&self, out: &mut Replier) {
        out.array(7);
        for value in self.head() {
            out.integer(value);
        }
        out.array(self.shown.len());
        for fields in self.each() {
            fields.write(out);
        }
    }
}

/// Limits asked together, and what was charged.
pub struct Charged<'a> {
    /// MCHECK's reply.
    pub reply: MultiReply,
    /// Each key, open, with its limit and answer, in order.
    asked: Vec<(Key<'a>, Limit, Answer)>,
}

impl Charged<'_> {
    /// Fires `ratelimit.denied` on the binding key of a denied request.
    pub fn denied_event(&self, ctx: Ctx) {
        if !self.reply.allowed() {
            if let Some((key, _, _)) = self.asked.get(self.reply.binding()) {
                denied_event(ctx, key.name());
            }
        }
    }
}

/// MCHECK's decision: every key is opened and asked as CHECK asks it, with
/// every write planned, before anything changes; then the writes the
/// verdict keeps are made, each firing `event` on its key.
pub fn charge_all<'a>(
    ctx: Ctx,
    pairs: impl Iterator<Item = (&'a RString, Limit)>,
    now_ms: u64,
    event: &CStr,
) -> Result<Charged<'a>, Error> {
    let mut asked = Vec::with_capacity(MAX_KEYS);
    for (name, limit) in pairs {
        let key = Key::open(ctx, name, Access::ReadWrite)?;
        let answer = limit.ask(&key, now_ms, Mode::Charge)?;
        asked.push((key, limit, answer));
    }
    let mut shown: Vec<Decision> = asked.iter().map(|(_, _, a)| a.charged).collect();
    let combined = all_of::combine(&shown).ok_or(Error::Internal("MCHECK with no limits"))?;
    if !combined.allowed {
        // A limit that admits alone is not charged: it shows its PEEK.
        for ((key, limit, answer), show) in asked.iter().zip(shown.iter_mut()) {
            if answer.charged.allowed {
                *show = limit.ask(key, now_ms, Mode::Look)?.look()?;
            }
        }
    }
    for (key, _, answer) in asked.iter_mut() {
        let Some(write) = answer
            .write
            .as_ref()
            .filter(|_| combined.stores(&answer.charged))
        else {
            continue;
        };
        write.apply(ctx, key)?;
        server::notify(ctx, event, key.name());
    }
    Ok(Charged {
        reply: MultiReply::new(combined, shown),
        asked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::all_of;
    use crate::limiter::{Id, MAX_COST, MAX_LIMIT};

    fn parse_strs<'a>(args: &'a [&'a str]) -> Result<Request<'a, &'a str>, Error> {
        parse(args)
    }

    fn parse_multi_strs<'a>(args: &'a [&'a str]) -> Result<MultiRequest<'a, &'a str>, Error> {
        parse_multi(args)
    }

    /// Algorithm `id` at 10 per 60 s.
    fn chosen(id: Id, burst: Option<u64>) -> Chosen {
        Chosen::new(id, Quota::new(10, 60).unwrap(), burst).unwrap()
    }

    fn limit(id: Id, limit: u64, period_s: u64, burst: Option<u64>, cost: u64) -> Limit {
        Limit {
            chosen: Chosen::new(id, Quota::new(limit, period_s).unwrap(), burst).unwrap(),
            cost,
        }
    }

    fn with(options: &[&'static str]) -> Result<Request<'static, &'static str>, Error> {
        let mut args = vec!["RATELIMIT.CHECK", "k", "10", "60"];
        args.extend_from_slice(options);
        let args: &'static [&'static str] = Box::leak(args.into_boxed_slice());
        parse(args)
    }

    #[test]
    fn parses_the_minimal_form() {
        let args = ["RATELIMIT.CHECK", "k", "10", "60"];
        let r = parse_strs(&args).unwrap();
        assert_eq!(*r.key, "k");
        assert_eq!(r.limit.cost, 1);
        assert_eq!(r.limit.chosen, chosen(Id::Fixed, None));
    }

    #[test]
    fn parses_options_in_any_order_and_case() {
        let r = with(&["burst", "20", "Cost", "0", "algorithm", "token"]).unwrap();
        assert_eq!(r.limit.cost, 0);
        assert_eq!(r.limit.chosen, chosen(Id::Token, Some(20)));
        let r = with(&["ALGORITHM", "TOKEN"]).unwrap();
        assert_eq!(r.limit.chosen, chosen(Id::Token, Some(10)));
        assert_eq!(
            with(&["ALGORITHM", "Sliding"]).unwrap().limit.chosen,
            chosen(Id::Sliding, None)
        );
        assert_eq!(
            with(&["algorithm", "fixed"]).unwrap().limit.chosen,
            chosen(Id::Fixed, None)
        );
    }

    #[test]
    fn rejects_bad_arguments_with_the_right_error() {
        let cases: &[(&[&str], Error)] = &[
            (&["RATELIMIT.CHECK"], Error::WrongArity),
            (&["RATELIMIT.CHECK", "k"], Error::WrongArity),
            (&["RATELIMIT.CHECK", "k", "10"], Error::WrongArity),
            (&["RATELIMIT.CHECK", "k", "0", "60"], Error::InvalidLimit),
            (&["RATELIMIT.CHECK", "k", "-1", "60"], Error::InvalidLimit),
            (&["RATELIMIT.CHECK", "k", "ten", "60"], Error::InvalidLimit),
            (&["RATELIMIT.CHECK", "k", "1.5", "60"], Error::InvalidLimit),
            (
                &["RATELIMIT.CHECK", "k", "1000000000000001", "60"],
                Error::InvalidLimit,
            ),
            (
                &["RATELIMIT.CHECK", "k", "99999999999999999999", "60"],
                Error::InvalidLimit,
            ),
            (&["RATELIMIT.CHECK", "k", "10", "0"], Error::InvalidPeriod),
            (
                &["RATELIMIT.CHECK", "k", "10", "1000000001"],
                Error::InvalidPeriod,
            ),
            (&["RATELIMIT.CHECK", "k", "10", "60s"], Error::InvalidPeriod),
        ];
        for (args, expected) in cases {
            assert_eq!(parse_strs(args).unwrap_err(), *expected, "{args:?}");
        }
        let options: &[(&[&'static str], Error)] = &[
            (&["COST"], Error::MissingValue("COST")),
            (&["COST", "-1"], Error::InvalidCost),
            (&["COST", "x"], Error::InvalidCost),
            (&["COST", "1000000000000001"], Error::InvalidCost),
            (&["COST", "1", "COST", "1"], Error::RepeatedOption("COST")),
            (&["cost", "1", "Cost"], Error::RepeatedOption("COST")),
            (&["WEIGHT", "1"], Error::UnknownOption(Word::of(b"WEIGHT"))),
            (
                &["ALGORITM", "SLIDING"],
                Error::UnknownOption(Word::of(b"ALGORITM")),
            ),
            (&["1"], Error::UnknownOption(Word::of(b"1"))),
            (&["ALGORITHM"], Error::MissingValue("ALGORITHM")),
            (&["ALGORITHM", "LEAKY"], Chosen::UNKNOWN_NAME),
            (
                &["ALGORITHM", "TOKEN", "ALGORITHM", "TOKEN"],
                Error::RepeatedOption("ALGORITHM"),
            ),
            (
                &["ALGORITHM", "FIXED", "algorithm", "SLIDING"],
                Error::RepeatedOption("ALGORITHM"),
            ),
            (&["BURST", "5"], Error::BurstWithoutToken),
            (
                &["BURST", "5", "ALGORITHM", "SLIDING"],
                Error::BurstWithoutToken,
            ),
            (&["ALGORITHM", "TOKEN", "BURST", "0"], Error::InvalidBurst),
            (
                &["ALGORITHM", "TOKEN", "BURST", "1000000000000001"],
                Error::InvalidBurst,
            ),
            (
                &["ALGORITHM", "TOKEN", "BURST", "5", "BURST", "5"],
                Error::RepeatedOption("BURST"),
            ),
            // 10 per minute refills 10^14 tokens in 1.9 million years.
            (
                &["ALGORITHM", "TOKEN", "BURST", "100000000000000"],
                Error::BurstTooLarge,
            ),
        ];
        for (options, expected) in options {
            assert_eq!(with(options).unwrap_err(), *expected, "{options:?}");
        }
    }

    #[test]
    fn accepts_the_documented_bounds() {
        let args = [
            "RATELIMIT.CHECK",
            "k",
            "1000000000000000",
            "1000000000",
            "COST",
            "1000000000000000",
        ];
        let r = parse_strs(&args).unwrap();
        let quota = Quota::new(MAX_LIMIT, 1_000_000_000).unwrap();
        assert_eq!(r.limit.chosen, Chosen::new(Id::Fixed, quota, None).unwrap());
        assert_eq!(r.limit.cost, MAX_COST);
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
        let r = parse_multi_strs(&args).unwrap();
        let pairs: Vec<_> = r.pairs().map(|(k, l)| (*k, l)).collect();
        assert_eq!(
            pairs,
            [
                ("{u}:rps", limit(Id::Fixed, 10, 1, None, 1)),
                ("{u}:tpm", limit(Id::Token, 100_000, 60, Some(200_000), 750)),
            ]
        );
        let one = parse_multi_strs(&["RATELIMIT.MCHECK", "1", "k", "LIMIT", "10", "60"]).unwrap();
        assert_eq!(one.pairs().count(), 1);
    }

    #[test]
    fn rejects_malformed_multi_calls_with_the_right_error() {
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
            ("3 a b LIMIT 1 1", Error::GroupPerKey),
            ("1 a LIMIT 1 1 LIMIT 2 2", Error::GroupPerKey),
            // A group that does not start with LIMIT.
            ("1 a 1 1 1", Error::GroupPerKey),
            ("1 a COST 1 1", Error::GroupPerKey),
            // A group cut short.
            ("2 a b LIMIT 1", Error::ShortGroup),
            ("2 a b LIMIT 1 LIMIT 1 1", Error::InvalidPeriod),
            // CHECK's own errors, in argument order.
            ("1 a LIMIT 0 1", Error::InvalidLimit),
            ("1 a LIMIT 1 0", Error::InvalidPeriod),
            ("1 a LIMIT 1 1 COST", Error::MissingValue("COST")),
            ("1 a LIMIT 1 1 COST -1", Error::InvalidCost),
            ("1 a LIMIT 1 1 COST 1 COST 1", Error::RepeatedOption("COST")),
            ("1 a LIMIT 1 1 ALGORITHM LEAKY", Chosen::UNKNOWN_NAME),
            ("1 a LIMIT 1 1 BURST 5", Error::BurstWithoutToken),
            ("1 a LIMIT 1 1 WEIGHT 5", Error::UnknownOption(Word::of(b"WEIGHT"))),
            ("2 a b LIMIT 1 1 LIMIT x 1", Error::InvalidLimit),
            // The same key twice, once the groups are read.
            ("2 a a LIMIT 1 1 LIMIT 1 1", Error::DuplicateKey),
            ("2 a a LIMIT 1 1 LIMIT 0 1", Error::InvalidLimit),
        ];
        for (args, expected) in cases {
            let args: Vec<&str> = std::iter::once("RATELIMIT.MCHECK")
                .chain(args.split_whitespace())
                .collect();
            assert_eq!(parse_multi_strs(&args).err(), Some(*expected), "{args:?}");
        }
    }

    #[test]
    fn names_keys_only_where_the_arguments_can_hold_them() {
        let words = |s: &'static str| -> Vec<&'static str> {
            std::iter::once("RATELIMIT.MCHECK")
                .chain(s.split_whitespace())
                .collect()
        };
        assert_eq!(key_positions(&words("2 a b LIMIT 1 1 LIMIT 1 1")), 2..4);
        assert_eq!(key_positions(&words("1 a LIMIT 1 1")), 2..3);
        assert_eq!(key_positions(&words("x a")), 2..2);
        assert_eq!(key_positions(&words("5 a")), 2..2);
        // Three "keys" would take LIMIT for one, and leave no groups.
        assert_eq!(key_positions(&words("3 a b LIMIT 1 1")), 2..2);
        assert_eq!(key_positions(&words("2 a b LIMIT 1 1")), 2..2);
    }

    #[test]
    fn the_numkeys_message_states_its_bound() {
        let text = Error::InvalidNumKeys
            .message()
            .unwrap()
            .as_str()
            .to_string();
        assert!(text.ends_with(&MAX_KEYS.to_string()), "{text}");
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
        let shown = vec![d(true, 6, None), d(false, 0, Some(300))];
        let combined = all_of::combine(&shown).unwrap();
        let (head, each) = MultiReply::new(combined, shown).fields();
        assert_eq!(head, [0, 0, 10, 300, 900, 2]);
        assert_eq!(each, [[1, 6, 10, -1, 900], [0, 0, 10, 300, 900]]);
    }
}
