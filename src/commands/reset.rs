//! `RATELIMIT.RESET`: forget limiters.
//!
//! # Format
//! ```text
//! RATELIMIT.RESET key [key …]
//! ```
//!
//! # Returns
//! The number of keys removed. Missing keys are skipped. If any key holds
//! something that is not limiter state (another type, or a string of no
//! limiter's layout), the reply is `WRONGTYPE` and nothing is removed. Each
//! removal propagates as `DEL`.

use super::{entry_point, Reply};
use crate::error::Error;
use crate::server::{self, Access, Ctx, Key, RString, Value};
use crate::store;

fn run(ctx: Ctx, args: &[RString]) -> Result<Reply, Error> {
    let [_, keys @ ..] = args else {
        return Err(Error::WrongArity);
    };
    if keys.is_empty() {
        return Err(Error::WrongArity);
    }
    // Check every key before removing any: all or nothing.
    for name in keys {
        let key = Key::open(ctx, name, Access::Read)?;
        match key.value()? {
            Value::Empty => {}
            Value::String(value) if store::is_limiter_state(value) => {}
            Value::String(_) | Value::Other => return Err(Error::WrongType),
        }
    }
    let mut removed: i64 = 0;
    for name in keys {
        let mut key = Key::open(ctx, name, Access::ReadWrite)?;
        // A key named twice is gone the second time.
        if matches!(key.value()?, Value::Empty) {
            continue;
        }
        server::replicate_del(ctx, name)?;
        key.delete()?;
        server::signal_modified(ctx, name)?;
        removed = removed.saturating_add(1);
    }
    Ok(Reply::Integer(removed))
}

entry_point!(run);
