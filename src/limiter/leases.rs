//! Concurrency leases: at most `max` pieces of work in flight per key, each
//! with a deadline, so that work whose holder died ends by itself.
//!
//! ```text
//!   lease a  ├────────────────┤ deadline a
//!   lease b       ├──────────────────────┤ deadline b   ← the key expires here
//!   lease c            ├──────────┤ (released early)
//!                 now ┆
//!   live at now: leases whose deadline is later than now
//! ```
//!
//! The leases live in a set of (id, deadline) that the caller keeps (a
//! sorted set in the module, a map in the tests): [`LeaseSet`]. Every
//! operation first prunes the leases whose deadline has come (`deadline <=
//! now`), then works on the live ones. Nothing here reads a clock or touches
//! Redis.

use std::borrow::Cow;

use super::Bound;
use crate::error::Error;

/// The most leases one key may hold at once.
pub const MAX_LEASES: u64 = 100_000;
/// The longest lease, in ms: a day.
pub const MAX_LEASE_MS: u64 = 86_400_000;
/// The longest lease id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// ACQUIRE's `max`.
pub const MAX: Bound = Bound {
    min: 1,
    max: MAX_LEASES,
    error: Error::InvalidMaxLeases,
};
/// ACQUIRE's and RENEW's `lease_ms`.
pub const LEASE_MS: Bound = Bound {
    min: 1,
    max: MAX_LEASE_MS,
    error: Error::InvalidLeaseMs,
};

/// A lease id as a client gives it: 1 to [`MAX_ID_LEN`] bytes, any bytes
/// but the word `NOW` in any case. The script fallback takes a final
/// `NOW <unix_ms>` as its clock; were `NOW` an id, `RELEASE key a NOW 5`
/// would mean two things.
pub fn check_id(id: &[u8]) -> Result<&[u8], Error> {
    if (1..=MAX_ID_LEN).contains(&id.len()) && !id.eq_ignore_ascii_case(b"NOW") {
        Ok(id)
    } else {
        Err(Error::InvalidLeaseId)
    }
}

/// The leases of one key, as the caller keeps them. Ids are byte strings;
/// deadlines are absolute UNIX ms.
pub trait LeaseSet {
    /// Removes every lease whose deadline is at or before `now_ms`, and
    /// says how many it removed.
    fn prune(&mut self, now_ms: u64) -> Result<u64, Error>;
    /// How many leases the set holds (all live once pruned).
    fn live(&self) -> Result<u64, Error>;
    /// The deadline of lease `id`, if the set holds it.
    fn deadline(&mut self, id: &[u8]) -> Result<Option<u64>, Error>;
    /// The `n`-th earliest deadline (0 for the earliest).
    fn nth_deadline(&mut self, n: u64) -> Result<Option<u64>, Error>;
    /// The latest deadline.
    fn last_deadline(&mut self) -> Result<Option<u64>, Error>;
    /// Adds lease `id` with `deadline_ms`, or moves its deadline.
    fn put(&mut self, id: &[u8], deadline_ms: u64) -> Result<(), Error>;
    /// Removes lease `id`; whether the set held it.
    fn remove(&mut self, id: &[u8]) -> Result<bool, Error>;
}

/// The answer to an ACQUIRE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    /// `Some(deadline)` when a lease was granted (or renewed) until then.
    pub granted: Option<u64>,
    /// Whether the lease asked for by id was live and was renewed rather
    /// than granted a second slot.
    pub renewed: bool,
    /// Leases still available after this call.
    pub remaining: u64,
    /// `max`.
    pub max: u64,
    /// When not granted: ms until a slot frees up by itself (the first
    /// instant fewer than `max` leases are live). `None` when granted.
    pub retry_after_ms: Option<u64>,
    /// Ms until the last live lease ends; 0 when none is live.
    pub reset_after_ms: u64,
    /// Leases pruned because their deadline had come.
    pub pruned: u64,
}

/// Grants lease `id` until `now_ms + lease_ms` if fewer than `max` are live,
/// or renews it if it is live already (taking no second slot). `id` is the
/// client's, or `new_id` makes one, before anything changes: its error
/// fails the call with the set untouched. A `max` below the live count
/// grants nothing and revokes nothing.
pub fn acquire<S: LeaseSet>(
    set: &mut S,
    max: u64,
    lease_ms: u64,
    id: Option<&[u8]>,
    new_id: impl FnOnce() -> Result<Vec<u8>, Error>,
    now_ms: u64,
) -> Result<(Acquired, Option<Vec<u8>>), Error> {
    let candidate: Cow<[u8]> = match id {
        Some(id) => Cow::Borrowed(id),
        None => Cow::Owned(new_id()?),
    };
    let pruned = set.prune(now_ms)?;
    let deadline_ms = now_ms.saturating_add(lease_ms);
    let live = set.live()?;
    let renewed = match id {
        Some(id) => set.deadline(id)?.is_some(),
        None => false,
    };
    let granted_id = if renewed || live < max {
        let granted = candidate.into_owned();
        set.put(&granted, deadline_ms)?;
        Some(granted)
    } else {
        None
    };
    let live_after = set.live()?;
    let retry_after_ms = match granted_id {
        Some(_) => None,
        // A slot frees once live - max + 1 leases have ended: at the
        // (live - max)-th earliest deadline, counting from 0.
        None => set
            .nth_deadline(live.saturating_sub(max))?
            .map(|at| at.saturating_sub(now_ms)),
    };
    let reset_after_ms = set
        .last_deadline()?
        .map_or(0, |at| at.saturating_sub(now_ms));
    Ok((
        Acquired {
            granted: granted_id.as_ref().map(|_| deadline_ms),
            renewed,
            remaining: max.saturating_sub(live_after),
            max,
            retry_after_ms,
            reset_after_ms,
            pruned,
        },
        granted_id,
    ))
}

/// Ends the given leases; how many of them were live, and how many expired
/// leases were pruned.
pub fn release<S: LeaseSet>(set: &mut S, ids: &[&[u8]], now_ms: u64) -> Result<(u64, u64), Error> {
    let pruned = set.prune(now_ms)?;
    let mut released: u64 = 0;
    for id in ids {
        if set.remove(id)? {
            released = released.saturating_add(1);
        }
    }
    Ok((released, pruned))
}

/// Moves live lease `id`'s deadline to `now_ms + lease_ms`; whether it was
/// live (an expired lease may already be someone else's slot: its holder
/// must acquire again), and how many expired leases were pruned.
pub fn renew<S: LeaseSet>(
    set: &mut S,
    id: &[u8],
    lease_ms: u64,
    now_ms: u64,
) -> Result<(bool, u64), Error> {
    let pruned = set.prune(now_ms)?;
    let live = set.deadline(id)?.is_some();
    if live {
        set.put(id, now_ms.saturating_add(lease_ms))?;
    }
    Ok((live, pruned))
}

#[cfg(test)]
pub(crate) mod testing {
    //! A lease set in memory, for the tests.

    use super::*;
    use std::collections::BTreeMap;

    /// Leases by id.
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct Memory(pub BTreeMap<Vec<u8>, u64>);

    impl LeaseSet for Memory {
        fn prune(&mut self, now_ms: u64) -> Result<u64, Error> {
            let before = self.0.len();
            self.0.retain(|_, deadline| *deadline > now_ms);
            Ok((before - self.0.len()) as u64)
        }
        fn live(&self) -> Result<u64, Error> {
            Ok(self.0.len() as u64)
        }
        fn deadline(&mut self, id: &[u8]) -> Result<Option<u64>, Error> {
            Ok(self.0.get(id).copied())
        }
        fn nth_deadline(&mut self, n: u64) -> Result<Option<u64>, Error> {
            let mut deadlines: Vec<u64> = self.0.values().copied().collect();
            deadlines.sort_unstable();
            Ok(deadlines.get(n as usize).copied())
        }
        fn last_deadline(&mut self) -> Result<Option<u64>, Error> {
            Ok(self.0.values().copied().max())
        }
        fn put(&mut self, id: &[u8], deadline_ms: u64) -> Result<(), Error> {
            self.0.insert(id.to_vec(), deadline_ms);
            Ok(())
        }
        fn remove(&mut self, id: &[u8]) -> Result<bool, Error> {
            Ok(self.0.remove(id).is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Memory;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn messages_state_the_bounds_in_force() {
        let text = |e: Error| e.message().unwrap().as_str().to_string();
        for bound in [MAX, LEASE_MS] {
            assert!(text(bound.error).ends_with(&bound.max.to_string()));
        }
        assert!(text(Error::InvalidLeaseId).contains(&format!("1 to {MAX_ID_LEN} bytes")));
    }

    fn set(leases: &[(&str, u64)]) -> Memory {
        Memory(
            leases
                .iter()
                .map(|(id, at)| (id.as_bytes().to_vec(), *at))
                .collect(),
        )
    }

    fn acquire_as(
        s: &mut Memory,
        max: u64,
        lease_ms: u64,
        id: Option<&str>,
        now_ms: u64,
    ) -> (Acquired, Option<Vec<u8>>) {
        acquire(
            s,
            max,
            lease_ms,
            id.map(str::as_bytes),
            || Ok(b"new".to_vec()),
            now_ms,
        )
        .unwrap()
    }

    #[test]
    fn grants_until_max_then_denies_until_the_earliest_deadline() {
        let mut s = set(&[]);
        let (a, id) = acquire_as(&mut s, 2, 1_000, Some("a"), 10_000);
        assert_eq!(id.as_deref(), Some(&b"a"[..]));
        assert_eq!(
            (a.granted, a.remaining, a.retry_after_ms, a.reset_after_ms),
            (Some(11_000), 1, None, 1_000)
        );
        let (b, _) = acquire_as(&mut s, 2, 3_000, None, 10_500);
        assert_eq!(
            (b.granted, b.remaining, b.reset_after_ms),
            (Some(13_500), 0, 3_000)
        );
        assert!(s.0.contains_key(&b"new"[..]));
        // Full: the first slot frees when "a" ends, at 11 000.
        let (c, id) = acquire_as(&mut s, 2, 1_000, Some("c"), 10_600);
        assert_eq!(id, None);
        assert_eq!(
            c,
            Acquired {
                granted: None,
                renewed: false,
                remaining: 0,
                max: 2,
                retry_after_ms: Some(400),
                reset_after_ms: 2_900,
                pruned: 0
            }
        );
        // At 11 000 "a" has ended: pruned, and its slot is granted.
        let (c, _) = acquire_as(&mut s, 2, 1_000, Some("c"), 11_000);
        assert_eq!((c.granted, c.pruned, c.remaining), (Some(12_000), 1, 0));
        assert!(!s.0.contains_key(&b"a"[..]));
    }

    #[test]
    fn acquiring_a_live_id_again_renews_it_without_a_second_slot() {
        let mut s = set(&[("a", 11_000), ("b", 12_000)]);
        let (a, _) = acquire_as(&mut s, 2, 5_000, Some("a"), 10_000);
        assert_eq!((a.granted, a.renewed, a.remaining), (Some(15_000), true, 0));
        assert_eq!(s.0.len(), 2);
        // An id that has expired is a new lease, granted only if a slot is free.
        let (a, _) = acquire_as(&mut s, 2, 5_000, Some("a"), 16_000);
        assert_eq!((a.granted, a.renewed, a.pruned), (Some(21_000), false, 2));
    }

    #[test]
    fn a_lowered_max_grants_nothing_until_enough_have_ended() {
        let mut s = set(&[("a", 11_000), ("b", 12_000), ("c", 13_000), ("d", 14_000)]);
        // max 2 with 4 live: a slot frees once 3 have ended, at 13 000.
        let (x, _) = acquire_as(&mut s, 2, 1_000, Some("x"), 10_000);
        assert_eq!(
            (x.granted, x.remaining, x.retry_after_ms, x.reset_after_ms),
            (None, 0, Some(3_000), 4_000)
        );
        assert_eq!(s.0.len(), 4, "nothing is revoked");
        let (x, _) = acquire_as(&mut s, 2, 1_000, Some("x"), 13_000);
        assert_eq!((x.granted, x.remaining), (Some(14_000), 0));
    }

    #[test]
    fn release_counts_only_live_leases() {
        let mut s = set(&[("a", 11_000), ("b", 12_000), ("c", 9_000)]);
        let ids: [&[u8]; 4] = [b"a", b"c", b"zz", b"a"];
        assert_eq!(release(&mut s, &ids, 10_000).unwrap(), (1, 1));
        assert_eq!(s, set(&[("b", 12_000)]));
    }

    #[test]
    fn renew_moves_a_live_deadline_and_refuses_an_ended_lease() {
        let mut s = set(&[("a", 11_000), ("b", 10_000)]);
        assert_eq!(renew(&mut s, b"a", 5_000, 10_000).unwrap(), (true, 1));
        assert_eq!(s, set(&[("a", 15_000)]));
        assert_eq!(renew(&mut s, b"b", 5_000, 10_000).unwrap(), (false, 0));
        assert_eq!(renew(&mut s, b"a", 5_000, 15_000).unwrap(), (false, 1));
        assert!(s.0.is_empty());
    }

    #[test]
    fn an_id_that_cannot_be_made_grants_nothing() {
        let mut s = set(&[("a", 11_000)]);
        let failed = acquire(
            &mut s,
            2,
            1_000,
            None,
            || Err(Error::Internal("no randomness")),
            10_000,
        );
        assert_eq!(failed, Err(Error::Internal("no randomness")));
        assert_eq!(s, set(&[("a", 11_000)]));
    }

    #[test]
    fn ids_are_one_to_sixty_four_bytes() {
        assert_eq!(check_id(b""), Err(Error::InvalidLeaseId));
        assert!(check_id(&[0u8; 1]).is_ok());
        assert!(check_id(&[0xffu8; 64]).is_ok());
        assert_eq!(check_id(&[b'a'; 65]), Err(Error::InvalidLeaseId));
        for now in [&b"NOW"[..], b"now", b"Now"] {
            assert_eq!(check_id(now), Err(Error::InvalidLeaseId));
        }
        assert!(check_id(b"NOWS").is_ok());
    }

    /// One step of a schedule: wait, then acquire (with an id or not),
    /// release or renew one of a few ids.
    #[derive(Debug, Clone)]
    enum Step {
        Acquire { id: Option<u8>, lease_ms: u64 },
        Release(u8),
        Renew(u8, u64),
    }

    fn step() -> impl Strategy<Value = (u64, Step)> {
        let step = prop_oneof![
            (prop::option::of(0u8..6), 1u64..3_000)
                .prop_map(|(id, lease_ms)| Step::Acquire { id, lease_ms }),
            (0u8..6).prop_map(Step::Release),
            (0u8..6, 1u64..3_000).prop_map(|(id, ms)| Step::Renew(id, ms)),
        ];
        (0u64..800, step)
    }

    proptest! {
        #[test]
        fn never_more_than_max_live_at_any_instant(
            max in 1u64..5,
            steps in prop::collection::vec(step(), 1..200),
        ) {
            let mut s = Memory::default();
            let mut now_ms = 1_000_000u64;
            let mut generated = 0u32;
            // Every grant, as (start, deadline): at no instant may more
            // than `max` overlap.
            let mut grants: Vec<(Vec<u8>, u64, u64)> = Vec::new();
            for (wait_ms, step) in steps {
                now_ms += wait_ms;
                match step {
                    Step::Acquire { id, lease_ms } => {
                        let id = id.map(|i| vec![b'a' + i]);
                        let (a, granted) = acquire(&mut s, max, lease_ms, id.as_deref(), || {
                            generated += 1;
                            Ok(format!("g{generated}").into_bytes())
                        }, now_ms).unwrap();
                        prop_assert_eq!(a.granted.is_some(), granted.is_some());
                        if let Some(id) = granted {
                            // A renewal ends the old grant now and starts a new one.
                            for g in grants.iter_mut().filter(|g| g.0 == id && g.2 > now_ms) {
                                g.2 = now_ms;
                            }
                            grants.push((id, now_ms, now_ms + lease_ms));
                        } else {
                            // Denied: a slot frees at exactly the retry time.
                            let retry = a.retry_after_ms.unwrap();
                            let live_then = |t: u64| s.0.values().filter(|&&d| d > t).count() as u64;
                            prop_assert!(live_then(now_ms + retry) < max);
                            prop_assert!(live_then(now_ms + retry - 1) >= max);
                        }
                    }
                    Step::Release(i) => {
                        let id = [b'a' + i];
                        let (released, _) = release(&mut s, &[&id], now_ms).unwrap();
                        for g in grants.iter_mut().filter(|g| g.0 == id && g.2 > now_ms) {
                            g.2 = now_ms;
                        }
                        prop_assert!(released <= 1);
                    }
                    Step::Renew(i, lease_ms) => {
                        let id = [b'a' + i];
                        if renew(&mut s, &id, lease_ms, now_ms).unwrap().0 {
                            for g in grants.iter_mut().filter(|g| g.0 == id && g.2 > now_ms) {
                                g.2 = now_ms + lease_ms;
                            }
                        }
                    }
                }
                prop_assert!(s.0.values().filter(|&&d| d > now_ms).count() as u64 <= max);
            }
            // At every grant's start, at most `max` grants cover it.
            for (_, start, _) in &grants {
                let live = grants.iter().filter(|(_, s, e)| s <= start && e > start).count() as u64;
                prop_assert!(live <= max, "{live} live at {start}");
            }
        }
    }
}
