//! What the server under test can do, from its version or its command
//! table: a test runs only what the server supports, and says on stderr
//! what it left out.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use redis::ConnectionLike;

use super::reply::run;

/// Whether the server has `command` (PEXPIRETIME, EVAL_RO and FUNCTION
/// arrived in Redis 7.0).
pub fn has_command(con: &mut dyn ConnectionLike, command: &str) -> bool {
    let info: Vec<redis::Value> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg(command)
        .query(con)
        .unwrap();
    !matches!(info.first(), None | Some(redis::Value::Nil))
}

/// Whether the server has Redis 7's script flags, `EVAL_RO` and functions;
/// when not, says which part of a test it cannot run.
pub fn has_read_only_scripts(con: &mut dyn ConnectionLike, part: &str) -> bool {
    let has = has_command(con, "EVAL_RO");
    if !has {
        eprintln!("not run ({part}): this server has no read-only scripts (Redis < 7.0)");
    }
    has
}

/// What the server under test can do, from its version alone (never from
/// what the module reports, so that a module that stopped describing
/// itself fails instead of skipping).
#[derive(Debug)]
pub struct Abilities {
    /// `redis_version` (Valkey 8 says 7.2.4).
    pub redis: (u32, u32, u32),
    /// `valkey_version`, on Valkey.
    pub valkey: Option<(u32, u32, u32)>,
}

fn parse_version(text: &str) -> (u32, u32, u32) {
    let mut parts = text.trim().split('.').map(|p| p.parse::<u32>().unwrap());
    (
        parts.next().unwrap(),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

impl Abilities {
    pub fn of(con: &mut dyn ConnectionLike) -> Abilities {
        let info: String = run(con, &["INFO", "server"]);
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(parse_version)
        };
        Abilities {
            redis: field("redis_version").expect("INFO server has redis_version"),
            valkey: field("valkey_version"),
        }
    }

    /// `RedisModule_SetCommandInfo`, module configs, ACL key selectors
    /// (`%R~`), `COMMAND DOCS`: Redis 7.0+, Valkey.
    pub fn command_info(&self) -> bool {
        self.redis >= (7, 0, 0)
    }

    /// `RedisModule_SetCommandACLCategories` and
    /// `RedisModule_CachedMicroseconds`: Redis 7.2+, Valkey.
    pub fn acl_categories(&self) -> bool {
        self.redis >= (7, 2, 0)
    }

    /// The module's clock is the command time the server freezes for a
    /// whole MULTI/EXEC or script (`RedisModule_CachedMicroseconds`): Redis
    /// 7.2+, Valkey. Elsewhere it is the wall clock, which moves inside a
    /// transaction.
    pub fn frozen_clock(&self) -> bool {
        self.redis >= (7, 2, 0)
    }

    /// `RedisModule_AddACLCategory`: Redis 7.4+, Valkey 8+.
    pub fn own_category(&self) -> bool {
        match self.valkey {
            Some(valkey) => valkey >= (8, 0, 0),
            None => self.redis >= (7, 4, 0),
        }
    }

    /// `ACL CAT <category>` lists module commands: Valkey only (Redis skips
    /// every command with the module flag there, although the categories
    /// work).
    pub fn acl_cat_lists_module_commands(&self) -> bool {
        self.valkey.is_some()
    }
}
