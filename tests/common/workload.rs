//! A deterministic pseudo-random workload over limiters of every kind: the
//! same seed gives the same calls, so a failure can be replayed.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::limiters::{Limiter, KINDS};

/// A deterministic pseudo-random sequence (a 64-bit LCG, high bits).
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        Lcg(seed)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    /// An index into `0..len`.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }
}

/// `count` keys `{prefix}:{i}` taking turns through every kind, each
/// [lasting](super::limiters::Kind::lasting), of 1, 2, 3, 5, 8 or 13 units
/// (every other round, buckets hold twice that).
pub fn mixed_limiters(prefix: &str, count: usize) -> Vec<(String, Limiter)> {
    const CAPACITIES: [u64; 6] = [1, 2, 3, 5, 8, 13];
    let kinds = KINDS.len();
    (0..count)
        .map(|i| {
            let kind = KINDS[i % kinds];
            let mut capacity = CAPACITIES[(i / kinds) % CAPACITIES.len()];
            if kind.bucket && i % (2 * kinds) >= kinds {
                capacity *= 2;
            }
            (format!("{prefix}:{i}"), kind.lasting(capacity))
        })
        .collect()
}

/// What a step does to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Takes `cost` units (0: looks through the counting command).
    Take { cost: u64 },
    /// Looks at one unit, taking nothing.
    Look,
    /// Removes the limiter.
    Reset,
}

/// One call of a workload: on key number `key`, through route number
/// `route` (a connection, a node: the suite's choice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub key: usize,
    pub route: usize,
    pub action: Action,
}

/// An endless seeded sequence of steps over `keys` keys and `routes`
/// routes: in 20 steps, 16 take 1, 1, 1, 2, 3 or 0 units, 3 look and 1
/// resets.
pub struct Workload {
    rng: Lcg,
    keys: usize,
    routes: usize,
}

impl Workload {
    pub fn new(seed: u64, keys: usize, routes: usize) -> Workload {
        Workload {
            rng: Lcg::new(seed),
            keys,
            routes,
        }
    }
}

impl Iterator for Workload {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        const COSTS: [u64; 6] = [1, 1, 1, 2, 3, 0];
        let key = self.rng.index(self.keys);
        let route = self.rng.index(self.routes);
        let action = match self.rng.below(20) {
            0 => Action::Reset,
            1..=3 => Action::Look,
            _ => Action::Take {
                cost: COSTS[self.rng.index(COSTS.len())],
            },
        };
        Some(Step { key, route, action })
    }
}
