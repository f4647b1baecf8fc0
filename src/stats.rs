//! Counters shown by `INFO ratelimit` (also in `INFO modules` and
//! `INFO everything`), as plain `ratelimit_<name>:<value>` lines.
//!
//! Every command runs on the server's main thread, so a counter is bumped
//! with a plain load and store: no locked instruction on the hot path.

use std::ffi::{c_int, CStr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use redis_module::raw;

use crate::server;

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

    /// Adds one.
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

/// Decisions of one algorithm.
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
    /// Keys RATELIMIT.RESET removed.
    pub keys_reset: Counter,
    /// Fixed-window decisions.
    pub fixed: AlgorithmStats,
    /// Sliding-window decisions.
    pub sliding: AlgorithmStats,
    /// Token-bucket decisions.
    pub token: AlgorithmStats,
    /// THROTTLE (GCRA) decisions.
    pub gcra: AlgorithmStats,
}

/// The module's counters.
pub static STATS: Stats = Stats {
    check: CommandStats::new(),
    peek: CommandStats::new(),
    reset: CommandStats::new(),
    throttle: CommandStats::new(),
    keys_reset: Counter::new(),
    fixed: AlgorithmStats::new(),
    sliding: AlgorithmStats::new(),
    token: AlgorithmStats::new(),
    gcra: AlgorithmStats::new(),
};

/// The INFO fields, in order: name (the server prefixes `ratelimit_`) and
/// value. `allowed` and `denied` are the totals over every algorithm.
pub fn fields() -> [(&'static CStr, u64); 23] {
    let s = &STATS;
    let algorithms = [&s.fixed, &s.sliding, &s.token, &s.gcra];
    let total = |f: fn(&AlgorithmStats) -> &Counter| {
        algorithms
            .iter()
            .fold(0u64, |sum, a| sum.wrapping_add(f(a).get()))
    };
    [
        (c"check_calls", s.check.calls.get()),
        (c"check_errors", s.check.errors.get()),
        (c"peek_calls", s.peek.calls.get()),
        (c"peek_errors", s.peek.errors.get()),
        (c"reset_calls", s.reset.calls.get()),
        (c"reset_errors", s.reset.errors.get()),
        (c"reset_keys", s.keys_reset.get()),
        (c"throttle_calls", s.throttle.calls.get()),
        (c"throttle_errors", s.throttle.errors.get()),
        (c"allowed", total(|a| &a.allowed)),
        (c"denied", total(|a| &a.denied)),
        (c"fixed_allowed", s.fixed.allowed.get()),
        (c"fixed_denied", s.fixed.denied.get()),
        (c"fixed_peeks", s.fixed.peeks.get()),
        (c"sliding_allowed", s.sliding.allowed.get()),
        (c"sliding_denied", s.sliding.denied.get()),
        (c"sliding_peeks", s.sliding.peeks.get()),
        (c"token_allowed", s.token.allowed.get()),
        (c"token_denied", s.token.denied.get()),
        (c"token_peeks", s.token.peeks.get()),
        (c"throttle_allowed", s.gcra.allowed.get()),
        (c"throttle_denied", s.gcra.denied.get()),
        (c"throttle_peeks", s.gcra.peeks.get()),
    ]
}

/// Writes the `# ratelimit` INFO section; the server calls it for `INFO
/// ratelimit`, `INFO modules`, `INFO everything` and crash reports.
pub extern "C" fn info(info: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    let info = server::InfoCtx::new(info);
    if !server::info_section(info) {
        return;
    }
    for (name, value) in fields() {
        server::info_field(info, name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_and_totals_add_up() {
        let c = Counter::new();
        c.bump();
        c.add(2);
        assert_eq!(c.get(), 3);
        let before = fields();
        STATS.sliding.decided(true);
        STATS.gcra.decided(false);
        let after = fields();
        let delta = |name: &str| {
            let find = |f: &[(&CStr, u64)]| {
                f.iter()
                    .find(|(n, _)| n.to_str().unwrap() == name)
                    .unwrap()
                    .1
            };
            find(&after) - find(&before)
        };
        assert_eq!(delta("sliding_allowed"), 1);
        assert_eq!(delta("throttle_denied"), 1);
        assert_eq!(delta("allowed"), 1);
        assert_eq!(delta("denied"), 1);
        let names: std::collections::BTreeSet<_> = after.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), after.len(), "duplicate field names");
    }
}
