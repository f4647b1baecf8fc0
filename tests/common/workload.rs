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

/// Named lease ids of every shape a client may give, binary ones included:
/// the `i`-th of [`LEASE_IDS`] kinds, numbered by `i / LEASE_IDS`.
pub fn lease_id(i: usize) -> Vec<u8> {
    let n = (i / LEASE_IDS) as u8;
    match i % LEASE_IDS {
        0 => format!("job-{n}").into_bytes(),
        1 => vec![0, n, 0xff, b'\n'],
        2 => format!("worker {n} \"quoted\"").into_bytes(),
        3 => vec![b'a' + n % 26; 64],
        _ => vec![0x80 | n],
    }
}

/// How many shapes of id [`lease_id`] cycles through.
pub const LEASE_IDS: usize = 5;

/// What a step of a [`LeaseWorkload`] does to its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// ACQUIRE with `max` and `lease_ms`, as [`lease_id`]`(id)` or with a
    /// generated id (`None`).
    Acquire {
        max: u64,
        lease_ms: u64,
        id: Option<usize>,
    },
    /// RELEASE of these named ids; `generated`: also the key's oldest
    /// generated id the caller still holds.
    Release { ids: Vec<usize>, generated: bool },
    /// RENEW of a named id.
    Renew { id: usize, lease_ms: u64 },
}

/// One call of a lease workload, on key number `key` through route number
/// `route`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseStep {
    pub key: usize,
    pub route: usize,
    pub action: LeaseAction,
}

/// An endless seeded sequence of lease calls over `keys` keys, `routes`
/// routes and `ids` named ids: in 10 steps, 5 acquire (2 of them with a
/// generated id), 3 release and 2 renew; `max` is 1 to 4 (so some calls are
/// denied and some find a max lowered below the live count). Leases last 60
/// to 600 s, or, when `short_lease_ms` is given, one in three lasts 1 ms to
/// that long, so that calls also prune leases that ended.
pub struct LeaseWorkload {
    rng: Lcg,
    keys: usize,
    routes: usize,
    ids: usize,
    short_lease_ms: Option<u64>,
}

impl LeaseWorkload {
    pub fn new(seed: u64, keys: usize, routes: usize, ids: usize) -> LeaseWorkload {
        LeaseWorkload {
            rng: Lcg::new(seed),
            keys,
            routes,
            ids,
            short_lease_ms: None,
        }
    }

    /// Makes one lease in three last 1 ms to `ms`.
    pub fn with_short_leases(mut self, ms: u64) -> LeaseWorkload {
        self.short_lease_ms = Some(ms);
        self
    }

    fn lease_ms(&mut self) -> u64 {
        match self.short_lease_ms {
            Some(short) if self.rng.below(3) == 0 => 1 + self.rng.below(short),
            _ => 60_000 + self.rng.below(540_000),
        }
    }
}

impl Iterator for LeaseWorkload {
    type Item = LeaseStep;

    fn next(&mut self) -> Option<LeaseStep> {
        let key = self.rng.index(self.keys);
        let route = self.rng.index(self.routes);
        let action = match self.rng.below(10) {
            0..=4 => LeaseAction::Acquire {
                max: 1 + self.rng.below(4),
                lease_ms: self.lease_ms(),
                id: (self.rng.below(5) >= 2).then(|| self.rng.index(self.ids)),
            },
            5..=7 => {
                let count = self.rng.index(3);
                LeaseAction::Release {
                    ids: (0..count).map(|_| self.rng.index(self.ids)).collect(),
                    generated: count == 0 || self.rng.below(2) == 0,
                }
            }
            _ => LeaseAction::Renew {
                id: self.rng.index(self.ids),
                lease_ms: self.lease_ms(),
            },
        };
        Some(LeaseStep { key, route, action })
    }
}
