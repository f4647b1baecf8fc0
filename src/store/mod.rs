//! Reading and writing limiter state in keys, and propagating each change:
//! the only code that turns a [`Layout`] into a key's value and expiry.
//!
//! Every change is propagated to replicas and the AOF as its effect, never
//! as the command: `SET key value PXAT expiry-ms`, with absolute time, so a
//! replica, or a server replaying the AOF later, ends with the master's value
//! and expiry whatever its own clock says. A fixed-window counter that grows
//! inside its window propagates as `INCR key` / `INCRBY key n`, which leaves
//! the (equal) expiry alone and is cheaper for the server to build; it
//! depends on no clock either.
//!
//! A key that holds another kind's state is refused with an error naming
//! both kinds (the layouts never overlap), never silently reinterpreted.

use std::ffi::CStr;

pub mod leases;

use crate::error::Error;
use crate::limiter::{Encoded, Id, Kind, Layout, Outcome, Registered};
use crate::server::{self, Ctx, Key, Value};

/// The state a key holds for kind `K`, with the length of its value.
pub struct Loaded<S> {
    /// The state; `None` for a missing key.
    pub state: Option<S>,
    /// The length of the stored value (0 for none).
    len: usize,
}

/// Reads the state of kind `K` at `key`: `None` for a missing key; an error
/// naming both kinds for another kind's state, `WRONGTYPE` for anything else.
pub fn load<K: Kind + Registered>(key: &Key) -> Result<Loaded<K::State>, Error> {
    match key.value()? {
        Value::Empty => Ok(Loaded {
            state: None,
            len: 0,
        }),
        Value::String(bytes) => match K::State::decode(bytes, key.expires_at_ms()?) {
            Some(state) => Ok(Loaded {
                state: Some(state),
                len: bytes.len(),
            }),
            None => Err(match Id::of_value(bytes) {
                Some(held) => Error::WrongKind {
                    held,
                    wanted: K::ID,
                },
                None => Error::WrongType,
            }),
        },
        Value::SortedSet | Value::Other => Err(Error::WrongType),
    }
}

/// Whether `key` holds limiter state of any kind, or nothing (what
/// RATELIMIT.RESET may delete).
pub fn holds_limiter_state_or_nothing(key: &Key) -> Result<bool, Error> {
    Ok(match key.value()? {
        Value::Empty => true,
        Value::String(value) => Id::of_value(value).is_some(),
        Value::SortedSet | Value::Other => false,
    })
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
    /// The stored expiry differs from the new one.
    expiry_moves: bool,
    /// `Some(n)`: the change is `INCRBY key n`.
    incr_by: Option<u64>,
}

impl Write {
    /// The change from `loaded` to `next`.
    pub fn plan<S: Layout>(loaded: &Loaded<S>, next: S) -> Result<Write, Error> {
        let mut value = Encoded::new();
        next.encode(&mut value, loaded.len)
            .ok_or(Error::Internal("a state does not fit its buffer"))?;
        let expires_at_ms = next
            .expires_at_ms()
            .ok_or(Error::Internal("a state to store has no expiry"))?;
        let previous = loaded.state.as_ref();
        Ok(Write {
            value,
            expires_at_ms,
            expiry_moves: previous.and_then(Layout::expires_at_ms) != Some(expires_at_ms),
            incr_by: previous.and_then(|p| next.grown_from(p)),
        })
    }

    /// Makes the change at `key` (open for writing) and propagates it.
    pub fn apply(&self, ctx: Ctx, key: &mut Key) -> Result<(), Error> {
        // Queue the propagation first: if the server refuses it, nothing has
        // changed yet, and master and replicas still agree. A counter that
        // grew within its window propagates as INCRBY, which keeps the
        // replica's (equal) expiry and costs the server fewer allocations
        // than a SET.
        match self.incr_by {
            Some(by) => server::replicate_incr_by(ctx, key.name(), by)?,
            None => server::replicate_set_pxat(
                ctx,
                key.name(),
                self.value.as_bytes(),
                self.expires_at_ms,
            )?,
        }
        key.write_string(self.value.as_bytes())?;
        // An unchanged expiry is not set again: that saves a lookup.
        if self.expiry_moves {
            key.set_expires_at_ms(self.expires_at_ms)?;
        }
        server::signal_modified(ctx, key.name())
    }
}
