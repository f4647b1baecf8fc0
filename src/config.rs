//! The module's options: given at load time
//! (`--loadmodule libredis_ratelimit.so NAME VALUE …`) and, on servers with
//! module configs (Redis 7.0+, Valkey), read and set as `ratelimit.<name>`
//! with `CONFIG GET`/`CONFIG SET` or in `redis.conf`.
//!
//! | option | values | default | effect |
//! | --- | --- | --- | --- |
//! | `cl-throttle` | `yes`, `no` | `no` | also register RATELIMIT.THROTTLE as `CL.THROTTLE`, redis-cell's name; load time only |
//! | `denied-events` | `yes`, `no` | `no` | a denied request fires the keyspace event `ratelimit.denied` |
//! | `hold-max-percent` | 1 to 100 | 50 | RESERVE holds at most this percent of a limit's capacity (the rest is charged at SETTLE) |
//! | `hold-max-ttl-ms` | 1 to 86400000 | 60000 | the longest a hold lives before it is refunded |
//!
//! Names and values are case-insensitive at load time. An unknown option, a
//! repeated one, a bad value or a missing one refuses the load, with the
//! reason in the server log; `CONFIG SET` refuses a bad value and keeps the
//! old one.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use redis_module::raw;

use crate::server::load::{BoolConfig, NumberConfig};
use crate::server::OK;

/// `cl-throttle`: whether `CL.THROTTLE` is registered.
pub static CL_THROTTLE: AtomicBool = AtomicBool::new(false);

/// `denied-events`: whether denied requests fire `ratelimit.denied`.
pub static DENIED_EVENTS: AtomicBool = AtomicBool::new(false);

/// `hold-max-percent`: the most of a limit's capacity a hold holds.
pub static HOLD_MAX_PERCENT: AtomicU64 = AtomicU64::new(HOLD_MAX_PERCENT_DEFAULT);
/// `hold-max-ttl-ms`: the longest a hold lives.
pub static HOLD_MAX_TTL_MS: AtomicU64 = AtomicU64::new(HOLD_MAX_TTL_MS_DEFAULT);

const HOLD_MAX_PERCENT_DEFAULT: u64 = 50;
const HOLD_MAX_TTL_MS_DEFAULT: u64 = 60_000;

/// The numeric options: name, accepted range, default.
const NUMBERS: [(&str, std::ops::RangeInclusive<u64>, u64); 2] = [
    ("hold-max-percent", 1..=100, HOLD_MAX_PERCENT_DEFAULT),
    ("hold-max-ttl-ms", 1..=86_400_000, HOLD_MAX_TTL_MS_DEFAULT),
];

/// The options given at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `cl-throttle`.
    pub cl_throttle: bool,
    /// `denied-events`.
    pub denied_events: bool,
    /// `hold-max-percent`.
    pub hold_max_percent: u64,
    /// `hold-max-ttl-ms`.
    pub hold_max_ttl_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cl_throttle: false,
            denied_events: false,
            hold_max_percent: HOLD_MAX_PERCENT_DEFAULT,
            hold_max_ttl_ms: HOLD_MAX_TTL_MS_DEFAULT,
        }
    }
}

impl Options {
    /// Puts these options in force.
    pub fn apply(self) {
        CL_THROTTLE.store(self.cl_throttle, Relaxed);
        DENIED_EVENTS.store(self.denied_events, Relaxed);
        HOLD_MAX_PERCENT.store(self.hold_max_percent, Relaxed);
        HOLD_MAX_TTL_MS.store(self.hold_max_ttl_ms, Relaxed);
    }
}

/// Parses the module's load-time arguments, given as bytes.
pub fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<Options, String> {
    let mut options = Options::default();
    let (mut cl_throttle, mut denied_events) = (None, None);
    let mut numbers: [Option<u64>; NUMBERS.len()] = [None; NUMBERS.len()];
    let mut args = args.iter().map(AsRef::as_ref);
    while let Some(name) = args.next() {
        let shown = String::from_utf8_lossy(name);
        let value = args
            .next()
            .ok_or_else(|| format!("module option {shown} has no value"))?;
        let given_twice = || format!("module option {shown} is given twice");
        if let Some((slot, (_, range, _))) = numbers
            .iter_mut()
            .zip(NUMBERS.iter())
            .find(|(_, (known, _, _))| name.eq_ignore_ascii_case(known.as_bytes()))
        {
            if slot.is_some() {
                return Err(given_twice());
            }
            let number = std::str::from_utf8(value)
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    format!(
                        "module option {shown} must be an integer from {} to {}",
                        range.start(),
                        range.end()
                    )
                })?;
            *slot = Some(number);
            continue;
        }
        let value =
            parse_bool(value).ok_or_else(|| format!("module option {shown} must be yes or no"));
        let slot = if name.eq_ignore_ascii_case(b"cl-throttle") {
            &mut cl_throttle
        } else if name.eq_ignore_ascii_case(b"denied-events") {
            &mut denied_events
        } else {
            return Err(format!(
                "unknown module option {shown} (known: cl-throttle, denied-events, \
                 hold-max-percent, hold-max-ttl-ms)"
            ));
        };
        if slot.is_some() {
            return Err(given_twice());
        }
        *slot = Some(value?);
    }
    options.cl_throttle = cl_throttle.unwrap_or(options.cl_throttle);
    options.denied_events = denied_events.unwrap_or(options.denied_events);
    let [percent, ttl_ms] = numbers;
    options.hold_max_percent = percent.unwrap_or(options.hold_max_percent);
    options.hold_max_ttl_ms = ttl_ms.unwrap_or(options.hold_max_ttl_ms);
    Ok(options)
}

fn parse_bool(value: &[u8]) -> Option<bool> {
    if value.eq_ignore_ascii_case(b"yes") {
        Some(true)
    } else if value.eq_ignore_ascii_case(b"no") {
        Some(false)
    } else {
        None
    }
}

/// Every module config.
pub const CONFIGS: [BoolConfig; 2] = [
    BoolConfig {
        name: c"cl-throttle",
        immutable: true,
        value: &CL_THROTTLE,
        get: Some(get_cl_throttle),
        set: Some(set_cl_throttle),
    },
    BoolConfig {
        name: c"denied-events",
        immutable: false,
        value: &DENIED_EVENTS,
        get: Some(get_denied_events),
        set: Some(set_denied_events),
    },
];

/// Every numeric module config.
pub const NUMBER_CONFIGS: [NumberConfig; 2] = [
    NumberConfig {
        name: c"hold-max-percent",
        value: &HOLD_MAX_PERCENT,
        min: 1,
        max: 100,
    },
    NumberConfig {
        name: c"hold-max-ttl-ms",
        value: &HOLD_MAX_TTL_MS,
        min: 1,
        max: 86_400_000,
    },
];

extern "C" fn get_cl_throttle(_name: *const c_char, _privdata: *mut c_void) -> c_int {
    c_int::from(CL_THROTTLE.load(Relaxed))
}

extern "C" fn set_cl_throttle(
    _name: *const c_char,
    value: c_int,
    _privdata: *mut c_void,
    _err: *mut *mut raw::RedisModuleString,
) -> c_int {
    CL_THROTTLE.store(value != 0, Relaxed);
    OK
}

extern "C" fn get_denied_events(_name: *const c_char, _privdata: *mut c_void) -> c_int {
    c_int::from(DENIED_EVENTS.load(Relaxed))
}

extern "C" fn set_denied_events(
    _name: *const c_char,
    value: c_int,
    _privdata: *mut c_void,
    _err: *mut *mut raw::RedisModuleString,
) -> c_int {
    DENIED_EVENTS.store(value != 0, Relaxed);
    OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_arguments() {
        let none: [&str; 0] = [];
        assert_eq!(parse(&none), Ok(Options::default()));
    }

    #[test]
    fn reads_every_option_in_any_case() {
        assert!(parse(&["CL-THROTTLE", "yes"]).unwrap().cl_throttle);
        assert!(parse(&["cl-throttle", "YES"]).unwrap().cl_throttle);
        assert!(!parse(&["Cl-Throttle", "no"]).unwrap().cl_throttle);
        let both = parse(&["denied-events", "yes", "CL-THROTTLE", "no"]).unwrap();
        assert!(both.denied_events);
        assert!(!both.cl_throttle);
    }

    #[test]
    fn reads_the_numeric_options_within_their_ranges() {
        let both = parse(&["HOLD-MAX-PERCENT", "100", "hold-max-ttl-ms", "1"]).unwrap();
        assert_eq!((both.hold_max_percent, both.hold_max_ttl_ms), (100, 1));
        let none: [&str; 0] = [];
        let defaults = parse(&none).unwrap();
        assert_eq!(
            (defaults.hold_max_percent, defaults.hold_max_ttl_ms),
            (50, 60_000)
        );
        for bad in [
            &["hold-max-percent", "0"][..],
            &["hold-max-percent", "101"],
            &["hold-max-ttl-ms", "86400001"],
            &["hold-max-ttl-ms", "-1"],
            &["hold-max-ttl-ms", "yes"],
        ] {
            assert!(
                parse(bad).unwrap_err().contains("must be an integer from"),
                "{bad:?}"
            );
        }
        assert!(parse(&["hold-max-percent", "5", "hold-max-percent", "6"])
            .unwrap_err()
            .contains("given twice"));
        for (config, (name, range, default)) in NUMBER_CONFIGS.iter().zip(NUMBERS.iter()) {
            assert_eq!(config.name.to_str().unwrap(), *name);
            assert_eq!((config.min, config.max), (*range.start(), *range.end()));
            assert_eq!(config.value.load(Relaxed), *default);
        }
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert!(parse(&["CL-THROTTLE"]).unwrap_err().contains("no value"));
        assert!(parse(&["CL-THROTTLE", "1"])
            .unwrap_err()
            .contains("yes or no"));
        assert!(parse(&["DENIED-EVENTS", "maybe"])
            .unwrap_err()
            .contains("yes or no"));
        assert!(parse(&["FAST", "yes"]).unwrap_err().contains("unknown"));
        for twice in [
            &["cl-throttle", "yes", "cl-throttle", "no"][..],
            &["denied-events", "no", "DENIED-EVENTS", "no"],
        ] {
            assert!(
                parse(twice).unwrap_err().contains("given twice"),
                "{twice:?}"
            );
        }
    }
}
