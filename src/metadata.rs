//! What `COMMAND INFO`, `COMMAND DOCS`, ACL and redis-cli's hints know of
//! each command, as plain data; `server/load.rs` hands it to servers that
//! take it:
//!
//! - Redis 7.0+, Valkey: `RedisModule_SetCommandInfo` gives the arity, the key
//!   specs (read-only for PEEK, so a user allowed only to read keys may run
//!   it), a summary, the complexity, the version it appeared in and every
//!   argument.
//! - Redis 7.2+, Valkey: `RedisModule_SetCommandACLCategories` puts each
//!   command in `@write`/`@read`, `@fast`/`@slow` and so on;
//! - Redis 7.4+, Valkey 8: `RedisModule_AddACLCategory` adds `@ratelimit`.
//!
//! A server without them keeps the defaults `CreateCommand` gave (the flags
//! and the legacy key range).

use std::ffi::{c_int, CStr};

use redis_module::raw;

/// What is known of one command.
pub struct CommandDocs {
    /// One line on what it does.
    pub summary: &'static CStr,
    /// Its time complexity.
    pub complexity: &'static CStr,
    /// The module version it appeared in.
    pub since: &'static CStr,
    /// Redis arity: the command name counts; negative means "at least".
    pub arity: c_int,
    /// How its keys are found and accessed; arguments of kind
    /// [`ArgKind::Key`] refer to one by index.
    pub keys: &'static [KeySpec],
    /// ACL categories, without `@`.
    pub acl_categories: &'static CStr,
    /// Its arguments, after the command name.
    pub args: &'static [ArgDocs],
}

/// Where a command's keys are and how they are accessed
/// (`REDISMODULE_CMD_KEY_*` flags).
#[derive(Clone, Copy)]
pub enum KeySpec {
    /// Keys from argument `first` to `last` (relative to `first`: 0 for one
    /// key, -1 for every remaining argument).
    Range {
        /// Access flags.
        flags: u32,
        /// Index of the first key.
        first: c_int,
        /// Index of the last key relative to the first.
        last: c_int,
    },
    /// A count of keys at argument `first`, the keys right after it.
    Counted {
        /// Access flags.
        flags: u32,
        /// Index of the count.
        first: c_int,
    },
}

impl KeySpec {
    /// A key read and updated in place: a limiter's, a holds key.
    pub const UPDATED: u32 = raw::REDISMODULE_CMD_KEY_RW
        | raw::REDISMODULE_CMD_KEY_ACCESS
        | raw::REDISMODULE_CMD_KEY_UPDATE;

    /// One key, at argument 1, read and updated (CHECK, THROTTLE, ACQUIRE,
    /// EXTEND, and the holds key of RESERVE and SETTLE).
    pub const ONE_UPDATED: KeySpec = KeySpec::Range {
        flags: KeySpec::UPDATED,
        first: 1,
        last: 0,
    };

    /// One key, at argument 1, only read (PEEK).
    pub const ONE_READ: KeySpec = KeySpec::Range {
        flags: raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS,
        first: 1,
        last: 0,
    };

    /// The access flags.
    pub fn flags(&self) -> u32 {
        match *self {
            KeySpec::Range { flags, .. } | KeySpec::Counted { flags, .. } => flags,
        }
    }

    /// Whether a count of keys comes first.
    pub fn is_counted(&self) -> bool {
        matches!(self, KeySpec::Counted { .. })
    }

    /// Where the search for keys begins.
    pub fn first(&self) -> c_int {
        match *self {
            KeySpec::Range { first, .. } | KeySpec::Counted { first, .. } => first,
        }
    }
}

/// One argument.
pub struct ArgDocs {
    /// Its name in the docs.
    pub name: &'static CStr,
    /// What it is.
    pub kind: ArgKind,
    /// The keyword before it, for an option.
    pub token: Option<&'static CStr>,
    /// May be left out.
    pub optional: bool,
    /// May be repeated.
    pub multiple: bool,
    /// For a key: the index of its key spec.
    pub key_spec: Option<c_int>,
}

/// The type of an argument.
#[derive(Clone, Copy)]
pub enum ArgKind {
    /// A key.
    Key,
    /// An integer.
    Integer,
    /// A string.
    String,
    /// A keyword alone (a choice of a [`ArgKind::OneOf`]).
    Token,
    /// One of these.
    OneOf(&'static [ArgDocs]),
    /// One of the algorithms CHECK can choose, from the list in
    /// `limiter/mod.rs`.
    Algorithm,
    /// These arguments, together.
    Block(&'static [ArgDocs]),
}

impl ArgDocs {
    /// A required argument.
    pub const fn required(name: &'static CStr, kind: ArgKind) -> ArgDocs {
        ArgDocs {
            name,
            kind,
            token: None,
            optional: false,
            multiple: false,
            key_spec: match kind {
                ArgKind::Key => Some(0),
                _ => None,
            },
        }
    }

    /// An option: a keyword and its value.
    pub const fn option(name: &'static CStr, token: &'static CStr, kind: ArgKind) -> ArgDocs {
        ArgDocs {
            token: Some(token),
            optional: true,
            ..ArgDocs::required(name, kind)
        }
    }

    /// A keyword among the choices of an option.
    pub const fn choice(name: &'static CStr, token: &'static CStr) -> ArgDocs {
        ArgDocs {
            token: Some(token),
            ..ArgDocs::required(name, ArgKind::Token)
        }
    }
}
