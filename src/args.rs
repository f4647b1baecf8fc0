//! Reading command arguments: integers in range, and keywords.
//!
//! Parsers are generic over [`Arg`] so the same code runs on the server's
//! strings and, in unit tests, on plain `&str`.

use crate::decimal::parse_i64;
use crate::error::Error;

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

/// The accepted range of an integer argument, and the error for any other
/// value: the one source of the range rules, for the parser (which reports
/// the first bad argument in argument order) and for the constructors.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Smallest accepted value.
    pub min: u64,
    /// Largest accepted value.
    pub max: u64,
    /// The error for anything else, also for what is not an integer.
    pub error: Error,
}

impl Bound {
    /// `value` if it is in range.
    pub fn check(&self, value: u64) -> Result<u64, Error> {
        if (self.min..=self.max).contains(&value) {
            Ok(value)
        } else {
            Err(self.error)
        }
    }
}

/// An integer argument within `bound`, with Redis' own syntax; anything
/// else is the bound's error.
pub fn bounded(arg: &impl Arg, bound: &Bound) -> Result<u64, Error> {
    parse_i64(arg.bytes())
        .and_then(|value| u64::try_from(value).ok())
        .ok_or(bound.error)
        .and_then(|value| bound.check(value))
}

/// Whether `word` (an argument's bytes) is the keyword `name`, ignoring case.
pub fn is_keyword(word: &[u8], name: &str) -> bool {
    word.eq_ignore_ascii_case(name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_TO_TEN: Bound = Bound {
        min: 1,
        max: 10,
        error: Error::InvalidLimit,
    };

    #[test]
    fn parses_within_range_only() {
        assert_eq!(bounded(&"5", &ONE_TO_TEN), Ok(5));
        assert_eq!(bounded(&"1", &ONE_TO_TEN), Ok(1));
        assert_eq!(bounded(&"10", &ONE_TO_TEN), Ok(10));
        for bad in ["0", "11", "-1", "x", "", "05", "1.0"] {
            assert_eq!(
                bounded(&bad, &ONE_TO_TEN),
                Err(Error::InvalidLimit),
                "{bad}"
            );
        }
    }

    #[test]
    fn matches_keywords_case_insensitively() {
        assert!(is_keyword(b"cost", "COST"));
        assert!(is_keyword(b"CoSt", "COST"));
        assert!(!is_keyword(b"COSTS", "COST"));
        assert!(!is_keyword(&[0xff], "COST"));
    }
}
