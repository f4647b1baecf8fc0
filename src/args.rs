//! Reading command arguments: integers in range, and options.
//!
//! Parsers are generic over [`Arg`] so the same code runs on the server's
//! strings and, in unit tests, on plain `&str`.

use crate::decimal::parse_i64;

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

/// Parses an integer argument in `min..=max`, with Redis' own syntax.
pub fn parse_in_range(arg: &impl Arg, min: u64, max: u64) -> Option<u64> {
    let value = u64::try_from(parse_i64(arg.bytes())?).ok()?;
    (min..=max).contains(&value).then_some(value)
}

/// Whether `word` (an argument's bytes) is the keyword `name`, ignoring case.
pub fn is_keyword(word: &[u8], name: &str) -> bool {
    word.eq_ignore_ascii_case(name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn matches_keywords_case_insensitively() {
        assert!(is_keyword(b"cost", "COST"));
        assert!(is_keyword(b"CoSt", "COST"));
        assert!(!is_keyword(b"COSTS", "COST"));
        assert!(!is_keyword(&[0xff], "COST"));
    }
}
