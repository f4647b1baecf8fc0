//! The holds key of RATELIMIT.RESERVE, SETTLE and EXTEND: reading its
//! records, refunding and forgetting the holds whose deadline has come, and
//! writing a record, each change propagated as its effect (`HSET`, `HDEL`,
//! `DEL`, `PEXPIREAT`) and, for the limiter keys, as CHECK's effects.
//!
//! The layout is in [`crate::limiter::holds`].

use crate::args::Arg;
use crate::decimal::Digits;
use crate::error::Error;
use crate::limiter::holds::{decode_sweep_ms, Record, SWEEP_FIELD};
use crate::limiter::{Algorithm, Chosen, Layout, Visit};
use crate::server::{self, Access, Ctx, Key, OwnedString, RString, Value};
use crate::store::{self, Write};

/// An open holds key, its expired holds refunded and forgotten.
pub struct HoldsKey<'a> {
    key: Key<'a>,
    /// The sweep time stored, if any.
    sweep_ms: Option<u64>,
}

/// A holds key opened for one id.
pub struct Opened<'a> {
    /// The key, its expired holds refunded and forgotten.
    pub holds: HoldsKey<'a>,
    /// What the sweep did.
    pub swept: Swept,
    /// The value kept under the id, if any: read it with [`read`].
    pub value: Option<OwnedString>,
}

/// What opening a holds key did to expired holds.
pub struct Swept {
    /// Holds whose deadline had come, refunded and forgotten.
    pub expired: u64,
    /// Settled records forgotten.
    pub forgotten: u64,
}

impl<'a> HoldsKey<'a> {
    /// Opens the holds key `name` for a command on hold `id` at `now_ms`.
    /// When a hold may have expired (the sweep time has come), every record
    /// is read first (a value that is no record is refused before anything
    /// changes); then each expired live hold's estimates are refunded, every
    /// expired record is deleted, and the sweep time moves to the next
    /// deadline, or the key is deleted when no record is left. The value
    /// kept under `id` is read after that.
    pub fn open(
        ctx: Ctx,
        name: &'a RString,
        id: &RString,
        now_ms: u64,
    ) -> Result<Opened<'a>, Error> {
        let mut key = Key::open(ctx, name, Access::ReadWrite)?;
        let mut swept = Swept {
            expired: 0,
            forgotten: 0,
        };
        match key.value()? {
            Value::Empty => {
                return Ok(Opened {
                    holds: HoldsKey {
                        key,
                        sweep_ms: None,
                    },
                    swept,
                    value: None,
                })
            }
            Value::Hash => {}
            Value::String(_) | Value::SortedSet | Value::Other => return Err(Error::WrongType),
        }
        let sweep_field = server::empty_string()?;
        // Both fields in one call: the id's value is what it is unless the
        // sweep below deletes it.
        let (sweep, value) = key.hash_get_two(&sweep_field, id)?;
        let sweep_ms = match sweep {
            Some(value) => Some(decode_sweep_ms(value.bytes()).ok_or(Error::NotHolds)?),
            None => None,
        };
        if sweep_ms.is_some_and(|at_ms| now_ms < at_ms) {
            return Ok(Opened {
                holds: HoldsKey { key, sweep_ms },
                swept,
                value,
            });
        }

        let entries = server::hash_entries(ctx, name)?;
        let mut records = Vec::with_capacity(entries.len());
        for (field, value) in &entries {
            if field.as_slice() != SWEEP_FIELD {
                records.push((field, Record::decode(value).ok_or(Error::NotHolds)?));
            }
        }
        let mut next_ms: Option<u64> = None;
        for (field, record) in &records {
            let deadline_ms = record.deadline_ms();
            if deadline_ms > now_ms {
                next_ms = Some(next_ms.map_or(deadline_ms, |n| n.min(deadline_ms)));
                continue;
            }
            match record {
                Record::Live(live) => {
                    for hold in &live.holds {
                        let change = Change::Refund {
                            units: hold.held,
                            charged_at_ms: live.charged_at_ms,
                        };
                        refund_expired(ctx, hold.key, hold.chosen, change, now_ms)?;
                    }
                    swept.expired = swept.expired.saturating_add(1);
                }
                Record::Settled { .. } => swept.forgotten = swept.forgotten.saturating_add(1),
            }
            key.hash_set(OwnedString::new(field)?.as_rstring(), None)?;
            server::replicate_hdel(ctx, name, field)?;
        }

        let mut changed = swept.expired > 0 || swept.forgotten > 0;
        let sweep_ms = match next_ms {
            None => {
                key.delete()?;
                server::replicate_del(ctx, name)?;
                changed = true;
                None
            }
            Some(at_ms) if Some(at_ms) != sweep_ms => {
                let mut digits = Digits::new();
                let text = digits.of(at_ms);
                key.hash_set(&sweep_field, Some(&OwnedString::new(text)?))?;
                server::replicate_hset(ctx, name, &[SWEEP_FIELD, text])?;
                changed = true;
                Some(at_ms)
            }
            kept => kept,
        };
        if changed {
            server::signal_modified(ctx, name)?;
            server::notify(ctx, c"ratelimit.refund", name);
        }
        drop(value);
        let value = key.hash_get(id)?;
        Ok(Opened {
            holds: HoldsKey { key, sweep_ms },
            swept,
            value,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &'a RString {
        self.key.name()
    }

    /// Keeps `value`, a record expiring at `deadline_ms` and mattering
    /// until `keep_until_ms`, under `id`: moves the sweep time earlier when
    /// the record's deadline is, and the key's expiry later when the record
    /// matters longer (to twice as far from `now_ms`, so that most records
    /// need no new expiry). One `HSET` propagates both fields.
    pub fn put(
        &mut self,
        ctx: Ctx,
        id: &RString,
        value: &[u8],
        deadline_ms: u64,
        keep_until_ms: u64,
        now_ms: u64,
    ) -> Result<(), Error> {
        let value = OwnedString::new(value)?;
        self.key.hash_set(id, Some(&value))?;
        let name = self.key.name();
        if self.sweep_ms.is_none_or(|at_ms| deadline_ms < at_ms) {
            let mut digits = Digits::new();
            let text = digits.of(deadline_ms);
            let sweep_field = server::empty_string()?;
            self.key
                .hash_set(&sweep_field, Some(&OwnedString::new(text)?))?;
            server::replicate_hset_record(ctx, name, id, value.as_rstring(), Some(text))?;
            self.sweep_ms = Some(deadline_ms);
        } else {
            server::replicate_hset_record(ctx, name, id, value.as_rstring(), None)?;
        }
        if self
            .key
            .expires_at_ms()?
            .is_none_or(|at_ms| at_ms < keep_until_ms)
        {
            let at_ms = keep_until_ms.saturating_add(keep_until_ms.saturating_sub(now_ms));
            self.key.set_expires_at_ms(at_ms)?;
            server::replicate_pexpireat(ctx, name, at_ms)?;
        }
        server::signal_modified(ctx, name)
    }
}

/// The record in a value a holds key keeps.
pub fn read(value: &OwnedString) -> Result<Record<'_>, Error> {
    Record::decode(value.bytes()).ok_or(Error::NotHolds)
}

/// How a settle or an expiry changes a limiter key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Take this many units, past the limit if need be.
    Force(u64),
    /// Give back this many units, charged at `charged_at_ms`.
    Refund {
        /// Units to give back.
        units: u64,
        /// When they were charged.
        charged_at_ms: u64,
    },
}

/// A change worked out for a limiter key and not made yet.
pub enum Adjustment {
    /// Store a new state.
    Write(Write),
    /// The state is back to empty: delete the key.
    Delete,
}

impl Adjustment {
    /// Makes the change at `key` and propagates it.
    pub fn apply(&self, ctx: Ctx, key: &mut Key) -> Result<(), Error> {
        match self {
            Adjustment::Write(write) => write.apply(ctx, key),
            Adjustment::Delete => {
                key.delete()?;
                server::replicate_del(ctx, key.name())?;
                server::signal_modified(ctx, key.name())
            }
        }
    }
}

/// Plans `change` for the limit `chosen` at the open `key`, at `now_ms`:
/// `None` when nothing changes.
pub fn plan(
    key: &Key,
    chosen: Chosen,
    change: Change,
    now_ms: u64,
) -> Result<Option<Adjustment>, Error> {
    struct Plan<'k, 'a> {
        key: &'k Key<'a>,
        change: Change,
        now_ms: u64,
    }
    impl Visit for Plan<'_, '_> {
        type Output = Result<Option<Adjustment>, Error>;
        fn visit<A: Algorithm>(self, algorithm: A) -> Self::Output {
            let loaded = store::load::<A>(self.key)?;
            let next = match self.change {
                Change::Force(units) => algorithm.force(loaded.state, units, self.now_ms),
                Change::Refund {
                    units,
                    charged_at_ms,
                } => algorithm.refund(loaded.state, units, charged_at_ms, self.now_ms),
            };
            Ok(match next {
                None => None,
                Some(next) if next.expires_at_ms().is_some_and(|at| at <= self.now_ms) => {
                    Some(Adjustment::Delete)
                }
                Some(next) => Some(Adjustment::Write(Write::plan(&loaded, next)?)),
            })
        }
    }
    chosen.visit(Plan {
        key,
        change,
        now_ms,
    })
}

/// Refunds an expired hold's estimate at the limiter key `name`. A key
/// that holds something else now (another kind, another type) has nothing
/// to give back and is left alone: an expiry never fails a command.
fn refund_expired(
    ctx: Ctx,
    name: &[u8],
    chosen: Chosen,
    change: Change,
    now_ms: u64,
) -> Result<(), Error> {
    let name = OwnedString::new(name)?;
    let mut key = Key::open(ctx, name.as_rstring(), Access::ReadWrite)?;
    let adjustment = match plan(&key, chosen, change, now_ms) {
        Ok(adjustment) => adjustment,
        Err(internal @ Error::Internal(_)) => return Err(internal),
        Err(_) => None,
    };
    if let Some(adjustment) = adjustment {
        adjustment.apply(ctx, &mut key)?;
        server::notify(ctx, c"ratelimit.refund", key.name());
    }
    Ok(())
}
