//! redis-ratelimit: rate limiting inside the Redis server.
//!
//! This file is the module's table of contents: every command, its flags
//! and key positions, and what happens at load time. The commands live in
//! `commands/`, the pure algorithms in `limiter/`, the key layout in
//! `store.rs`, the server API in `server.rs`, the error texts in
//! `error.rs`, the options in `config.rs`, the INFO counters in `stats.rs`
//! and what `COMMAND DOCS` and ACL know of each command in `metadata.rs`.

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
#![deny(missing_docs, unsafe_op_in_unsafe_fn)]

use std::ffi::{c_int, CStr};

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

use metadata::CommandDocs;
use server::{Ctx, LogLevel};

/// One command as registered with the server.
struct Command {
    name: &'static CStr,
    handler: raw::RedisModuleCmdFunc,
    /// Command flags: `write` refuses it on read-only replicas, `deny-oom`
    /// at maxmemory, `fast` declares it O(1).
    flags: &'static CStr,
    /// First key, last key and step: position 1 makes cluster routing
    /// (MOVED), ACL key patterns and `COMMAND GETKEYS` work.
    keys: (c_int, c_int, c_int),
    /// Arity, key spec, ACL categories and docs, for servers that take them.
    docs: &'static CommandDocs,
}

/// Every command of the module.
const COMMANDS: &[Command] = &[
    Command {
        name: c"ratelimit.check",
        handler: Some(commands::check::command),
        flags: c"write deny-oom fast",
        keys: (1, 1, 1),
        docs: &commands::check::DOCS,
    },
    Command {
        name: c"ratelimit.peek",
        handler: Some(commands::peek::command),
        // `readonly`: runs on replicas and in EVAL_RO / FCALL_RO.
        flags: c"readonly fast",
        keys: (1, 1, 1),
        docs: &commands::peek::DOCS,
    },
    Command {
        name: c"ratelimit.reset",
        handler: Some(commands::reset::command),
        // Not `deny-oom`: it frees memory. Not `fast`: one lookup per key.
        flags: c"write",
        keys: (1, -1, 1),
        docs: &commands::reset::DOCS,
    },
    Command {
        name: c"ratelimit.throttle",
        handler: Some(commands::throttle::command),
        flags: c"write deny-oom fast",
        keys: (1, 1, 1),
        docs: &commands::throttle::DOCS,
    },
];

/// RATELIMIT.THROTTLE under redis-cell's name, registered with the
/// `cl-throttle yes` module option.
const CL_THROTTLE: Command = Command {
    name: c"cl.throttle",
    handler: Some(commands::throttle::command),
    flags: c"write deny-oom fast",
    keys: (1, 1, 1),
    docs: &commands::throttle::DOCS,
};

/// The module version as `MODULE LIST` shows it: major * 10000 + minor * 100 + patch.
const MODULE_VERSION: c_int = 100;

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
    let ok = c_int::try_from(raw::REDISMODULE_OK).unwrap_or(0);
    let err = c_int::try_from(raw::REDISMODULE_ERR).unwrap_or(1);
    let api_version = c_int::try_from(raw::REDISMODULE_APIVER_1).unwrap_or(1);
    // SAFETY: the server's context; the name is a static C string, so
    // nothing is allocated before the allocator the call sets up exists.
    let init = unsafe {
        raw::Export_RedisModule_Init(ctx, c"ratelimit".as_ptr(), MODULE_VERSION, api_version)
    };
    if init != ok {
        return err;
    }
    let ctx = Ctx::new(ctx);
    // SAFETY: the server passes `argc` valid arguments.
    let args = unsafe { server::args(argv, argc) };
    // A panic here would abort the server as surely as in a command.
    let loaded = std::panic::catch_unwind(|| load(ctx, args))
        .unwrap_or_else(|_| Err("internal error while loading".to_string()));
    match loaded {
        Ok(()) => ok,
        Err(reason) => {
            server::log(ctx, LogLevel::Warning, &reason);
            err
        }
    }
}

/// Called by the server when it unloads the module (`MODULE UNLOAD`).
#[no_mangle]
pub extern "C" fn RedisModule_OnUnload(_ctx: *mut raw::RedisModuleCtx) -> c_int {
    server::release_strings();
    c_int::try_from(raw::REDISMODULE_OK).unwrap_or(0)
}

/// Everything `OnLoad` does; an error is the reason the load is refused.
fn load(ctx: Ctx, args: &[server::RString]) -> Result<(), String> {
    let missing = server::missing_functions();
    if !missing.is_empty() {
        return Err(format!(
            "this server lacks {}; Redis 6.2.2 or later is required",
            missing.join(", ")
        ));
    }
    let args: Vec<&[u8]> = args.iter().map(args::Arg::bytes).collect();
    config::parse(&args)?.apply();
    let configs = server::register_configs(ctx, &config::CONFIGS)?;
    server::disable_implicit_signal_modified(ctx)
        .map_err(|_| "could not set the module options".to_string())?;
    server::hold_strings();

    let own_category = metadata::add_category(ctx);
    let cl_throttle = config::CL_THROTTLE.load(std::sync::atomic::Ordering::Relaxed);
    let mut described = metadata::Described::default();
    for command in COMMANDS.iter().chain(cl_throttle.then_some(&CL_THROTTLE)) {
        server::create_command(
            ctx,
            command.name,
            command.handler,
            command.flags,
            command.keys,
        )
        .map_err(|_| format!("could not register {:?}", command.name))?;
        described = metadata::describe(ctx, command.name, command.docs, own_category)?;
    }
    server::register_info(ctx, Some(stats::info))
        .map_err(|_| "could not register the INFO section".to_string())?;

    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let found = |b: bool| if b { "found" } else { "absent" };
    server::log(
        ctx,
        LogLevel::Notice,
        &format!(
            "version {} loaded; options: cl-throttle {}, denied-events {} ({}); \
             server APIs: CachedMicroseconds {} (clock: {}), SetCommandInfo {}, \
             SetCommandACLCategories {}, AddACLCategory {}",
            env!("CARGO_PKG_VERSION"),
            yes_no(cl_throttle),
            yes_no(config::DENIED_EVENTS.load(std::sync::atomic::Ordering::Relaxed)),
            if configs {
                "CONFIG GET/SET ratelimit.*"
            } else {
                "no module configs on this server: load-time arguments only"
            },
            found(unsafe { raw::RedisModule_CachedMicroseconds }.is_some()),
            if unsafe { raw::RedisModule_CachedMicroseconds }.is_some() {
                "the command time the server froze"
            } else {
                "the wall clock"
            },
            found(described.command_info),
            found(described.acl_categories),
            if own_category {
                "found (@ratelimit)"
            } else {
                "absent"
            },
        ),
    );
    Ok(())
}
