//! Safe wrappers around the few Redis module API calls the commands use.
//!
//! This is the only module with `unsafe` code on the command path. It talks to
//! the server through the raw function pointers `redis-module` fills in at
//! load time; a pointer the server did not provide becomes
//! [`Error::Internal`], never a panic. `lib.rs` refuses to load on a server
//! with [`missing_functions`], so in practice the `None` branches are not
//! taken.
//!
//! Nothing on the command path allocates: arguments are read in place, strings are written
//! through direct memory access, replies are written field by field.

use std::ffi::{c_int, CStr, CString};
use std::sync::atomic::{AtomicPtr, Ordering::Relaxed};

use redis_module::raw;

use crate::args::Arg;
use crate::decimal::Digits;
use crate::error::Error;

/// `REDISMODULE_OK`, as the C API returns it.
const OK: c_int = 0;
/// `REDISMODULE_KEYTYPE_EMPTY`.
const KEYTYPE_EMPTY: c_int = 0;
/// `REDISMODULE_KEYTYPE_STRING`.
const KEYTYPE_STRING: c_int = 1;

/// The module API functions the commands need that this server lacks
/// (empty on Redis 6.2.2 and later, whose `SetAbsExpire` and `GetAbsExpire`
/// are the most recent of them).
pub fn missing_functions() -> Vec<&'static str> {
    macro_rules! missing {
        ($($name:ident),* $(,)?) => {
            [$((stringify!($name), unsafe { raw::$name }.is_some())),*]
                .into_iter()
                .filter(|(_, present)| !present)
                .map(|(name, _)| name)
                .collect()
        };
    }
    missing!(
        RedisModule_CreateCommand,
        RedisModule_StringPtrLen,
        RedisModule_OpenKey,
        RedisModule_CloseKey,
        RedisModule_KeyType,
        RedisModule_StringDMA,
        RedisModule_StringTruncate,
        RedisModule_DeleteKey,
        RedisModule_GetAbsExpire,
        RedisModule_SetAbsExpire,
        RedisModule_Replicate,
        RedisModule_SignalModifiedKey,
        RedisModule_SetModuleOptions,
        RedisModule_Milliseconds,
        RedisModule_ReplyWithArray,
        RedisModule_ReplyWithLongLong,
        RedisModule_ReplyWithError,
        RedisModule_WrongArity,
    )
}

/// The context of the command being executed.
#[derive(Debug, Clone, Copy)]
pub struct Ctx(*mut raw::RedisModuleCtx);

impl Ctx {
    /// Wraps the context pointer the server passed to a command or to
    /// `OnLoad`.
    pub fn new(ptr: *mut raw::RedisModuleCtx) -> Ctx {
        Ctx(ptr)
    }

    /// The server's pointer, for the load-time calls that describe
    /// commands (`metadata.rs`).
    pub fn as_ptr(self) -> *mut raw::RedisModuleCtx {
        self.0
    }
}

/// A string owned by the server, such as a command argument.
///
/// `repr(transparent)` so that the server's `argv` array can be seen as a
/// slice of `RString` without copying it.
#[repr(transparent)]
#[derive(Debug)]
pub struct RString(*mut raw::RedisModuleString);

impl Arg for RString {
    fn bytes(&self) -> &[u8] {
        let Some(ptr_len) = (unsafe { raw::RedisModule_StringPtrLen }) else {
            return &[];
        };
        let mut len: usize = 0;
        // SAFETY: `self.0` is a live argument of the running command; the
        // returned buffer lives as long as the string, which outlives `self`.
        unsafe {
            let ptr = ptr_len(self.0, &mut len);
            if ptr.is_null() {
                return &[];
            }
            std::slice::from_raw_parts(ptr.cast::<u8>(), len)
        }
    }
}

/// Views the `argv`/`argc` pair of a command as a slice.
///
/// # Safety
/// `argv` must point to `argc` valid strings that outlive the returned slice
/// (the server guarantees it for the duration of a command call).
pub unsafe fn args<'a>(argv: *mut *mut raw::RedisModuleString, argc: c_int) -> &'a [RString] {
    match usize::try_from(argc) {
        // SAFETY: `RString` is a transparent wrapper of the element type.
        Ok(len) if !argv.is_null() => unsafe {
            std::slice::from_raw_parts(argv.cast::<RString>(), len)
        },
        _ => &[],
    }
}

/// What a key holds.
pub enum Value<'k> {
    /// No such key (or it has expired).
    Empty,
    /// A string, read in place.
    String(&'k [u8]),
    /// Any other type.
    Other,
}

/// How a key is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// For reading only: a missing key is seen as empty, nothing can change.
    Read,
    /// For reading and writing.
    ReadWrite,
}

/// An open key; closed when dropped.
pub struct Key<'a> {
    /// Null for a key opened for reading that does not exist.
    ptr: *mut raw::RedisModuleKey,
    access: Access,
    name: &'a RString,
}

impl<'a> Key<'a> {
    /// Opens `name` in the current database. This is the command's one
    /// lookup of the key (and of its expiry).
    pub fn open(ctx: Ctx, name: &'a RString, access: Access) -> Result<Key<'a>, Error> {
        let open = unsafe { raw::RedisModule_OpenKey }.ok_or(Error::Internal)?;
        let mode = match access {
            Access::Read => raw::REDISMODULE_READ,
            Access::ReadWrite => raw::REDISMODULE_READ | raw::REDISMODULE_WRITE,
        };
        let mode = c_int::try_from(mode).map_err(|_| Error::Internal)?;
        // SAFETY: `ctx` and `name` are the running command's.
        let ptr = unsafe { open(ctx.0, name.0, mode) };
        // Opened for writing, a key always has a handle; for reading, a
        // missing key has none.
        if ptr.is_null() && access == Access::ReadWrite {
            return Err(Error::Internal);
        }
        Ok(Key { ptr, access, name })
    }

    /// The key's name.
    pub fn name(&self) -> &'a RString {
        self.name
    }

    /// The key's value. Reading a string may convert its encoding in place
    /// (integer-encoded to raw), which is invisible to clients.
    pub fn value(&self) -> Result<Value<'_>, Error> {
        if self.ptr.is_null() {
            return Ok(Value::Empty);
        }
        let key_type = unsafe { raw::RedisModule_KeyType }.ok_or(Error::Internal)?;
        // SAFETY: `self.ptr` is an open key.
        match unsafe { key_type(self.ptr) } {
            KEYTYPE_EMPTY => Ok(Value::Empty),
            KEYTYPE_STRING => {
                let (ptr, len) = self.dma(raw::REDISMODULE_READ)?;
                if len == 0 {
                    return Ok(Value::String(&[]));
                }
                // SAFETY: the key's buffer of `len` bytes, valid while `self`
                // is borrowed (changing the key needs `&mut self`).
                Ok(Value::String(unsafe {
                    std::slice::from_raw_parts(ptr, len)
                }))
            }
            _ => Ok(Value::Other),
        }
    }

    /// The absolute expiry of the key in UNIX milliseconds, `None` without one.
    pub fn expires_at_ms(&self) -> Result<Option<u64>, Error> {
        if self.ptr.is_null() {
            return Ok(None);
        }
        let get = unsafe { raw::RedisModule_GetAbsExpire }.ok_or(Error::Internal)?;
        // SAFETY: `self.ptr` is an open key.
        let at_ms = unsafe { get(self.ptr) };
        // REDISMODULE_NO_EXPIRE is -1: no expiry is the only negative value.
        Ok(u64::try_from(at_ms).ok())
    }

    /// Replaces the value with `bytes`, creating a string key if there is
    /// none, and keeping the expiry of an existing one.
    pub fn write_string(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.writable()?;
        let truncate = unsafe { raw::RedisModule_StringTruncate }.ok_or(Error::Internal)?;
        let (mut target, mut len) = self.dma(raw::REDISMODULE_WRITE)?;
        if len != bytes.len() {
            // SAFETY: `self.ptr` is an open key holding a string or nothing.
            if unsafe { truncate(self.ptr, bytes.len()) } != OK {
                return Err(Error::Internal);
            }
            // Resizing may move the buffer: ask for it again.
            (target, len) = self.dma(raw::REDISMODULE_WRITE)?;
            if len != bytes.len() {
                return Err(Error::Internal);
            }
        }
        // SAFETY: `target` is the key's own buffer of exactly `bytes.len()`
        // bytes, opened for writing, and nothing else refers to it meanwhile.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), target, len) };
        Ok(())
    }

    /// Sets the key's expiry to the absolute time `at_ms` (UNIX ms).
    pub fn set_expires_at_ms(&mut self, at_ms: u64) -> Result<(), Error> {
        self.writable()?;
        let set = unsafe { raw::RedisModule_SetAbsExpire }.ok_or(Error::Internal)?;
        let at_ms = i64::try_from(at_ms).map_err(|_| Error::Internal)?;
        // SAFETY: `self.ptr` is an open key with a value.
        if unsafe { set(self.ptr, at_ms) } != OK {
            return Err(Error::Internal);
        }
        Ok(())
    }

    /// Deletes the key.
    pub fn delete(&mut self) -> Result<(), Error> {
        self.writable()?;
        let delete = unsafe { raw::RedisModule_DeleteKey }.ok_or(Error::Internal)?;
        // SAFETY: `self.ptr` is a key open for writing.
        if unsafe { delete(self.ptr) } != OK {
            return Err(Error::Internal);
        }
        Ok(())
    }

    /// Refuses to change a key opened for reading.
    fn writable(&self) -> Result<(), Error> {
        match self.access {
            Access::ReadWrite => Ok(()),
            Access::Read => Err(Error::Internal),
        }
    }

    /// Direct access to the string value: its buffer and length, a length
    /// of 0 for an empty key. The buffer stays valid until the next call that
    /// changes the key.
    fn dma(&self, mode: u32) -> Result<(*mut u8, usize), Error> {
        let dma = unsafe { raw::RedisModule_StringDMA }.ok_or(Error::Internal)?;
        let mode = c_int::try_from(mode).map_err(|_| Error::Internal)?;
        let mut len: usize = 0;
        // SAFETY: `self.ptr` is an open key.
        let ptr = unsafe { dma(self.ptr, &mut len, mode) };
        if ptr.is_null() {
            return Err(Error::WrongType);
        }
        Ok((ptr.cast::<u8>(), len))
    }
}

impl Drop for Key<'_> {
    fn drop(&mut self) {
        if self.ptr.is_null() {
            return;
        }
        if let Some(close) = unsafe { raw::RedisModule_CloseKey } {
            // SAFETY: `self.ptr` was opened by `Key::open` and is closed once.
            unsafe { close(self.ptr) }
        }
    }
}

/// Tells the server that `key` changed, so WATCH and client-side caching see
/// it. The module turns the server's implicit signal off at load, because
/// that one fires for every key opened for writing, written or not.
pub fn signal_modified(ctx: Ctx, key: &RString) -> Result<(), Error> {
    let signal = unsafe { raw::RedisModule_SignalModifiedKey }.ok_or(Error::Internal)?;
    // SAFETY: `ctx` and `key` are the running command's.
    unsafe { signal(ctx.0, key.0) };
    Ok(())
}

/// `PXAT`, made once at load and passed by reference (`s` in
/// RM_Replicate's format) by every propagated SET, which then allocates only
/// what changes. Null when there is none: then a C string is sent instead.
///
/// An atomic pointer rather than a once-set cell: after `MODULE UNLOAD` the
/// library may stay mapped, and a later load must not find the freed string.
static PXAT: AtomicPtr<raw::RedisModuleString> = AtomicPtr::new(std::ptr::null_mut());

/// Makes the held string; called at load.
pub fn hold_strings() {
    let Some(create) = (unsafe { raw::RedisModule_CreateString }) else {
        return;
    };
    // SAFETY: a NULL context is allowed; the string lives until unload.
    let pxat = unsafe { create(std::ptr::null_mut(), c"PXAT".as_ptr(), 4) };
    PXAT.store(pxat, Relaxed);
}

/// Frees the held string; called at unload.
pub fn release_strings() {
    let pxat = PXAT.swap(std::ptr::null_mut(), Relaxed);
    if let (false, Some(free)) = (pxat.is_null(), unsafe { raw::RedisModule_FreeString }) {
        // SAFETY: made by `hold_strings` with a NULL context, and taken out
        // of `PXAT` before being freed, once.
        unsafe { free(std::ptr::null_mut(), pxat) };
    }
}

/// Fires the keyspace event `event` on `key`, of class `d` (module events:
/// `notify-keyspace-events` with `d`, or `A`, shows them).
pub fn notify(ctx: Ctx, event: &CStr, key: &RString) {
    let Some(notify) = (unsafe { raw::RedisModule_NotifyKeyspaceEvent }) else {
        return;
    };
    let class = raw::REDISMODULE_NOTIFY_MODULE;
    // SAFETY: `ctx` and `key` are the running command's; `event` is
    // NUL-terminated.
    unsafe { notify(ctx.0, class, event.as_ptr(), key.0) };
}

/// Propagates `SET key value PXAT at_ms` to replicas and the AOF.
///
/// The effect is sent with absolute time, never the command itself, so a
/// replica or an AOF reload ends with the master's value and expiry whatever
/// its own clock says, and can do so without the module.
pub fn replicate_set_pxat(ctx: Ctx, key: &RString, value: &[u8], at_ms: u64) -> Result<(), Error> {
    let replicate = unsafe { raw::RedisModule_Replicate }.ok_or(Error::Internal)?;
    let mut digits = Digits::new();
    let at_ms = digits.of(at_ms);
    // Format: s = module string, b = buffer and length, c = C string. The
    // time goes as digits: one allocation fewer than a long long (`l`).
    // SAFETY: the arguments match the format string one for one.
    let status = unsafe {
        match PXAT.load(Relaxed) {
            pxat if !pxat.is_null() => replicate(
                ctx.0,
                c"SET".as_ptr(),
                c"sbsb".as_ptr(),
                key.0,
                value.as_ptr(),
                value.len(),
                pxat,
                at_ms.as_ptr(),
                at_ms.len(),
            ),
            _ => replicate(
                ctx.0,
                c"SET".as_ptr(),
                c"sbcb".as_ptr(),
                key.0,
                value.as_ptr(),
                value.len(),
                c"PXAT".as_ptr(),
                at_ms.as_ptr(),
                at_ms.len(),
            ),
        }
    };
    if status != OK {
        return Err(Error::Internal);
    }
    Ok(())
}

/// Propagates `INCRBY key by` (`INCR key` for 1): the cheapest effect when a
/// counter grew and its expiry stayed.
pub fn replicate_incr_by(ctx: Ctx, key: &RString, by: u64) -> Result<(), Error> {
    let replicate = unsafe { raw::RedisModule_Replicate }.ok_or(Error::Internal)?;
    let status = if by == 1 {
        // SAFETY: one module string for the one `s` of the format.
        unsafe { replicate(ctx.0, c"INCR".as_ptr(), c"s".as_ptr(), key.0) }
    } else {
        let mut digits = Digits::new();
        let by = digits.of(by);
        // SAFETY: a module string, then a buffer and its length.
        unsafe {
            replicate(
                ctx.0,
                c"INCRBY".as_ptr(),
                c"sb".as_ptr(),
                key.0,
                by.as_ptr(),
                by.len(),
            )
        }
    };
    if status != OK {
        return Err(Error::Internal);
    }
    Ok(())
}

/// Propagates `DEL key` to replicas and the AOF.
pub fn replicate_del(ctx: Ctx, key: &RString) -> Result<(), Error> {
    let replicate = unsafe { raw::RedisModule_Replicate }.ok_or(Error::Internal)?;
    // SAFETY: one module string for the one `s` of the format.
    let status = unsafe { replicate(ctx.0, c"DEL".as_ptr(), c"s".as_ptr(), key.0) };
    if status != OK {
        return Err(Error::Internal);
    }
    Ok(())
}

/// The current UNIX time in milliseconds, read once per command.
///
/// Where the server has `CachedMicroseconds` (Redis 7.2+, Valkey) this is the
/// time the server froze for the running command: the same for every command
/// of a MULTI/EXEC or a script, and the clock the server expires keys by.
/// Older servers give the wall clock.
pub fn now_ms() -> Result<u64, Error> {
    if let Some(cached_us) = unsafe { raw::RedisModule_CachedMicroseconds } {
        // SAFETY: takes no arguments.
        let us = unsafe { cached_us() };
        return u64::try_from(us / 1000).map_err(|_| Error::Internal);
    }
    let ms = unsafe { raw::RedisModule_Milliseconds }.ok_or(Error::Internal)?;
    // SAFETY: takes no arguments.
    u64::try_from(unsafe { ms() }).map_err(|_| Error::Internal)
}

/// Replies one integer.
pub fn reply_integer(ctx: Ctx, value: i64) {
    if let Some(integer) = unsafe { raw::RedisModule_ReplyWithLongLong } {
        // SAFETY: `ctx` is the running command's.
        unsafe { integer(ctx.0, value) };
    }
}

/// Replies an array of integers.
pub fn reply_integers(ctx: Ctx, values: &[i64]) {
    let (Some(array), Some(integer)) = (unsafe { raw::RedisModule_ReplyWithArray }, unsafe {
        raw::RedisModule_ReplyWithLongLong
    }) else {
        return;
    };
    let Ok(len) = std::ffi::c_long::try_from(values.len()) else {
        return;
    };
    // SAFETY: `ctx` is the running command's; the array gets exactly `len` elements.
    unsafe {
        array(ctx.0, len);
        for &v in values {
            integer(ctx.0, v);
        }
    }
}

/// Replies `error`.
pub fn reply_error(ctx: Ctx, error: Error) {
    // SAFETY: `ctx` is the running command's; messages are NUL-terminated.
    unsafe {
        match error.message() {
            None => {
                if let Some(wrong_arity) = raw::RedisModule_WrongArity {
                    wrong_arity(ctx.0);
                }
            }
            Some(message) => {
                if let Some(reply) = raw::RedisModule_ReplyWithError {
                    reply(ctx.0, message.as_ptr());
                }
            }
        }
    }
}

/// Registers `callback` as the module's `INFO` section writer.
pub fn register_info(ctx: Ctx, callback: raw::RedisModuleInfoFunc) -> Result<(), Error> {
    let register = unsafe { raw::RedisModule_RegisterInfoFunc }.ok_or(Error::Internal)?;
    // SAFETY: called from OnLoad with the server's context.
    if unsafe { register(ctx.0, callback) } != OK {
        return Err(Error::Internal);
    }
    Ok(())
}

/// The context of an `INFO` callback.
#[derive(Debug, Clone, Copy)]
pub struct InfoCtx(*mut raw::RedisModuleInfoCtx);

impl InfoCtx {
    /// Wraps the pointer the server passed to the `INFO` callback.
    pub fn new(ptr: *mut raw::RedisModuleInfoCtx) -> InfoCtx {
        InfoCtx(ptr)
    }
}

/// Starts the module's own `INFO` section (`# ratelimit`); false when the
/// caller did not ask for it.
pub fn info_section(info: InfoCtx) -> bool {
    let Some(add_section) = (unsafe { raw::RedisModule_InfoAddSection }) else {
        return false;
    };
    // SAFETY: `info` is the context the server passed to the INFO callback;
    // a NULL name is the module's default section.
    unsafe { add_section(info.0, std::ptr::null()) == OK }
}

/// Adds `ratelimit_<name>:<value>` to the section.
pub fn info_field(info: InfoCtx, name: &CStr, value: u64) {
    if let Some(add_field) = unsafe { raw::RedisModule_InfoAddFieldULongLong } {
        // SAFETY: as for `info_section`; `name` is NUL-terminated.
        unsafe { add_field(info.0, name.as_ptr(), value) };
    }
}

/// Registers the boolean module configs and loads their values from the
/// server's configuration. `Ok(false)` on servers without module configs
/// (before Redis 7.0), where the options are load-time arguments only.
pub fn register_configs(ctx: Ctx, configs: &[crate::config::BoolConfig]) -> Result<bool, String> {
    let (Some(register), Some(load)) = (unsafe { raw::RedisModule_RegisterBoolConfig }, unsafe {
        raw::RedisModule_LoadConfigs
    }) else {
        return Ok(false);
    };
    for config in configs {
        let flags = if config.immutable {
            raw::REDISMODULE_CONFIG_IMMUTABLE
        } else {
            raw::REDISMODULE_CONFIG_DEFAULT
        };
        let default = c_int::from(config.value.load(std::sync::atomic::Ordering::Relaxed));
        // SAFETY: called from OnLoad; the name is NUL-terminated and the
        // callbacks live as long as the module.
        let status = unsafe {
            register(
                ctx.0,
                config.name.as_ptr(),
                default,
                flags,
                config.get,
                config.set,
                None,
                std::ptr::null_mut(),
            )
        };
        if status != OK {
            return Err(format!(
                "could not register the module config {config_name}",
                config_name = config.name.to_string_lossy()
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

/// Log levels of the server log.
#[derive(Debug, Clone, Copy)]
pub enum LogLevel {
    /// Shown at the default verbosity.
    Notice,
    /// Something is wrong.
    Warning,
}

/// Writes one line to the server log, prefixed by the module name.
pub fn log(ctx: Ctx, level: LogLevel, message: &str) {
    let Some(log) = (unsafe { raw::RedisModule_Log }) else {
        return;
    };
    let level: &CStr = match level {
        LogLevel::Notice => c"notice",
        LogLevel::Warning => c"warning",
    };
    let Ok(message) = CString::new(message.replace('\0', " ")) else {
        return;
    };
    // SAFETY: "%s" consumes exactly the one C string given.
    unsafe { log(ctx.0, level.as_ptr(), c"%s".as_ptr(), message.as_ptr()) };
}

/// Registers a command with the server.
pub fn create_command(
    ctx: Ctx,
    name: &CStr,
    handler: raw::RedisModuleCmdFunc,
    flags: &CStr,
    (first_key, last_key, key_step): (c_int, c_int, c_int),
) -> Result<(), Error> {
    let create = unsafe { raw::RedisModule_CreateCommand }.ok_or(Error::Internal)?;
    // SAFETY: called from `OnLoad` with the server's context and NUL-terminated strings.
    let status = unsafe {
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
    if status != OK {
        return Err(Error::Internal);
    }
    Ok(())
}

/// Turns off the server's implicit "key modified" signal on closing a key
/// opened for writing: the commands signal only the keys they really change
/// (see [`signal_modified`]).
pub fn disable_implicit_signal_modified(ctx: Ctx) -> Result<(), Error> {
    let set_options = unsafe { raw::RedisModule_SetModuleOptions }.ok_or(Error::Internal)?;
    let option = c_int::try_from(raw::REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED)
        .map_err(|_| Error::Internal)?;
    // SAFETY: called from `OnLoad` with the server's context.
    unsafe { set_options(ctx.0, option) };
    Ok(())
}
