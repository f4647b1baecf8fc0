//! Keys opened through the low-level key API: one lookup per command, values
//! read and written in place.

use std::ffi::c_int;

use redis_module::raw;

use super::{status, Ctx, RString};
use crate::error::Error;

/// `REDISMODULE_KEYTYPE_EMPTY`.
const KEYTYPE_EMPTY: c_int = 0;
/// `REDISMODULE_KEYTYPE_STRING`.
const KEYTYPE_STRING: c_int = 1;

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
        let open = api!(RedisModule_OpenKey)?;
        let mode = match access {
            Access::Read => raw::REDISMODULE_READ,
            Access::ReadWrite => raw::REDISMODULE_READ | raw::REDISMODULE_WRITE,
        };
        let mode = c_int::try_from(mode).map_err(|_| Error::Internal("bad OpenKey mode"))?;
        // SAFETY: `ctx` and `name` are the running command's.
        let ptr = unsafe { open(ctx.0, name.0, mode) };
        // Opened for writing, a key always has a handle; for reading, a
        // missing key has none.
        if ptr.is_null() && access == Access::ReadWrite {
            return Err(Error::Internal("OpenKey gave no handle for writing"));
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
        let key_type = api!(RedisModule_KeyType)?;
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
        let get = api!(RedisModule_GetAbsExpire)?;
        // SAFETY: `self.ptr` is an open key.
        let at_ms = unsafe { get(self.ptr) };
        // REDISMODULE_NO_EXPIRE is -1: no expiry is the only negative value.
        Ok(u64::try_from(at_ms).ok())
    }

    /// Replaces the value with `bytes`, creating a string key if there is
    /// none, and keeping the expiry of an existing one.
    pub fn write_string(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.writable()?;
        let truncate = api!(RedisModule_StringTruncate)?;
        let (mut target, mut len) = self.dma(raw::REDISMODULE_WRITE)?;
        if len != bytes.len() {
            // SAFETY: `self.ptr` is an open key holding a string or nothing.
            let code = unsafe { truncate(self.ptr, bytes.len()) };
            status(code, "StringTruncate failed")?;
            // Resizing may move the buffer: ask for it again.
            (target, len) = self.dma(raw::REDISMODULE_WRITE)?;
            if len != bytes.len() {
                return Err(Error::Internal("StringTruncate left another length"));
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
        let set = api!(RedisModule_SetAbsExpire)?;
        let at_ms = i64::try_from(at_ms).map_err(|_| Error::Internal("expiry beyond i64"))?;
        // SAFETY: `self.ptr` is an open key with a value.
        let code = unsafe { set(self.ptr, at_ms) };
        status(code, "SetAbsExpire failed")
    }

    /// Deletes the key.
    pub fn delete(&mut self) -> Result<(), Error> {
        self.writable()?;
        let delete = api!(RedisModule_DeleteKey)?;
        // SAFETY: `self.ptr` is a key open for writing.
        let code = unsafe { delete(self.ptr) };
        status(code, "DeleteKey failed")
    }

    /// Refuses to change a key opened for reading.
    fn writable(&self) -> Result<(), Error> {
        match self.access {
            Access::ReadWrite => Ok(()),
            Access::Read => Err(Error::Internal("a write to a key opened for reading")),
        }
    }

    /// Direct access to the string value: its buffer and length, a length
    /// of 0 for an empty key. The buffer stays valid until the next call that
    /// changes the key.
    fn dma(&self, mode: u32) -> Result<(*mut u8, usize), Error> {
        let dma = api!(RedisModule_StringDMA)?;
        let mode = c_int::try_from(mode).map_err(|_| Error::Internal("bad StringDMA mode"))?;
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
        if let Ok(close) = api!(RedisModule_CloseKey) {
            // SAFETY: `self.ptr` was opened by `Key::open` and is closed once.
            unsafe { close(self.ptr) }
        }
    }
}
