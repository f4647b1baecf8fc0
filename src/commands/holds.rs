//! What RESERVE and SETTLE share: the rule that keeps the holds key apart
//! from the limiter keys.

use crate::args::Arg;
use crate::error::Error;

/// Refuses a holds key that is also a limiter key: a hash cannot be a
/// limiter's state, and the sweep would refund into its own key.
pub fn holds_apart<A: Arg>(holds: &A, keys: &[A]) -> Result<(), Error> {
    if keys.iter().any(|key| key.bytes() == holds.bytes()) {
        return Err(Error::HoldsKeyIsLimiterKey);
    }
    Ok(())
}
