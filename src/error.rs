//! Every error a command can reply, and the only place that writes error codes.
//!
//! Each message starts with a Redis error code (`ERR`, `WRONGTYPE`) so clients
//! classify it correctly and `INFO errorstats` counts it under that code. The
//! texts are static C strings: replying an error allocates nothing.

use std::ffi::CStr;

/// Why a command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Too few (or too many) arguments; replied with the server's standard
    /// "wrong number of arguments for '<command>' command".
    WrongArity,
    /// An unknown, repeated or incomplete option.
    Syntax,
    /// `limit` is not an integer in `1..=MAX_LIMIT`.
    InvalidLimit,
    /// `period` is not an integer in `1..=MAX_PERIOD_S`.
    InvalidPeriod,
    /// `cost` is not an integer in `0..=MAX_COST`.
    InvalidCost,
    /// `ALGORITHM` is not followed by FIXED, SLIDING or TOKEN.
    InvalidAlgorithm,
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
    /// The key holds another type, or a string that is not limiter state.
    WrongType,
    /// A failure of the server API or a bug; never caused by the arguments.
    Internal,
}

impl Error {
    /// The error reply, code first. `None` for [`Error::WrongArity`], whose
    /// text the server writes itself (it names the command).
    pub fn message(self) -> Option<&'static CStr> {
        Some(match self {
            Error::WrongArity => return None,
            Error::Syntax => c"ERR syntax error",
            Error::InvalidLimit => {
                c"ERR limit must be a positive integer (at most 1000000000000000)"
            }
            Error::InvalidPeriod => {
                c"ERR period must be a positive integer number of seconds (at most 1000000000)"
            }
            Error::InvalidCost => {
                c"ERR cost must be a non-negative integer (at most 1000000000000000)"
            }
            Error::InvalidAlgorithm => c"ERR ALGORITHM must be FIXED, SLIDING or TOKEN",
            Error::InvalidBurst => c"ERR burst must be a positive integer (at most 1000000000000000)",
            Error::BurstTooLarge => {
                c"ERR burst is too large for this rate: a full bucket must refill within 1000000000 seconds"
            }
            Error::BurstWithoutToken => c"ERR BURST is only valid with ALGORITHM TOKEN",
            Error::InvalidMaxBurst => {
                c"ERR max_burst must be a non-negative integer (at most 999999999999999)"
            }
            Error::InvalidCountPerPeriod => {
                c"ERR count_per_period must be a positive integer (at most 1000000000000000)"
            }
            Error::InvalidQuantity => {
                c"ERR quantity must be a non-negative integer (at most 1000000000000000)"
            }
            Error::ThrottleRateTooHigh => {
                c"ERR count_per_period is too high for period: the emission interval would be under 1 nanosecond"
            }
            Error::ThrottleBurstTooLarge => {
                c"ERR max_burst is too large for this rate: a full bucket must refill within 1000000000 seconds"
            }
            Error::WrongType => {
                c"WRONGTYPE Operation against a key holding the wrong kind of value"
            }
            Error::Internal => c"ERR internal error in the ratelimit module",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::{MAX_COST, MAX_LIMIT, MAX_PERIOD_S};

    const ALL: [Error; 16] = [
        Error::Syntax,
        Error::InvalidLimit,
        Error::InvalidPeriod,
        Error::InvalidCost,
        Error::InvalidAlgorithm,
        Error::InvalidBurst,
        Error::BurstTooLarge,
        Error::BurstWithoutToken,
        Error::InvalidMaxBurst,
        Error::InvalidCountPerPeriod,
        Error::InvalidQuantity,
        Error::ThrottleRateTooHigh,
        Error::ThrottleBurstTooLarge,
        Error::WrongType,
        Error::Internal,
        Error::WrongArity,
    ];

    fn text(e: Error) -> &'static str {
        e.message().unwrap().to_str().unwrap()
    }

    #[test]
    fn every_message_starts_with_a_redis_error_code() {
        for e in ALL {
            let Some(message) = e.message() else {
                assert_eq!(e, Error::WrongArity);
                continue;
            };
            let t = message.to_str().unwrap();
            assert!(t.starts_with("ERR ") || t.starts_with("WRONGTYPE "), "{t}");
        }
    }

    #[test]
    fn messages_state_the_documented_bounds() {
        assert_eq!(text(Error::Syntax), "ERR syntax error");
        assert!(text(Error::InvalidLimit).contains(&MAX_LIMIT.to_string()));
        assert!(text(Error::InvalidPeriod).contains(&MAX_PERIOD_S.to_string()));
        assert!(text(Error::InvalidCost).contains(&MAX_COST.to_string()));
        assert!(text(Error::InvalidBurst).contains(&MAX_LIMIT.to_string()));
        assert!(text(Error::InvalidMaxBurst).contains(&(MAX_LIMIT - 1).to_string()));
        assert!(text(Error::InvalidCountPerPeriod).contains(&MAX_LIMIT.to_string()));
        assert!(text(Error::InvalidQuantity).contains(&MAX_COST.to_string()));
        assert!(text(Error::BurstTooLarge).contains(&MAX_PERIOD_S.to_string()));
        assert!(text(Error::ThrottleBurstTooLarge).contains(&MAX_PERIOD_S.to_string()));
        assert_eq!(
            text(Error::WrongType),
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        );
    }
}
