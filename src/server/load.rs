//! What `OnLoad` and `OnUnload` ask of the server: registering commands,
//! their metadata and ACL categories, module configs and the INFO section.

use std::ffi::{c_int, c_longlong, c_void, CStr, CString};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use redis_module::raw;

use super::{status, Ctx, Held, ERR, HELD, OK};
use crate::error::Error;
use crate::limiter::Chosen;
use crate::metadata::{ArgDocs, ArgKind, CommandDocs, KeySpec};

/// Sets up the module API for this server (`RedisModule_Init`); nothing
/// else of the server can be called before it.
///
/// # Safety
/// `ctx` must be the context the server passed to `OnLoad`.
pub unsafe fn init(ctx: *mut raw::RedisModuleCtx, name: &CStr, version: c_int) -> Option<Ctx> {
    let api_version = c_int::try_from(raw::REDISMODULE_APIVER_1).ok()?;
    // SAFETY: the server's load context (the caller's promise); the name is
    // a static C string, so nothing is allocated before the allocator this
    // call sets up exists.
    let code = unsafe { raw::Export_RedisModule_Init(ctx, name.as_ptr(), version, api_version) };
    if code != OK {
        return None;
    }
    // SAFETY: the caller's promise.
    Some(unsafe { Ctx::from_raw(ctx) })
}

/// Says in the server log why `RedisModule_Init` refused the load, where
/// the server can tell: a module of the same name is loaded already (a
/// second `--loadmodule` or `MODULE LOAD`). The server itself logs only
/// that the load failed.
///
/// # Safety
/// `ctx` must be the context the server passed to `OnLoad`, after
/// [`init`] refused it (the API is set up before the name is checked).
pub unsafe fn explain_refused_init(ctx: *mut raw::RedisModuleCtx, name: &CStr) {
    let Ok(busy) = api!(RedisModule_IsModuleNameBusy) else {
        return;
    };
    // SAFETY: a NUL-terminated name, read during the call only.
    if unsafe { busy(name.as_ptr()) } == 0 {
        return;
    }
    // SAFETY: the caller's promise.
    let ctx = unsafe { Ctx::from_raw(ctx) };
    let name = name.to_string_lossy();
    super::log(
        ctx,
        super::LogLevel::Warning,
        &format!(
            "not loaded: a module named {name} is loaded already (MODULE LIST shows it); \
             load it once, or MODULE UNLOAD {name} first"
        ),
    );
}

/// The module API functions the module calls whenever the server has
/// them, and does without otherwise (each use says how): the server's
/// frozen clock, command metadata and ACL categories, module configs, and
/// saying why a second load is refused.
pub const OPTIONAL_FUNCTIONS: [&str; 9] = [
    "RedisModule_CachedMicroseconds",
    "RedisModule_IsModuleNameBusy",
    "RedisModule_GetCommand",
    "RedisModule_SetCommandInfo",
    "RedisModule_SetCommandACLCategories",
    "RedisModule_AddACLCategory",
    "RedisModule_RegisterBoolConfig",
    "RedisModule_RegisterNumericConfig",
    "RedisModule_LoadConfigs",
];

/// The module API functions the module needs that this server lacks
/// (empty on Redis 6.2.2 and later, whose `SetAbsExpire` and `GetAbsExpire`
/// are the most recent of them): every function the code calls but those
/// of [`OPTIONAL_FUNCTIONS`], as a test checks against the source.
pub fn missing_functions() -> Vec<&'static str> {
    macro_rules! missing {
        ($($name:ident),* $(,)?) => {
            [$((stringify!($name), api!($name).is_ok())),*]
                .into_iter()
                .filter(|(_, present)| !present)
                .map(|(name, _)| name)
                .collect()
        };
    }
    missing!(
        RedisModule_Call,
        RedisModule_CallReplyArrayElement,
        RedisModule_CallReplyLength,
        RedisModule_CallReplyStringPtr,
        RedisModule_CloseKey,
        RedisModule_CreateCommand,
        RedisModule_CreateString,
        RedisModule_DeleteKey,
        RedisModule_FreeCallReply,
        RedisModule_FreeString,
        RedisModule_GetAbsExpire,
        RedisModule_GetRandomBytes,
        RedisModule_HashGet,
        RedisModule_HashSet,
        RedisModule_InfoAddFieldULongLong,
        RedisModule_InfoAddSection,
        RedisModule_IsKeysPositionRequest,
        RedisModule_KeyAtPos,
        RedisModule_KeyType,
        RedisModule_Log,
        RedisModule_Milliseconds,
        RedisModule_NotifyKeyspaceEvent,
        RedisModule_OpenKey,
        RedisModule_RegisterInfoFunc,
        RedisModule_Replicate,
        RedisModule_ReplyWithArray,
        RedisModule_ReplyWithError,
        RedisModule_ReplyWithLongLong,
        RedisModule_ReplyWithNull,
        RedisModule_ReplyWithStringBuffer,
        RedisModule_SetAbsExpire,
        RedisModule_SetModuleOptions,
        RedisModule_SignalModifiedKey,
        RedisModule_StringDMA,
        RedisModule_StringPtrLen,
        RedisModule_StringTruncate,
        RedisModule_ValueLength,
        RedisModule_WrongArity,
        RedisModule_ZsetAdd,
        RedisModule_ZsetFirstInScoreRange,
        RedisModule_ZsetLastInScoreRange,
        RedisModule_ZsetRangeCurrentElement,
        RedisModule_ZsetRangeEndReached,
        RedisModule_ZsetRangeNext,
        RedisModule_ZsetRangePrev,
        RedisModule_ZsetRangeStop,
        RedisModule_ZsetRem,
        RedisModule_ZsetScore,
    )
}

/// Makes the strings propagation holds for the module's lifetime.
pub fn hold_strings() -> Result<(), Error> {
    let create = api!(RedisModule_CreateString)?;
    release_strings();
    for (held, text) in Held::ALL {
        let bytes = text.to_bytes();
        // SAFETY: a NULL context is allowed; the string lives until unload.
        let string = unsafe { create(ptr::null_mut(), bytes.as_ptr().cast(), bytes.len()) };
        if string.is_null() {
            return Err(Error::Internal("CreateString failed"));
        }
        if let Some(slot) = HELD.get(held as usize) {
            slot.store(string, Relaxed);
        }
    }
    Ok(())
}

/// Frees the held strings; called at unload.
pub fn release_strings() {
    for slot in &HELD {
        let string = slot.swap(ptr::null_mut(), Relaxed);
        if let (false, Ok(free)) = (string.is_null(), api!(RedisModule_FreeString)) {
            // SAFETY: made by `hold_strings` with a NULL context, and taken
            // out of its slot before being freed, once.
            unsafe { free(ptr::null_mut(), string) };
        }
    }
}

/// Registers a command with the server; with `ask_for_keys`, the server
/// asks the command where its keys are (`getkeys-api`).
pub fn create_command(
    ctx: Ctx,
    name: &CStr,
    handler: raw::RedisModuleCmdFunc,
    flags: &CStr,
    (first_key, last_key, key_step): (c_int, c_int, c_int),
    ask_for_keys: bool,
) -> Result<(), Error> {
    let create = api!(RedisModule_CreateCommand)?;
    let mut flags = flags.to_bytes().to_vec();
    if ask_for_keys {
        flags.extend_from_slice(b" getkeys-api");
    }
    let flags = CString::new(flags).map_err(|_| Error::Internal("a NUL in command flags"))?;
    // SAFETY: called from `OnLoad` with the server's context and
    // NUL-terminated strings.
    let code = unsafe {
        create(
            ctx.0,
            name.as_ptr(),
            handler,
            flags.as_ptr(),
            first_key,
            last_key,
            key_step,
        )
    };
    status(code, "CreateCommand failed")
}

/// Turns off the server's implicit "key modified" signal on closing a key
/// opened for writing: the commands signal only the keys they really change
/// (see [`super::signal_modified`]).
pub fn disable_implicit_signal_modified(ctx: Ctx) -> Result<(), Error> {
    let set_options = api!(RedisModule_SetModuleOptions)?;
    let option = c_int::try_from(raw::REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED)
        .map_err(|_| Error::Internal("bad module option"))?;
    // SAFETY: called from `OnLoad` with the server's context.
    unsafe { set_options(ctx.0, option) };
    Ok(())
}

/// Registers `callback` as the module's `INFO` section writer.
pub fn register_info(ctx: Ctx, callback: raw::RedisModuleInfoFunc) -> Result<(), Error> {
    let register = api!(RedisModule_RegisterInfoFunc)?;
    // SAFETY: called from OnLoad with the server's context.
    let code = unsafe { register(ctx.0, callback) };
    status(code, "RegisterInfoFunc failed")
}

/// The context of an `INFO` callback.
#[derive(Debug, Clone, Copy)]
pub struct InfoCtx(*mut raw::RedisModuleInfoCtx);

impl InfoCtx {
    /// Wraps the pointer the server passed to the `INFO` callback.
    ///
    /// # Safety
    /// `ptr` must be that pointer, and the `InfoCtx` must not outlive the
    /// callback.
    pub unsafe fn from_raw(ptr: *mut raw::RedisModuleInfoCtx) -> InfoCtx {
        InfoCtx(ptr)
    }

    /// Starts the module's own section (`# ratelimit`); false when the
    /// caller did not ask for it.
    pub fn section(self) -> bool {
        let Ok(add_section) = api!(RedisModule_InfoAddSection) else {
            return false;
        };
        // SAFETY: the callback's context; a NULL name is the module's
        // default section.
        unsafe { add_section(self.0, ptr::null()) == OK }
    }

    /// Adds `ratelimit_<name>:<value>` to the section.
    pub fn field(self, name: &CStr, value: u64) {
        if let Ok(add_field) = api!(RedisModule_InfoAddFieldULongLong) {
            // SAFETY: the callback's context; `name` is NUL-terminated.
            unsafe { add_field(self.0, name.as_ptr(), value) };
        }
    }
}

/// A boolean module config as the server sees it.
pub struct BoolConfig {
    /// The name, without the module prefix.
    pub name: &'static CStr,
    /// Set at load time only (`CONFIG SET` refuses it).
    pub immutable: bool,
    /// Where the value lives; what it holds at registration (the load-time
    /// argument, or the default) is the config's default.
    pub value: &'static std::sync::atomic::AtomicBool,
    /// Reads the value, for the server.
    pub get: raw::RedisModuleConfigGetBoolFunc,
    /// Sets the value, for the server.
    pub set: raw::RedisModuleConfigSetBoolFunc,
}

/// A numeric module config, settable at any time.
pub struct NumberConfig {
    /// The name, without the module prefix.
    pub name: &'static CStr,
    /// Where the value lives; what it holds at registration is the
    /// config's default.
    pub value: &'static AtomicU64,
    /// The smallest value accepted.
    pub min: u64,
    /// The largest value accepted.
    pub max: u64,
}

/// Reads a numeric config: `privdata` is its value's address.
extern "C" fn get_number(_name: *const std::ffi::c_char, privdata: *mut c_void) -> c_longlong {
    // SAFETY: registered below with the address of a `'static` AtomicU64.
    let value = unsafe { &*privdata.cast::<AtomicU64>() };
    c_longlong::try_from(value.load(Relaxed)).unwrap_or(c_longlong::MAX)
}

/// Sets a numeric config, within the range the server checked.
extern "C" fn set_number(
    _name: *const std::ffi::c_char,
    new: c_longlong,
    privdata: *mut c_void,
    _err: *mut *mut raw::RedisModuleString,
) -> c_int {
    // SAFETY: registered below with the address of a `'static` AtomicU64.
    let value = unsafe { &*privdata.cast::<AtomicU64>() };
    match u64::try_from(new) {
        Ok(new) => {
            value.store(new, Relaxed);
            OK
        }
        Err(_) => super::ERR,
    }
}

/// Registers the module configs and loads their values from the server's
/// configuration. `Ok(false)` on servers without module configs (before
/// Redis 7.0), where the options are load-time arguments only.
pub fn register_configs(
    ctx: Ctx,
    configs: &[BoolConfig],
    numbers: &[NumberConfig],
) -> Result<bool, String> {
    let (Ok(register), Ok(register_number), Ok(load)) = (
        api!(RedisModule_RegisterBoolConfig),
        api!(RedisModule_RegisterNumericConfig),
        api!(RedisModule_LoadConfigs),
    ) else {
        return Ok(false);
    };
    for config in numbers {
        let as_long = |n: u64| c_longlong::try_from(n).unwrap_or(c_longlong::MAX);
        // SAFETY: called from OnLoad; the name is NUL-terminated, the
        // callbacks live as long as the module, and `privdata` is the
        // address of a `'static` AtomicU64, as they read it.
        let code = unsafe {
            register_number(
                ctx.0,
                config.name.as_ptr(),
                as_long(config.value.load(Relaxed)),
                raw::REDISMODULE_CONFIG_DEFAULT,
                as_long(config.min),
                as_long(config.max),
                Some(get_number),
                Some(set_number),
                None,
                ptr::from_ref(config.value).cast_mut().cast::<c_void>(),
            )
        };
        if code != OK {
            return Err(format!(
                "could not register the module config {}",
                config.name.to_string_lossy()
            ));
        }
    }
    for config in configs {
        let flags = if config.immutable {
            raw::REDISMODULE_CONFIG_IMMUTABLE
        } else {
            raw::REDISMODULE_CONFIG_DEFAULT
        };
        // SAFETY: called from OnLoad; the name is NUL-terminated and the
        // callbacks live as long as the module.
        let code = unsafe {
            register(
                ctx.0,
                config.name.as_ptr(),
                c_int::from(config.value.load(Relaxed)),
                flags,
                config.get,
                config.set,
                None,
                ptr::null_mut(),
            )
        };
        if code != OK {
            return Err(format!(
                "could not register the module config {}",
                config.name.to_string_lossy()
            ));
        }
    }
    // SAFETY: called from OnLoad after the registrations.
    if unsafe { load(ctx.0) } != OK {
        return Err(
            "the server refused a ratelimit.* value from its configuration (see the line above)"
                .to_string(),
        );
    }
    Ok(true)
}

/// What the server supported when the commands were described, for the
/// log line at load.
#[derive(Debug, Default, Clone, Copy)]
pub struct Described {
    /// `SetCommandInfo` was there.
    pub command_info: bool,
    /// `SetCommandACLCategories` was there.
    pub acl_categories: bool,
}

impl Described {
    /// What was there for every command: this and `other` both.
    pub fn and(self, other: Described) -> Described {
        Described {
            command_info: self.command_info && other.command_info,
            acl_categories: self.acl_categories && other.acl_categories,
        }
    }
}

/// Adds the `@ratelimit` ACL category, where the server can (Redis 7.4+,
/// Valkey 8). Only from `OnLoad`, before the commands are described.
pub fn add_category(ctx: Ctx) -> bool {
    let Ok(add) = api!(RedisModule_AddACLCategory) else {
        return false;
    };
    // SAFETY: called from OnLoad with the server's context.
    unsafe { add(ctx.0, c"ratelimit".as_ptr()) == OK }
}

/// Describes the command `name` to the server with what it supports:
/// `SetCommandInfo` (7.0+: arity, key spec, docs), `SetCommandACLCategories`
/// (7.2+), plus `@ratelimit` when `own_category` was added. Returns what
/// could be set, or an error naming what the server refused.
pub fn describe(
    ctx: Ctx,
    name: &CStr,
    docs: &CommandDocs,
    own_category: bool,
) -> Result<Described, String> {
    let mut described = Described::default();
    let Ok(get_command) = api!(RedisModule_GetCommand) else {
        return Ok(described);
    };
    // SAFETY: called from OnLoad after the command was created.
    let command = unsafe { get_command(ctx.0, name.as_ptr()) };
    if command.is_null() {
        return Err(format!("{name:?} is not registered"));
    }

    if let Ok(set_categories) = api!(RedisModule_SetCommandACLCategories) {
        let mut categories = docs.acl_categories.to_bytes().to_vec();
        if own_category {
            categories.extend_from_slice(b" ratelimit");
        }
        let categories = CString::new(categories).map_err(|e| e.to_string())?;
        // SAFETY: a command of this module, from OnLoad.
        if unsafe { set_categories(command, categories.as_ptr()) } != OK {
            return Err(format!("the server refused the ACL categories of {name:?}"));
        }
        described.acl_categories = true;
    }

    if let Ok(set_info) = api!(RedisModule_SetCommandInfo) {
        let mut key_specs: Vec<_> = docs.keys.iter().map(raw_key_spec).collect();
        key_specs.push(zeroed_key_spec());
        let mut storage = ArgStorage::default();
        let args = raw_args(docs.args, &mut storage);
        let info = raw::RedisModuleCommandInfo {
            version: &INFO_VERSION,
            summary: docs.summary.as_ptr(),
            complexity: docs.complexity.as_ptr(),
            since: docs.since.as_ptr(),
            history: ptr::null_mut(),
            tips: ptr::null(),
            arity: docs.arity,
            key_specs: key_specs.as_mut_ptr(),
            args,
        };
        // SAFETY: every pointer is valid for the call (the server copies
        // what it keeps); arrays end with a zeroed entry.
        if unsafe { set_info(command, &info) } != OK {
            return Err(format!("the server refused the command info of {name:?}"));
        }
        described.command_info = true;
    }
    Ok(described)
}

/// The layout version of the structures below, as `redismodule.h` defines it.
static INFO_VERSION: raw::RedisModuleCommandInfoVersion = raw::RedisModuleCommandInfoVersion {
    version: 1,
    sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
    sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
    sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
};

fn raw_key_spec(spec: &KeySpec) -> raw::RedisModuleCommandKeySpec {
    let (find_keys_type, fk) = match *spec {
        KeySpec::Range { last, .. } => (
            raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE,
            raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
                range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 {
                    lastkey: last,
                    keystep: 1,
                    limit: 0,
                },
            },
        ),
        KeySpec::Counted { .. } => (
            raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_KEYNUM,
            raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
                keynum: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_2 {
                    keynumidx: 0,
                    firstkey: 1,
                    keystep: 1,
                },
            },
        ),
    };
    raw::RedisModuleCommandKeySpec {
        notes: ptr::null(),
        flags: u64::from(spec.flags()),
        begin_search_type: raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX,
        bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
            index: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_1 { pos: spec.first() },
        },
        find_keys_type,
        fk,
    }
}

/// The entry that ends the server's key-spec array.
fn zeroed_key_spec() -> raw::RedisModuleCommandKeySpec {
    // SAFETY: every field is a null pointer, an integer or a union of
    // integers; all zeros is the `BS_INVALID` entry the server stops at.
    unsafe { std::mem::zeroed() }
}

/// What the server's argument arrays point to, kept alive until the call.
#[derive(Default)]
struct ArgStorage {
    arrays: Vec<Vec<raw::RedisModuleCommandArg>>,
    names: Vec<CString>,
}

impl ArgStorage {
    /// `text` as a C string that lives as long as the storage.
    fn c_string(&mut self, text: String) -> *const std::ffi::c_char {
        let text = CString::new(text).unwrap_or_default();
        // The CString's heap buffer does not move when it is moved.
        let pointer = text.as_ptr();
        self.names.push(text);
        pointer
    }
}

/// `args` as the server's array (ending with a zeroed entry).
fn raw_args(args: &[ArgDocs], storage: &mut ArgStorage) -> *mut raw::RedisModuleCommandArg {
    let mut list: Vec<raw::RedisModuleCommandArg> = args
        .iter()
        .map(|arg| {
            let subargs = match arg.kind {
                ArgKind::OneOf(children) | ArgKind::Block(children) => raw_args(children, storage),
                ArgKind::Algorithm => algorithm_choices(storage),
                _ => ptr::null_mut(),
            };
            let mut flags = raw::REDISMODULE_CMD_ARG_NONE;
            if arg.optional {
                flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
            }
            if arg.multiple {
                flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
            }
            raw_arg(
                arg.name.as_ptr(),
                arg.kind,
                arg.token.map_or(ptr::null(), CStr::as_ptr),
                flags,
                arg.key_spec,
                subargs,
            )
        })
        .collect();
    list.push(end_of_args());
    let pointer = list.as_mut_ptr();
    // The Vec's heap buffer does not move when the Vec is moved.
    storage.arrays.push(list);
    pointer
}

/// `ALGORITHM`'s choices, from the list of algorithms.
fn algorithm_choices(storage: &mut ArgStorage) -> *mut raw::RedisModuleCommandArg {
    let mut list: Vec<raw::RedisModuleCommandArg> = Chosen::NAMES
        .iter()
        .map(|name| {
            let doc_name = storage.c_string(name.to_lowercase());
            let token = storage.c_string(name.to_string());
            raw_arg(
                doc_name,
                ArgKind::Token,
                token,
                raw::REDISMODULE_CMD_ARG_NONE,
                None,
                ptr::null_mut(),
            )
        })
        .collect();
    list.push(end_of_args());
    let pointer = list.as_mut_ptr();
    storage.arrays.push(list);
    pointer
}

/// The entry that ends an argument array.
fn end_of_args() -> raw::RedisModuleCommandArg {
    // SAFETY: every field is a null pointer, a zero integer or the zero of
    // an integer type, which is how the server's arrays end.
    unsafe { std::mem::zeroed() }
}

fn raw_arg(
    name: *const std::ffi::c_char,
    kind: ArgKind,
    token: *const std::ffi::c_char,
    flags: u32,
    key_spec: Option<c_int>,
    subargs: *mut raw::RedisModuleCommandArg,
) -> raw::RedisModuleCommandArg {
    raw::RedisModuleCommandArg {
        name,
        type_: match kind {
            ArgKind::Key => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
            ArgKind::Integer => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
            ArgKind::String => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
            ArgKind::Token => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN,
            ArgKind::OneOf(_) | ArgKind::Algorithm => {
                raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF
            }
            ArgKind::Block(_) => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK,
        },
        key_spec_index: key_spec.unwrap_or(-1),
        token,
        summary: ptr::null(),
        since: ptr::null(),
        flags: c_int::try_from(flags).unwrap_or(0),
        deprecated_since: ptr::null(),
        subargs,
        display_text: ptr::null(),
    }
}

/// `OnLoad`'s status for the server.
pub fn load_status(loaded: bool) -> c_int {
    if loaded {
        OK
    } else {
        ERR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_check_covers_every_function_the_code_calls() {
        // Outside a server every function is missing: the check names all
        // it covers.
        let checked = missing_functions();
        let sources = [
            include_str!("mod.rs"),
            include_str!("key.rs"),
            include_str!("load.rs"),
        ];
        let mut called = std::collections::BTreeSet::new();
        for source in sources {
            for (at, _) in source.match_indices("api!(RedisModule_") {
                let name: String = source[at + "api!(".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // This test's own pattern names nothing.
                if name != "RedisModule_" {
                    called.insert(name);
                }
            }
        }
        assert!(called.len() > 40, "{called:?}");
        for name in &called {
            assert!(
                checked.contains(&name.as_str()) || OPTIONAL_FUNCTIONS.contains(&name.as_str()),
                "{name} is called but not checked at load"
            );
        }
        for name in checked.iter().chain(&OPTIONAL_FUNCTIONS) {
            assert!(called.contains(*name), "{name} is checked but never called");
        }
    }
}
