//! How limiter state is written in a key: a string value and the key's
//! expiry. Each algorithm implements [`Layout`] for its state, beside its
//! decision function; `store.rs` reads and writes keys through it.
//!
//! All numbers are decimal, written the way INCR writes them, except
//! fixed-width fields, which keep the width of the value they replace
//! (zero-padded): such a field changes on every call, and a value whose
//! length changes must be reallocated by the server.

use crate::decimal::{parse_i64, Digits};

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

    /// Appends `n` in decimal, zero-padded to `width` digits.
    pub fn push_padded(&mut self, n: u64, width: usize) -> Option<()> {
        self.push(Digits::new().padded(n, width))
    }
}

impl Default for Encoded {
    fn default() -> Self {
        Encoded::new()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Round trips every layout's tests share.

    use super::{Encoded, Layout};

    /// `state` encoded as a fresh value.
    pub fn encode<S: Layout>(state: S) -> Vec<u8> {
        let mut out = Encoded::new();
        state.encode(&mut out, 0).unwrap();
        out.as_bytes().to_vec()
    }

    /// `state` encodes to `expected` and reads back as itself.
    pub fn round_trip<S: Layout + PartialEq + std::fmt::Debug>(state: S, expected: &[u8]) {
        let bytes = encode(state);
        assert_eq!(bytes, expected);
        assert_eq!(S::decode(&bytes, state.expires_at_ms()), Some(state));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
