//! Several limits charged together or not at all (RATELIMIT.MCHECK).
//!
//! ```text
//!   limit 1  ──check──▶ admits?  ┐
//!   limit 2  ──check──▶ admits?  ├─ all admit: charge every limit
//!   limit n  ──check──▶ admits?  ┘  any denies: charge none
//! ```
//!
//! Each limit is asked alone, at the same instant, for its own cost; the
//! request is admitted only when every limit admits it. The answer names one
//! limit, the *binding* one, whose numbers stand for the whole request:
//!
//! - denied: the denying limit that frees up last, the one with the largest
//!   `retry_after_ms`, where a cost that can never fit (`None`) outranks
//!   every time; ties go to the first. Every algorithm only gets more
//!   permissive as time passes, and a denied request changes nothing, so
//!   that limit's `retry_after_ms` is exactly when the whole request would
//!   be admitted if nothing else arrives.
//! - admitted: the limit with the least room left, the smallest
//!   `remaining / limit`; ties go to the first.

use super::Decision;

/// The verdict on the whole request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Combined {
    /// Every limit admits it.
    pub allowed: bool,
    /// The index of the binding limit.
    pub binding: usize,
}

impl Combined {
    /// Whether the state a limit asked to store, checked alone with the
    /// answer `charged`, is stored: all of them when the request is
    /// admitted; when it is not, only what a limit that denies by itself
    /// stores without charging (a fixed-window counter that had no expiry
    /// gets one, as CHECK gives it).
    pub fn stores(&self, charged: &Decision) -> bool {
        self.allowed || !charged.allowed
    }
}

/// The verdict on a request of several limits, from each limit's answer
/// as a check of its own cost; `None` for no limits.
pub fn combine(charged: &[Decision]) -> Option<Combined> {
    let allowed = charged.iter().all(|d| d.allowed);
    let binding = if allowed {
        least_room(charged)?
    } else {
        latest_retry(charged)?
    };
    Some(Combined { allowed, binding })
}

/// The limit with the smallest `remaining / limit`, the first of equals.
fn least_room(charged: &[Decision]) -> Option<usize> {
    let mut best: Option<(usize, &Decision)> = None;
    for (i, d) in charged.iter().enumerate() {
        // remaining / limit < best.remaining / best.limit, cross-multiplied.
        let less = best.is_none_or(|(_, b)| {
            u128::from(d.remaining).saturating_mul(u128::from(b.limit))
                < u128::from(b.remaining).saturating_mul(u128::from(d.limit))
        });
        if less {
            best = Some((i, d));
        }
    }
    best.map(|(i, _)| i)
}

/// The denying limit with the largest retry time (never outranks any
/// time), the first of equals.
fn latest_retry(charged: &[Decision]) -> Option<usize> {
    // `None` as the largest: u64::MAX, beyond any real wait.
    let rank = |d: &Decision| d.retry_after_ms.unwrap_or(u64::MAX);
    let mut best: Option<(usize, u64)> = None;
    for (i, d) in charged.iter().enumerate() {
        if d.allowed {
            continue;
        }
        let r = rank(d);
        if best.is_none_or(|(_, b)| r > b) {
            best = Some((i, r));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(allowed: bool, remaining: u64, limit: u64, retry: Option<u64>) -> Decision {
        Decision {
            allowed,
            remaining,
            limit,
            retry_after_ms: retry,
            reset_after_ms: 1,
        }
    }

    /// A limit that admits with `remaining` of `limit` left.
    fn admits(remaining: u64, limit: u64) -> Decision {
        decision(true, remaining, limit, None)
    }

    /// A limit that denies, to be retried after `retry` ms (`None`: never).
    fn denies(retry: Option<u64>) -> Decision {
        decision(false, 0, 10, retry)
    }

    #[test]
    fn binds_as_the_table_says() {
        #[rustfmt::skip]
        let rows: [(&[Decision], bool, usize); 9] = [
            // 0: one limit binds itself
            (&[admits(3, 10)], true, 0),
            // 1: admitted: the least room left, as a share of the limit
            (&[admits(5, 10), admits(30, 100)], true, 1),
            // 2: ... a share, not a count: 50 of 1000 is less room than 9 of 10
            (&[admits(9, 10), admits(50, 1000)], true, 1),
            // 3: ... equal shares: the first
            (&[admits(1, 2), admits(50, 100)], true, 0),
            // 4: denied: the only denying limit, however little room the others have
            (&[admits(0, 10), denies(Some(500))], false, 1),
            // 5: denied: the latest retry
            (&[denies(Some(500)), denies(Some(900)), denies(Some(700))], false, 1),
            // 6: ... equal retries: the first
            (&[denies(Some(900)), denies(Some(900))], false, 0),
            // 7: a cost that can never fit outranks every time
            (&[denies(Some(u64::MAX - 1)), denies(None)], false, 1),
            // 8: ... the first of several
            (&[denies(None), admits(1, 1), denies(None)], false, 0),
        ];
        for (i, (limits, allowed, binding)) in rows.iter().enumerate() {
            assert_eq!(
                combine(limits),
                Some(Combined {
                    allowed: *allowed,
                    binding: *binding
                }),
                "row {i}"
            );
        }
        assert_eq!(combine(&[]), None);
    }

    #[test]
    fn a_denied_request_stores_only_what_denying_limits_store() {
        let combined = combine(&[admits(3, 10), denies(Some(1))]).unwrap();
        assert!(!combined.stores(&admits(3, 10)));
        assert!(combined.stores(&denies(Some(1))));
        let combined = combine(&[admits(3, 10), admits(1, 10)]).unwrap();
        assert!(combined.stores(&admits(3, 10)));
    }

    mod with_the_algorithms {
        //! The combination over real algorithms, with keys simulated as
        //! their encoded value and expiry.

        use super::super::*;
        use crate::limiter::{Algorithm, Chosen, Encoded, Id, Layout, Quota, Visit};
        use proptest::prelude::*;

        /// A key: its value and expiry, `None` when missing or expired.
        type Key = Option<(Vec<u8>, Option<u64>)>;

        /// What one limit says at `now_ms`, and the key it would leave.
        struct Ask<'k> {
            key: &'k Key,
            cost: u64,
            now_ms: u64,
        }

        impl Visit for Ask<'_> {
            type Output = (Decision, Key);
            fn visit<A: Algorithm>(self, a: A) -> (Decision, Key) {
                let stored = self.key.as_ref().map(|(value, expires_at_ms)| {
                    A::State::decode(value, *expires_at_ms).expect("the key holds this kind")
                });
                let outcome = a.check(stored, self.cost, self.now_ms);
                let next = outcome.store.map(|state| {
                    let mut out = Encoded::new();
                    state.encode(&mut out, 0).unwrap();
                    (out.as_bytes().to_vec(), state.expires_at_ms())
                });
                (outcome.decision, next.or_else(|| self.key.clone()))
            }
        }

        /// The keys as seen at `now_ms`: an expired key is missing.
        fn live(keys: &[Key], now_ms: u64) -> Vec<Key> {
            keys.iter()
                .map(|k| k.clone().filter(|(_, at)| at.is_none_or(|at| at > now_ms)))
                .collect()
        }

        /// Asks every limit; the verdict, each answer, and the keys after.
        fn ask(
            limits: &[(Chosen, u64)],
            keys: &[Key],
            now_ms: u64,
        ) -> (Combined, Vec<Decision>, Vec<Key>) {
            let keys = live(keys, now_ms);
            let mut answers = Vec::new();
            let mut after = Vec::new();
            for ((chosen, cost), key) in limits.iter().zip(&keys) {
                let (each, next) = chosen.visit(Ask {
                    key,
                    cost: *cost,
                    now_ms,
                });
                answers.push(each);
                after.push(next);
            }
            let combined = combine(&answers).unwrap();
            let stored = keys
                .iter()
                .zip(after)
                .zip(&answers)
                .map(|((before, next), each)| {
                    if combined.stores(each) {
                        next
                    } else {
                        before.clone()
                    }
                })
                .collect();
            (combined, answers, stored)
        }

        fn limit() -> impl Strategy<Value = (Chosen, u64)> {
            (0usize..3, 1u64..6, 1u64..3, 1u64..8, 0u64..4).prop_map(
                |(kind, limit, period_s, burst, cost)| {
                    let id = [Id::Fixed, Id::Sliding, Id::Token][kind];
                    let burst = (id == Id::Token).then_some(burst);
                    (
                        Chosen::new(id, Quota::new(limit, period_s).unwrap(), burst).unwrap(),
                        cost,
                    )
                },
            )
        }

        proptest! {
            #[test]
            fn all_or_nothing_with_an_exact_retry_time(
                limits in prop::collection::vec(limit(), 1..5),
                waits in prop::collection::vec(0u64..1_500, 1..60),
            ) {
                let mut keys: Vec<Key> = vec![None; limits.len()];
                let mut now_ms = 1_700_000_000_000u64;
                for wait_ms in waits {
                    now_ms += wait_ms;
                    let (combined, answers, after) = ask(&limits, &keys, now_ms);
                    // Admitted iff each limit admits alone.
                    prop_assert_eq!(combined.allowed, answers.iter().all(|a| a.allowed));
                    if combined.allowed {
                        keys = after;
                        continue;
                    }
                    // Denied: no key changes (these keys all have expiries).
                    prop_assert_eq!(&after, &live(&keys, now_ms));
                    let binding = &answers[combined.binding];
                    prop_assert!(!binding.allowed);
                    // The binding retry time is when a replay first admits.
                    if let Some(retry_ms) = binding.retry_after_ms {
                        prop_assert!(retry_ms >= 1);
                        prop_assert!(!ask(&limits, &keys, now_ms + retry_ms - 1).0.allowed);
                        prop_assert!(ask(&limits, &keys, now_ms + retry_ms).0.allowed);
                    } else {
                        prop_assert!(answers.iter().any(|a| !a.allowed && a.retry_after_ms.is_none()));
                    }
                }
            }
        }
    }
}
