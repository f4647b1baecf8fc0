//! Holds: estimates charged up front and settled later (RATELIMIT.RESERVE,
//! SETTLE, EXTEND), and how a holds key writes them down.
//!
//! ```text
//!   RESERVE id  ──▶ charge COST limits for good, HOLD limits the estimate ──▶ record id
//!   SETTLE id   ──▶ each HOLD limit: actual − held (a refund or a debt)   ──▶ tombstone id
//!   deadline    ──▶ the next command on the holds key refunds the estimate ──▶ forget id
//! ```
//!
//! The holds key is a hash (plain data: HGETALL reads it, DEL ends every
//! hold without a refund). Field `""` (no id is empty) holds the sweep time:
//! the earliest deadline among the records, in UNIX ms, so that a command
//! reads every record only when one may have expired. Every other field is
//! an id, and its value a record, ASCII words separated by single spaces
//! (integers as INCR writes them):
//!
//! | record | value |
//! | --- | --- |
//! | live hold | `L <deadline_ms> <charged_at_ms> <ttl_ms> <m> <hold>… <reply>` |
//! | settled | `S <deadline_ms> <reply>`, the reply copied from the live record |
//!
//! `<hold>` is one HOLD limit: `<ALGORITHM> <limit> <period_s> <burst>
//! <held> <key_len> <key>`, the burst 0 but for TOKEN and the key's bytes as
//! they are. `<reply>` is what RESERVE's admitted reply needs to be given
//! again (a replayed RESERVE gets it): the binding position, the number of
//! limits, and each limit's remaining, limit and reset_after_ms; the rest of
//! an admitted reply is 1 (allowed) and -1 (no retry time).
//!
//! The key expires when its last record stops mattering: a live hold at its
//! deadline plus two of its longest period (a refund can reach a sliding
//! window's previous count until then), a settled one at its deadline. An
//! expiry that must grow grows to twice as far from now as it must, so that
//! most records written need no new expiry.

use crate::args::Bound;
use crate::decimal::Digits;
use crate::error::Error;

use super::layout::decode_u64;
use super::{Algorithm, Chosen, Id, Quota, Visit, COST};

/// The longest `ttl_ms` a command takes (a hold's is also capped by the
/// `hold-max-ttl-ms` option): a day, as a lease.
pub const MAX_TTL_MS: u64 = 86_400_000;

/// RESERVE's and EXTEND's `ttl_ms`.
pub const TTL_MS: Bound = Bound {
    min: 1,
    max: MAX_TTL_MS,
    error: Error::InvalidHoldTtl,
};

/// `HOLD`'s estimate: COST's range.
pub const ESTIMATE: Bound = Bound {
    error: Error::InvalidEstimate,
    ..COST
};

/// `ACTUAL`: COST's range.
pub const ACTUAL: Bound = Bound {
    error: Error::InvalidActual,
    ..COST
};

/// The field of the holds hash that keeps the sweep time.
pub const SWEEP_FIELD: &[u8] = b"";

/// The units held for an `estimate` on a limit that takes at most
/// `capacity` per request: the estimate, but at most `percent`% of the
/// capacity (rounded down, at least 1), so that a large estimate does not
/// fail every first request; the rest is charged when the hold settles.
pub fn held_for(estimate: u64, capacity: u64, percent: u64) -> u64 {
    if estimate == 0 {
        return 0;
    }
    // c × p / 100 without a product past 2^53 (the script fallback's
    // doubles): (c / 100) × p + (c % 100) × p / 100.
    let share = (capacity / 100)
        .saturating_mul(percent)
        .saturating_add((capacity % 100).saturating_mul(percent) / 100);
    estimate.min(share.max(1))
}

/// A reply as RESERVE first gave it: MCHECK's head and each limit's five.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstReply {
    /// allowed, remaining, limit, retry_after_ms, reset_after_ms, position.
    pub head: [i64; 6],
    /// Each limit's five integers.
    pub each: Vec<[i64; 5]>,
}

impl FirstReply {
    /// Writes what a record keeps of an admitted reply: the binding
    /// position, the number of limits, and each limit's remaining, limit
    /// and reset_after_ms (the rest of an admitted reply is 1 and -1).
    fn encode(&self, out: &mut Words) {
        out.i64(self.head.get(5).copied().unwrap_or(0));
        out.u64(u64::try_from(self.each.len()).unwrap_or(0));
        for &[_, remaining, limit, _, reset] in &self.each {
            out.i64(remaining);
            out.i64(limit);
            out.i64(reset);
        }
    }

    /// Reads past what [`FirstReply::encode`] wrote, refusing what
    /// [`FirstReply::decode`] refuses, without keeping it.
    fn skip(words: &mut Reader<'_>) -> Option<()> {
        let binding = words.u64()?;
        let count = words.u64()?;
        for _ in 0..count {
            for _ in 0..3 {
                i64::try_from(words.u64()?).ok()?;
            }
        }
        // The binding limit is one of them, counted from 1.
        (1..=count).contains(&binding).then_some(())
    }

    /// Reads what [`FirstReply::encode`] wrote.
    fn decode(words: &mut Reader<'_>) -> Option<FirstReply> {
        let binding = words.u64()?;
        let count = words.u64()?;
        let mut each = Vec::new();
        for _ in 0..count {
            let remaining = i64::try_from(words.u64()?).ok()?;
            let limit = i64::try_from(words.u64()?).ok()?;
            let reset = i64::try_from(words.u64()?).ok()?;
            each.push([1, remaining, limit, -1, reset]);
        }
        let index = usize::try_from(binding).ok()?.checked_sub(1)?;
        let &[_, remaining, limit, _, reset] = each.get(index)?;
        let binding = i64::try_from(binding).ok()?;
        Some(FirstReply {
            head: [1, remaining, limit, -1, reset, binding],
            each,
        })
    }
}

/// One HOLD limit of a live hold: what a refund needs without the command
/// that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold<'k> {
    /// The limit's algorithm and parameters.
    pub chosen: Chosen,
    /// Units charged and held.
    pub held: u64,
    /// The limiter key.
    pub key: &'k [u8],
}

/// A live hold, as a record keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live<'v> {
    /// When it expires, UNIX ms.
    pub deadline_ms: u64,
    /// When its estimates were charged, UNIX ms.
    pub charged_at_ms: u64,
    /// Its time to live, as last set: a settled record lives as long.
    pub ttl_ms: u64,
    /// Its HOLD limits.
    pub holds: Vec<Hold<'v>>,
    /// RESERVE's reply, as the record writes it.
    pub reply: &'v [u8],
}

impl Live<'_> {
    /// The units held, as RESERVE replies them: the least among its HOLD
    /// limits (what every one of them holds), 0 without any.
    pub fn held(&self) -> u64 {
        self.holds.iter().map(|h| h.held).min().unwrap_or(0)
    }

    /// What its HOLD limit at `key` holds (0 for a key it does not hold).
    pub fn held_at(&self, key: &[u8]) -> u64 {
        self.holds
            .iter()
            .find(|h| h.key == key)
            .map_or(0, |h| h.held)
    }

    /// Until when the record matters: its deadline, and then two of its
    /// longest period, while a refund can still reach a window.
    pub fn keep_until_ms(&self) -> u64 {
        keep_until_ms(self.deadline_ms, &self.holds)
    }

    /// The value of this hold as a record keeps it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header();
        out.word(self.reply);
        out.0
    }

    /// The value of the settled record this hold becomes, kept until
    /// `deadline_ms`: its reply, as the live record writes it.
    pub fn settled(&self, deadline_ms: u64) -> Vec<u8> {
        let mut out = Words(Vec::with_capacity(self.reply.len().saturating_add(24)));
        out.word(b"S");
        out.u64(deadline_ms);
        out.word(self.reply);
        out.0
    }

    /// Everything before the reply.
    fn header(&self) -> Words {
        // Room for a record of two limits and its reply without growing.
        let mut out = Words(Vec::with_capacity(256));
        out.word(b"L");
        out.u64(self.deadline_ms);
        out.u64(self.charged_at_ms);
        out.u64(self.ttl_ms);
        out.u64(u64::try_from(self.holds.len()).unwrap_or(0));
        for hold in &self.holds {
            let (quota, burst) = hold.chosen.parameters();
            out.word(hold.chosen.id().name().as_bytes());
            out.u64(quota.limit());
            out.u64(quota.period_ms() / 1000);
            out.u64(burst.unwrap_or(0));
            out.u64(hold.held);
            out.u64(u64::try_from(hold.key.len()).unwrap_or(0));
            out.word(hold.key);
        }
        out
    }
}

/// Until when a live record with `holds` and `deadline_ms` matters.
fn keep_until_ms(deadline_ms: u64, holds: &[Hold]) -> u64 {
    let longest_ms = holds
        .iter()
        .map(|h| h.chosen.parameters().0.period_ms())
        .max()
        .unwrap_or(0);
    deadline_ms.saturating_add(longest_ms.saturating_mul(2))
}

/// The value of a new live hold: `live` (its `reply` ignored) with the
/// admitted `reply`.
pub fn encode_new(live: &Live, reply: &FirstReply) -> Vec<u8> {
    let mut out = live.header();
    reply.encode(&mut out);
    out.0
}

/// What a holds hash keeps under an id, read in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'v> {
    /// A hold not yet settled.
    Live(Live<'v>),
    /// A settled hold, kept until `deadline_ms` so that a retried SETTLE
    /// charges nothing.
    Settled {
        /// When it is forgotten, UNIX ms.
        deadline_ms: u64,
        /// RESERVE's reply, as the record writes it.
        reply: &'v [u8],
    },
}

impl<'v> Record<'v> {
    /// When it expires.
    pub fn deadline_ms(&self) -> u64 {
        match self {
            Record::Live(live) => live.deadline_ms,
            Record::Settled { deadline_ms, .. } => *deadline_ms,
        }
    }

    /// RESERVE's first reply, as the record writes it.
    fn reply(&self) -> &'v [u8] {
        match self {
            Record::Live(live) => live.reply,
            Record::Settled { reply, .. } => reply,
        }
    }

    /// RESERVE's first reply.
    pub fn first_reply(&self) -> Option<FirstReply> {
        FirstReply::decode(&mut Reader(Some(self.reply())))
    }

    /// Reads a stored value; `None` when it is no record.
    pub fn decode(value: &'v [u8]) -> Option<Record<'v>> {
        let mut words = Reader(Some(value));
        let record = match words.word()? {
            b"L" => {
                let deadline_ms = words.u64()?;
                let charged_at_ms = words.u64()?;
                let ttl_ms = words.u64()?;
                let count = words.u64()?;
                // Most holds name one or two limits; a count no record could
                // have reserves nothing more.
                let mut holds = Vec::with_capacity(usize::try_from(count.min(4)).unwrap_or(0));
                for _ in 0..count {
                    holds.push(words.hold()?);
                }
                Record::Live(Live {
                    deadline_ms,
                    charged_at_ms,
                    ttl_ms,
                    holds,
                    reply: words.0?,
                })
            }
            b"S" => Record::Settled {
                deadline_ms: words.u64()?,
                reply: words.0?,
            },
            _ => return None,
        };
        // The reply must read back, to the last byte.
        let mut reply = Reader(Some(record.reply()));
        FirstReply::skip(&mut reply)?;
        reply.0.is_none().then_some(record)
    }
}

/// Reads the sweep time a holds hash keeps.
pub fn decode_sweep_ms(value: &[u8]) -> Option<u64> {
    decode_u64(value)
}

/// Words being written, a space before each but the first.
struct Words(Vec<u8>);

impl Words {
    fn word(&mut self, bytes: &[u8]) {
        if !self.0.is_empty() {
            self.0.push(b' ');
        }
        self.0.extend_from_slice(bytes);
    }

    fn u64(&mut self, n: u64) {
        self.number(false, n);
    }

    fn i64(&mut self, n: i64) {
        self.number(n < 0, n.unsigned_abs());
    }

    /// A number as one word: its sign, if any, and digits.
    fn number(&mut self, negative: bool, n: u64) {
        let mut digits = Digits::new();
        let digits = digits.of(n);
        if !self.0.is_empty() {
            self.0.push(b' ');
        }
        if negative {
            self.0.push(b'-');
        }
        self.0.extend_from_slice(digits);
    }
}

/// A stored value being read, word by word; `None` once it has ended.
struct Reader<'v>(Option<&'v [u8]>);

impl<'v> Reader<'v> {
    /// The next word: up to the next space, which is skipped.
    fn word(&mut self) -> Option<&'v [u8]> {
        let rest = self.0?;
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        self.take(end)
    }

    /// The next `len` bytes, and the space after them unless they end the
    /// value (a space at the very end leaves an empty word to read).
    fn take(&mut self, len: usize) -> Option<&'v [u8]> {
        let (word, rest) = self.0?.split_at_checked(len)?;
        self.0 = match rest {
            [] => None,
            [b' ', after @ ..] => Some(after),
            _ => return None,
        };
        Some(word)
    }

    /// The next word as [`decode_u64`] reads it, in one pass: digits as
    /// INCR writes them (no sign, no leading zero), at most `i64::MAX`.
    fn u64(&mut self) -> Option<u64> {
        let rest = self.0?;
        let mut value: u64 = 0;
        let mut len: usize = 0;
        for &b in rest {
            if b == b' ' {
                break;
            }
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            // Up to 19 digits cannot wrap a u64; a longer word is refused
            // below, whatever it wrapped to.
            value = value.wrapping_mul(10).wrapping_add(u64::from(digit));
            len = len.wrapping_add(1);
        }
        let leading_zero = len > 1 && rest.first() == Some(&b'0');
        if len == 0 || len > 19 || leading_zero || i64::try_from(value).is_err() {
            return None;
        }
        self.take(len)?;
        Some(value)
    }

    fn hold(&mut self) -> Option<Hold<'v>> {
        let id = Chosen::named(self.word()?)?;
        let limit = self.u64()?;
        let period_s = self.u64()?;
        let burst = self.u64()?;
        let held = self.u64()?;
        let key_len = usize::try_from(self.u64()?).ok()?;
        let key = self.take(key_len)?;
        let quota = Quota::new(limit, period_s).ok()?;
        let burst = (id == Id::Token).then_some(burst);
        Some(Hold {
            chosen: Chosen::new(id, quota, burst).ok()?,
            held,
            key,
        })
    }
}

impl Chosen {
    /// The parameters it was made from ([`Algorithm::parameters`]).
    pub fn parameters(&self) -> (Quota, Option<u64>) {
        struct Parameters;
        impl Visit for Parameters {
            type Output = (Quota, Option<u64>);
            fn visit<A: Algorithm>(self, algorithm: A) -> Self::Output {
                algorithm.parameters()
            }
        }
        self.visit(Parameters)
    }

    /// The most one request can take ([`Algorithm::capacity`]).
    pub fn capacity(&self) -> u64 {
        struct Capacity;
        impl Visit for Capacity {
            type Output = u64;
            fn visit<A: Algorithm>(self, algorithm: A) -> u64 {
                algorithm.capacity()
            }
        }
        self.visit(Capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(id: Id, limit: u64, period_s: u64, burst: Option<u64>) -> Chosen {
        Chosen::new(id, Quota::new(limit, period_s).unwrap(), burst).unwrap()
    }

    fn reply() -> FirstReply {
        FirstReply {
            head: [1, 5, 10, -1, 60000, 2],
            each: vec![[1, 9, 10, -1, 60000], [1, 5, 10, -1, 60000]],
        }
    }

    #[test]
    fn an_estimate_is_held_up_to_a_share_of_the_capacity() {
        assert_eq!(held_for(0, 100, 50), 0);
        assert_eq!(held_for(30, 100, 50), 30);
        assert_eq!(held_for(80, 100, 50), 50);
        assert_eq!(held_for(80, 101, 50), 50);
        assert_eq!(held_for(120, 199, 50), 99);
        // At least one unit, so that a full limit denies.
        assert_eq!(held_for(5, 1, 50), 1);
        assert_eq!(held_for(5, 3, 1), 1);
        assert_eq!(
            held_for(u64::MAX, 1_000_000_000_000_000, 100),
            1_000_000_000_000_000
        );
        assert_eq!(
            held_for(u64::MAX, 999_999_999_999_999, 37),
            369_999_999_999_999
        );
    }

    #[test]
    fn records_read_back_as_written() {
        let holds = [
            Hold {
                chosen: chosen(Id::Token, 1000, 60, Some(2000)),
                held: 500,
                key: b"{u} tpm",
            },
            Hold {
                chosen: chosen(Id::Sliding, 100_000, 86_400, None),
                held: 700,
                key: b"",
            },
        ];
        let live = Live {
            deadline_ms: 1_700_000_060_000,
            charged_at_ms: 1_700_000_000_000,
            ttl_ms: 60_000,
            holds: holds.to_vec(),
            reply: &[],
        };
        let bytes = encode_new(&live, &reply());
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "L 1700000060000 1700000000000 60000 2 TOKEN 1000 60 2000 500 7 {u} tpm \
             SLIDING 100000 86400 0 700 0  2 2 9 10 60000 5 10 60000"
        );
        let Some(Record::Live(read)) = Record::decode(&bytes) else {
            panic!("no live record");
        };
        assert_eq!(read.holds, holds);
        assert_eq!(
            (read.deadline_ms, read.charged_at_ms, read.ttl_ms),
            (1_700_000_060_000, 1_700_000_000_000, 60_000)
        );
        assert_eq!(read.encode(), bytes);
        assert_eq!(Record::Live(read.clone()).first_reply(), Some(reply()));
        assert_eq!(read.held(), 500);
        assert_eq!(read.held_at(b""), 700);

        let settled = read.settled(5);
        assert_eq!(settled, b"S 5 2 2 9 10 60000 5 10 60000");
        let record = Record::decode(&settled).unwrap();
        assert_eq!(record.deadline_ms(), 5);
        assert_eq!(record.first_reply(), Some(reply()));
    }

    #[test]
    fn anything_else_is_no_record() {
        for bad in [
            &b""[..],
            b"X 1",
            b"S 5",
            b"S 5 1",
            b"S 5 1 1",
            b"S 5 1 1 1 1",
            b"S 5 2 1 1 1 1",
            b"S 5 0 1 1 1 1",
            b"S 5 1 1 1 1 1 extra",
            b"S 5 1 1 1 1 1 ",
            b"S  5 1 1 1 1 1",
            b"S 5 1 1 -1 1 1",
            b"L 1 1 1 1 LEAKY 1 1 0 1 1 k 1 1 1 1 1",
            b"L 1 1 1 1 FIXED 0 1 0 1 1 k 1 1 1 1 1",
            b"L 1 1 1 1 FIXED 1 1 0 1 5 k 1 1 1 1 1",
            b"L 1 1 1 2 FIXED 1 1 0 1 1 k 1 1 1 1 1",
            b"L 1 1 1 1 FIXED 1 1 0 1 1 k",
            // Numbers as INCR writes them, and no others.
            b"S 05 1 1 1 1 1",
            b"S 00 1 1 1 1 1",
            b"S 5a 1 1 1 1 1",
            b"S +5 1 1 1 1 1",
            b"S 9223372036854775808 1 1 1 1 1",
            b"S 18446744073709551616 1 1 1 1 1",
            b"S 99999999999999999999999 1 1 1 1 1",
        ] {
            assert_eq!(
                Record::decode(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(Record::decode(b"S 5 1 1 1 1 1").is_some());
        assert!(Record::decode(b"S 0 1 1 0 1 0").is_some());
        assert_eq!(
            Record::decode(b"S 9223372036854775807 1 1 1 1 1").map(|r| r.deadline_ms()),
            Some(9_223_372_036_854_775_807)
        );
        assert!(Record::decode(b"L 1 1 1 1 FIXED 1 1 0 1 1 k 1 1 1 1 1").is_some());
        assert!(Record::decode(b"L 1 1 1 0 1 1 1 1 1").is_some());
    }

    #[test]
    fn a_live_record_matters_for_two_periods_after_its_deadline() {
        let Some(Record::Live(live)) =
            Record::decode(b"L 100 0 100 2 FIXED 1 60 0 1 1 a SLIDING 1 3 0 1 1 b 1 1 1 1 1")
        else {
            panic!("no record");
        };
        assert_eq!(live.keep_until_ms(), 100 + 120_000);
        assert_eq!(live.held(), 1);
        assert_eq!(live.held_at(b"b"), 1);
        assert_eq!(live.held_at(b"c"), 0);
    }
}
