//! Concurrency leases in a key: a plain sorted set, member = lease id,
//! score = its deadline in UNIX ms, and the key expiring with its last
//! lease, so an idle key vanishes and `ZRANGE key 0 -1 WITHSCORES` shows
//! who holds what until when.
//!
//! Every change is made on the key, then propagated as its effect with
//! absolute times, in the order made: `ZREMRANGEBYSCORE key -inf <now>` for
//! the leases pruned, `ZADD key <deadline> <id>`, `ZREM key <id>`, then
//! `PEXPIREAT key <last deadline>` when the last deadline moved (the server
//! wraps several in MULTI/EXEC). A replica or an AOF replay then holds the
//! master's set and expiry and never judges a deadline by its own clock;
//! a change the server refused is never propagated.

use crate::args::Arg;
use crate::decimal::Digits;
use crate::error::Error;
use crate::limiter::leases::LeaseSet;
use crate::server::{self, Ctx, Key, OwnedString, Value};

/// The leases at an open key, for the lease logic.
///
/// The last deadline is read from the set at most once per call, and
/// followed through the call's changes: a new key's is the one lease put in
/// it, and it is read again only when the lease holding it ends or moves
/// earlier.
pub struct KeyLeases<'k, 'a> {
    ctx: Ctx,
    key: &'k mut Key<'a>,
    changed: bool,
    /// The key's expiry: as opened, and `None` once the set has been left
    /// empty (the server then deletes the key, expiry and all).
    expiry_ms: Option<u64>,
    /// The last deadline, when known without a scan.
    last: Option<Option<u64>>,
    /// The member string of the lease last asked about, reused while the
    /// same id is asked about again (ACQUIRE with an ID asks, then adds).
    member: Option<OwnedString>,
}

impl<'k, 'a> KeyLeases<'k, 'a> {
    /// The leases at `key` (open for writing): `WRONGTYPE` unless it holds
    /// a sorted set or nothing.
    pub fn open(ctx: Ctx, key: &'k mut Key<'a>) -> Result<Self, Error> {
        let (expiry_ms, last) = match key.value()? {
            Value::Empty => (None, Some(None)),
            // The expiry of a set made or changed by hand need not be its
            // last deadline: that is read from the set the first time it is
            // needed.
            Value::SortedSet => (key.expires_at_ms()?, None),
            Value::String(_) | Value::Hash | Value::Other => return Err(Error::WrongType),
        };
        Ok(KeyLeases {
            ctx,
            expiry_ms,
            key,
            changed: false,
            last,
            member: None,
        })
    }

    /// Opens the leases at `key`, lets `work` change them and ends the
    /// changes ([`KeyLeases::finish`]) whatever `work` answers, so that
    /// whatever was changed is followed by its expiry and told to WATCH.
    pub fn change<R>(
        ctx: Ctx,
        key: &'k mut Key<'a>,
        work: impl FnOnce(&mut Self) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let mut set = KeyLeases::open(ctx, key)?;
        let answer = work(&mut set);
        let finished = set.finish();
        let answer = answer?;
        finished?;
        Ok(answer)
    }

    /// Ends the changes: moves the key's expiry to the last deadline when it
    /// moved, and tells WATCH.
    fn finish(mut self) -> Result<(), Error> {
        if !self.changed {
            return Ok(());
        }
        // A set left empty is deleted by the server, on the master as on a
        // replica applying the same removals.
        if let Some(last_ms) = self.last_deadline()? {
            if self.expiry_ms != Some(last_ms) {
                self.key.set_expires_at_ms(last_ms)?;
                let mut digits = Digits::new();
                server::replicate(
                    self.ctx,
                    c"PEXPIREAT",
                    self.key.name(),
                    &[digits.of(last_ms)],
                )?;
            }
        }
        server::signal_modified(self.ctx, self.key.name())
    }

    /// After members left the set: whether it is now empty, and so gone
    /// with its expiry. A lease put in it next makes a new key, whose
    /// expiry must be set whatever the old one was.
    fn emptied(&mut self) -> Result<bool, Error> {
        let empty = self.key.zset_len()? == 0;
        if empty {
            self.last = Some(None);
            self.expiry_ms = None;
        }
        Ok(empty)
    }

    /// After a lease with `deadline_ms` left the set (or moved from it):
    /// the last deadline is no longer known if it was that one.
    fn forget_last_if(&mut self, deadline_ms: u64) -> Result<(), Error> {
        if !self.emptied()? && self.last.flatten().is_none_or(|last| last <= deadline_ms) {
            self.last = None;
        }
        Ok(())
    }
}

/// The member string of `id`, reusing the one in `cache` when it is the
/// same id.
fn member<'m>(cache: &'m mut Option<OwnedString>, id: &[u8]) -> Result<&'m OwnedString, Error> {
    if cache.as_ref().is_none_or(|m| m.bytes() != id) {
        *cache = Some(OwnedString::new(id)?);
    }
    cache.as_ref().ok_or(Error::Internal("no member string"))
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

/// Ranks up to which the `n`-th deadline is found by walking the set from
/// its earliest (one new string per member passed); beyond, by the
/// server's rank lookup, O(log N) however far.
const WALK_AT_MOST: u64 = 8;

impl LeaseSet for KeyLeases<'_, '_> {
    fn prune(&mut self, now_ms: u64) -> Result<u64, Error> {
        let ended = self.key.zset_up_to(score(now_ms))?;
        if ended.is_empty() {
            return Ok(0);
        }
        for (member, _) in &ended {
            self.key.zset_rem(member)?;
        }
        self.changed = true;
        let mut digits = Digits::new();
        server::replicate(
            self.ctx,
            c"ZREMRANGEBYSCORE",
            self.key.name(),
            &[b"-inf", digits.of(now_ms)],
        )?;
        // Every remaining deadline is later than now, later than any pruned.
        self.emptied()?;
        u64::try_from(ended.len()).map_err(|_| Error::Internal("a length beyond u64"))
    }

    fn live(&self) -> Result<u64, Error> {
        self.key.zset_len()
    }

    fn deadline(&mut self, id: &[u8]) -> Result<Option<u64>, Error> {
        let member = member(&mut self.member, id)?;
        Ok(self.key.zset_score(member)?.map(deadline_ms))
    }

    fn nth_deadline(&mut self, n: u64) -> Result<Option<u64>, Error> {
        let score = if n < WALK_AT_MOST {
            self.key.zset_nth_score(n)?
        } else {
            server::zset_score_at_rank(self.ctx, self.key.name(), n)?
        };
        Ok(score.map(deadline_ms))
    }

    fn last_deadline(&mut self) -> Result<Option<u64>, Error> {
        if let Some(last) = self.last {
            return Ok(last);
        }
        let last = self.key.zset_last_score()?.map(deadline_ms);
        self.last = Some(last);
        Ok(last)
    }

    fn put(&mut self, id: &[u8], deadline: u64) -> Result<(), Error> {
        // A deadline earlier than the last may be replacing the last one.
        let replaced = match self.last {
            Some(Some(last)) if deadline < last => self.deadline(id)?,
            _ => None,
        };
        let member = member(&mut self.member, id)?;
        self.key.zset_add(score(deadline), member)?;
        self.changed = true;
        let mut digits = Digits::new();
        server::replicate(
            self.ctx,
            c"ZADD",
            self.key.name(),
            &[digits.of(deadline), id],
        )?;
        if let Some(old) = replaced {
            self.forget_last_if(old)?;
        }
        self.last = match self.last {
            Some(last) if last.is_none_or(|l| deadline >= l) => Some(Some(deadline)),
            other => other,
        };
        Ok(())
    }

    fn remove(&mut self, id: &[u8]) -> Result<bool, Error> {
        let Some(old) = self.deadline(id)? else {
            return Ok(false);
        };
        self.key.zset_rem(member(&mut self.member, id)?)?;
        self.changed = true;
        server::replicate(self.ctx, c"ZREM", self.key.name(), &[id])?;
        self.forget_last_if(old)?;
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
