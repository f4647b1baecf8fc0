//! Reading and writing limiter state in keys, and propagating each change:
//! the only code that turns a [`Layout`] into a key's value and expiry.
//!
//! Every change is propagated to replicas and the AOF as its effect, never
//! as the command, so a replica, or a server replaying the AOF later, ends
//! with the master's value and expiry whatever its own clock says, and can
//! do so without the module. The effect is the cheapest one that says the
//! change, none of them reading a clock:
//!
//! | what changed | effect |
//! | --- | --- |
//! | an integer value grew, the expiry stayed (a fixed window counting) | `INCR key` / `INCRBY key n` |
//! | only the value (a sliding window counting inside its window) | `SET key value KEEPTTL` |
//! | only the expiry (a bucket whose value keeps its digits) | `PEXPIREAT key ms` |
//! | both, or a new key | `SET key value PXAT ms` |
//!
//! A key that holds another kind's state is refused with an error naming
//! both kinds (the layouts never overlap), never silently reinterpreted.

use std::ffi::CStr;

pub mod holds;
pub mod leases;

use crate::error::Error;
use crate::limiter::{Encoded, Id, Kind, Layout, Outcome, Registered};
use crate::server::{self, Ctx, Key, Value};

/// The state a key holds for kind `K`, with its value as stored.
pub struct Loaded<'k, S> {
    /// The state; `None` for a missing key.
    pub state: Option<S>,
    /// The stored value, read in place (empty for none).
    value: &'k [u8],
}

/// Reads the state of kind `K` at `key`: `None` for a missing key; an error
/// naming both kinds for another kind's state, `WRONGTYPE` saying so for a
/// string that is no limiter's state, and the server's `WRONGTYPE` for any
/// other type.
pub fn load<'k, K: Kind + Registered>(key: &'k Key) -> Result<Loaded<'k, K::State>, Error> {
    match key.value()? {
        Value::Empty => Ok(Loaded {
            state: None,
            value: &[],
        }),
        Value::String(bytes) => match K::State::decode(bytes, key.expires_at_ms()?) {
            Some(state) => Ok(Loaded {
                state: Some(state),
                value: bytes,
            }),
            None => Err(match Id::of_value(bytes) {
                Some(held) => held.wrong_kind(K::ID),
                None => Error::NotLimiterState,
            }),
        },
        Value::SortedSet | Value::Hash | Value::Other => Err(Error::WrongType),
    }
}

/// Whether `key` holds limiter state of any kind, or nothing (what
/// RATELIMIT.RESET may delete); the error that says what it holds instead.
pub fn holds_limiter_state_or_nothing(key: &Key) -> Result<(), Error> {
    match key.value()? {
        Value::Empty => Ok(()),
        Value::String(value) if Id::of_value(value).is_some() => Ok(()),
        Value::String(_) => Err(Error::NotLimiterState),
        Value::SortedSet | Value::Hash | Value::Other => Err(Error::WrongType),
    }
}

/// Reads the state at `key`, lets `decide` compute the outcome, stores and
/// propagates what it asks to store, and returns its decision. The key stays
/// open throughout: the whole step is atomic, like any Redis command.
///
/// A change fires the keyspace event `event` (class `d`, module) on the key.
pub fn update<K: Kind + Registered, D>(
    ctx: Ctx,
    key: &mut Key,
    event: &CStr,
    decide: impl FnOnce(Option<K::State>) -> Outcome<K::State, D>,
) -> Result<D, Error> {
    let loaded = load::<K>(key)?;
    let outcome = decide(loaded.state);
    if let Some(next) = outcome.store {
        // The plan owns what it writes: the key is free to change.
        let write = Write::plan(&loaded, next)?;
        write.apply(ctx, key)?;
        server::notify(ctx, event, key.name());
    }
    Ok(outcome.decision)
}

/// A change worked out for a key and not made yet: the new value and expiry,
/// and the effect that propagates it.
pub struct Write {
    value: Encoded,
    expires_at_ms: u64,
    effect: Effect,
}

/// How a change is propagated (see the table at the top).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    IncrBy(u64),
    SetKeepTtl,
    ExpireAt,
    SetPxat,
}

impl Write {
    /// The change from `loaded` to `next`.
    pub fn plan<S: Layout>(loaded: &Loaded<'_, S>, next: S) -> Result<Write, Error> {
        let mut value = Encoded::new();
        next.encode(&mut value, loaded.value.len())
            .ok_or(Error::Internal("a state does not fit its buffer"))?;
        let expires_at_ms = next
            .expires_at_ms()
            .ok_or(Error::Internal("a state to store has no expiry"))?;
        let effect = match loaded.state.as_ref() {
            None => Effect::SetPxat,
            Some(previous) => {
                let same_expiry = previous.expires_at_ms() == Some(expires_at_ms);
                match next.grown_from(previous) {
                    Some(by) => Effect::IncrBy(by),
                    None if same_expiry => Effect::SetKeepTtl,
                    None if loaded.value == value.as_bytes() => Effect::ExpireAt,
                    None => Effect::SetPxat,
                }
            }
        };
        Ok(Write {
            value,
            expires_at_ms,
            effect,
        })
    }

    /// Makes the change at `key` (open for writing), then propagates it:
    /// a change the server refused is never propagated. Everything that can
    /// fail for the data (decoding, encoding) happened in [`Write::plan`].
    pub fn apply(&self, ctx: Ctx, key: &mut Key) -> Result<(), Error> {
        let value = self.value.as_bytes();
        if self.effect != Effect::ExpireAt {
            key.write_string(value)?;
        }
        // An unchanged expiry is not set again: that saves a lookup.
        if matches!(self.effect, Effect::ExpireAt | Effect::SetPxat) {
            key.set_expires_at_ms(self.expires_at_ms)?;
        }
        let name = key.name();
        match self.effect {
            Effect::IncrBy(by) => server::replicate_incr_by(ctx, name, by)?,
            Effect::SetKeepTtl => server::replicate_set_keepttl(ctx, name, value)?,
            Effect::ExpireAt => server::replicate_pexpireat(ctx, name, self.expires_at_ms)?,
            Effect::SetPxat => server::replicate_set_pxat(ctx, name, value, self.expires_at_ms)?,
        }
        server::signal_modified(ctx, name)
    }
}
