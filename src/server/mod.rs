//! The server API: every `unsafe` line of the module lives under this folder.
//!
//! The module talks to the server through the raw function pointers that
//! `redis-module` fills in at load time, and wraps the few calls it uses in
//! safe functions here (`key.rs`: keys; `load.rs`: what `OnLoad` registers).
//! It does not use the crate's `Context`, `RedisKey` and `redis_module!`:
//! they have no wrappers for what the commands need most
//! (`RedisModule_SetAbsExpire`/`GetAbsExpire` for absolute expiries,
//! `RedisModule_CachedMicroseconds` for the server's frozen command time),
//! they copy every call's arguments into a `Vec<RedisString>`, and they call
//! a command without `catch_unwind`, so a panic would abort the server.
//!
//! A function pointer the server did not provide becomes
//! [`Error::Internal`] naming it, never a panic. `OnLoad` refuses to load on
//! a server that lacks any the module needs ([`load::missing_functions`];
//! a test checks that list against every call in this folder), so in
//! practice those branches are not taken; the few it can do without are
//! [`load::OPTIONAL_FUNCTIONS`].
//!
//! The string limiters' path (CHECK, PEEK, THROTTLE) allocates nothing of
//! its own: arguments are read in place, strings are written through direct
//! memory access, replies are written field by field. MCHECK and MPEEK keep
//! their keys in one vector; leases make a string per member they touch.

use std::ffi::{c_int, CStr, CString};
use std::sync::atomic::{AtomicPtr, Ordering::Relaxed};

use redis_module::raw;

use crate::args::Arg;
use crate::decimal::Digits;
use crate::error::Error;

/// The server function `$name`, or [`Error::Internal`] naming it.
macro_rules! api {
    ($name:ident) => {{
        // SAFETY: a plain read of a pointer the server set in
        // `RedisModule_Init`, before anything of the module could run;
        // nothing writes it afterwards.
        let function = unsafe { redis_module::raw::$name };
        function.ok_or($crate::error::Error::Internal(concat!(
            stringify!($name),
            " is missing"
        )))
    }};
}
pub mod key;
pub mod load;

pub use key::{Access, Key, Value};

/// `REDISMODULE_OK`: what the server's functions return on success, and
/// what callbacks return to it.
pub const OK: c_int = {
    assert!(raw::REDISMODULE_OK == 0);
    0
};
/// `REDISMODULE_ERR`.
pub const ERR: c_int = {
    assert!(raw::REDISMODULE_ERR == 1);
    1
};

/// `Ok(())` for [`OK`], otherwise [`Error::Internal`] with `cause`.
fn status(code: c_int, cause: &'static str) -> Result<(), Error> {
    if code == OK {
        Ok(())
    } else {
        Err(Error::Internal(cause))
    }
}

/// The context of the command (or load, or callback) being run.
#[derive(Debug, Clone, Copy)]
pub struct Ctx(*mut raw::RedisModuleCtx);

impl Ctx {
    /// Wraps a context pointer.
    ///
    /// # Safety
    /// `ptr` must be the context the server passed to the running command
    /// or callback, and the `Ctx` must not outlive that call.
    pub unsafe fn from_raw(ptr: *mut raw::RedisModuleCtx) -> Ctx {
        Ctx(ptr)
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
        // SAFETY: `self.0` is a live argument of the running call, which
        // outlives `self`.
        unsafe { string_bytes(self.0) }
    }
}

/// A string the module made and frees when dropped.
///
/// `repr(transparent)`, as [`RString`], so that it can be seen as one.
#[repr(transparent)]
#[derive(Debug)]
pub struct OwnedString(*mut raw::RedisModuleString);

impl OwnedString {
    /// A new server string holding `bytes`.
    pub fn new(bytes: &[u8]) -> Result<OwnedString, Error> {
        let create = api!(RedisModule_CreateString)?;
        // SAFETY: a NULL context makes a string the module frees itself,
        // which `Drop` does; the server copies the `bytes.len()` bytes.
        let ptr = unsafe { create(std::ptr::null_mut(), bytes.as_ptr().cast(), bytes.len()) };
        if ptr.is_null() {
            return Err(Error::Internal("CreateString failed"));
        }
        Ok(OwnedString(ptr))
    }

    /// The string seen as an argument, e.g. to open a key it names.
    pub fn as_rstring(&self) -> &RString {
        let this: *const OwnedString = self;
        // SAFETY: both types are `repr(transparent)` over the same pointer,
        // and the result borrows `self`, which keeps the string alive.
        unsafe { &*this.cast::<RString>() }
    }

    /// Takes ownership of a string the server made for the module.
    ///
    /// # Safety
    /// `ptr` must be a live string the module owns (made with a NULL
    /// context, or handed over by the server), freed by nobody else.
    pub unsafe fn from_raw(ptr: *mut raw::RedisModuleString) -> OwnedString {
        OwnedString(ptr)
    }
}

impl Arg for OwnedString {
    fn bytes(&self) -> &[u8] {
        // SAFETY: the string lives as long as `self`, which the slice borrows.
        unsafe { string_bytes(self.0) }
    }
}

impl Drop for OwnedString {
    fn drop(&mut self) {
        if let Ok(free) = api!(RedisModule_FreeString) {
            // SAFETY: owned by this value (see the constructors), freed once.
            unsafe { free(std::ptr::null_mut(), self.0) };
        }
    }
}

/// The bytes of a server string.
///
/// # Safety
/// `string` must be live for all of `'s`.
unsafe fn string_bytes<'s>(string: *mut raw::RedisModuleString) -> &'s [u8] {
    let Ok(ptr_len) = api!(RedisModule_StringPtrLen) else {
        return &[];
    };
    let mut len: usize = 0;
    // SAFETY: the caller's promise; the returned buffer lives as long as
    // the string.
    unsafe {
        let ptr = ptr_len(string, &mut len);
        if ptr.is_null() {
            return &[];
        }
        std::slice::from_raw_parts(ptr.cast::<u8>(), len)
    }
}

/// Fills `buf` with random bytes from the server's generator.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), Error> {
    let fill = api!(RedisModule_GetRandomBytes)?;
    // SAFETY: `buf` is writable for its whole length.
    unsafe { fill(buf.as_mut_ptr(), buf.len()) };
    Ok(())
}

/// Propagates `command key args…` to replicas and the AOF, every argument
/// after the key given as bytes.
pub fn replicate(ctx: Ctx, command: &CStr, key: &RString, args: &[&[u8]]) -> Result<(), Error> {
    let replicate = api!(RedisModule_Replicate)?;
    // RM_Replicate is variadic: one format per arity, up to the longest
    // effect the module propagates.
    // SAFETY: each format's conversions match the arguments one for one:
    // `s` the key, `b` a buffer and its length.
    let code = unsafe {
        match *args {
            [a] => replicate(
                ctx.0,
                command.as_ptr(),
                c"sb".as_ptr(),
                key.0,
                a.as_ptr(),
                a.len(),
            ),
            [a, b] => replicate(
                ctx.0,
                command.as_ptr(),
                c"sbb".as_ptr(),
                key.0,
                a.as_ptr(),
                a.len(),
                b.as_ptr(),
                b.len(),
            ),
            [a, b, c, d] => replicate(
                ctx.0,
                command.as_ptr(),
                c"sbbbb".as_ptr(),
                key.0,
                a.as_ptr(),
                a.len(),
                b.as_ptr(),
                b.len(),
                c.as_ptr(),
                c.len(),
                d.as_ptr(),
                d.len(),
            ),
            _ => return Err(Error::Internal("an effect of unexpected arity")),
        }
    };
    status(code, "the server refused to propagate an effect")
}

/// The score of the member at `rank` (0 for the lowest) of the sorted set
/// at `key`, through `ZRANGE key rank rank WITHSCORES`: the server's own
/// rank lookup, O(log N). The module API can only walk a range from one
/// end, one new string per member, which is O(rank).
pub fn zset_score_at_rank(ctx: Ctx, key: &RString, rank: u64) -> Result<Option<f64>, Error> {
    let call = api!(RedisModule_Call)?;
    let element = api!(RedisModule_CallReplyArrayElement)?;
    let string = api!(RedisModule_CallReplyStringPtr)?;
    let free = api!(RedisModule_FreeCallReply)?;
    let rank =
        std::ffi::c_longlong::try_from(rank).map_err(|_| Error::Internal("a rank beyond i64"))?;
    // SAFETY: the format's conversions match the arguments one for one:
    // `s` the key, `l` two long longs, `c` a NUL-terminated string.
    let reply = unsafe {
        call(
            ctx.0,
            c"ZRANGE".as_ptr(),
            c"sllc".as_ptr(),
            key.0,
            rank,
            rank,
            c"WITHSCORES".as_ptr(),
        )
    };
    if reply.is_null() {
        return Err(Error::Internal("ZRANGE by rank failed"));
    }
    // SAFETY: `reply` is live until freed below. Its element 1 is the
    // score (RESP2: member, score), or NULL when the rank is out of range
    // or the reply is no array; a score's text is valid while the reply
    // is, and is read before it is freed.
    let score = unsafe {
        let item = element(reply, 1);
        let mut len = 0;
        let ptr = if item.is_null() {
            std::ptr::null()
        } else {
            string(item, &mut len)
        };
        // The server writes `inf` and `-inf` as Rust reads them.
        (!ptr.is_null()).then(|| {
            std::str::from_utf8(std::slice::from_raw_parts(ptr.cast::<u8>(), len))
                .ok()
                .and_then(|text| text.parse::<f64>().ok())
        })
    };
    // SAFETY: made by the call above, freed once; nothing refers to it now.
    unsafe { free(reply) };
    match score {
        None => Ok(None),
        Some(score) => score
            .map(Some)
            .ok_or(Error::Internal("ZRANGE gave a score that is no number")),
    }
}

/// A hash field and its value.
pub type HashEntry = (Vec<u8>, Vec<u8>);

/// Every field and value of the hash at `key`, through `HGETALL`: the
/// module API reads a hash only field by field, by name.
pub fn hash_entries(ctx: Ctx, key: &RString) -> Result<Vec<HashEntry>, Error> {
    let call = api!(RedisModule_Call)?;
    let length = api!(RedisModule_CallReplyLength)?;
    let element = api!(RedisModule_CallReplyArrayElement)?;
    let string = api!(RedisModule_CallReplyStringPtr)?;
    let free = api!(RedisModule_FreeCallReply)?;
    // SAFETY: the format's one conversion matches the argument: `s` the key.
    let reply = unsafe { call(ctx.0, c"HGETALL".as_ptr(), c"s".as_ptr(), key.0) };
    if reply.is_null() {
        return Err(Error::Internal("HGETALL failed"));
    }
    let mut entries = Vec::new();
    // SAFETY: `reply` is live until freed below; each element's text is
    // copied before then. RESP2 gives fields and values in turns.
    unsafe {
        let items = length(reply);
        let mut i: usize = 0;
        while i.saturating_add(1) < items {
            let text = |at| {
                let item = element(reply, at);
                let mut len = 0;
                let ptr = if item.is_null() {
                    std::ptr::null()
                } else {
                    string(item, &mut len)
                };
                if ptr.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(ptr.cast::<u8>(), len).to_vec()
                }
            };
            entries.push((text(i), text(i.saturating_add(1))));
            i = i.saturating_add(2);
        }
    }
    // SAFETY: made by the call above, freed once; nothing refers to it now.
    unsafe { free(reply) };
    Ok(entries)
}

/// Propagates `HSET key field value [field value]`.
pub fn replicate_hset(ctx: Ctx, key: &RString, pairs: &[&[u8]]) -> Result<(), Error> {
    replicate(ctx, c"HSET", key, pairs)
}

/// Propagates `HSET key field value`, and the sweep field `""` set to
/// `sweep` when given: a holds record. The strings are the server's own,
/// passed by reference rather than copied (a record is the longest value
/// the module propagates).
pub fn replicate_hset_record(
    ctx: Ctx,
    key: &RString,
    field: &RString,
    value: &RString,
    sweep: Option<&[u8]>,
) -> Result<(), Error> {
    let replicate = api!(RedisModule_Replicate)?;
    // SAFETY: each format's conversions match the arguments one for one:
    // `s` a server string (its count of references taken by the server),
    // `b` a buffer and its length; the held empty string lives until
    // unload.
    let code = unsafe {
        match sweep {
            None => replicate(
                ctx.0,
                c"HSET".as_ptr(),
                c"sss".as_ptr(),
                key.0,
                field.0,
                value.0,
            ),
            Some(at) => replicate(
                ctx.0,
                c"HSET".as_ptr(),
                c"ssssb".as_ptr(),
                key.0,
                field.0,
                value.0,
                Held::Empty.get()?,
                at.as_ptr(),
                at.len(),
            ),
        }
    };
    status(code, "the server refused to propagate an effect")
}

/// Propagates `HDEL key field`.
pub fn replicate_hdel(ctx: Ctx, key: &RString, field: &[u8]) -> Result<(), Error> {
    replicate(ctx, c"HDEL", key, &[field])
}

/// Views the `argv`/`argc` pair of a call as a slice.
///
/// # Safety
/// `argv` must point to `argc` valid strings that outlive the returned slice
/// (the server guarantees it for the duration of a command call).
pub unsafe fn args<'a>(argv: *mut *mut raw::RedisModuleString, argc: c_int) -> &'a [RString] {
    match usize::try_from(argc) {
        // SAFETY: the caller's promise; `RString` is a transparent wrapper
        // of the element type.
        Ok(len) if !argv.is_null() => unsafe {
            std::slice::from_raw_parts(argv.cast::<RString>(), len)
        },
        _ => &[],
    }
}

/// A command body as the server runs it: the context and the arguments
/// (the command name first). It writes its own reply.
pub trait Handler {
    /// Runs one call.
    fn handle(ctx: Ctx, args: &[RString]);
}

/// The function the server calls for a command handled by `H`.
///
/// # Safety
/// Called by the server only, as a command: with its context and `argc`
/// live arguments.
pub unsafe extern "C" fn entry<H: Handler>(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    // SAFETY: the caller's promise; all stay valid until the command
    // returns, which `H::handle` does before this function.
    let (ctx, args) = unsafe { (Ctx::from_raw(ctx), args(argv, argc)) };
    H::handle(ctx, args);
    // The reply, error or not, has been written.
    OK
}

/// Whether the server asks where a command's keys are instead of running
/// it: for commands registered with `getkeys-api`, in cluster routing, and
/// for anything else that needs the keys on servers without key specs
/// (Redis 6.2).
pub fn is_keys_position_request(ctx: Ctx) -> bool {
    let Ok(is_request) = api!(RedisModule_IsKeysPositionRequest) else {
        return false;
    };
    // SAFETY: the running command's context.
    unsafe { is_request(ctx.0) != 0 }
}

/// Answers a keys-position request: argument `position` is a key.
pub fn key_at(ctx: Ctx, position: usize) {
    let (Ok(key_at), Ok(position)) = (api!(RedisModule_KeyAtPos), c_int::try_from(position)) else {
        return;
    };
    // SAFETY: the running command's context, during a keys-position request.
    unsafe { key_at(ctx.0, position) };
}

/// A reply being written.
pub struct Replier(Ctx);

impl Replier {
    /// Writes the reply of the running command through `ctx`.
    pub fn new(ctx: Ctx) -> Replier {
        Replier(ctx)
    }

    /// Starts an array of `len` elements; the next `len` replies fill it.
    pub fn array(&mut self, len: usize) {
        let (Ok(array), Ok(len)) = (
            api!(RedisModule_ReplyWithArray),
            std::ffi::c_long::try_from(len),
        ) else {
            return;
        };
        // SAFETY: the running command's context.
        unsafe { array(self.0 .0, len) };
    }

    /// One integer.
    pub fn integer(&mut self, value: i64) {
        if let Ok(integer) = api!(RedisModule_ReplyWithLongLong) {
            // SAFETY: the running command's context.
            unsafe { integer(self.0 .0, value) };
        }
    }

    /// A bulk string.
    pub fn bulk(&mut self, bytes: &[u8]) {
        if let Ok(bulk) = api!(RedisModule_ReplyWithStringBuffer) {
            // SAFETY: the running command's context; the server copies the
            // `bytes.len()` bytes.
            unsafe { bulk(self.0 .0, bytes.as_ptr().cast(), bytes.len()) };
        }
    }

    /// A nil.
    pub fn null(&mut self) {
        if let Ok(null) = api!(RedisModule_ReplyWithNull) {
            // SAFETY: the running command's context.
            unsafe { null(self.0 .0) };
        }
    }

    /// `error`'s message, or the server's wrong-arity error.
    pub fn error(&mut self, error: Error) {
        match error.message() {
            None => {
                if let Ok(wrong_arity) = api!(RedisModule_WrongArity) {
                    // SAFETY: the running command's context.
                    unsafe { wrong_arity(self.0 .0) };
                }
            }
            Some(message) => {
                if let Ok(reply) = api!(RedisModule_ReplyWithError) {
                    // SAFETY: the running command's context; the message is
                    // NUL-terminated and copied by the server.
                    unsafe { reply(self.0 .0, message.as_c_str().as_ptr()) };
                }
            }
        }
    }
}

/// A value a command replies.
pub trait WriteReply {
    /// Writes it as the command's reply.
    fn write(&self, out: &mut Replier);
}

impl WriteReply for i64 {
    fn write(&self, out: &mut Replier) {
        out.integer(*self);
    }
}

impl<const N: usize> WriteReply for [i64; N] {
    fn write(&self, out: &mut Replier) {
        out.array(N);
        for &value in self {
            out.integer(value);
        }
    }
}

/// Tells the server that `key` changed, so WATCH and client-side caching see
/// it. The module turns the server's implicit signal off at load, because
/// that one fires for every key opened for writing, written or not.
pub fn signal_modified(ctx: Ctx, key: &RString) -> Result<(), Error> {
    let signal = api!(RedisModule_SignalModifiedKey)?;
    // SAFETY: `ctx` and `key` are the running command's.
    unsafe { signal(ctx.0, key.0) };
    Ok(())
}

/// Fires the keyspace event `event` on `key`, of class `d` (module events:
/// `notify-keyspace-events` with `d`, or `A`, shows them).
pub fn notify(ctx: Ctx, event: &CStr, key: &RString) {
    let Ok(notify) = api!(RedisModule_NotifyKeyspaceEvent) else {
        return;
    };
    let class = raw::REDISMODULE_NOTIFY_MODULE;
    // SAFETY: `ctx` and `key` are the running command's; `event` is
    // NUL-terminated.
    unsafe { notify(ctx.0, class, event.as_ptr(), key.0) };
}

/// Words every propagated SET carries, made once at load
/// ([`load::hold_strings`]) and passed by reference (`s` in RM_Replicate's
/// format), so that an effect allocates only what changes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Held {
    Pxat,
    KeepTtl,
    Empty,
}

impl Held {
    /// Each word and its text.
    pub(crate) const ALL: [(Held, &'static CStr); 3] = [
        (Held::Pxat, c"PXAT"),
        (Held::KeepTtl, c"KEEPTTL"),
        (Held::Empty, c""),
    ];

    /// The string, made at load.
    fn get(self) -> Result<*mut raw::RedisModuleString, Error> {
        let held = HELD
            .get(self as usize)
            .map(|slot| slot.load(Relaxed))
            .unwrap_or(std::ptr::null_mut());
        if held.is_null() {
            return Err(Error::Internal("a propagated word was not made at load"));
        }
        Ok(held)
    }
}

/// The strings of [`Held`], by its order.
///
/// Atomic pointers rather than once-set cells: after `MODULE UNLOAD` the
/// library may stay mapped, and a later load must not find a freed string.
static HELD: [AtomicPtr<raw::RedisModuleString>; 3] = [
    AtomicPtr::new(std::ptr::null_mut()),
    AtomicPtr::new(std::ptr::null_mut()),
    AtomicPtr::new(std::ptr::null_mut()),
];

/// The empty string, made at load: a hash field name no id can be.
pub fn empty_string() -> Result<RString, Error> {
    Ok(RString(Held::Empty.get()?))
}

/// Propagates `SET key value PXAT at_ms` to replicas and the AOF.
///
/// The effect is sent with absolute time, never the command itself, so a
/// replica or an AOF reload ends with the master's value and expiry whatever
/// its own clock says, and can do so without the module.
pub fn replicate_set_pxat(ctx: Ctx, key: &RString, value: &[u8], at_ms: u64) -> Result<(), Error> {
    let replicate = api!(RedisModule_Replicate)?;
    let pxat = Held::Pxat.get()?;
    let mut digits = Digits::new();
    let at_ms = digits.of(at_ms);
    // Format: s = module string, b = buffer and length. The time goes as
    // digits: one allocation fewer than a long long (`l`).
    // SAFETY: the arguments match the format string one for one; `pxat`
    // lives until unload.
    let code = unsafe {
        replicate(
            ctx.0,
            c"SET".as_ptr(),
            c"sbsb".as_ptr(),
            key.0,
            value.as_ptr(),
            value.len(),
            pxat,
            at_ms.as_ptr(),
            at_ms.len(),
        )
    };
    status(code, "the server refused to propagate SET")
}

/// Propagates `SET key value KEEPTTL`: a value changed, its expiry did not.
pub fn replicate_set_keepttl(ctx: Ctx, key: &RString, value: &[u8]) -> Result<(), Error> {
    let replicate = api!(RedisModule_Replicate)?;
    let keepttl = Held::KeepTtl.get()?;
    // SAFETY: a module string, a buffer and its length, a module string
    // (`keepttl` lives until unload).
    let code = unsafe {
        replicate(
            ctx.0,
            c"SET".as_ptr(),
            c"sbs".as_ptr(),
            key.0,
            value.as_ptr(),
            value.len(),
            keepttl,
        )
    };
    status(code, "the server refused to propagate SET")
}

/// Propagates `PEXPIREAT key at_ms`: only the expiry moved.
pub fn replicate_pexpireat(ctx: Ctx, key: &RString, at_ms: u64) -> Result<(), Error> {
    let mut digits = Digits::new();
    replicate(ctx, c"PEXPIREAT", key, &[digits.of(at_ms)])
}

/// Propagates `INCRBY key by` (`INCR key` for 1): the cheapest effect when a
/// counter grew and its expiry stayed.
pub fn replicate_incr_by(ctx: Ctx, key: &RString, by: u64) -> Result<(), Error> {
    let replicate = api!(RedisModule_Replicate)?;
    let code = if by == 1 {
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
    status(code, "the server refused to propagate INCRBY")
}

/// Propagates `DEL key` to replicas and the AOF.
pub fn replicate_del(ctx: Ctx, key: &RString) -> Result<(), Error> {
    let replicate = api!(RedisModule_Replicate)?;
    // SAFETY: one module string for the one `s` of the format.
    let code = unsafe { replicate(ctx.0, c"DEL".as_ptr(), c"s".as_ptr(), key.0) };
    status(code, "the server refused to propagate DEL")
}

/// The current UNIX time in milliseconds, read once per command.
///
/// Where the server has `CachedMicroseconds` (Redis 7.2+, Valkey) this is the
/// time the server froze for the running command: the same for every command
/// of a MULTI/EXEC or a script, and the clock the server expires keys by.
/// Older servers give the wall clock.
pub fn now_ms() -> Result<u64, Error> {
    if let Ok(cached_us) = api!(RedisModule_CachedMicroseconds) {
        // SAFETY: takes no arguments.
        let us = unsafe { cached_us() };
        return u64::try_from(us / 1000).map_err(|_| Error::Internal("the clock is before 1970"));
    }
    let ms = api!(RedisModule_Milliseconds)?;
    // SAFETY: takes no arguments.
    u64::try_from(unsafe { ms() }).map_err(|_| Error::Internal("the clock is before 1970"))
}

/// Whether the server freezes the command time (`CachedMicroseconds`).
pub fn has_cached_clock() -> bool {
    api!(RedisModule_CachedMicroseconds).is_ok()
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
    let Ok(log) = api!(RedisModule_Log) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_the_servers() {
        assert_eq!(OK as isize, raw::REDISMODULE_OK);
        assert_eq!(ERR as isize, raw::REDISMODULE_ERR);
    }
}
