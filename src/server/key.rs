//! Keys opened through the low-level key API: one lookup per command, values
//! read and written in place.

use std::ffi::c_int;

use redis_module::raw;

use super::{status, Ctx, OwnedString, RString, ERR};
use crate::error::Error;

/// `REDISMODULE_KEYTYPE_EMPTY`.
const KEYTYPE_EMPTY: c_int = 0;
/// `REDISMODULE_KEYTYPE_STRING`.
const KEYTYPE_STRING: c_int = 1;
/// `REDISMODULE_KEYTYPE_HASH`.
const KEYTYPE_HASH: c_int = 3;
/// `REDISMODULE_KEYTYPE_ZSET`.
const KEYTYPE_ZSET: c_int = 5;
/// `REDISMODULE_HASH_NONE`: fields and values are server strings.
const HASH_NONE: c_int = 0;

/// What a key holds.
pub enum Value<'k> {
    /// No such key (or it has expired).
    Empty,
    /// A string, read in place.
    String(&'k [u8]),
    /// A sorted set.
    SortedSet,
    /// A hash.
    Hash,
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
            KEYTYPE_ZSET => Ok(Value::SortedSet),
            KEYTYPE_HASH => Ok(Value::Hash),
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

    /// The number of members of the sorted set (0 for an empty key).
    pub fn zset_len(&self) -> Result<u64, Error> {
        if self.ptr.is_null() {
            return Ok(0);
        }
        let length = api!(RedisModule_ValueLength)?;
        // SAFETY: `self.ptr` is an open key.
        let len = unsafe { length(self.ptr) };
        u64::try_from(len).map_err(|_| Error::Internal("a length beyond u64"))
    }

    /// The score of `member`, if the sorted set holds it.
    pub fn zset_score(&self, member: &OwnedString) -> Result<Option<f64>, Error> {
        if self.ptr.is_null() {
            return Ok(None);
        }
        let score_of = api!(RedisModule_ZsetScore)?;
        let mut score = 0.0;
        // SAFETY: `self.ptr` is an open key; `member` a live string.
        let code = unsafe { score_of(self.ptr, member.0, &mut score) };
        Ok((code != ERR).then_some(score))
    }

    /// Adds `member` with `score`, or moves its score; creates the sorted
    /// set when the key is empty.
    pub fn zset_add(&mut self, score: f64, member: &OwnedString) -> Result<(), Error> {
        self.writable()?;
        let add = api!(RedisModule_ZsetAdd)?;
        // SAFETY: `self.ptr` is a key open for writing holding a sorted set
        // or nothing; `member` a live string; the flags pointer may be NULL.
        let code = unsafe { add(self.ptr, score, member.0, std::ptr::null_mut()) };
        status(code, "ZsetAdd failed")
    }

    /// Removes `member`; whether the sorted set held it. The server deletes
    /// a sorted set left empty when the key is closed.
    pub fn zset_rem(&mut self, member: &OwnedString) -> Result<bool, Error> {
        self.writable()?;
        let rem = api!(RedisModule_ZsetRem)?;
        let mut deleted: c_int = 0;
        // SAFETY: `self.ptr` is a key open for writing holding a sorted
        // set; `member` a live string.
        let code = unsafe { rem(self.ptr, member.0, &mut deleted) };
        status(code, "ZsetRem failed")?;
        Ok(deleted != 0)
    }

    /// The members whose score is at most `max_score`, lowest first.
    pub fn zset_up_to(&self, max_score: f64) -> Result<Vec<(OwnedString, f64)>, Error> {
        let mut members = Vec::new();
        self.zset_walk(f64::NEG_INFINITY, max_score, true, |member, score| {
            members.push((member, score));
            true
        })?;
        Ok(members)
    }

    /// The `n`-th lowest score (0 for the lowest).
    pub fn zset_nth_score(&self, n: u64) -> Result<Option<f64>, Error> {
        let mut seen: u64 = 0;
        let mut found = None;
        self.zset_walk(f64::NEG_INFINITY, f64::INFINITY, true, |_, score| {
            if seen == n {
                found = Some(score);
                return false;
            }
            seen = seen.saturating_add(1);
            true
        })?;
        Ok(found)
    }

    /// The highest score.
    pub fn zset_last_score(&self) -> Result<Option<f64>, Error> {
        let mut found = None;
        self.zset_walk(f64::NEG_INFINITY, f64::INFINITY, false, |_, score| {
            found = Some(score);
            false
        })?;
        Ok(found)
    }

    /// Visits the members with a score in `min..=max`, lowest first when
    /// `ascending`, while `visit` returns true.
    fn zset_walk(
        &self,
        min: f64,
        max: f64,
        ascending: bool,
        mut visit: impl FnMut(OwnedString, f64) -> bool,
    ) -> Result<(), Error> {
        if self.ptr.is_null() {
            return Ok(());
        }
        let start = if ascending {
            api!(RedisModule_ZsetFirstInScoreRange)?
        } else {
            api!(RedisModule_ZsetLastInScoreRange)?
        };
        let step = if ascending {
            api!(RedisModule_ZsetRangeNext)?
        } else {
            api!(RedisModule_ZsetRangePrev)?
        };
        let (current, at_end, stop) = (
            api!(RedisModule_ZsetRangeCurrentElement)?,
            api!(RedisModule_ZsetRangeEndReached)?,
            api!(RedisModule_ZsetRangeStop)?,
        );
        // SAFETY: `self.ptr` is an open key (a sorted set, or the call
        // fails); the range is stopped below whatever happens in between.
        if unsafe { start(self.ptr, min, max, 0, 0) } != super::OK {
            return Ok(());
        }
        loop {
            // SAFETY: a range is open on `self.ptr`.
            if unsafe { at_end(self.ptr) } != 0 {
                break;
            }
            let mut score = 0.0;
            // SAFETY: a range is open and not at its end; the element is a
            // new string the caller owns.
            let element = unsafe { current(self.ptr, &mut score) };
            if element.is_null() {
                break;
            }
            // SAFETY: a string just made for us, freed when dropped.
            let member = unsafe { OwnedString::from_raw(element) };
            // SAFETY: a range is open on `self.ptr`.
            if !visit(member, score) || unsafe { step(self.ptr) } == 0 {
                break;
            }
        }
        // SAFETY: the range opened above.
        unsafe { stop(self.ptr) };
        Ok(())
    }

    /// The value of hash field `field`, if the hash has it.
    pub fn hash_get(&self, field: &RString) -> Result<Option<OwnedString>, Error> {
        if self.ptr.is_null() {
            return Ok(None);
        }
        let get = api!(RedisModule_HashGet)?;
        let mut value: *mut raw::RedisModuleString = std::ptr::null_mut();
        // SAFETY: `self.ptr` is an open key holding a hash (or the call
        // fails); the variadic list is one field and where to put its
        // value, ended by NULL, as HASH_NONE reads it.
        let code = unsafe {
            get(
                self.ptr,
                HASH_NONE,
                field.0,
                &mut value as *mut *mut raw::RedisModuleString,
                std::ptr::null_mut::<raw::RedisModuleString>(),
            )
        };
        status(code, "HashGet failed")?;
        // SAFETY: a string the server made for the module (no automatic
        // memory), or NULL for a missing field.
        Ok((!value.is_null()).then(|| unsafe { OwnedString::from_raw(value) }))
    }

    /// The values of hash fields `first` and `second`, read in one call
    /// (each lookup through the API costs about as much as the other).
    pub fn hash_get_two(
        &self,
        first: &RString,
        second: &RString,
    ) -> Result<(Option<OwnedString>, Option<OwnedString>), Error> {
        if self.ptr.is_null() {
            return Ok((None, None));
        }
        let get = api!(RedisModule_HashGet)?;
        let mut values: [*mut raw::RedisModuleString; 2] = [std::ptr::null_mut(); 2];
        let [a, b] = &mut values;
        // SAFETY: `self.ptr` is an open key holding a hash (or the call
        // fails); the variadic list is two fields, each followed by where to
        // put its value, ended by NULL, as HASH_NONE reads it.
        let code = unsafe {
            get(
                self.ptr,
                HASH_NONE,
                first.0,
                a as *mut *mut raw::RedisModuleString,
                second.0,
                b as *mut *mut raw::RedisModuleString,
                std::ptr::null_mut::<raw::RedisModuleString>(),
            )
        };
        status(code, "HashGet failed")?;
        let own = |value: *mut raw::RedisModuleString| {
            // SAFETY: a string the server made for the module (no automatic
            // memory), or NULL for a missing field; each is owned once.
            (!value.is_null()).then(|| unsafe { OwnedString::from_raw(value) })
        };
        let [a, b] = values;
        Ok((own(a), own(b)))
    }

    /// Sets hash field `field` to `value`, or deletes the field for
    /// `None`; creates the hash when the key is empty. The server deletes
    /// a hash left empty.
    pub fn hash_set(&mut self, field: &RString, value: Option<&OwnedString>) -> Result<(), Error> {
        self.writable()?;
        let set = api!(RedisModule_HashSet)?;
        // REDISMODULE_HASH_DELETE is the address 1, which the server reads
        // as "delete the field", never as a string.
        let value = value.map_or(raw::REDISMODULE_HASH_DELETE.cast_mut(), |v| v.0);
        // SAFETY: `self.ptr` is a key open for writing holding a hash or
        // nothing; the variadic list is one field and its value (or the
        // delete marker), ended by NULL.
        let changed = unsafe {
            set(
                self.ptr,
                HASH_NONE,
                field.0,
                value,
                std::ptr::null_mut::<raw::RedisModuleString>(),
            )
        };
        // HashSet returns how many fields it changed; 0 is no error.
        if changed < 0 {
            return Err(Error::Internal("HashSet failed"));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_delete_marker_is_the_servers() {
        // `#define REDISMODULE_HASH_DELETE ((RedisModuleString*)(long)1)`
        assert_eq!(redis_module::raw::REDISMODULE_HASH_DELETE as usize, 1);
    }
}
