//! How limiter state is kept in keys: the only code that knows the layout.
//!
//! A fixed window is stored exactly as INCR + EXPIRE would leave it: a plain
//! string holding the admitted count in decimal, and the key's expiry as the
//! end of the window. `GET`, `TTL`, `DEL`, `SCAN`, RDB and AOF all work on it
//! with no module-specific format, and a server without the module can load
//! it.
//!
//! Every change is propagated to replicas and the AOF as
//! `SET key count PXAT end-of-window-ms`: the effect with absolute time, so
//! a replica, or a server replaying the AOF later, ends with the same value
//! and the same expiry as the master.

use crate::args::parse_i64;
use crate::error::Error;
use crate::limiter::fixed_window::{Stored, Window};
use crate::server::{self, Ctx, Key, Value};

/// Decodes a fixed-window counter: a non-negative decimal integer written
/// the way INCR writes it. Anything else is not a counter.
pub fn decode_counter(bytes: &[u8]) -> Option<u64> {
    u64::try_from(parse_i64(bytes)?).ok()
}

/// Longest decimal `u64`: 20 digits.
const COUNTER_MAX_DIGITS: usize = 20;

/// Encodes `count` in decimal into `buf`, returning the digits.
pub fn encode_counter(mut count: u64, buf: &mut [u8; COUNTER_MAX_DIGITS]) -> &[u8] {
    let mut start = buf.len();
    for (i, slot) in buf.iter_mut().enumerate().rev() {
        // `count % 10` is below 10, so neither the cast nor the addition wraps.
        *slot = b'0'.wrapping_add((count % 10) as u8);
        count /= 10;
        start = i;
        if count == 0 {
            break;
        }
    }
    buf.get(start..).unwrap_or_default()
}

/// Reads the fixed window at `key`: `None` for a missing key, an error for a
/// key that is not a counter (another type, or a string that is not a
/// non-negative integer).
pub fn load_fixed_window(key: &Key) -> Result<Option<Stored>, Error> {
    let count = match key.value()? {
        Value::Empty => return Ok(None),
        Value::String(bytes) => decode_counter(bytes).ok_or(Error::WrongType)?,
        Value::Other => return Err(Error::WrongType),
    };
    Ok(Some(Stored {
        count,
        expires_at_ms: key.expires_at_ms()?,
    }))
}

/// Stores `window` at `key`, which held `previous`, and propagates it.
pub fn save_fixed_window(
    ctx: Ctx,
    key: &mut Key,
    previous: Option<Stored>,
    window: Window,
) -> Result<(), Error> {
    let mut buf = [0; COUNTER_MAX_DIGITS];
    let digits = encode_counter(window.count, &mut buf);
    // Queue the propagation first: if the server refuses it, nothing has
    // changed yet and the error leaves master and replicas in agreement.
    server::replicate_set_pxat(ctx, key.name(), digits, window.ends_at_ms)?;
    key.write_string(digits)?;
    // Within a window the expiry is already right: skip the extra lookup.
    if previous.and_then(|p| p.expires_at_ms) != Some(window.ends_at_ms) {
        key.set_expires_at_ms(window.ends_at_ms)?;
    }
    server::signal_modified(ctx, key.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip() {
        for count in [0, 1, 9, 10, 99, 100, 12345, i64::MAX as u64, u64::MAX] {
            let mut buf = [0; COUNTER_MAX_DIGITS];
            let digits = encode_counter(count, &mut buf);
            assert_eq!(digits, count.to_string().as_bytes());
            if count <= i64::MAX as u64 {
                assert_eq!(decode_counter(digits), Some(count));
            }
        }
    }

    #[test]
    fn only_incr_style_integers_are_counters() {
        assert_eq!(decode_counter(b"0"), Some(0));
        assert_eq!(decode_counter(b"42"), Some(42));
        for not_a_counter in [
            &b""[..],
            b"-1",
            b"hello",
            b"042",
            b"+4",
            b"4.0",
            b" 4",
            b"9223372036854775808",
        ] {
            assert_eq!(decode_counter(not_a_counter), None, "{not_a_counter:?}");
        }
    }
}
