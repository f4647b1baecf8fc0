//! What `COMMAND INFO`, `COMMAND DOCS`, ACL and redis-cli's hints know of
//! each command, on servers that let a module say it.
//!
//! - Redis 7.0+, Valkey: `RedisModule_SetCommandInfo` gives the arity, the key
//!   spec (read-only for PEEK, so a user allowed only to read keys may run
//!   it), a summary, the complexity, the version it appeared in and every
//!   argument.
//! - Redis 7.2+, Valkey: `RedisModule_SetCommandACLCategories` puts each
//!   command in `@write`/`@read`, `@fast`/`@slow` and so on;
//! - Redis 7.4+, Valkey 8: `RedisModule_AddACLCategory` adds `@ratelimit`.
//!
//! Each function is looked up before use; a server without it keeps the
//! defaults `CreateCommand` gave (the flags and the legacy key range).

use std::ffi::{c_int, CStr};
use std::ptr;

use redis_module::raw;

use crate::server::Ctx;

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
    /// How its keys are found and accessed.
    pub keys: KeySpec,
    /// ACL categories, without `@`.
    pub acl_categories: &'static CStr,
    /// Its arguments, after the command name.
    pub args: &'static [ArgDocs],
}

/// Where the keys are (from `first`, every one up to `last`; -1 for the
/// last argument) and how they are accessed (`REDISMODULE_CMD_KEY_*`).
pub struct KeySpec {
    /// Access flags.
    pub flags: u32,
    /// Index of the first key.
    pub first: c_int,
    /// Index of the last key relative to the first (0: one key), or -1 for
    /// all the remaining arguments.
    pub last: c_int,
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
    /// The choices of a [`ArgKind::OneOf`].
    pub choices: &'static [ArgDocs],
}

/// The type of an argument.
#[derive(Clone, Copy)]
pub enum ArgKind {
    /// A key.
    Key,
    /// An integer.
    Integer,
    /// A keyword alone (a choice of a [`ArgKind::OneOf`]).
    Token,
    /// One of `choices`.
    OneOf,
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
            choices: &[],
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

/// What the server supported, for the log line at load.
#[derive(Debug, Default, Clone, Copy)]
pub struct Described {
    /// `SetCommandInfo` was there.
    pub command_info: bool,
    /// `SetCommandACLCategories` was there.
    pub acl_categories: bool,
    /// `@ratelimit` was added.
    pub own_category: bool,
}

/// Adds the `@ratelimit` ACL category, where the server can (Redis 7.4+,
/// Valkey 8). Only from `OnLoad`, before the commands are described.
pub fn add_category(ctx: Ctx) -> bool {
    let Some(add) = (unsafe { raw::RedisModule_AddACLCategory }) else {
        return false;
    };
    // SAFETY: called from OnLoad with the server's context.
    unsafe { add(ctx.as_ptr(), c"ratelimit".as_ptr()) == 0 }
}

/// Describes the command `name` to the server with what it supports.
/// Returns what could be set, or an error naming what the server refused.
pub fn describe(
    ctx: Ctx,
    name: &CStr,
    docs: &CommandDocs,
    own_category: bool,
) -> Result<Described, String> {
    let mut described = Described {
        own_category,
        ..Described::default()
    };
    let Some(get_command) = (unsafe { raw::RedisModule_GetCommand }) else {
        return Ok(described);
    };
    // SAFETY: called from OnLoad after the command was created.
    let command = unsafe { get_command(ctx.as_ptr(), name.as_ptr()) };
    if command.is_null() {
        return Err(format!("{name:?} is not registered"));
    }

    if let Some(set_categories) = unsafe { raw::RedisModule_SetCommandACLCategories } {
        let mut categories = docs.acl_categories.to_bytes().to_vec();
        if own_category {
            categories.extend_from_slice(b" ratelimit");
        }
        let categories = std::ffi::CString::new(categories).map_err(|e| e.to_string())?;
        // SAFETY: a command of this module, from OnLoad.
        if unsafe { set_categories(command, categories.as_ptr()) } != 0 {
            return Err(format!("the server refused the ACL categories of {name:?}"));
        }
        described.acl_categories = true;
    }

    if let Some(set_info) = unsafe { raw::RedisModule_SetCommandInfo } {
        let key_specs = [raw_key_spec(&docs.keys), zeroed_key_spec()];
        let mut arg_storage = Vec::new();
        let args = raw_args(docs.args, &mut arg_storage);
        let info = raw::RedisModuleCommandInfo {
            version: &INFO_VERSION,
            summary: docs.summary.as_ptr(),
            complexity: docs.complexity.as_ptr(),
            since: docs.since.as_ptr(),
            history: ptr::null_mut(),
            tips: ptr::null(),
            arity: docs.arity,
            key_specs: key_specs.as_ptr().cast_mut(),
            args,
        };
        // SAFETY: every pointer is valid for the call (the server copies
        // what it keeps); arrays end with a zeroed entry.
        if unsafe { set_info(command, &info) } != 0 {
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
    raw::RedisModuleCommandKeySpec {
        notes: ptr::null(),
        flags: u64::from(spec.flags),
        begin_search_type: raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX,
        bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
            index: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_1 { pos: spec.first },
        },
        find_keys_type: raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE,
        fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
            range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 {
                lastkey: spec.last,
                keystep: 1,
                limit: 0,
            },
        },
    }
}

/// The entry that ends the server's key-spec array.
fn zeroed_key_spec() -> raw::RedisModuleCommandKeySpec {
    // SAFETY: every field is a null pointer, an integer or a union of
    // integers; all zeros is the `BS_INVALID` entry the server stops at.
    unsafe { std::mem::zeroed() }
}

/// `args` as the server's array (ending with a zeroed entry), with the
/// arrays of choices kept alive in `storage` until the call.
fn raw_args(
    args: &[ArgDocs],
    storage: &mut Vec<Vec<raw::RedisModuleCommandArg>>,
) -> *mut raw::RedisModuleCommandArg {
    let mut list: Vec<raw::RedisModuleCommandArg> = args
        .iter()
        .map(|arg| {
            let subargs = if arg.choices.is_empty() {
                ptr::null_mut()
            } else {
                raw_args(arg.choices, storage)
            };
            let mut flags = raw::REDISMODULE_CMD_ARG_NONE;
            if arg.optional {
                flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
            }
            if arg.multiple {
                flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
            }
            raw::RedisModuleCommandArg {
                name: arg.name.as_ptr(),
                type_: match arg.kind {
                    ArgKind::Key => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
                    ArgKind::Integer => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
                    ArgKind::Token => {
                        raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN
                    }
                    ArgKind::OneOf => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF,
                },
                // Every command has one key spec: keys refer to it.
                key_spec_index: if matches!(arg.kind, ArgKind::Key) {
                    0
                } else {
                    -1
                },
                token: arg.token.map_or(ptr::null(), CStr::as_ptr),
                summary: ptr::null(),
                since: ptr::null(),
                flags: c_int::try_from(flags).unwrap_or(0),
                deprecated_since: ptr::null(),
                subargs,
                display_text: ptr::null(),
            }
        })
        .collect();
    // SAFETY of the zeroed entry: every field is a null pointer, a zero
    // integer or the zero of an integer type, which is how the server's
    // arrays end.
    list.push(unsafe { std::mem::zeroed() });
    let pointer = list.as_mut_ptr();
    // The Vec's heap buffer does not move when the Vec is moved.
    storage.push(list);
    pointer
}
