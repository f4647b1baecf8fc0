//! Reading command arguments: integers with Redis' own syntax, and options.
//!
//! Parsers are generic over [`Arg`] so the same code runs on the server's
//! strings and, in unit tests, on plain `&str`.

/// A command argument seen as bytes. Keys need not be UTF-8.
pub trait Arg {
    /// The argument's bytes.
    fn bytes(&self) -> &[u8];
}

impl Arg for &str {
    fn bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Arg for &[u8] {
    fn bytes(&self) -> &[u8] {
        self
    }
}

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

/// Parses an integer argument in `min..=max`.
pub fn parse_in_range(arg: &impl Arg, min: u64, max: u64) -> Option<u64> {
    let value = u64::try_from(parse_i64(arg.bytes())?).ok()?;
    (min..=max).contains(&value).then_some(value)
}

/// Whether `arg` is the option `name` (given in upper case), ignoring case.
pub fn is_option(arg: &impl Arg, name: &str) -> bool {
    arg.bytes().eq_ignore_ascii_case(name.as_bytes())
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
        ];
        for &(input, expected) in cases {
            assert_eq!(parse_i64(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn parses_within_range_only() {
        assert_eq!(parse_in_range(&"5", 1, 10), Some(5));
        assert_eq!(parse_in_range(&"1", 1, 10), Some(1));
        assert_eq!(parse_in_range(&"10", 1, 10), Some(10));
        assert_eq!(parse_in_range(&"0", 1, 10), None);
        assert_eq!(parse_in_range(&"11", 1, 10), None);
        assert_eq!(parse_in_range(&"-1", 0, 10), None);
    }

    #[test]
    fn matches_options_case_insensitively() {
        assert!(is_option(&"cost", "COST"));
        assert!(is_option(&"CoSt", "COST"));
        assert!(!is_option(&"COSTS", "COST"));
        assert!(!is_option(&(&[0xff_u8][..]), "COST"));
    }
}
