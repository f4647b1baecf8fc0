//! redis-ratelimit: rate limiting inside the Redis server.
//!
//! This file is the module's table of contents: every command, its flags
//! and key positions, and what happens at load time. ARCHITECTURE.md tells
//! how a request flows through the other files and how to add an algorithm
//! or a command.

// A panic in a command aborts the whole server: code that can panic is
// refused outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        clippy::cast_sign_loss
    )
)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_int, CStr};
use std::sync::atomic::Ordering::Relaxed;

use redis_module::raw;

pub mod args;
pub mod commands;
pub mod config;
pub mod decimal;
pub mod error;
pub mod limiter;
pub mod metadata;
pub mod server;
pub mod stats;
pub mod store;

use commands::{
    acquire::Acquire, check::Check, extend::Extend, mcheck::MCheck, mpeek::MPeek, peek::Peek,
    release::Release, renew::Renew, reserve::Reserve, reset::Reset, settle::Settle,
    throttle::Throttle,
};
use metadata::{CommandDocs, KeySpec};
use server::{entry, load, Ctx, LogLevel};

/// One command as registered with the server.
struct Command {
    name: &'static CStr,
    handler: raw::RedisModuleCmdFunc,
    /// Command flags: `write` refuses it on read-only replicas, `deny-oom`
    /// at maxmemory, `fast` declares it O(1) (or O(log N)).
    flags: &'static CStr,
    /// First key, last key and step: position 1 makes cluster routing
    /// (MOVED), ACL key patterns and `COMMAND GETKEYS` work. MCHECK's keys
    /// follow `numkeys` (0, 0, 0): its key spec tells the server (7.0+),
    /// and the command itself tells cluster routing, and every server
    /// without key specs (`getkeys-api`).
    keys: (c_int, c_int, c_int),
    /// Arity, key specs, ACL categories and docs, for servers that take them.
    docs: &'static CommandDocs,
}

const fn command(
    name: &'static CStr,
    handler: raw::RedisModuleCmdFunc,
    flags: &'static CStr,
    keys: (c_int, c_int, c_int),
    docs: &'static CommandDocs,
) -> Command {
    Command {
        name,
        handler,
        flags,
        keys,
        docs,
    }
}

/// Every command of the module. `readonly` (PEEK, MPEEK): runs on replicas
/// and in EVAL_RO / FCALL_RO. Not `deny-oom`: RESET and RELEASE free memory
/// and must work when the server is full. RESET is not `fast`: one lookup per
/// key, any number of keys.
#[rustfmt::skip]
const COMMANDS: &[Command] = &[
    command(c"ratelimit.check",    Some(entry::<Check>),    c"write deny-oom fast", (1, 1, 1),  &commands::check::DOCS),
    command(c"ratelimit.peek",     Some(entry::<Peek>),     c"readonly fast",       (1, 1, 1),  &commands::peek::DOCS),
    command(c"ratelimit.reset",    Some(entry::<Reset>),    c"write",               (1, -1, 1), &commands::reset::DOCS),
    command(c"ratelimit.throttle", Some(entry::<Throttle>), c"write deny-oom fast", (1, 1, 1),  &commands::throttle::DOCS),
    command(c"ratelimit.mcheck",   Some(entry::<MCheck>),   c"write deny-oom fast", (0, 0, 0),  &commands::mcheck::DOCS),
    command(c"ratelimit.mpeek",    Some(entry::<MPeek>),    c"readonly fast",       (0, 0, 0),  &commands::mpeek::DOCS),
    command(c"ratelimit.acquire",  Some(entry::<Acquire>),  c"write deny-oom fast", (1, 1, 1),  &commands::acquire::DOCS),
    command(c"ratelimit.release",  Some(entry::<Release>),  c"write fast",          (1, 1, 1),  &commands::release::DOCS),
    command(c"ratelimit.renew",    Some(entry::<Renew>),    c"write deny-oom fast", (1, 1, 1),  &commands::renew::DOCS),
    command(c"ratelimit.reserve",  Some(entry::<Reserve>),  c"write deny-oom",      (0, 0, 0),  &commands::reserve::DOCS),
    command(c"ratelimit.settle",   Some(entry::<Settle>),   c"write",               (0, 0, 0),  &commands::settle::DOCS),
    command(c"ratelimit.extend",   Some(entry::<Extend>),   c"write",               (1, 1, 1),  &commands::extend::DOCS),
];

/// RATELIMIT.THROTTLE under redis-cell's name, registered with the
/// `cl-throttle yes` module option.
#[rustfmt::skip]
const CL_THROTTLE: Command =
    command(c"cl.throttle",        Some(entry::<Throttle>), c"write deny-oom fast", (1, 1, 1),  &commands::throttle::DOCS);

/// The module version as `MODULE LIST` shows it, from Cargo.toml's:
/// major * 10000 + minor * 100 + patch.
pub const MODULE_VERSION: c_int = {
    const fn number(digits: &str) -> c_int {
        let mut bytes = digits.as_bytes();
        let mut value: c_int = 0;
        while let [digit, rest @ ..] = bytes {
            assert!(digit.is_ascii_digit(), "a version part is not a number");
            value = value
                .saturating_mul(10)
                .saturating_add(digit.saturating_sub(b'0') as c_int);
            bytes = rest;
        }
        value
    }
    let minor = number(env!("CARGO_PKG_VERSION_MINOR"));
    let patch = number(env!("CARGO_PKG_VERSION_PATCH"));
    assert!(
        minor < 100 && patch < 100,
        "MODULE LIST's version has two digits each"
    );
    number(env!("CARGO_PKG_VERSION_MAJOR"))
        .saturating_mul(10000)
        .saturating_add(minor.saturating_mul(100))
        .saturating_add(patch)
};

// The shipped module allocates through Redis, so its memory counts in
// `INFO memory` and `maxmemory`. Outside a server (unit tests, the
// micro-benchmarks) that allocator does not exist.
#[cfg(not(any(test, feature = "system-alloc")))]
type Allocator = redis_module::alloc::RedisAlloc;
#[cfg(not(any(test, feature = "system-alloc")))]
const ALLOCATOR: Allocator = redis_module::alloc::RedisAlloc;
#[cfg(any(test, feature = "system-alloc"))]
type Allocator = std::alloc::System;
#[cfg(any(test, feature = "system-alloc"))]
const ALLOCATOR: Allocator = std::alloc::System;

#[global_allocator]
static GLOBAL: Allocator = ALLOCATOR;

/// Called by the server when it loads the module: sets up the module API,
/// checks the server and the options, and registers the commands. Returns
/// `REDISMODULE_ERR` (with the reason in the server log) to refuse the load.
///
/// # Safety
/// Called by the server only, with its context and the module's arguments.
#[no_mangle]
pub unsafe extern "C" fn RedisModule_OnLoad(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    // SAFETY: the server's load context.
    let Some(ctx) = (unsafe { load::init(ctx, c"ratelimit", MODULE_VERSION) }) else {
        // SAFETY: the server's load context, which init just refused.
        unsafe { load::explain_refused_init(ctx, c"ratelimit") };
        return load::load_status(false);
    };
    // SAFETY: the server passes `argc` valid arguments, live during OnLoad.
    let args = unsafe { server::args(argv, argc) };
    // A panic here would abort the server as surely as in a command.
    let loaded = std::panic::catch_unwind(|| load(ctx, args))
        .unwrap_or_else(|_| Err("internal error while loading".to_string()));
    if let Err(reason) = &loaded {
        server::log(ctx, LogLevel::Warning, reason);
    }
    load::load_status(loaded.is_ok())
}

/// Called by the server when it unloads the module (`MODULE UNLOAD`).
#[no_mangle]
pub extern "C" fn RedisModule_OnUnload(_ctx: *mut raw::RedisModuleCtx) -> c_int {
    load::release_strings();
    load::load_status(true)
}

/// Everything `OnLoad` does; an error is the reason the load is refused.
fn load(ctx: Ctx, args: &[server::RString]) -> Result<(), String> {
    let missing = load::missing_functions();
    if !missing.is_empty() {
        return Err(format!(
            "this server lacks {}; Redis 6.2.2 or later is required",
            missing.join(", ")
        ));
    }
    let args: Vec<&[u8]> = args.iter().map(args::Arg::bytes).collect();
    config::parse(&args)?.apply();
    let configs = load::register_configs(ctx, &config::CONFIGS, &config::NUMBER_CONFIGS)?;
    load::disable_implicit_signal_modified(ctx)
        .map_err(|_| "could not set the module options".to_string())?;
    load::hold_strings().map_err(|_| "could not make the module's strings".to_string())?;

    let own_category = load::add_category(ctx);
    let cl_throttle = config::CL_THROTTLE.load(Relaxed);
    // What the server took, for every command: the load log says it once.
    let mut described: Option<load::Described> = None;
    for command in COMMANDS.iter().chain(cl_throttle.then_some(&CL_THROTTLE)) {
        // Keys that follow a count are also given by the command itself
        // (`getkeys-api`): cluster redirection (MOVED, CROSSSLOT) finds keys
        // through the legacy range or the command, never through key specs,
        // even where the server takes them (7.0+), and Redis 6.2 has none.
        let ask_for_keys = command.docs.keys.iter().any(KeySpec::is_counted);
        load::create_command(
            ctx,
            command.name,
            command.handler,
            command.flags,
            command.keys,
            ask_for_keys,
        )
        .map_err(|_| format!("could not register {:?}", command.name))?;
        let this = load::describe(ctx, command.name, command.docs, own_category)?;
        described = Some(described.map_or(this, |so_far| so_far.and(this)));
    }
    load::register_info(ctx, Some(stats::info))
        .map_err(|_| "could not register the INFO section".to_string())?;

    let described = described.unwrap_or_default();
    let said = |b: bool, yes: &'static str, no: &'static str| if b { yes } else { no };
    let found = |b: bool| said(b, "found", "absent");
    let cached = server::has_cached_clock();
    server::log(
        ctx,
        LogLevel::Notice,
        &format!(
            "version {} loaded; options: cl-throttle {}, denied-events {}, hold-max-percent {}, \
             hold-max-ttl-ms {} ({}); server APIs: \
             CachedMicroseconds {} (clock: {}), SetCommandInfo {}, SetCommandACLCategories {}, \
             AddACLCategory {}",
            env!("CARGO_PKG_VERSION"),
            said(cl_throttle, "yes", "no"),
            said(config::DENIED_EVENTS.load(Relaxed), "yes", "no"),
            config::HOLD_MAX_PERCENT.load(Relaxed),
            config::HOLD_MAX_TTL_MS.load(Relaxed),
            said(
                configs,
                "CONFIG GET/SET ratelimit.*",
                "no module configs on this server: load-time arguments only"
            ),
            found(cached),
            said(
                cached,
                "the command time the server froze",
                "the wall clock"
            ),
            found(described.command_info),
            found(described.acl_categories),
            said(own_category, "found (@ratelimit)", "absent"),
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_version_is_cargos() {
        let parts: Vec<c_int> = env!("CARGO_PKG_VERSION")
            .split('.')
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(MODULE_VERSION, parts[0] * 10000 + parts[1] * 100 + parts[2]);
    }
}
