//! Integers as Redis writes them in strings and arguments: decimal, with
//! `string2ll`'s rules.

/// Parses a decimal `i64` with the rules Redis applies to integer arguments
/// and to INCR's stored values: an optional `-`, no `+`, no spaces, no
/// leading zeros, no overflow.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    match digits {
        [] => return None,
        [b'0'] => return if negative { None } else { Some(0) },
        [b'0', ..] => return None,
        _ => {}
    }
    // Up to 18 digits cannot overflow: the common case, on the hot path of
    // every command, skips the overflow checks.
    if digits.len() <= 18 {
        let mut value: i64 = 0;
        for &b in digits {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            value = value.wrapping_mul(10).wrapping_add(i64::from(digit));
        }
        return Some(if negative {
            value.wrapping_neg()
        } else {
            value
        });
    }
    // Accumulate negatively so that i64::MIN parses without overflow.
    let mut value: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(b.wrapping_sub(b'0'));
        value = value.checked_mul(10)?.checked_sub(digit)?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// Parses a non-negative decimal that may have leading zeros (a fixed-width
/// field): one or more ASCII digits, no sign, no overflow.
pub fn parse_padded_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |value, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        value
            .checked_mul(10)?
            .checked_add(u64::from(b.wrapping_sub(b'0')))
    })
}

/// A `u64` in decimal, on the stack.
pub struct Digits([u8; 20]);

/// "00" to "99", two bytes each.
const PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

impl Digits {
    /// Room for any `u64`.
    pub fn new() -> Digits {
        Digits([0; 20])
    }

    /// `n`'s digits, written into this buffer two at a time (half the
    /// divisions: records and effects carry many 13-digit times).
    pub fn of(&mut self, mut n: u64) -> &[u8] {
        let mut start = self.0.len();
        while n >= 10 {
            // `n % 100` is below 100: the cast keeps it, and the pair's two
            // bytes are within the table.
            let pair = usize::from((n % 100) as u8).wrapping_mul(2);
            let at = start.saturating_sub(2);
            let (Some([hi, lo]), Some(&[tens, ones])) = (
                self.0.get_mut(at..start),
                PAIRS.get(pair..pair.wrapping_add(2)),
            ) else {
                break;
            };
            (*hi, *lo) = (tens, ones);
            start = at;
            n /= 100;
        }
        if n > 0 || start == self.0.len() {
            // One digit left (or `n` was 0): below 10, the cast keeps it.
            let at = start.saturating_sub(1);
            if let Some(slot) = self.0.get_mut(at) {
                *slot = b'0'.wrapping_add((n % 10) as u8);
                start = at;
            }
        }
        self.0.get(start..).unwrap_or_default()
    }

    /// `n`'s digits, with leading zeros up to `width` (at most 20).
    pub fn padded(&mut self, n: u64, width: usize) -> &[u8] {
        let digits = self.of(n).len();
        let capacity = self.0.len();
        let start = capacity.saturating_sub(digits.max(width.min(capacity)));
        if let Some(zeros) = self.0.get_mut(start..capacity.saturating_sub(digits)) {
            zeros.fill(b'0');
        }
        self.0.get(start..).unwrap_or_default()
    }
}

impl Default for Digits {
    fn default() -> Self {
        Digits::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_integers_like_redis() {
        let cases: &[(&str, Option<i64>)] = &[
            ("0", Some(0)),
            ("7", Some(7)),
            ("-7", Some(-7)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("99999999999999999999999", None),
            ("", None),
            ("-", None),
            ("-0", None),
            ("007", None),
            ("+7", None),
            (" 7", None),
            ("7 ", None),
            ("7.0", None),
            ("1e3", None),
            ("abc", None),
            ("٣", None),
            ("999999999999999999", Some(999_999_999_999_999_999)),
            ("-999999999999999999", Some(-999_999_999_999_999_999)),
            ("1000000000000000000", Some(1_000_000_000_000_000_000)),
            ("12a", None),
            ("1/", None),
            ("1:", None),
        ];
        for &(input, expected) in cases {
            assert_eq!(parse_i64(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn pads_and_reads_fixed_width_fields() {
        let mut digits = Digits::new();
        assert_eq!(digits.padded(7, 3), b"007");
        assert_eq!(digits.padded(1234, 3), b"1234");
        assert_eq!(digits.padded(0, 0), b"0");
        assert_eq!(digits.padded(u64::MAX, 99), u64::MAX.to_string().as_bytes());
        assert_eq!(parse_padded_u64(b"007"), Some(7));
        assert_eq!(parse_padded_u64(b"0"), Some(0));
        assert_eq!(
            parse_padded_u64(b"000000000000000000000018446744073709551615"),
            Some(u64::MAX)
        );
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1 ",
            b"18446744073709551616",
            b"1a",
        ] {
            assert_eq!(parse_padded_u64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_every_u64() {
        let mut digits = Digits::new();
        for n in [0, 1, 9, 10, 99, 100, 12345, i64::MAX as u64, u64::MAX] {
            assert_eq!(digits.of(n), n.to_string().as_bytes());
        }
        // Every length, odd and even, at its edges.
        for p in 0..20 {
            let power = 10u64.pow(p);
            for n in [power - 1, power, power + 1, power.saturating_mul(5)] {
                assert_eq!(digits.of(n), n.to_string().as_bytes());
            }
        }
        let mut n: u64 = 1;
        for _ in 0..10_000 {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            for m in [n, n >> 7, n >> 23, n >> 41, n >> 57] {
                assert_eq!(digits.of(m), m.to_string().as_bytes());
            }
        }
    }
}
