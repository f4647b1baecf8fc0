//! The `INFO ratelimit` section: the module's counters.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use redis::ConnectionLike;

use super::reply::run;

/// The fields of `INFO ratelimit`, in order (`src/stats.rs`, `fields()`).
pub const FIELDS: [&str; 54] = [
    "check_calls",
    "check_errors",
    "peek_calls",
    "peek_errors",
    "reset_calls",
    "reset_errors",
    "reset_keys",
    "throttle_calls",
    "throttle_errors",
    "mcheck_calls",
    "mcheck_errors",
    "mcheck_allowed",
    "mcheck_denied",
    "mpeek_calls",
    "mpeek_errors",
    "acquire_calls",
    "acquire_errors",
    "release_calls",
    "release_errors",
    "renew_calls",
    "renew_errors",
    "reserve_calls",
    "reserve_errors",
    "reserve_allowed",
    "reserve_denied",
    "reserve_replayed",
    "settle_calls",
    "settle_errors",
    "settle_settled",
    "settle_unknown",
    "settle_repeated",
    "extend_calls",
    "extend_errors",
    "extend_extended",
    "allowed",
    "denied",
    "leases_acquired",
    "leases_denied",
    "leases_released",
    "leases_renewed",
    "leases_expired",
    "holds_expired",
    "fixed_allowed",
    "fixed_denied",
    "fixed_peeks",
    "sliding_allowed",
    "sliding_denied",
    "sliding_peeks",
    "token_allowed",
    "token_denied",
    "token_peeks",
    "throttle_allowed",
    "throttle_denied",
    "throttle_peeks",
];

/// The lines of the `# ratelimit` section of an INFO reply, `None` when the
/// reply has no such section.
pub fn ratelimit_section(info: &str) -> Option<Vec<String>> {
    let mut lines = info.lines().map(str::trim_end);
    lines.find(|l| *l == "# ratelimit")?;
    Some(
        lines
            .take_while(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
    )
}

/// Asserts the section has exactly the module's fields, in order, each an
/// integer, and returns them.
pub fn parse_section(lines: &[String], context: &str) -> BTreeMap<String, u64> {
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l.split_once(':').map_or(l.as_str(), |(n, _)| n))
        .collect();
    let expected: Vec<String> = FIELDS.iter().map(|f| format!("ratelimit_{f}")).collect();
    assert_eq!(names, expected, "{context}: the fields of # ratelimit");
    lines
        .iter()
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap();
            let value = value
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{context}: {l:?} is not an integer field"));
            (name.strip_prefix("ratelimit_").unwrap().to_string(), value)
        })
        .collect()
}

/// The counters of `INFO ratelimit`.
pub fn counters(con: &mut dyn ConnectionLike) -> BTreeMap<String, u64> {
    let info: String = run(con, &["INFO", "ratelimit"]);
    let section = ratelimit_section(&info)
        .unwrap_or_else(|| panic!("INFO ratelimit has no # ratelimit section:\n{info}"));
    parse_section(&section, "INFO ratelimit")
}
