//! How limiter state is kept in keys: the only code that knows the layouts.
//!
//! Every limiter is one plain Redis string whose expiry is the moment its
//! state stops mattering, so idle limiters vanish by themselves:
//!
//! | algorithm | value | expiry |
//! | --- | --- | --- |
//! | fixed window | `<count>`, as INCR writes it | end of the window |
//! | sliding window | `S<previous>:<current>` | end of the window after the counts' window |
//! | token bucket | `T<ticks>`: ticks of 1/limit ms before the expiry at which the bucket is full | when the bucket is full again, rounded up to the ms |
//! | THROTTLE (GCRA) | `G<ns>`: nanoseconds before the expiry at which the bucket is full | the theoretical arrival time, rounded up to the ms |
//!
//! All numbers are decimal, written the way INCR writes them, except the
//! sub-millisecond field of `T` and `G`, which keeps the width of the value
//! it replaces (zero-padded): it changes on every call, and a value whose
//! length changes must be reallocated. The tag letter
//! keeps layouts apart: a key made by one algorithm is a `WRONGTYPE` error for
//! another, never a silent reinterpretation. A fixed-window counter needs no
//! tag: it is exactly what INCR + EXPIRE leaves, so `GET`, `TTL`, `DEL`,
//! `SCAN`, RDB and AOF work on it and a server without the module can load it.
//!
//! Every change is propagated to replicas and the AOF as its effect, never
//! as the command: `SET key value PXAT expiry-ms`, with absolute time, so a
//! replica, or a server replaying the AOF later, ends with the master's value
//! and expiry whatever its own clock says. A fixed-window counter that grows
//! inside its window propagates as `INCR key` / `INCRBY key n`, which leaves
//! the (equal) expiry alone and is cheaper for the server to build; it
//! depends on no clock either.

use std::ffi::CStr;

use crate::decimal::{parse_i64, parse_padded_u64, Digits};
use crate::error::Error;
use crate::limiter::{fixed_window, gcra, sliding_window, token_bucket, Outcome};
use crate::server::{self, Ctx, Key, Value};

/// A limiter state as a key keeps it: a string value and an expiry.
pub trait Layout: Sized + Copy {
    /// Reads the state from a key's value and absolute expiry (UNIX ms),
    /// `None` when the value is not of this layout.
    fn decode(value: &[u8], expires_at_ms: Option<u64>) -> Option<Self>;

    /// Writes the value to store. `replaced_len` is the length of the value
    /// it replaces (0 for none): a layout with a fixed-width field pads to it,
    /// so that a changing number does not resize the string every time.
    fn encode(&self, out: &mut Encoded, replaced_len: usize) -> Option<()>;

    /// The expiry to store with it (absolute UNIX ms).
    fn expires_at_ms(&self) -> Option<u64>;

    /// `Some(n)` when this state is `previous` with its integer value
    /// grown by `n` and the same expiry: then `INCRBY key n` propagates it.
    fn grown_from(&self, _previous: &Self) -> Option<u64> {
        None
    }
}

impl Layout for fixed_window::Stored {
    fn decode(value: &[u8], expires_at_ms: Option<u64>) -> Option<Self> {
        Some(Self {
            count: decode_u64(value)?,
            expires_at_ms,
        })
    }

    fn encode(&self, out: &mut Encoded, _replaced_len: usize) -> Option<()> {
        out.push_u64(self.count)
    }

    fn expires_at_ms(&self) -> Option<u64> {
        self.expires_at_ms
    }

    fn grown_from(&self, previous: &Self) -> Option<u64> {
        if previous.expires_at_ms != self.expires_at_ms {
            return None;
        }
        self.count.checked_sub(previous.count).filter(|&n| n > 0)
    }
}

impl Layout for sliding_window::Stored {
    fn decode(value: &[u8], expires_at_ms: Option<u64>) -> Option<Self> {
        let counts = value.strip_prefix(b"S")?;
        let colon = counts.iter().position(|&b| b == b':')?;
        let (previous, current) = counts.split_at_checked(colon)?;
        Some(Self {
            previous: decode_u64(previous)?,
            current: decode_u64(current.strip_prefix(b":")?)?,
            expires_at_ms,
        })
    }

    fn encode(&self, out: &mut Encoded, _replaced_len: usize) -> Option<()> {
        out.push(b"S")?;
        out.push_u64(self.previous)?;
        out.push(b":")?;
        out.push_u64(self.current)
    }

    fn expires_at_ms(&self) -> Option<u64> {
        self.expires_at_ms
    }
}

impl Layout for token_bucket::Stored {
    fn decode(value: &[u8], expires_at_ms: Option<u64>) -> Option<Self> {
        Some(Self {
            early_ticks: parse_padded_u64(value.strip_prefix(b"T")?)?,
            full_at_ms: expires_at_ms,
        })
    }

    fn encode(&self, out: &mut Encoded, replaced_len: usize) -> Option<()> {
        out.push(b"T")?;
        out.push(Digits::new().padded(self.early_ticks, replaced_len.saturating_sub(1)))
    }

    fn expires_at_ms(&self) -> Option<u64> {
        self.full_at_ms
    }
}

impl Layout for gcra::Stored {
    fn decode(value: &[u8], expires_at_ms: Option<u64>) -> Option<Self> {
        Some(Self {
            early_ns: parse_padded_u64(value.strip_prefix(b"G")?)?,
            tat_ms: expires_at_ms,
        })
    }

    fn encode(&self, out: &mut Encoded, replaced_len: usize) -> Option<()> {
        out.push(b"G")?;
        out.push(Digits::new().padded(self.early_ns, replaced_len.saturating_sub(1)))
    }

    fn expires_at_ms(&self) -> Option<u64> {
        self.tat_ms
    }
}

/// Whether `value` is the state of any limiter (what RATELIMIT.RESET may
/// delete).
pub fn is_limiter_state(value: &[u8]) -> bool {
    fixed_window::Stored::decode(value, None).is_some()
        || sliding_window::Stored::decode(value, None).is_some()
        || token_bucket::Stored::decode(value, None).is_some()
        || gcra::Stored::decode(value, None).is_some()
}

/// Decodes a non-negative decimal integer written the way INCR writes it.
pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    u64::try_from(parse_i64(bytes)?).ok()
}

/// Room for the longest value: a tag, two 20-digit numbers and a separator.
const ENCODED_CAPACITY: usize = 48;

/// A value being encoded, in a fixed buffer: encoding allocates nothing.
pub struct Encoded {
    buf: [u8; ENCODED_CAPACITY],
    len: usize,
}

impl Encoded {
    /// An empty value.
    pub fn new() -> Encoded {
        Encoded {
            buf: [0; ENCODED_CAPACITY],
            len: 0,
        }
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// Appends `bytes`; `None` if they do not fit.
    pub fn push(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len.checked_add(bytes.len())?;
        self.buf.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }

    /// Appends `n` in decimal.
    pub fn push_u64(&mut self, n: u64) -> Option<()> {
        self.push(Digits::new().of(n))
    }
}

impl Default for Encoded {
    fn default() -> Self {
        Encoded::new()
    }
}

/// Reads the state at `key`: `None` for a missing key, `WRONGTYPE` for a
/// key of another type or whose value is not of layout `S`.
pub fn load<S: Layout>(key: &Key) -> Result<Option<S>, Error> {
    Ok(load_with_len(key)?.map(|(state, _)| state))
}

/// [`load`], with the length of the stored value.
fn load_with_len<S: Layout>(key: &Key) -> Result<Option<(S, usize)>, Error> {
    match key.value()? {
        Value::Empty => Ok(None),
        Value::String(bytes) => S::decode(bytes, key.expires_at_ms()?)
            .map(|state| Some((state, bytes.len())))
            .ok_or(Error::WrongType),
        Value::Other => Err(Error::WrongType),
    }
}

/// Reads the state at `key`, lets `decide` compute the outcome, stores and
/// propagates what it asks to store, and returns its decision. The key stays
/// open throughout: the whole step is atomic, like any Redis command.
///
/// A change fires the keyspace event `event` (class `d`, module) on the key.
pub fn update<S: Layout, D>(
    ctx: Ctx,
    key: &mut Key,
    event: &CStr,
    decide: impl FnOnce(Option<S>) -> Outcome<S, D>,
) -> Result<D, Error> {
    let stored = load_with_len::<S>(key)?;
    let outcome = decide(stored.map(|(state, _)| state));
    if let Some(next) = outcome.store {
        save(ctx, key, stored, next)?;
        server::notify(ctx, event, key.name());
    }
    Ok(outcome.decision)
}

/// Stores `next` at `key`, which held `previous`, and propagates it.
fn save<S: Layout>(
    ctx: Ctx,
    key: &mut Key,
    previous: Option<(S, usize)>,
    next: S,
) -> Result<(), Error> {
    let (previous, replaced_len) = match previous {
        Some((state, len)) => (Some(state), len),
        None => (None, 0),
    };
    let mut value = Encoded::new();
    next.encode(&mut value, replaced_len)
        .ok_or(Error::Internal)?;
    let expires_at_ms = next.expires_at_ms().ok_or(Error::Internal)?;
    // Queue the propagation first: if the server refuses it, nothing has
    // changed yet, and master and replicas still agree. A counter that grew
    // within its window propagates as INCRBY, which keeps the replica's
    // (equal) expiry and costs the server fewer allocations than a SET.
    match previous.and_then(|p| next.grown_from(&p)) {
        Some(by) => server::replicate_incr_by(ctx, key.name(), by)?,
        None => server::replicate_set_pxat(ctx, key.name(), value.as_bytes(), expires_at_ms)?,
    }
    key.write_string(value.as_bytes())?;
    // An unchanged expiry is not set again: that saves a lookup.
    if previous.and_then(|p| p.expires_at_ms()) != Some(expires_at_ms) {
        key.set_expires_at_ms(expires_at_ms)?;
    }
    server::signal_modified(ctx, key.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode<S: Layout>(state: S) -> Vec<u8> {
        let mut out = Encoded::new();
        state.encode(&mut out, 0).unwrap();
        out.as_bytes().to_vec()
    }

    fn round_trip<S: Layout + PartialEq + std::fmt::Debug>(state: S, expected: &[u8]) {
        let bytes = encode(state);
        assert_eq!(bytes, expected);
        assert_eq!(S::decode(&bytes, state.expires_at_ms()), Some(state));
    }

    #[test]
    fn every_layout_round_trips() {
        for count in [0, 1, 9, 10, 12345, i64::MAX as u64] {
            let state = fixed_window::Stored {
                count,
                expires_at_ms: Some(7),
            };
            round_trip(state, count.to_string().as_bytes());
        }
        round_trip(
            sliding_window::Stored {
                previous: 12,
                current: 3,
                expires_at_ms: Some(60_000),
            },
            b"S12:3",
        );
        round_trip(
            sliding_window::Stored {
                previous: i64::MAX as u64,
                current: i64::MAX as u64,
                expires_at_ms: Some(1),
            },
            b"S9223372036854775807:9223372036854775807",
        );
        round_trip(
            token_bucket::Stored {
                full_at_ms: Some(10_334),
                early_ticks: 2,
            },
            b"T2",
        );
        round_trip(
            gcra::Stored {
                tat_ms: Some(10_334),
                early_ns: 999_999,
            },
            b"G999999",
        );
    }

    #[test]
    fn fixed_width_fields_keep_the_length_they_replace() {
        let token = token_bucket::Stored {
            full_at_ms: Some(1),
            early_ticks: 7,
        };
        let mut out = Encoded::new();
        token.encode(&mut out, 5).unwrap();
        assert_eq!(out.as_bytes(), b"T0007");
        assert_eq!(token_bucket::Stored::decode(b"T0007", Some(1)), Some(token));
        let mut out = Encoded::new();
        token.encode(&mut out, 1).unwrap();
        assert_eq!(out.as_bytes(), b"T7");
        let cell = gcra::Stored {
            tat_ms: Some(1),
            early_ns: 42,
        };
        let mut out = Encoded::new();
        cell.encode(&mut out, 7).unwrap();
        assert_eq!(out.as_bytes(), b"G000042");
        assert_eq!(gcra::Stored::decode(b"G000042", Some(1)), Some(cell));
        // Counters are written as INCR writes them, never padded.
        let counter = fixed_window::Stored {
            count: 3,
            expires_at_ms: Some(1),
        };
        let mut out = Encoded::new();
        counter.encode(&mut out, 4).unwrap();
        assert_eq!(out.as_bytes(), b"3");
    }

    #[test]
    fn layouts_do_not_read_each_other() {
        let values: [&[u8]; 4] = [b"5", b"S1:2", b"T3", b"G4"];
        let readers: [fn(&[u8]) -> bool; 4] = [
            |v| fixed_window::Stored::decode(v, None).is_some(),
            |v| sliding_window::Stored::decode(v, None).is_some(),
            |v| token_bucket::Stored::decode(v, None).is_some(),
            |v| gcra::Stored::decode(v, None).is_some(),
        ];
        for (i, value) in values.iter().enumerate() {
            for (j, reads) in readers.iter().enumerate() {
                assert_eq!(reads(value), i == j, "{value:?} by reader {j}");
            }
            assert!(is_limiter_state(value));
        }
    }

    #[test]
    fn foreign_values_are_not_limiter_state() {
        for value in [
            &b""[..],
            b"hello",
            b"-1",
            b"042",
            b"+4",
            b"4.0",
            b" 4",
            b"9223372036854775808",
            b"S",
            b"S1",
            b"S:1",
            b"S1:",
            b"S1:2:3",
            b"S-1:2",
            b"s1:2",
            b"T",
            b"T-1",
            b"T+1",
            b"t1",
            b"G",
            b"Gx",
            b"G1 ",
        ] {
            assert!(!is_limiter_state(value), "{value:?}");
        }
    }

    #[test]
    fn encoding_never_overflows_its_buffer() {
        let mut out = Encoded::new();
        for _ in 0..2 {
            out.push_u64(u64::MAX).unwrap();
        }
        assert_eq!(out.as_bytes().len(), 40);
        out.push(b"12345678").unwrap();
        assert_eq!(out.push(b"9"), None);
        assert_eq!(out.push_u64(1), None);
    }
}
