//! Counters shown by `INFO ratelimit` (also in `INFO modules` and
//! `INFO everything`), as plain `ratelimit_<name>:<value>` lines.
//!
//! Every command runs on the server's main thread, so a counter is bumped
//! with a plain load and store: no locked instruction on the hot path.

use std::ffi::{c_int, CString};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use redis_module::raw;

use crate::limiter::Id;
use crate::server::load::InfoCtx;

/// A count since the module was loaded.
pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Adds `n`. Only the main thread writes: load and store, not a
    /// read-modify-write.
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// [`Counter::add`] of one.
    pub fn bump(&self) {
        self.add(1);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Calls of one command.
pub struct CommandStats {
    /// Every call.
    pub calls: Counter,
    /// Calls answered with an error.
    pub errors: Counter,
}

impl CommandStats {
    const fn new() -> CommandStats {
        CommandStats {
            calls: Counter::new(),
            errors: Counter::new(),
        }
    }
}

/// Decisions of one kind of limiter.
pub struct AlgorithmStats {
    /// Requests admitted by CHECK or THROTTLE.
    pub allowed: Counter,
    /// Requests denied by CHECK or THROTTLE.
    pub denied: Counter,
    /// Looks: PEEK, and CHECK with `COST 0` (THROTTLE with quantity 0).
    pub peeks: Counter,
}

impl AlgorithmStats {
    const fn new() -> AlgorithmStats {
        AlgorithmStats {
            allowed: Counter::new(),
            denied: Counter::new(),
            peeks: Counter::new(),
        }
    }

    /// Counts one decision of CHECK or THROTTLE.
    pub fn decided(&self, allowed: bool) {
        if allowed {
            self.allowed.bump();
        } else {
            self.denied.bump();
        }
    }
}

/// Every counter of the module.
pub struct Stats {
    /// RATELIMIT.CHECK.
    pub check: CommandStats,
    /// RATELIMIT.PEEK.
    pub peek: CommandStats,
    /// RATELIMIT.RESET.
    pub reset: CommandStats,
    /// RATELIMIT.THROTTLE and CL.THROTTLE.
    pub throttle: CommandStats,
    /// RATELIMIT.MCHECK.
    pub mcheck: CommandStats,
    /// RATELIMIT.MPEEK.
    pub mpeek: CommandStats,
    /// RATELIMIT.ACQUIRE.
    pub acquire: CommandStats,
    /// RATELIMIT.RELEASE.
    pub release: CommandStats,
    /// RATELIMIT.RENEW.
    pub renew: CommandStats,
    /// New leases ACQUIRE granted.
    pub leases_acquired: Counter,
    /// ACQUIREs refused: every slot taken.
    pub leases_denied: Counter,
    /// Leases RELEASE ended.
    pub leases_released: Counter,
    /// Live leases given a new deadline, by RENEW or by ACQUIRE with their id.
    pub leases_renewed: Counter,
    /// Leases pruned because their deadline had come.
    pub leases_expired: Counter,
    /// Keys RATELIMIT.RESET removed.
    pub keys_reset: Counter,
    /// RATELIMIT.RESERVE.
    pub reserve: CommandStats,
    /// RATELIMIT.SETTLE.
    pub settle: CommandStats,
    /// RATELIMIT.EXTEND.
    pub extend: CommandStats,
    /// Holds RESERVE made (requests it admitted).
    pub reserve_allowed: Counter,
    /// Requests RESERVE denied.
    pub reserve_denied: Counter,
    /// RESERVEs of an id already recorded, answered with the first reply.
    pub reserve_replayed: Counter,
    /// Live holds SETTLE settled.
    pub settle_settled: Counter,
    /// SETTLEs of an id with no record (unknown, or expired): the actual
    /// cost charged in full.
    pub settle_unknown: Counter,
    /// SETTLEs of an id already settled: nothing charged.
    pub settle_repeated: Counter,
    /// Live holds EXTEND gave a new deadline.
    pub holds_extended: Counter,
    /// Holds whose deadline came before they were settled: refunded.
    pub holds_expired: Counter,
    /// Requests MCHECK admitted.
    pub mcheck_allowed: Counter,
    /// Requests MCHECK denied.
    pub mcheck_denied: Counter,
    /// Per kind of limiter, in the order of [`Id::ALL`].
    algorithms: [AlgorithmStats; Id::ALL.len()],
}

impl Stats {
    /// Counts one decision of MCHECK.
    pub fn mcheck_decided(&self, allowed: bool) {
        if allowed {
            self.mcheck_allowed.bump();
        } else {
            self.mcheck_denied.bump();
        }
    }

    /// The decisions of kind `id`.
    pub fn algorithm(&self, id: Id) -> &AlgorithmStats {
        self.algorithms.get(id.index()).unwrap_or(&UNLISTED)
    }
}

/// Where counts of a kind missing from the table would go: never, since the
/// table has one entry per kind.
static UNLISTED: AlgorithmStats = AlgorithmStats::new();

/// The module's counters.
pub static STATS: Stats = Stats {
    check: CommandStats::new(),
    peek: CommandStats::new(),
    reset: CommandStats::new(),
    throttle: CommandStats::new(),
    mcheck: CommandStats::new(),
    mpeek: CommandStats::new(),
    acquire: CommandStats::new(),
    release: CommandStats::new(),
    renew: CommandStats::new(),
    leases_acquired: Counter::new(),
    leases_denied: Counter::new(),
    leases_released: Counter::new(),
    leases_renewed: Counter::new(),
    leases_expired: Counter::new(),
    keys_reset: Counter::new(),
    reserve: CommandStats::new(),
    settle: CommandStats::new(),
    extend: CommandStats::new(),
    reserve_allowed: Counter::new(),
    reserve_denied: Counter::new(),
    reserve_replayed: Counter::new(),
    settle_settled: Counter::new(),
    settle_unknown: Counter::new(),
    settle_repeated: Counter::new(),
    holds_extended: Counter::new(),
    holds_expired: Counter::new(),
    mcheck_allowed: Counter::new(),
    mcheck_denied: Counter::new(),
    algorithms: [const { AlgorithmStats::new() }; Id::ALL.len()],
};

/// A command's INFO name, its counters, and its own extra counters.
type CommandFields<'s> = (
    &'static str,
    &'s CommandStats,
    &'s [(&'static str, &'s Counter)],
);

/// The INFO fields, in order: name (the server prefixes `ratelimit_`) and
/// value. `allowed` and `denied` are the totals over every kind, MCHECK
/// and RESERVE; each kind
/// has `<name>_allowed`, `<name>_denied` and `<name>_peeks`.
pub fn fields() -> Vec<(String, u64)> {
    let s = &STATS;
    // Each command's calls and errors, then what else it counts.
    let commands: [CommandFields; 12] = [
        ("check", &s.check, &[]),
        ("peek", &s.peek, &[]),
        ("reset", &s.reset, &[("keys", &s.keys_reset)]),
        ("throttle", &s.throttle, &[]),
        (
            "mcheck",
            &s.mcheck,
            &[("allowed", &s.mcheck_allowed), ("denied", &s.mcheck_denied)],
        ),
        ("mpeek", &s.mpeek, &[]),
        ("acquire", &s.acquire, &[]),
        ("release", &s.release, &[]),
        ("renew", &s.renew, &[]),
        (
            "reserve",
            &s.reserve,
            &[
                ("allowed", &s.reserve_allowed),
                ("denied", &s.reserve_denied),
                ("replayed", &s.reserve_replayed),
            ],
        ),
        (
            "settle",
            &s.settle,
            &[
                ("settled", &s.settle_settled),
                ("unknown", &s.settle_unknown),
                ("repeated", &s.settle_repeated),
            ],
        ),
        ("extend", &s.extend, &[("extended", &s.holds_extended)]),
    ];
    let mut fields = Vec::new();
    for (name, stats, extra) in commands {
        fields.push((format!("{name}_calls"), stats.calls.get()));
        fields.push((format!("{name}_errors"), stats.errors.get()));
        for (counter, value) in extra {
            fields.push((format!("{name}_{counter}"), value.get()));
        }
    }
    let total = |f: fn(&AlgorithmStats) -> &Counter| {
        s.algorithms
            .iter()
            .fold(0u64, |sum, a| sum.wrapping_add(f(a).get()))
    };
    // A request MCHECK or RESERVE decides is one request, whatever its
    // limits.
    fields.push((
        "allowed".to_string(),
        total(|a| &a.allowed)
            .wrapping_add(s.mcheck_allowed.get())
            .wrapping_add(s.reserve_allowed.get()),
    ));
    fields.push((
        "denied".to_string(),
        total(|a| &a.denied)
            .wrapping_add(s.mcheck_denied.get())
            .wrapping_add(s.reserve_denied.get()),
    ));
    for (name, counter) in [
        ("leases_acquired", &s.leases_acquired),
        ("leases_denied", &s.leases_denied),
        ("leases_released", &s.leases_released),
        ("leases_renewed", &s.leases_renewed),
        ("leases_expired", &s.leases_expired),
        ("holds_expired", &s.holds_expired),
    ] {
        fields.push((name.to_string(), counter.get()));
    }
    for &id in Id::ALL {
        let name = id.name().to_lowercase();
        let a = s.algorithm(id);
        fields.push((format!("{name}_allowed"), a.allowed.get()));
        fields.push((format!("{name}_denied"), a.denied.get()));
        fields.push((format!("{name}_peeks"), a.peeks.get()));
    }
    fields
}

/// Writes the `# ratelimit` INFO section; the server calls it for `INFO
/// ratelimit`, `INFO modules`, `INFO everything` and crash reports.
///
/// # Safety
/// Called by the server only, with the context of an INFO call.
pub unsafe extern "C" fn info(info: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    // SAFETY: the caller's promise; the context is used only within this
    // call.
    let info = unsafe { InfoCtx::from_raw(info) };
    if !info.section() {
        return;
    }
    for (name, value) in fields() {
        if let Ok(name) = CString::new(name) {
            info.field(&name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(fields: &[(String, u64)], name: &str) -> u64 {
        fields.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn counters_count_and_totals_add_up() {
        let c = Counter::new();
        c.bump();
        c.add(2);
        assert_eq!(c.get(), 3);
        let before = fields();
        STATS.algorithm(Id::Sliding).decided(true);
        STATS.algorithm(Id::Throttle).decided(false);
        let after = fields();
        let delta = |name: &str| value(&after, name) - value(&before, name);
        assert_eq!(delta("sliding_allowed"), 1);
        assert_eq!(delta("throttle_denied"), 1);
        assert_eq!(delta("allowed"), 1);
        assert_eq!(delta("denied"), 1);
        let names: std::collections::BTreeSet<_> = after.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), after.len(), "duplicate field names");
    }

    #[test]
    fn every_kind_has_its_counters() {
        let fields = fields();
        for id in Id::ALL {
            for counter in ["allowed", "denied", "peeks"] {
                let name = format!("{}_{counter}", id.name().to_lowercase());
                assert!(fields.iter().any(|(n, _)| *n == name), "{name}");
            }
        }
    }
}
