//! Concurrency leases in a key: a plain sorted set, member = lease id,
//! score = its deadline in UNIX ms, and the key expiring with its last
//! lease, so an idle key vanishes and `ZRANGE key 0 -1 WITHSCORES` shows
//! who holds what until when.
//!
//! Every change is made on the key and propagated as its effect with
//! absolute times, in the order made: `ZREMRANGEBYSCORE key -inf <now>` for
//! the leases pruned, `ZADD key <deadline> <id>`, `ZREM key <id>`, then
//! `PEXPIREAT key <last deadline>` when the last deadline moved (the server
//! wraps several in MULTI/EXEC). A replica or an AOF replay then holds the
//! master's set and expiry and never judges a deadline by its own clock.

use crate::args::Arg;
use crate::decimal::Digits;
use crate::error::Error;
use crate::limiter::leases::LeaseSet;
use crate::server::{self, Ctx, Key, OwnedString, Value};

/// The leases at an open key, for the lease logic.
pub struct KeyLeases<'k, 'a> {
    ctx: Ctx,
    key: &'k mut Key<'a>,
    changed: bool,
}

impl<'k, 'a> KeyLeases<'k, 'a> {
    /// The leases at `key` (open for writing): `WRONGTYPE` unless it holds
    /// a sorted set or nothing.
    pub fn open(ctx: Ctx, key: &'k mut Key<'a>) -> Result<Self, Error> {
        match key.value()? {
            Value::Empty | Value::SortedSet => Ok(KeyLeases {
                ctx,
                key,
                changed: false,
            }),
            Value::String(_) | Value::Other => Err(Error::WrongType),
        }
    }

    /// Ends the changes: moves the key's expiry to the last deadline when it
    /// moved, and tells WATCH. Whether anything changed.
    pub fn finish(self) -> Result<bool, Error> {
        if !self.changed {
            return Ok(false);
        }
        // A set left empty is deleted by the server when the key closes, on
        // the master as on a replica applying the same removals.
        if let Some(last_ms) = self.last_deadline()? {
            if self.key.expires_at_ms()? != Some(last_ms) {
                let mut digits = Digits::new();
                server::replicate(
                    self.ctx,
                    c"PEXPIREAT",
                    self.key.name(),
                    &[digits.of(last_ms)],
                )?;
                self.key.set_expires_at_ms(last_ms)?;
            }
        }
        server::signal_modified(self.ctx, self.key.name())?;
        Ok(true)
    }
}

/// A deadline as a sorted set keeps it. Deadlines stay below 2^53 (a UNIX
/// time in ms plus at most a day), so the double is exact.
#[allow(clippy::cast_precision_loss)]
fn score(deadline_ms: u64) -> f64 {
    deadline_ms as f64
}

/// The latest deadline a key can expire at: Redis keeps expiries as signed
/// 64-bit ms.
const NEVER_MS: u64 = u64::MAX >> 1;

/// A score read back as a deadline. A score the module did not write (a
/// set changed by hand) is cut to the millisecond; a negative one reads as
/// an ended lease, and one beyond any expiry Redis can keep (`+inf`: a slot
/// held by hand until released) as [`NEVER_MS`], so that it holds its slot
/// and the key keeps an expiry Redis accepts. Reading such a member as
/// ended would set the key's expiry to 0 and delete every lease with it.
fn deadline_ms(score: f64) -> u64 {
    if score.is_nan() || score < 0.0 {
        return 0;
    }
    if score >= self::score(NEVER_MS) {
        return NEVER_MS;
    }
    // Checked just above: finite, non-negative and below 2^63.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ms = score as u64;
    ms
}

impl LeaseSet for KeyLeases<'_, '_> {
    fn prune(&mut self, now_ms: u64) -> Result<u64, Error> {
        let ended = self.key.zset_up_to(score(now_ms))?;
        if ended.is_empty() {
            return Ok(0);
        }
        let mut digits = Digits::new();
        server::replicate(
            self.ctx,
            c"ZREMRANGEBYSCORE",
            self.key.name(),
            &[b"-inf", digits.of(now_ms)],
        )?;
        for (member, _) in &ended {
            self.key.zset_rem(member)?;
        }
        self.changed = true;
        u64::try_from(ended.len()).map_err(|_| Error::Internal("a length beyond u64"))
    }

    fn live(&self) -> Result<u64, Error> {
        self.key.zset_len()
    }

    fn deadline(&self, id: &[u8]) -> Result<Option<u64>, Error> {
        Ok(self
            .key
            .zset_score(&OwnedString::new(id)?)?
            .map(deadline_ms))
    }

    fn nth_deadline(&self, n: u64) -> Result<Option<u64>, Error> {
        Ok(self.key.zset_nth_score(n)?.map(deadline_ms))
    }

    fn last_deadline(&self) -> Result<Option<u64>, Error> {
        Ok(self.key.zset_last_score()?.map(deadline_ms))
    }

    fn put(&mut self, id: &[u8], deadline: u64) -> Result<(), Error> {
        let mut digits = Digits::new();
        server::replicate(
            self.ctx,
            c"ZADD",
            self.key.name(),
            &[digits.of(deadline), id],
        )?;
        self.key.zset_add(score(deadline), &OwnedString::new(id)?)?;
        self.changed = true;
        Ok(())
    }

    fn remove(&mut self, id: &[u8]) -> Result<bool, Error> {
        let member = OwnedString::new(id)?;
        if self.key.zset_score(&member)?.is_none() {
            return Ok(false);
        }
        server::replicate(self.ctx, c"ZREM", self.key.name(), &[member.bytes()])?;
        self.key.zset_rem(&member)?;
        self.changed = true;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_survive_the_double_and_odd_scores_read_as_ended_or_held() {
        for ms in [0, 1, 1_700_000_000_123, 1_700_000_000_123 + 86_400_000] {
            assert_eq!(deadline_ms(score(ms)), ms);
        }
        for ended in [-1.0, -0.5, f64::NAN, f64::NEG_INFINITY] {
            assert_eq!(deadline_ms(ended), 0, "{ended}");
        }
        // Beyond what a key's expiry can hold: held until released.
        for held in [f64::INFINITY, 1e300, 1e19, 9.5e18, 2f64.powi(63)] {
            assert_eq!(deadline_ms(held), NEVER_MS, "{held}");
        }
        assert_eq!(NEVER_MS, i64::MAX.unsigned_abs());
        assert_eq!(deadline_ms(12.9), 12);
        assert_eq!(deadline_ms(9.2e18), 9_200_000_000_000_000_000);
    }
}
