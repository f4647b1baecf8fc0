//! Every error a command can reply, and the only place that writes error codes.
//!
//! Each message starts with a Redis error code (`ERR`, `WRONGTYPE`) so clients
//! classify it correctly and `INFO errorstats` counts it under that code.
//! Messages are written into a buffer on the stack: replying an error
//! allocates nothing.
//!
//! This file imports nothing from the crate: what a message names (the
//! algorithms, another kind of state) comes in the error's fields, and the
//! numbers a message states are checked against the bounds in force by the
//! tests beside each bound.

use std::ffi::CStr;
use std::fmt::{self, Write};

/// Why a command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Too few (or too many) arguments; replied with the server's standard
    /// "wrong number of arguments for '<command>' command".
    WrongArity,
    /// A word where an option belongs that names none the command takes.
    UnknownOption(Word),
    /// An option given twice; its keyword.
    RepeatedOption(&'static str),
    /// An option without its value; its keyword.
    MissingValue(&'static str),
    /// A `LIMIT` group of MCHECK or MPEEK cut short before its period.
    ShortGroup,
    /// `limit` is not an integer in `1..=MAX_LIMIT`.
    InvalidLimit,
    /// `period` is not an integer in `1..=MAX_PERIOD_S`.
    InvalidPeriod,
    /// `cost` is not an integer in `0..=MAX_COST`.
    InvalidCost,
    /// `ALGORITHM` is not followed by the name of an algorithm; the names
    /// it takes.
    InvalidAlgorithm(&'static [&'static str]),
    /// `burst` is not an integer in `1..=MAX_LIMIT`.
    InvalidBurst,
    /// A bucket of `burst` would take longer than the longest period to refill.
    BurstTooLarge,
    /// `BURST` given without `ALGORITHM TOKEN`.
    BurstWithoutToken,
    /// THROTTLE's `max_burst` is not an integer in `0..MAX_LIMIT`.
    InvalidMaxBurst,
    /// THROTTLE's `count_per_period` is not an integer in `1..=MAX_LIMIT`.
    InvalidCountPerPeriod,
    /// THROTTLE's `quantity` is not an integer in `0..=MAX_COST`.
    InvalidQuantity,
    /// THROTTLE's emission interval would be under a nanosecond.
    ThrottleRateTooHigh,
    /// THROTTLE's bucket would take longer than the longest period to refill.
    ThrottleBurstTooLarge,
    /// MCHECK's `numkeys` is not an integer in `1..=MAX_KEYS`.
    InvalidNumKeys,
    /// MCHECK's groups do not match its keys: one `LIMIT` group per key.
    GroupPerKey,
    /// MCHECK names a key twice.
    DuplicateKey,
    /// ACQUIRE's `max` is not an integer in `1..=MAX_LEASES`.
    InvalidMaxLeases,
    /// `lease_ms` is not an integer in `1..=MAX_LEASE_MS`.
    InvalidLeaseMs,
    /// A lease id is empty, longer than `MAX_ID_LEN` bytes, or `NOW`.
    InvalidLeaseId,
    /// RESERVE's or EXTEND's `ttl_ms` is not an integer in `1..=MAX_TTL_MS`.
    InvalidHoldTtl,
    /// `HOLD`'s estimate is not an integer in `0..=MAX_COST`.
    InvalidEstimate,
    /// `ACTUAL` is not an integer in `0..=MAX_COST`.
    InvalidActual,
    /// A RESERVE group with both `COST` and `HOLD`.
    CostAndHold,
    /// A SETTLE group without `ACTUAL`.
    MissingActual,
    /// The holds key is also one of the limiter keys.
    HoldsKeyIsLimiterKey,
    /// The holds key is a hash whose fields are not holds.
    NotHolds,
    /// The key holds another type.
    WrongType,
    /// The key holds a string that is no limiter's state.
    NotLimiterState,
    /// The key holds the state of limiter `held`, and the command asked for
    /// `wanted` (names as `ALGORITHM` takes them).
    WrongKind {
        /// The kind the key holds.
        held: &'static str,
        /// The kind the command asked for.
        wanted: &'static str,
        /// How a request reaches the kind the key holds.
        held_chosen_by: &'static str,
    },
    /// A failure of the server API or a bug; never caused by the arguments.
    /// The cause goes to the server log; the client sees a generic text.
    Internal(&'static str),
}

impl Error {
    /// The error reply, code first. `None` for [`Error::WrongArity`], whose
    /// text the server writes itself (it names the command).
    pub fn message(self) -> Option<Message> {
        let mut m = Message::new();
        // A message longer than the buffer is cut, never lost.
        let _ = match self {
            Error::WrongArity => return None,
            Error::UnknownOption(word) => {
                write!(m, "ERR syntax error: unknown option '{word}'")
            }
            Error::RepeatedOption(keyword) => {
                write!(m, "ERR syntax error: {keyword} given twice")
            }
            Error::MissingValue(keyword) => write!(m, "ERR syntax error: {keyword} needs a value"),
            Error::ShortGroup => m.write_str("ERR syntax error: LIMIT needs a limit and a period"),
            Error::InvalidLimit => {
                m.write_str("ERR limit must be a positive integer (at most 1000000000000000)")
            }
            Error::InvalidPeriod => m.write_str(
                "ERR period must be a positive integer number of seconds (at most 1000000000)",
            ),
            Error::InvalidCost => {
                m.write_str("ERR cost must be a non-negative integer (at most 1000000000000000)")
            }
            Error::InvalidAlgorithm(names) => write!(m, "ERR ALGORITHM must be {}", OneOf(names)),
            Error::InvalidBurst => {
                m.write_str("ERR burst must be a positive integer (at most 1000000000000000)")
            }
            Error::BurstTooLarge => m.write_str(
                "ERR burst is too large for this rate: a full bucket must refill within 1000000000 seconds",
            ),
            Error::BurstWithoutToken => m.write_str("ERR BURST is only valid with ALGORITHM TOKEN"),
            Error::InvalidMaxBurst => m.write_str(
                "ERR max_burst must be a non-negative integer (at most 999999999999999)",
            ),
            Error::InvalidCountPerPeriod => m.write_str(
                "ERR count_per_period must be a positive integer (at most 1000000000000000)",
            ),
            Error::InvalidQuantity => m.write_str(
                "ERR quantity must be a non-negative integer (at most 1000000000000000)",
            ),
            Error::ThrottleRateTooHigh => m.write_str(
                "ERR count_per_period is too high for period: the emission interval would be under 1 nanosecond",
            ),
            Error::ThrottleBurstTooLarge => m.write_str(
                "ERR max_burst is too large for this rate: a full bucket must refill within 1000000000 seconds",
            ),
            Error::InvalidNumKeys => m.write_str("ERR numkeys must be an integer from 1 to 16"),
            Error::GroupPerKey => {
                m.write_str("ERR expected one LIMIT group per key, in the order of the keys")
            }
            Error::DuplicateKey => m.write_str("ERR each key may appear only once"),
            Error::InvalidMaxLeases => m.write_str("ERR max must be an integer from 1 to 100000"),
            Error::InvalidLeaseMs => {
                m.write_str("ERR lease_ms must be an integer from 1 to 86400000")
            }
            Error::InvalidLeaseId => m.write_str("ERR id must be 1 to 64 bytes and not NOW"),
            Error::InvalidHoldTtl => m.write_str("ERR ttl_ms must be an integer from 1 to 86400000"),
            Error::InvalidEstimate => m.write_str(
                "ERR estimate must be a non-negative integer (at most 1000000000000000)",
            ),
            Error::InvalidActual => {
                m.write_str("ERR actual must be a non-negative integer (at most 1000000000000000)")
            }
            Error::CostAndHold => {
                m.write_str("ERR syntax error: a LIMIT takes COST or HOLD, not both")
            }
            Error::MissingActual => {
                m.write_str("ERR syntax error: each LIMIT of SETTLE needs ACTUAL")
            }
            Error::HoldsKeyIsLimiterKey => {
                m.write_str("ERR the holds key cannot also be a limiter key")
            }
            Error::NotHolds => {
                m.write_str("WRONGTYPE the key holds a hash that is not a record of holds")
            }
            Error::WrongType => {
                m.write_str("WRONGTYPE Operation against a key holding the wrong kind of value")
            }
            Error::NotLimiterState => {
                m.write_str("WRONGTYPE the key holds a string that is not limiter state")
            }
            Error::WrongKind {
                held,
                wanted,
                held_chosen_by,
            } => write!(
                m,
                "WRONGTYPE the key holds {held} limiter state, not {wanted}; use {held_chosen_by} or RATELIMIT.RESET it",
            ),
            Error::Internal(_) => m.write_str("ERR internal error in the ratelimit module"),
        };
        Some(m)
    }
}

/// A word of the client's, as an error message quotes it: at most
/// [`Word::SHOWN`] bytes, printable ASCII as given and any other byte as
/// `?`, with `...` after a longer word. A copy, so that the error owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word {
    bytes: [u8; Word::SHOWN],
    len: usize,
    cut: bool,
}

impl Word {
    /// Bytes of a word a message shows.
    pub const SHOWN: usize = 32;

    /// The word `bytes` as a message shows it.
    pub fn of(bytes: &[u8]) -> Word {
        let mut word = Word {
            bytes: [b'?'; Word::SHOWN],
            len: 0,
            cut: bytes.len() > Word::SHOWN,
        };
        for (slot, &b) in word.bytes.iter_mut().zip(bytes) {
            if (0x20..0x7f).contains(&b) {
                *slot = b;
            }
            word.len = word.len.saturating_add(1);
        }
        word
    }
}

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.bytes.get(..self.len).unwrap_or_default();
        // Printable ASCII or `?`: always UTF-8.
        f.write_str(std::str::from_utf8(shown).unwrap_or("?"))?;
        if self.cut {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// `A, B or C`.
struct OneOf(&'static [&'static str]);

impl fmt::Display for OneOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.0.len().saturating_sub(1);
        for (i, name) in self.0.iter().enumerate() {
            match i {
                0 => {}
                _ if i == last => f.write_str(" or ")?,
                _ => f.write_str(", ")?,
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// Room for the longest message and its NUL.
const MESSAGE_CAPACITY: usize = 256;

/// An error message on the stack, NUL-terminated for the server.
pub struct Message {
    buf: [u8; MESSAGE_CAPACITY],
    len: usize,
}

impl Message {
    fn new() -> Message {
        Message {
            buf: [0; MESSAGE_CAPACITY],
            len: 0,
        }
    }

    /// The text, as the server takes it.
    pub fn as_c_str(&self) -> &CStr {
        // The buffer always keeps its last byte 0, so a NUL is found.
        CStr::from_bytes_until_nul(&self.buf).unwrap_or(c"ERR")
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        self.as_c_str().to_str().unwrap_or("ERR")
    }
}

impl Write for Message {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Keep the last byte for the NUL; drop NULs inside the text.
        let room = MESSAGE_CAPACITY.saturating_sub(1).saturating_sub(self.len);
        for &b in s.as_bytes().iter().filter(|&&b| b != 0).take(room) {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len = self.len.saturating_add(1);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(e: Error) -> String {
        e.message().unwrap().as_str().to_string()
    }

    /// Every error but the ones whose text follows a list or a value, with
    /// its exact text.
    #[rustfmt::skip]
    const PINNED: [(Error, &str); 24] = [
        (Error::RepeatedOption("COST"), "ERR syntax error: COST given twice"),
        (Error::MissingValue("ALGORITHM"), "ERR syntax error: ALGORITHM needs a value"),
        (Error::ShortGroup, "ERR syntax error: LIMIT needs a limit and a period"),
        (Error::NotLimiterState, "WRONGTYPE the key holds a string that is not limiter state"),
        (Error::InvalidLimit, "ERR limit must be a positive integer (at most 1000000000000000)"),
        (Error::InvalidPeriod, "ERR period must be a positive integer number of seconds (at most 1000000000)"),
        (Error::InvalidCost, "ERR cost must be a non-negative integer (at most 1000000000000000)"),
        (Error::InvalidBurst, "ERR burst must be a positive integer (at most 1000000000000000)"),
        (Error::BurstTooLarge, "ERR burst is too large for this rate: a full bucket must refill within 1000000000 seconds"),
        (Error::BurstWithoutToken, "ERR BURST is only valid with ALGORITHM TOKEN"),
        (Error::InvalidMaxBurst, "ERR max_burst must be a non-negative integer (at most 999999999999999)"),
        (Error::InvalidCountPerPeriod, "ERR count_per_period must be a positive integer (at most 1000000000000000)"),
        (Error::InvalidQuantity, "ERR quantity must be a non-negative integer (at most 1000000000000000)"),
        (Error::ThrottleRateTooHigh, "ERR count_per_period is too high for period: the emission interval would be under 1 nanosecond"),
        (Error::ThrottleBurstTooLarge, "ERR max_burst is too large for this rate: a full bucket must refill within 1000000000 seconds"),
        (Error::InvalidNumKeys, "ERR numkeys must be an integer from 1 to 16"),
        (Error::GroupPerKey, "ERR expected one LIMIT group per key, in the order of the keys"),
        (Error::DuplicateKey, "ERR each key may appear only once"),
        (Error::InvalidMaxLeases, "ERR max must be an integer from 1 to 100000"),
        (Error::InvalidLeaseMs, "ERR lease_ms must be an integer from 1 to 86400000"),
        (Error::InvalidLeaseId, "ERR id must be 1 to 64 bytes and not NOW"),
        (Error::WrongType, "WRONGTYPE Operation against a key holding the wrong kind of value"),
        (Error::Internal("a cause the client never sees"), "ERR internal error in the ratelimit module"),
        (Error::Internal(""), "ERR internal error in the ratelimit module"),
    ];

    #[test]
    fn every_message_is_pinned_and_starts_with_a_redis_error_code() {
        for (error, expected) in PINNED {
            assert_eq!(text(error), expected);
        }
        let composed = [
            Error::InvalidAlgorithm(&["A", "B"]),
            Error::WrongKind {
                held: "SLIDING",
                wanted: "FIXED",
                held_chosen_by: "ALGORITHM SLIDING",
            },
        ];
        for error in PINNED.iter().map(|(e, _)| *e).chain(composed) {
            let t = text(error);
            assert!(t.starts_with("ERR ") || t.starts_with("WRONGTYPE "), "{t}");
        }
        assert!(Error::WrongArity.message().is_none());
    }

    #[test]
    fn an_unknown_option_is_quoted_printable_and_cut() {
        let said = |word: &[u8]| text(Error::UnknownOption(Word::of(word)));
        assert_eq!(
            said(b"ALGORITM"),
            "ERR syntax error: unknown option 'ALGORITM'"
        );
        assert_eq!(
            said(b"a\r\n\xffb"),
            "ERR syntax error: unknown option 'a???b'"
        );
        assert_eq!(
            said(&[b'x'; 40]),
            format!("ERR syntax error: unknown option '{}...'", "x".repeat(32))
        );
        assert_eq!(said(b""), "ERR syntax error: unknown option ''");
    }

    #[test]
    fn the_algorithm_error_lists_the_names_it_is_given() {
        assert_eq!(OneOf(&["A", "B", "C"]).to_string(), "A, B or C");
        assert_eq!(OneOf(&["A"]).to_string(), "A");
        assert_eq!(
            text(Error::InvalidAlgorithm(&["FIXED", "SLIDING", "TOKEN"])),
            "ERR ALGORITHM must be FIXED, SLIDING or TOKEN"
        );
    }

    #[test]
    fn another_limiters_key_is_named_with_the_way_to_use_it() {
        let error = Error::WrongKind {
            held: "THROTTLE",
            wanted: "TOKEN",
            held_chosen_by: "RATELIMIT.THROTTLE",
        };
        assert_eq!(
            text(error),
            "WRONGTYPE the key holds THROTTLE limiter state, not TOKEN; \
             use RATELIMIT.THROTTLE or RATELIMIT.RESET it"
        );
    }

    #[test]
    fn messages_are_cut_rather_than_overflowing() {
        let mut m = Message::new();
        for _ in 0..100 {
            m.write_str("0123456789").unwrap();
        }
        assert_eq!(m.as_str().len(), MESSAGE_CAPACITY - 1);
        let mut m = Message::new();
        m.write_str("a\0b").unwrap();
        assert_eq!(m.as_str(), "ab");
    }
}
