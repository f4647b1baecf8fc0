//! What RESERVE, SETTLE and EXTEND share: how they touch their keys, and
//! the rule that keeps the holds key apart from the limiter keys.

use crate::args::Arg;
use crate::error::Error;
use redis_module::raw;

/// The holds key's access: read and changed (the server takes one of
/// INSERT, UPDATE and DELETE; it is deleted only when its last record goes).
pub const HOLDS_KEY_FLAGS: u32 =
    raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_ACCESS | raw::REDISMODULE_CMD_KEY_UPDATE;

/// The limiter keys' access, as MCHECK's.
pub const LIMITER_KEY_FLAGS: u32 =
    raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_ACCESS | raw::REDISMODULE_CMD_KEY_UPDATE;

/// Refuses a holds key that is also a limiter key: a hash cannot be a
/// limiter's state, and the sweep would refund into its own key.
pub fn holds_apart<A: Arg>(holds: &A, keys: &[A]) -> Result<(), Error> {
    if keys.iter().any(|key| key.bytes() == holds.bytes()) {
        return Err(Error::HoldsKeyIsLimiterKey);
    }
    Ok(())
}
