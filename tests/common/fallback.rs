//! The script fallback (`fallback/ratelimit.lua`) beside the module: loading
//! it, calling it as a function or through EVAL, reading keys exactly, and
//! a differential engine that sends the same seeded calls to the module and
//! to the library on twin keys of one server, at one instant, and compares
//! replies, error texts, values and absolute expiries.
//!
//! Each logical key `i` has a module twin and a function twin ([`Naming`]):
//! `m:{i}` and `f:{i}` side by side, or one name (any bytes, a keyword too)
//! in database 0 for the module and database 1 for the library. The module
//! always reads the server's clock; the instant is revealed by
//! `RATELIMIT.PEEK probe 10 1000000000` on a counter whose expiry is known
//! (its `reset_after_ms` is the expiry minus now), which changes nothing.
//! Two ways to give the library that same instant:
//!
//! - [`Clock::Pinned`]: the module call runs in MULTI between two probes;
//!   when they agree, the library is called with `NOW` at that instant.
//! - [`Clock::Server`]: the library reads TIME itself, in the same
//!   MULTI as the module call, between probes of both clocks; the step
//!   counts when all of them name one millisecond. A call whose last two
//!   arguments the library would take for its `NOW unix_ms` pair
//!   ([`reads_as_clock_pair`]) cannot be compared so, and is not run.
//!
//! A step whose instant cannot be pinned is not compared: the module twin
//! is copied over the function twin (COPY, with its expiry) and the run
//! goes on. Runs assert how many steps they compared.
//!
//! Time moves on by itself (periods of 1 to 3 s turn over during a run),
//! and further by ageing both twins alike: their expiries and lease
//! deadlines moved back by up to 10 s, which is what that much waiting
//! would leave them, so windows end, buckets refill and leases lapse
//! without a sleep.
//!
//! Keys are also set by hand to what no limiter writes ([`hostile_seeds`]):
//! lease sets scored `+inf`, `-inf`, 2^63, 9.5e18, past 2^53, below zero
//! and between milliseconds, members named like keywords, with and without
//! a TTL; limiter values wider than any the module writes. Every compared
//! reply must also be exact in a double: no integer in it above
//! [`MAX_EXACT`].
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::{Cmd, Connection, ConnectionLike, Value};

use super::abilities::has_command;
use super::workload::Lcg;

/// The library, as shipped.
pub const LIBRARY: &str = include_str!("../../fallback/ratelimit.lua");

/// The library as a script for EVAL: the same text less its `#!lua` line
/// (`tail -n +2 fallback/ratelimit.lua`).
pub fn eval_script() -> &'static str {
    LIBRARY.split_once('\n').unwrap().1
}

/// `FUNCTION LOAD REPLACE` of the library.
pub fn load_library(con: &mut dyn ConnectionLike) {
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(LIBRARY)
        .query(con)
        .unwrap();
    assert_eq!(name, "ratelimit");
}

/// How the library is called.
#[derive(Clone, Debug)]
pub enum Route {
    /// `FCALL ratelimit_<verb>` (`FCALL_RO` for the read-only ones).
    Function,
    /// `EVALSHA <sha> numkeys keys… ratelimit_<verb> args…`.
    Eval { sha: String },
}

/// The verbs registered `no-writes`.
pub const READ_ONLY_VERBS: [&str; 3] = ["peek", "mpeek", "version"];

impl Route {
    /// Functions where the server has them (7.0+, Valkey), loaded;
    /// otherwise the script.
    pub fn for_server(con: &mut dyn ConnectionLike) -> Route {
        if has_command(con, "FUNCTION") {
            load_library(con);
            Route::Function
        } else {
            Route::eval(con)
        }
    }

    /// The script, loaded with SCRIPT LOAD.
    pub fn eval(con: &mut dyn ConnectionLike) -> Route {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(eval_script())
            .query(con)
            .unwrap();
        Route::Eval { sha }
    }

    /// The call of `verb` on `keys` with `args` (NOW included, if any).
    pub fn cmd(&self, verb: &str, keys: &[Vec<u8>], args: &[Vec<u8>]) -> Cmd {
        let name = format!("ratelimit_{verb}");
        let mut cmd = match self {
            Route::Function if READ_ONLY_VERBS.contains(&verb) => {
                let mut c = redis::cmd("FCALL_RO");
                c.arg(&name);
                c
            }
            Route::Function => {
                let mut c = redis::cmd("FCALL");
                c.arg(&name);
                c
            }
            Route::Eval { sha } => {
                let mut c = redis::cmd("EVALSHA");
                c.arg(sha);
                c
            }
        };
        cmd.arg(keys.len());
        for key in keys {
            cmd.arg(key);
        }
        if let Route::Eval { .. } = self {
            cmd.arg(&name);
        }
        for arg in args {
            cmd.arg(arg);
        }
        cmd
    }

    /// Calls `verb` with text arguments, success or error.
    pub fn call(
        &self,
        con: &mut dyn ConnectionLike,
        verb: &str,
        keys: &[&str],
        args: &[&str],
    ) -> redis::RedisResult<Value> {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        self.cmd(verb, &keys, &args).query(con)
    }
}

/// The arguments RESERVE and SETTLE take between their holds key and
/// `numkeys` (`id ttl_ms`, `id`); none for the other commands.
pub fn holds_first(verb: &str) -> Option<usize> {
    match verb {
        "reserve" => Some(2),
        "settle" => Some(1),
        _ => None,
    }
}

/// Whether the module's call has a `numkeys` that the library's FCALL
/// numkeys stands for: MCHECK's and MPEEK's (their keys), RESERVE's and
/// SETTLE's (their keys less the holds key).
pub fn counts_keys(verb: &str) -> bool {
    matches!(verb, "mcheck" | "mpeek") || holds_first(verb).is_some()
}

/// The module's command for `verb`, in lower case: `ratelimit.<verb>
/// [numkeys] keys… args…`; for RESERVE and SETTLE, as the library reads
/// FCALL's keys and arguments: the holds key (the first key), their first
/// arguments, `numkeys` (the other keys' count) and the other keys, then
/// the rest of the arguments.
pub fn module_cmd(verb: &str, keys: &[Vec<u8>], args: &[Vec<u8>]) -> Cmd {
    let mut cmd = redis::cmd(&format!("ratelimit.{verb}"));
    if let Some(first) = holds_first(verb) {
        let first = first.min(args.len());
        if let Some(holds) = keys.first() {
            cmd.arg(holds);
        }
        cmd.arg(&args[..first]);
        cmd.arg(keys.len() as i64 - 1);
        cmd.arg(keys.get(1..).unwrap_or_default());
        cmd.arg(&args[first..]);
        return cmd;
    }
    if verb == "mcheck" || verb == "mpeek" {
        cmd.arg(keys.len());
    }
    for key in keys {
        cmd.arg(key);
    }
    for arg in args {
        cmd.arg(arg);
    }
    cmd
}

/// Milliseconds since the epoch on this machine's clock (the servers'
/// clock too: they run here).
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The largest integer a reply may hold: every integer up to it is exact
/// in a double (a Lua number, a JavaScript number), so a client reading
/// replies through one reads them unchanged. A longer wait is replied as
/// this.
pub const MAX_EXACT: i64 = (1 << 53) - 1;

/// Every integer in a reply, nested arrays included.
pub fn reply_integers(reply: &Value, out: &mut Vec<i64>) {
    match reply {
        Value::Int(n) => out.push(*n),
        Value::Array(items) | Value::Set(items) => {
            for item in items {
                reply_integers(item, out);
            }
        }
        Value::Map(pairs) => {
            for (k, v) in pairs {
                reply_integers(k, out);
                reply_integers(v, out);
            }
        }
        _ => {}
    }
}

/// A script prelude: `expiry(key)`, the absolute expiry in ms (-1 none, -2
/// no key), with PEXPIRETIME where the server has it, else TIME, PTTL, TIME
/// until both readings of the clock name one millisecond. A Lua number is
/// a double: past 2^53 the expiry it gives is rounded.
const EXPIRY_LUA: &str = r#"
local function expiry(key)
  if redis.REDIS_VERSION_NUM then return redis.call('PEXPIRETIME', key) end
  for _ = 1, 1000 do
    local a = redis.call('TIME')
    local ttl = redis.call('PTTL', key)
    local b = redis.call('TIME')
    if ttl < 0 then return ttl end
    local a_ms = tonumber(a[1]) * 1000 + math.floor(tonumber(a[2]) / 1000)
    local b_ms = tonumber(b[1]) * 1000 + math.floor(tonumber(b[2]) / 1000)
    if a_ms == b_ms then return b_ms + ttl end
  end
  return redis.error_reply('ERR the clock would not hold still')
end
"#;

/// Reads every key of KEYS at one instant: {type, value, expiry} each; the
/// value of a sorted set is ZRANGE WITHSCORES (scores as the server writes
/// them), of a hash HGETALL (fields in the server's order), of another
/// type its name. The expiry passes through a double:
/// where the server has PEXPIRETIME, [`add_reader`] reads it exactly
/// beside the script.
fn reader_script() -> String {
    format!(
        "{EXPIRY_LUA}
local out = {{}}
for i, key in ipairs(KEYS) do
  local t = redis.call('TYPE', key).ok
  local value = t
  if t == 'string' then value = redis.call('GET', key)
  elseif t == 'zset' then value = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  elseif t == 'hash' then value = redis.call('HGETALL', key)
  elseif t == 'none' then value = false end
  out[i] = {{t, value, expiry(key)}}
end
return out"
    )
}

/// Copies KEYS[2i-1] over KEYS[2i] with COPY, which keeps the absolute
/// expiry exactly (even 2^63 - 1, which no double holds), into database
/// ARGV[1] (empty: the same one; ARGV[2] is the source's). A key about to
/// expire (its copy would go at once, or not) goes from both.
fn copy_script() -> String {
    format!(
        "{EXPIRY_LUA}
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local to_db, from_db = ARGV[1], ARGV[2]
for i = 1, #KEYS, 2 do
  local at = expiry(KEYS[i])
  if at > 0 and at <= now_ms + 1 then
    redis.call('DEL', KEYS[i])
    at = -2
  end
  if at == -2 then
    if to_db ~= '' then redis.call('SELECT', to_db) end
    redis.call('DEL', KEYS[i + 1])
    if to_db ~= '' then redis.call('SELECT', from_db) end
  elseif to_db ~= '' then
    redis.call('COPY', KEYS[i], KEYS[i + 1], 'DB', to_db, 'REPLACE')
  else
    redis.call('COPY', KEYS[i], KEYS[i + 1], 'REPLACE')
  end
end
return 1"
    )
}

/// Moves every key of KEYS ARGV[1] ms back in time: the scores of a sorted
/// set (lease deadlines, with a TTL or not), the times a hash of holds
/// keeps (its sweep time, each record's deadline and a live one's charge
/// time; anything else as it is) and the key's expiry, as if that much
/// time had passed. An expiry past 2^53 (a set held until released
/// expires at 2^63 - 1) is left as it is: a double cannot hold it, and ten
/// seconds are nothing to it.
fn age_script() -> String {
    format!(
        "{EXPIRY_LUA}
local by = tonumber(ARGV[1])
local function earlier(digits)
  local n = tonumber(digits)
  if n == nil or n >= 2^53 or n < by then return digits end
  return string.format('%d', n - by)
end
for _, key in ipairs(KEYS) do
  local at = expiry(key)
  local t = redis.call('TYPE', key).ok
  if t == 'zset' then
    local members = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    for i = 1, #members, 2 do
      redis.call('ZADD', key, string.format('%.17g', tonumber(members[i + 1]) - by), members[i])
    end
  elseif t == 'hash' then
    local fields = redis.call('HGETALL', key)
    for i = 1, #fields, 2 do
      local field, value = fields[i], fields[i + 1]
      local aged = value
      if field == '' and value:match('^[1-9]%d*$') then
        aged = earlier(value)
      else
        local deadline, charged_at, rest = value:match('^L ([1-9]%d*) ([1-9]%d*)( .*)$')
        if deadline then
          aged = 'L ' .. earlier(deadline) .. ' ' .. earlier(charged_at) .. rest
        else
          local settled, tail = value:match('^S ([1-9]%d*)( .*)$')
          if settled then aged = 'S ' .. earlier(settled) .. tail end
        end
      end
      if aged ~= value then redis.call('HSET', key, field, aged) end
    end
  end
  if at > 0 and at < 2^53 then
    redis.call('PEXPIREAT', key, string.format('%d', at - by))
  end
end
return 1"
    )
}

/// Moves `keys` `by_ms` back in time, as [`Step::Age`] does for twins:
/// lease deadlines, the times a hash of holds keeps, and expiries.
pub fn age_keys(con: &mut dyn ConnectionLike, keys: &[Vec<u8>], by_ms: u64) {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(age_script()).arg(keys.len());
    for key in keys {
        cmd.arg(key);
    }
    let _: i64 = cmd.arg(by_ms).query(con).unwrap();
}

/// What a key holds, read exactly.
#[derive(Clone, PartialEq)]
pub struct KeyState {
    /// `TYPE`.
    pub kind: String,
    /// A string's value; a sorted set's members and scores, in order; a
    /// hash's fields and values, by field (the server's order depends on
    /// the hash's history, not only on what it holds); otherwise empty.
    pub value: Vec<Vec<u8>>,
    /// PEXPIRETIME: UNIX ms, -1 for none, -2 for no key.
    pub expires_at: i64,
}

impl std::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value: Vec<String> = self
            .value
            .iter()
            .map(|v| v.escape_ascii().to_string())
            .collect();
        write!(f, "{} {value:?} expiring at {}", self.kind, self.expires_at)
    }
}

fn key_state(v: &Value) -> KeyState {
    let Value::Array(parts) = v else {
        panic!("not a key state: {v:?}")
    };
    let kind = redis::from_redis_value_ref::<String>(&parts[0]).unwrap();
    let mut value: Vec<Vec<u8>> = match &parts[1] {
        Value::Nil => Vec::new(),
        Value::BulkString(b) if kind == "string" => vec![b.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| redis::from_redis_value_ref::<Vec<u8>>(i).unwrap())
            .collect(),
        _ => Vec::new(),
    };
    if kind == "hash" {
        let mut pairs: Vec<[Vec<u8>; 2]> = value
            .chunks(2)
            .map(|c| [c[0].clone(), c[1].clone()])
            .collect();
        pairs.sort();
        value = pairs.into_iter().flatten().collect();
    }
    let expires_at = redis::from_redis_value_ref::<i64>(&parts[2]).unwrap();
    KeyState {
        kind,
        value,
        expires_at,
    }
}

fn reader_cmd(keys: &[Vec<u8>]) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(reader_script()).arg(keys.len());
    for key in keys {
        cmd.arg(key);
    }
    cmd
}

/// Adds to `pipe` (a MULTI/EXEC) the commands that read `keys` at one
/// instant, and returns how many it added: the reader script, then, where
/// the server has PEXPIRETIME (`exact`), PEXPIRETIME of each key.
fn add_reader(pipe: &mut redis::Pipeline, keys: &[Vec<u8>], exact: bool) -> usize {
    pipe.add_command(reader_cmd(keys));
    if !exact {
        return 1;
    }
    for key in keys {
        pipe.cmd("PEXPIRETIME").arg(key);
    }
    1 + keys.len()
}

/// The states of `count` keys from the replies to [`add_reader`]'s
/// commands. A key that expired between the script and its PEXPIRETIME is
/// read as gone.
fn parse_reader(replies: &[Value], count: usize, exact: bool) -> Vec<KeyState> {
    let Value::Array(states) = &replies[0] else {
        panic!("reading the keys failed: {:?}", replies[0])
    };
    let mut states: Vec<KeyState> = states.iter().map(key_state).collect();
    assert_eq!(states.len(), count, "{states:?}");
    if exact {
        for (n, state) in states.iter_mut().enumerate() {
            state.expires_at = redis::from_redis_value_ref(&replies[1 + n])
                .unwrap_or_else(|e| panic!("PEXPIRETIME replied {:?}: {e}", replies[1 + n]));
            if state.expires_at == -2 {
                *state = KeyState {
                    kind: "none".into(),
                    value: Vec::new(),
                    expires_at: -2,
                };
            }
        }
    }
    states
}

/// Reads `keys` at one instant.
pub fn read_keys(con: &mut dyn ConnectionLike, keys: &[Vec<u8>]) -> Vec<KeyState> {
    let exact = has_command(con, "PEXPIRETIME");
    let mut pipe = redis::pipe();
    pipe.atomic();
    let added = add_reader(&mut pipe, keys, exact);
    let replies: Vec<Value> = pipe.query(con).unwrap();
    parse_reader(&replies[..added], keys.len(), exact)
}

/// Every key of the current database, read at one instant, by name. A key
/// that KEYS listed and that expired before it was read is left out.
pub fn read_all(con: &mut dyn ConnectionLike) -> BTreeMap<Vec<u8>, KeyState> {
    let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(con).unwrap();
    keys.sort();
    let states = read_keys(con, &keys);
    keys.into_iter()
        .zip(states)
        .filter(|(_, state)| state.kind != "none")
        .collect()
}

/// A counter whose expiry is known, so that `RATELIMIT.PEEK probe 10
/// 1000000000` (and the library's peek) says what time it is.
pub struct Probe {
    key: String,
    expires_at: i64,
}

impl Probe {
    pub fn set(con: &mut dyn ConnectionLike, key: &str) -> Probe {
        let expires_at = unix_ms() + 100_000_000_000;
        let probe = Probe {
            key: key.to_string(),
            expires_at,
        };
        probe.set_again(con);
        probe
    }

    /// The same counter, with the same expiry, in the current database.
    pub fn set_again(&self, con: &mut dyn ConnectionLike) {
        let _: () = redis::cmd("SET")
            .arg(&self.key)
            .arg(1)
            .arg("PXAT")
            .arg(self.expires_at)
            .query(con)
            .unwrap();
    }

    const ARGS: [&'static str; 2] = ["10", "1000000000"];

    /// The module's look at the probe.
    pub fn module(&self) -> Cmd {
        let mut cmd = redis::cmd("ratelimit.peek");
        cmd.arg(&self.key).arg(&Self::ARGS[..]);
        cmd
    }

    /// The library's look at the probe, on its own clock (TIME).
    pub fn library(&self, route: &Route) -> Cmd {
        let args: Vec<Vec<u8>> = Self::ARGS.iter().map(|a| a.as_bytes().to_vec()).collect();
        route.cmd("peek", &[self.key.as_bytes().to_vec()], &args)
    }

    /// The instant a look replied at.
    pub fn instant(&self, reply: &Value) -> i64 {
        let fields: Vec<i64> = redis::from_redis_value_ref(reply)
            .unwrap_or_else(|e| panic!("probe reply {reply:?}: {e}"));
        self.expires_at - fields[4]
    }
}

/// How the library learns the instant of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// `NOW <ms>`, the instant the module used.
    Pinned,
    /// The server's TIME, read by the library itself.
    Server,
}

/// The least number of arguments each command takes after its name (the
/// module's arity; MCHECK's, MPEEK's, RESERVE's and SETTLE's count
/// `numkeys`).
fn least_arguments(verb: &str) -> usize {
    match verb {
        "reserve" => 8,
        "settle" => 9,
        "check" | "peek" | "acquire" | "renew" | "extend" => 3,
        "throttle" => 4,
        "release" => 2,
        "mcheck" | "mpeek" => 5,
        "reset" => 1,
        _ => 0,
    }
}

/// Whether the library takes the last two of `args` (its arguments after
/// the `keys` keys) for its `NOW unix_ms` clock pair: the next to last is
/// `NOW` in any case, and what comes before still makes the command's
/// least number of arguments. The module reads the same two as its own (an
/// option, lease ids): such a call means something else to each unless the
/// library is given a clock pair after them.
pub fn reads_as_clock_pair(verb: &str, keys: usize, args: &[Vec<u8>]) -> bool {
    let n = args.len();
    if n < 2 || !args[n - 2].eq_ignore_ascii_case(b"NOW") {
        return false;
    }
    let numkeys = usize::from(counts_keys(verb));
    numkeys + keys + n - 2 >= least_arguments(verb)
}

/// What each logical key is mostly used as.
#[derive(Clone, Debug)]
pub enum Home {
    /// CHECK with `ALGORITHM kind`, `limit` per `period_s`, `BURST`.
    Check {
        kind: &'static str,
        limit: u64,
        period_s: u64,
        burst: Option<u64>,
    },
    /// THROTTLE `max_burst count period_s`.
    Throttle {
        max_burst: u64,
        count: u64,
        period_s: u64,
    },
    /// ACQUIRE `max lease_ms`.
    Leases { max: u64, lease_ms: u64 },
    /// A key holding what no limiter wrote.
    Foreign,
}

/// The logical keys of a differential run: every kind, short periods so
/// windows and buckets turn over during the run, and two foreign keys.
pub fn homes() -> Vec<Home> {
    let check = |kind, limit, period_s, burst| Home::Check {
        kind,
        limit,
        period_s,
        burst,
    };
    vec![
        check("FIXED", 5, 1, None),
        check("FIXED", 3, 2, None),
        check("FIXED", 100, 60, None),
        check("SLIDING", 5, 1, None),
        check("SLIDING", 10, 2, None),
        check("SLIDING", 3, 3, None),
        check("TOKEN", 5, 1, Some(10)),
        check("TOKEN", 3, 2, None),
        check("TOKEN", 1000, 1, Some(50)),
        Home::Throttle {
            max_burst: 2,
            count: 5,
            period_s: 1,
        },
        Home::Throttle {
            max_burst: 0,
            count: 1,
            period_s: 1,
        },
        Home::Throttle {
            max_burst: 5,
            count: 30,
            period_s: 60,
        },
        Home::Leases {
            max: 2,
            lease_ms: 500,
        },
        Home::Leases {
            max: 3,
            lease_ms: 2000,
        },
        Home::Foreign,
        Home::Foreign,
    ]
}

/// One step of a run.
#[derive(Clone, Debug)]
pub enum Step {
    /// A command on logical keys: the same arguments to both sides (lease
    /// ids translated for the library).
    Call {
        verb: &'static str,
        keys: Vec<usize>,
        args: Vec<String>,
    },
    /// Both twins of `keys` aged by `by_ms`.
    Age { keys: Vec<usize>, by_ms: u64 },
    /// Both twins of `key` set to what no limiter (or a limiter, by hand)
    /// wrote: the commands, with `{k}` for the key. `label` names the kind
    /// of state, for the run's account of what it compared after it.
    Seed {
        key: usize,
        label: String,
        commands: Vec<Vec<String>>,
    },
}

/// A key's state set by hand: the commands (`{k}` for the key), what they
/// make, and whether it is a lease set (else a string for any limiter).
#[derive(Clone, Debug)]
pub struct Seeding {
    pub label: String,
    pub commands: Vec<Vec<String>>,
    pub lease_set: bool,
}

/// 2^53: past it a double no longer holds every integer.
const TWO_POW_53: u64 = 1 << 53;

/// States no command writes, as an operator or another client could leave
/// them, relative to `now_ms`:
///
/// - lease sets whose scores read as the deadlines the rules give them:
///   `+inf`, 2^63 and 9.5e18 (held until released: the key expires at
///   2^63 - 1), `-inf` and below zero (ended), 2^53 + k (past what a
///   double holds exactly), between milliseconds (cut to the ms); members
///   named `NOW`, `now`, `LIMIT`, `ID`; a set whose leases all ended under
///   a later TTL; each without a TTL, with one before its last deadline,
///   one after it, and one far away;
/// - limiter values wider than 21 bytes for every tag: `T` and `G` with 25
///   digits (read, and written back at most 20 wide), and ones no limiter
///   reads (too large, zero-padded counts, padded sliding counts).
pub fn hostile_seeds(now_ms: i64) -> Vec<Seeding> {
    let at = |ms: i64| (now_ms + ms).to_string();
    let later = at(2_500);
    let past = at(-2_500);
    let sets: Vec<(&str, Vec<(String, &str)>)> = vec![
        (
            "+inf slot",
            vec![("+inf".into(), "hold"), (later.clone(), "job-1")],
        ),
        (
            "-inf",
            vec![("-inf".into(), "gone"), (later.clone(), "job-1")],
        ),
        (
            "2^63",
            vec![
                ("9223372036854775808".into(), "huge"),
                (later.clone(), "job-2"),
            ],
        ),
        ("9.5e18", vec![("9.5e18".into(), "huge")]),
        (
            "2^53+k",
            vec![
                (TWO_POW_53.to_string(), "big-0"),
                ((TWO_POW_53 + 1).to_string(), "big-1"),
                ((TWO_POW_53 + 3).to_string(), "big-3"),
                (later.clone(), "job-0"),
            ],
        ),
        (
            "negative",
            vec![
                ("-3".into(), "neg"),
                ("-0.5".into(), "half"),
                (later.clone(), "job-1"),
            ],
        ),
        (
            "fractional",
            vec![
                (format!("{later}.5"), "frac"),
                (format!("{past}.25"), "past"),
                (format!("{}.75", at(300)), "soon"),
            ],
        ),
        (
            "keyword ids",
            vec![
                (later.clone(), "NOW"),
                (at(2_600), "now"),
                (at(2_700), "LIMIT"),
                (at(2_800), "ID"),
            ],
        ),
        (
            "only ended",
            vec![(past.clone(), "old"), (at(-10), "older")],
        ),
    ];
    let ttls: [(&str, Option<String>); 4] = [
        ("without a TTL", None),
        ("TTL before the last deadline", Some(at(800))),
        ("TTL after the last deadline", Some(at(6_000))),
        ("TTL far away", Some(at(4_000_000_000))),
    ];
    let mut seeds = Vec::new();
    for (name, members) in &sets {
        for (ttl_name, ttl) in &ttls {
            let mut zadd = vec!["ZADD".to_string(), "{k}".into()];
            for (score, member) in members {
                zadd.push(score.clone());
                zadd.push(member.to_string());
            }
            let mut commands = vec![vec!["DEL".to_string(), "{k}".into()], zadd];
            if let Some(ttl) = ttl {
                commands.push(vec!["PEXPIREAT".into(), "{k}".into(), ttl.clone()]);
            }
            seeds.push(Seeding {
                label: format!("lease set {name}, {ttl_name}"),
                commands,
                lease_set: true,
            });
        }
    }
    let zeros = |n: usize| "0".repeat(n);
    let strings: Vec<(&str, String, Option<String>)> = vec![
        (
            "T 25 digits",
            format!("T{}", zeros(25)),
            Some(later.clone()),
        ),
        (
            "T 25 digits far",
            format!("T{}12345", zeros(20)),
            Some(at(4_000_000_000)),
        ),
        ("T 25 digits no TTL", format!("T{}7", zeros(24)), None),
        (
            "T past u64",
            format!("T{}18446744073709551616", zeros(5)),
            Some(later.clone()),
        ),
        (
            "G 25 digits",
            format!("G{}7", zeros(24)),
            Some(later.clone()),
        ),
        (
            "G 25 digits far",
            format!("G{}999", zeros(22)),
            Some(at(4_000_000_000)),
        ),
        (
            "S 40 bytes",
            "S9223372036854775807:9223372036854775807".into(),
            Some(later.clone()),
        ),
        (
            "S zero-padded",
            format!("S{}1:2", zeros(22)),
            Some(later.clone()),
        ),
        ("count zero-padded", format!("{}5", zeros(24)), None),
        (
            "count past i64",
            "92233720368547758079999999".into(),
            Some(later.clone()),
        ),
    ];
    for (name, value, ttl) in strings {
        let mut set = vec!["SET".to_string(), "{k}".into(), value];
        if let Some(ttl) = ttl {
            set.extend(["PXAT".to_string(), ttl]);
        }
        seeds.push(Seeding {
            label: format!("value {name}"),
            commands: vec![set],
            lease_set: false,
        });
    }
    seeds
}

/// Seeded calls over [`homes`]: every command, algorithm and option,
/// cost 0, denials, changed parameters, foreign and hostile values, lease
/// ids named like keywords, and every error form.
pub struct Generator {
    rng: Lcg,
    pub homes: Vec<Home>,
    /// Steps in 100 that set a key by hand.
    seed_share: u64,
    /// Seeds in 4 that are [`hostile_seeds`].
    hostile_share: u64,
}

fn pick<'a, T>(rng: &mut Lcg, items: &'a [T]) -> &'a T {
    &items[rng.index(items.len())]
}

/// A keyword in a random case.
fn cased(rng: &mut Lcg, word: &str) -> String {
    match rng.below(4) {
        0 => word.to_lowercase(),
        1 => {
            let mut s = word.to_lowercase();
            s[..1].make_ascii_uppercase();
            s
        }
        _ => word.to_string(),
    }
}

/// Integers Redis does not take, and ones out of every range.
const NOT_INTEGERS: [&str; 12] = [
    "x",
    "",
    "1.5",
    "+5",
    "05",
    " 5",
    "5 ",
    "1e3",
    "-0",
    "0x10",
    "9223372036854775808",
    "٣",
];

/// Lease ids a client may give that read like the commands' keywords.
const KEYWORD_IDS: [&str; 6] = ["NOW", "now", "Now", "LIMIT", "ID", "id"];

impl Generator {
    /// The mix the differential runs use: a key set by hand in about one
    /// step in 33, half the time to a hostile state.
    pub fn new(seed: u64) -> Generator {
        Generator {
            rng: Lcg::new(seed),
            homes: homes(),
            seed_share: 3,
            hostile_share: 2,
        }
    }

    /// A mix that sets keys to [`hostile_seeds`] in one step in 8, so that
    /// every such state meets every command in a short run.
    pub fn hostile(seed: u64) -> Generator {
        Generator {
            seed_share: 12,
            hostile_share: 3,
            ..Generator::new(seed)
        }
    }

    fn keys_where(&self, f: impl Fn(&Home) -> bool) -> Vec<usize> {
        (0..self.homes.len())
            .filter(|&i| f(&self.homes[i]))
            .collect()
    }

    /// Up to `most` distinct keys from `pool`.
    fn distinct(&mut self, pool: &[usize], most: usize) -> Vec<usize> {
        let count = 1 + self.rng.index(most);
        let mut chosen = Vec::new();
        while chosen.len() < count.min(pool.len()) {
            let k = *pick(&mut self.rng, pool);
            if !chosen.contains(&k) {
                chosen.push(k);
            }
        }
        chosen
    }

    /// CHECK's arguments after the key for logical key `key`: mostly its
    /// home, sometimes changed parameters or another algorithm.
    fn limit_args(&mut self, key: usize) -> Vec<String> {
        let rng = &mut self.rng;
        let (mut kind, mut limit, mut period_s, mut burst) = match &self.homes[key] {
            Home::Check {
                kind,
                limit,
                period_s,
                burst,
            } => (*kind, *limit, *period_s, *burst),
            _ => (*pick(rng, &["FIXED", "SLIDING", "TOKEN"]), 3, 1, None),
        };
        match rng.below(20) {
            // A lower limit, a shorter or longer period, another burst.
            0 => limit = 1 + rng.below(limit.max(2) - 1),
            1 => period_s = 1 + rng.below(period_s),
            2 => period_s *= 2,
            3 if kind == "TOKEN" => burst = Some(1 + rng.below(2 * limit)),
            // Another algorithm on the key: its state is refused.
            4 if rng.below(2) == 0 => kind = *pick(rng, &["FIXED", "SLIDING", "TOKEN"]),
            // Large parameters within the fallback's bounds.
            5 => {
                (limit, period_s, burst) = *pick(
                    rng,
                    &[
                        (1_000_000_000_000_000, 1_000_000_000, None),
                        (1_000_000, 1_000_000, None),
                        (1_000_000_000, 1, Some(9_000_000_000_000)),
                        (7, 86_400, Some(1_000)),
                    ],
                );
                if kind == "SLIDING" && limit.saturating_mul(period_s) >= 9_007_199_254_740 {
                    (limit, period_s) = (1_000_000, 1_000_000);
                }
                if kind == "TOKEN"
                    && burst.unwrap_or(limit).saturating_mul(period_s) >= 9_007_199_254_740
                {
                    burst = Some(1_000);
                }
                if kind != "TOKEN" {
                    burst = None;
                }
            }
            _ => {}
        }
        let mut args = vec![limit.to_string(), period_s.to_string()];
        let cost = match rng.below(20) {
            0 | 1 => Some(0),
            2..=9 => None,
            10..=13 => Some(1),
            14..=18 => Some(1 + rng.below(burst.unwrap_or(limit).min(20))),
            _ => Some(burst.unwrap_or(limit).saturating_add(1 + rng.below(3))),
        };
        let mut options: Vec<[String; 2]> = Vec::new();
        if let Some(cost) = cost {
            options.push([cased(rng, "COST"), cost.to_string()]);
        }
        if kind != "FIXED" || rng.below(4) == 0 {
            options.push([cased(rng, "ALGORITHM"), cased(rng, kind)]);
        }
        if let Some(burst) = burst.filter(|_| kind == "TOKEN") {
            options.push([cased(rng, "BURST"), burst.to_string()]);
        }
        while !options.is_empty() {
            let i = rng.index(options.len());
            args.extend(options.remove(i));
        }
        args
    }

    fn throttle_args(&mut self, key: usize) -> Vec<String> {
        let rng = &mut self.rng;
        let (mut max_burst, mut count, mut period_s) = match &self.homes[key] {
            Home::Throttle {
                max_burst,
                count,
                period_s,
            } => (*max_burst, *count, *period_s),
            _ => (1, 2, 1),
        };
        match rng.below(20) {
            0 => max_burst = rng.below(max_burst + 1),
            1 => count = 1 + rng.below(count * 2),
            2 => period_s = 1 + rng.below(period_s * 2),
            3 => (max_burst, count, period_s) = (999, 1, 9),
            4 => (max_burst, count, period_s) = (0, 1_000_000_000, 1),
            _ => {}
        }
        let mut args = vec![
            max_burst.to_string(),
            count.to_string(),
            period_s.to_string(),
        ];
        match rng.below(10) {
            0..=3 => {}
            4 => args.push("0".into()),
            5..=7 => args.push("1".into()),
            _ => args.push((2 + rng.below(max_burst + 2)).to_string()),
        }
        args
    }

    /// A lease id: a client's, one the module made for this key, unknown,
    /// or named like a keyword (`NOW` is refused; the others are ids).
    fn lease_id(&mut self, made: &[String]) -> String {
        match self.rng.below(8) {
            0 | 1 if !made.is_empty() => pick(&mut self.rng, made).clone(),
            5 => "nobody".into(),
            6 => pick(&mut self.rng, &KEYWORD_IDS).to_string(),
            _ => format!("job-{}", self.rng.below(4)),
        }
    }

    fn lease_home(&self, key: usize) -> (u64, u64) {
        match &self.homes[key] {
            Home::Leases { max, lease_ms } => (*max, *lease_ms),
            _ => (2, 1000),
        }
    }

    /// The next step; `made[i]` holds the lease ids the module made for
    /// logical key `i`.
    pub fn next(&mut self, made: &[Vec<String>]) -> Step {
        if self.rng.below(100) < self.seed_share {
            return self.seed();
        }
        let all: Vec<usize> = (0..self.homes.len()).collect();
        let checks = self.keys_where(|h| matches!(h, Home::Check { .. }));
        let counted = self.keys_where(|h| matches!(h, Home::Check { .. } | Home::Foreign));
        let throttles = self.keys_where(|h| matches!(h, Home::Throttle { .. }));
        let leases = self.keys_where(|h| matches!(h, Home::Leases { .. }));
        let roll = self.rng.below(97);
        // A key of another home now and then: its value is refused.
        let stray = self.rng.below(50) == 0;
        let one = |g: &mut Generator, pool: &[usize]| -> usize {
            if stray {
                *pick(&mut g.rng, &all)
            } else {
                *pick(&mut g.rng, pool)
            }
        };
        match roll {
            0..=29 => {
                let key = one(self, &checks);
                let args = self.limit_args(key);
                Step::Call {
                    verb: "check",
                    keys: vec![key],
                    args,
                }
            }
            30..=37 => {
                let key = one(self, &checks);
                let args = self.limit_args(key);
                Step::Call {
                    verb: "peek",
                    keys: vec![key],
                    args,
                }
            }
            38..=47 => {
                let key = one(self, &throttles);
                let args = self.throttle_args(key);
                Step::Call {
                    verb: "throttle",
                    keys: vec![key],
                    args,
                }
            }
            48..=57 => {
                let pool = if stray { &counted } else { &checks };
                let keys = self.distinct(pool, 3);
                let mut args = Vec::new();
                for &key in &keys {
                    args.push(cased(&mut self.rng, "LIMIT"));
                    args.extend(self.limit_args(key));
                }
                let verb = if self.rng.below(4) == 0 {
                    "mpeek"
                } else {
                    "mcheck"
                };
                Step::Call { verb, keys, args }
            }
            58..=65 => {
                let key = one(self, &leases);
                let (mut max, mut lease_ms) = self.lease_home(key);
                if self.rng.below(5) == 0 {
                    max = 1 + self.rng.below(4);
                    lease_ms = 1 + self.rng.below(3000);
                }
                let mut args = vec![max.to_string(), lease_ms.to_string()];
                if self.rng.below(2) == 0 {
                    args.push(cased(&mut self.rng, "ID"));
                    args.push(self.lease_id(&made[key]));
                }
                Step::Call {
                    verb: "acquire",
                    keys: vec![key],
                    args,
                }
            }
            66..=69 => {
                let key = one(self, &leases);
                let args = (0..1 + self.rng.below(3))
                    .map(|_| self.lease_id(&made[key]))
                    .collect();
                Step::Call {
                    verb: "release",
                    keys: vec![key],
                    args,
                }
            }
            70..=73 => {
                let key = one(self, &leases);
                let id = self.lease_id(&made[key]);
                let lease_ms = (1 + self.rng.below(3000)).to_string();
                Step::Call {
                    verb: "renew",
                    keys: vec![key],
                    args: vec![id, lease_ms],
                }
            }
            74..=76 => {
                let count = 1 + self.rng.index(3);
                let keys = (0..count).map(|_| *pick(&mut self.rng, &all)).collect();
                Step::Call {
                    verb: "reset",
                    keys,
                    args: Vec::new(),
                }
            }
            77..=89 => self.malformed(),
            _ => {
                let keys = self.distinct(&all, 2);
                let by_ms = match self.rng.below(3) {
                    0 => 1 + self.rng.below(50),
                    1 => 1 + self.rng.below(1500),
                    _ => 1 + self.rng.below(10_000),
                };
                Step::Age { keys, by_ms }
            }
        }
    }

    /// Both twins of a key set by hand: a [hostile state](hostile_seeds)
    /// (lease sets on a key of leases, mostly), or foreign values and
    /// limiter state the module would read (no expiry, odd widths, stale
    /// expiries).
    fn seed(&mut self) -> Step {
        if self.rng.below(4) < self.hostile_share {
            let now = unix_ms() - self.rng.below(2_000) as i64;
            let seeds = hostile_seeds(now);
            let seeding = pick(&mut self.rng, &seeds).clone();
            let leases = self.keys_where(|h| matches!(h, Home::Leases { .. }));
            let key = if seeding.lease_set && self.rng.below(8) != 0 {
                *pick(&mut self.rng, &leases)
            } else {
                self.rng.index(self.homes.len())
            };
            return Step::Seed {
                key,
                label: seeding.label,
                commands: seeding.commands,
            };
        }
        let key = self.rng.index(self.homes.len());
        let later = (unix_ms() + 1 + self.rng.below(5000) as i64).to_string();
        let far = (unix_ms() + 4_000_000_000 + self.rng.below(1000) as i64).to_string();
        let set = |value: &str, at: Option<&str>| {
            let mut c = vec!["SET".to_string(), "{k}".into(), value.to_string()];
            if let Some(at) = at {
                c.extend(["PXAT".to_string(), at.to_string()]);
            }
            vec![c]
        };
        let commands = match self.rng.below(44) {
            0 => set("hello", None),
            1 => set("5", None),
            2 => set("0", None),
            3 => set("007", None),
            4 => set("-3", None),
            5 => set("9223372036854775807", Some(&later)),
            6 => set("S3:1", None),
            7 => set("S1:2:3", None),
            8 => set("S9223372036854775807:2", Some(&later)),
            9 => set("T0000000005", Some(&later)),
            10 => set("T", None),
            11 => set("T3", None),
            12 => set("G00000999", Some(&later)),
            13 => set("G18446744073709551616", None),
            14 => set("4", Some(&far)),
            15 => set("S2:4", Some(&far)),
            16 => set("T99999", Some(&far)),
            17 => set("G5", Some(&far)),
            18 => vec![
                vec!["DEL".into(), "{k}".into()],
                vec!["HSET".into(), "{k}".into(), "f".into(), "v".into()],
            ],
            19 => vec![
                vec!["DEL".into(), "{k}".into()],
                vec!["RPUSH".into(), "{k}".into(), "a".into()],
            ],
            20 => vec![
                vec!["DEL".into(), "{k}".into()],
                vec![
                    "ZADD".into(),
                    "{k}".into(),
                    format!("{}.5", later),
                    "job-1".into(),
                    "-3".into(),
                    "job-2".into(),
                ],
                vec!["PEXPIREAT".into(), "{k}".into(), far.clone()],
            ],
            _ => vec![vec!["DEL".into(), "{k}".into()]],
        };
        Step::Seed {
            key,
            label: "plain".into(),
            commands,
        }
    }

    /// A call that is refused: every error form of every command, and
    /// arguments that end like the library's `NOW unix_ms` pair.
    fn malformed(&mut self) -> Step {
        let rng = &mut self.rng;
        let key = rng.index(self.homes.len());
        let not_int = pick(rng, &NOT_INTEGERS).to_string();
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let (verb, keys, args): (&'static str, Vec<usize>, Vec<String>) = match rng.below(42) {
            0 => ("check", vec![key], s(&["10"])),
            1 => ("check", vec![], s(&[])),
            2 => ("check", vec![key], vec![not_int, "60".into()]),
            3 => ("check", vec![key], vec!["10".into(), not_int]),
            4 => ("check", vec![key], s(&["0", "0", "COST", "-1"])),
            5 => ("check", vec![key], s(&["1000000000000001", "60"])),
            6 => ("check", vec![key], s(&["10", "1000000001"])),
            7 => ("check", vec![key], s(&["10", "60", "COST"])),
            8 => (
                "check",
                vec![key],
                vec!["10".into(), "60".into(), "COST".into(), not_int],
            ),
            9 => (
                "check",
                vec![key],
                s(&["10", "60", "COST", "1000000000000001"]),
            ),
            10 => (
                "check",
                vec![key],
                s(&["10", "60", "COST", "1", "cost", "1"]),
            ),
            11 => ("check", vec![key], s(&["10", "60", "WEIGHT", "1"])),
            12 => ("peek", vec![key], s(&["10", "60", "ALGORITHM", "LEAKY"])),
            13 => ("check", vec![key], s(&["10", "60", "BURST", "5"])),
            14 => (
                "check",
                vec![key],
                s(&["10", "60", "BURST", "5", "ALGORITHM", "SLIDING"]),
            ),
            15 => (
                "check",
                vec![key],
                s(&["10", "60", "ALGORITHM", "FIXED", "BURST", "0"]),
            ),
            16 => (
                "check",
                vec![key],
                s(&["10", "60", "ALGORITHM", "TOKEN", "BURST", "100000000000000"]),
            ),
            17 => (
                "check",
                vec![key],
                s(&["10", "60", "ALGORITHM", "TOKEN", "ALGORITHM", "TOKEN"]),
            ),
            18 => (
                "check",
                vec![key],
                s(&["10", "60", "BURST", "5", "ALGORITHM", "LEAKY", "COST", "x"]),
            ),
            19 => ("throttle", vec![key], s(&["15", "30"])),
            20 => ("throttle", vec![key], s(&["15", "30", "60", "1", "2"])),
            21 => (
                "throttle",
                vec![key],
                vec![not_int, "30".into(), "60".into()],
            ),
            22 => ("throttle", vec![key], s(&["1000000000000000", "30", "60"])),
            23 => ("throttle", vec![key], s(&["15", "0", "60", "-1"])),
            24 => ("throttle", vec![key], s(&["15", "30", "0"])),
            25 => (
                "throttle",
                vec![key],
                s(&["15", "30", "60", "1000000000000001"]),
            ),
            26 => ("throttle", vec![key], s(&["0", "2000000000", "1"])),
            27 => ("throttle", vec![key], s(&["1", "1", "1000000000"])),
            28 => ("mcheck", vec![], s(&["LIMIT", "1", "1"])),
            29 => (
                "mcheck",
                (0..17).map(|i| i % 16).collect(),
                s(&["LIMIT", "1", "1"]),
            ),
            30 => ("mcheck", vec![0, 1], s(&["LIMIT", "1", "1"])),
            31 => ("mpeek", vec![0], s(&["LIMIT", "1", "1", "LIMIT", "2", "2"])),
            32 => ("mcheck", vec![0], s(&["1", "1", "1", "1"])),
            33 => ("mcheck", vec![0, 1], s(&["LIMIT", "1", "LIMIT", "1", "1"])),
            34 => (
                "mcheck",
                vec![3, 3],
                s(&["LIMIT", "1", "1", "LIMIT", "1", "1"]),
            ),
            35 => (
                "mcheck",
                vec![3, 3],
                s(&["LIMIT", "1", "1", "LIMIT", "0", "1"]),
            ),
            36 => (
                "mcheck",
                vec![key, (key + 1) % 16],
                s(&["LIMIT", "1", "1", "COST", "1", "LIMIT", "1"]),
            ),
            37 => match rng.below(6) {
                0 => ("acquire", vec![key], s(&["5"])),
                1 => ("acquire", vec![key], vec![not_int, "1000".into()]),
                2 => ("acquire", vec![key], s(&["100001", "0"])),
                3 => ("acquire", vec![key], s(&["1", "86400001"])),
                4 => ("acquire", vec![key], s(&["1", "1000", "ID"])),
                _ => ("acquire", vec![key], s(&["1", "1000", "NAME", "x"])),
            },
            38 => match rng.below(5) {
                0 => ("acquire", vec![key], s(&["1", "1000", "ID", ""])),
                1 => (
                    "acquire",
                    vec![key],
                    vec!["1".into(), "1000".into(), "ID".into(), "x".repeat(65)],
                ),
                2 => (
                    "acquire",
                    vec![key],
                    s(&["1", "1000", "ID", "a", "ID", "b"]),
                ),
                3 => ("release", vec![key], s(&[])),
                _ => ("release", vec![key], vec!["a".into(), "x".repeat(65)]),
            },
            // Lease ids NOW, and arguments ending in NOW x: a clock pair
            // to the library only where what comes before makes the
            // command's arity (see reads_as_clock_pair).
            39 => match rng.below(6) {
                0 => ("acquire", vec![key], s(&["2", "1000", "ID", "NOW"])),
                1 => ("acquire", vec![key], s(&["2", "1000", "id", "now"])),
                2 => ("release", vec![key], s(&["NOW"])),
                3 => ("release", vec![key], s(&["job-1", "now"])),
                4 => ("renew", vec![key], s(&["NOW", "1000"])),
                _ => ("renew", vec![key], s(&["Now", "1000"])),
            },
            40 => match rng.below(7) {
                0 => ("release", vec![key], s(&["NOW", "5"])),
                1 => ("renew", vec![key], s(&["NOW", "5", "1000"])),
                2 => ("check", vec![key], s(&["NOW", "5"])),
                3 => ("check", vec![key], s(&["10", "NOW", "5"])),
                4 => ("throttle", vec![key], s(&["1", "NOW", "5"])),
                5 => ("acquire", vec![key], s(&["2", "NOW", "5"])),
                _ => ("mcheck", vec![key], s(&["LIMIT", "NOW", "5"])),
            },
            _ => match rng.below(5) {
                0 => ("renew", vec![key], s(&["job-1"])),
                1 => ("renew", vec![key], s(&["job-1", "1000", "x"])),
                2 => ("renew", vec![key], s(&["", "1000"])),
                3 => ("renew", vec![key], vec!["job-1".into(), not_int]),
                _ => ("reset", vec![], s(&[])),
            },
        };
        Step::Call { verb, keys, args }
    }
}

/// What the errors of the fallback's own bounds say: arguments for which
/// the module computes past 2^53, and the library refuses.
pub const BEYOND_THE_FALLBACK: &str = "for the script fallback";

/// Which twin of a logical key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Module,
    Library,
}

/// Where the twins of the logical keys live.
#[derive(Clone, Debug)]
pub enum Naming {
    /// `m:{i}` for the module and `f:{i}` for the library, in the current
    /// database.
    Prefixed,
    /// Key `i` named `names[i]` on both sides, the module's twin in
    /// database 0 and the library's in database 1: a key may be named
    /// anything, a keyword or binary bytes, and both sides see that name.
    Databases(Vec<Vec<u8>>),
}

impl Naming {
    fn key(&self, side: Side, i: usize) -> Vec<u8> {
        match (self, side) {
            (Naming::Prefixed, Side::Module) => format!("m:{i}").into_bytes(),
            (Naming::Prefixed, Side::Library) => format!("f:{i}").into_bytes(),
            (Naming::Databases(names), _) => names[i].clone(),
        }
    }

    fn db(&self, side: Side) -> Option<u8> {
        match (self, side) {
            (Naming::Prefixed, _) => None,
            (Naming::Databases(_), Side::Module) => Some(0),
            (Naming::Databases(_), Side::Library) => Some(1),
        }
    }
}

/// A MULTI/EXEC being built, each command's place in the replies kept.
struct Tx {
    pipe: redis::Pipeline,
    len: usize,
}

impl Tx {
    fn new() -> Tx {
        let mut pipe = redis::pipe();
        pipe.atomic().ignore_errors();
        Tx { pipe, len: 0 }
    }

    /// Adds `cmd`; its reply's index.
    fn add(&mut self, cmd: Cmd) -> usize {
        self.pipe.add_command(cmd);
        self.len += 1;
        self.len - 1
    }

    fn run(&self, con: &mut Connection) -> Vec<Value> {
        let replies: Vec<Value> = self.pipe.query(con).unwrap();
        assert_eq!(replies.len(), self.len, "{replies:?}");
        replies
    }
}

/// A differential run on one server.
pub struct Twins {
    pub route: Route,
    pub clock: Clock,
    naming: Naming,
    /// Whether PEXPIRETIME reads expiries (exactly, even past 2^53).
    exact_expiry: bool,
    probe: Probe,
    generator: Generator,
    /// Per logical key: lease ids the module made, and the library's id
    /// for each.
    ids: Vec<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// The function twins' expiries as last read (pinned runs only).
    last_expiry: Vec<i64>,
    /// Per logical key: the label of the hostile state it was last set to
    /// by hand (none after a plain one), whatever calls made of it since.
    seeded: Vec<Option<String>>,
    /// Calls compared, and steps whose instant could not be pinned.
    pub compared: u64,
    pub resynced: u64,
    /// Steps compared, by verb and outcome (error or not).
    pub seen: BTreeMap<String, u64>,
    /// Calls compared on a key set to a hostile state, by `label / verb`.
    pub after_seed: BTreeMap<String, u64>,
    /// Calls not run: on the server's clock, their last two arguments
    /// would be the library's clock pair.
    pub ambiguous: u64,
    /// Alternate the function twin between the module and the library:
    /// each key is handed over at every other call.
    pub handover: bool,
    /// Logical keys read and compared after every call beside the call's
    /// own, and whose expiry at the call's instant makes it uncomparable:
    /// the keys a call may change without naming them (the limiter keys a
    /// sweep of holds refunds).
    pub watched: Vec<usize>,
    turn: u64,
}

fn error_text(v: &Value) -> Option<String> {
    match v {
        Value::ServerError(e) => Some(match e.details() {
            Some(d) => format!("{} {}", e.code(), d),
            None => e.code().to_string(),
        }),
        _ => None,
    }
}

/// Arguments as text for messages, any bytes shown.
fn shown(args: &[Vec<u8>]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.escape_ascii().to_string()).collect();
    format!("{args:?}")
}

impl Twins {
    /// A run of [`Generator::new`]`(seed)` on `m:{i}` and `f:{i}`.
    pub fn new(con: &mut Connection, route: Route, clock: Clock, seed: u64) -> Twins {
        Twins::with_generator(con, route, clock, Generator::new(seed))
    }

    /// A run of `generator`'s steps on `m:{i}` and `f:{i}`.
    pub fn with_generator(
        con: &mut Connection,
        route: Route,
        clock: Clock,
        generator: Generator,
    ) -> Twins {
        let keys = generator.homes.len();
        Twins::build(con, route, clock, Naming::Prefixed, keys, generator)
    }

    /// Twins for calls the caller makes ([`Twins::call`],
    /// [`Twins::step`]) on keys named by `naming`: with
    /// [`Naming::Databases`], the module's in database 0 and the library's
    /// in database 1 (the connection is left in database 0).
    pub fn with_naming(con: &mut Connection, route: Route, clock: Clock, naming: Naming) -> Twins {
        let keys = match &naming {
            Naming::Prefixed => homes().len(),
            Naming::Databases(names) => names.len(),
        };
        Twins::build(con, route, clock, naming, keys, Generator::new(0))
    }

    fn build(
        con: &mut Connection,
        route: Route,
        clock: Clock,
        naming: Naming,
        keys: usize,
        generator: Generator,
    ) -> Twins {
        let exact_expiry = has_command(con, "PEXPIRETIME");
        let twins = Twins {
            route,
            clock,
            probe: Probe::set(con, "probe"),
            naming,
            exact_expiry,
            generator,
            ids: vec![BTreeMap::new(); keys],
            last_expiry: vec![-2; keys],
            seeded: vec![None; keys],
            compared: 0,
            resynced: 0,
            seen: BTreeMap::new(),
            after_seed: BTreeMap::new(),
            ambiguous: 0,
            handover: false,
            watched: Vec::new(),
            turn: 0,
        };
        twins.set_probes(con);
        twins
    }

    /// The probe on each side's database.
    fn set_probes(&self, con: &mut Connection) {
        for side in [Side::Module, Side::Library] {
            self.use_db(con, side);
            self.probe.set_again(con);
        }
        self.use_db(con, Side::Module);
    }

    /// Empties both sides (FLUSHALL) and starts over, the probe set again.
    pub fn clear(&mut self, con: &mut Connection) {
        let _: () = redis::cmd("FLUSHALL").query(con).unwrap();
        self.set_probes(con);
        let keys = self.ids.len();
        self.ids = vec![BTreeMap::new(); keys];
        self.last_expiry = vec![-2; keys];
        self.seeded = vec![None; keys];
    }

    /// The lease ids the module made for logical key `key` (and the
    /// library made for its twin), in byte order.
    pub fn made_ids(&self, key: usize) -> Vec<Vec<u8>> {
        self.ids[key].keys().cloned().collect()
    }

    /// Runs steps until `calls` calls were compared.
    pub fn run(&mut self, con: &mut Connection, calls: u64) {
        let mut attempts = 0;
        while self.compared < calls {
            attempts += 1;
            assert!(
                attempts < calls * 3,
                "only {} of {attempts} steps could be compared",
                self.compared
            );
            let made: Vec<Vec<String>> = self
                .ids
                .iter()
                .map(|m| {
                    m.keys()
                        .map(|id| String::from_utf8_lossy(id).into_owned())
                        .collect()
                })
                .collect();
            let step = self.generator.next(&made);
            self.step(con, step);
        }
    }

    fn key(&self, side: Side, i: usize) -> Vec<u8> {
        self.naming.key(side, i)
    }

    fn keys_of(&self, side: Side, keys: &[usize]) -> Vec<Vec<u8>> {
        keys.iter().map(|&i| self.key(side, i)).collect()
    }

    fn select(&self, tx: &mut Tx, side: Side) {
        if let Some(db) = self.naming.db(side) {
            tx.add(redis::cmd("SELECT").arg(db).clone());
        }
    }

    fn use_db(&self, con: &mut Connection, side: Side) {
        if let Some(db) = self.naming.db(side) {
            let _: () = redis::cmd("SELECT").arg(db).query(con).unwrap();
        }
    }

    /// Adds the reading of `keys` on `side`; the index of its first reply.
    fn add_reader(&self, tx: &mut Tx, side: Side, keys: &[usize]) -> usize {
        self.select(tx, side);
        let first = tx.len;
        let added = add_reader(&mut tx.pipe, &self.keys_of(side, keys), self.exact_expiry);
        tx.len += added;
        first
    }

    fn parse_reader(&self, replies: &[Value], first: usize, count: usize) -> Vec<KeyState> {
        parse_reader(&replies[first..], count, self.exact_expiry)
    }

    /// Both twins of `keys` read at one instant: (module's, library's).
    fn read_both(&self, con: &mut Connection, keys: &[usize]) -> (Vec<KeyState>, Vec<KeyState>) {
        let mut tx = Tx::new();
        let m = self.add_reader(&mut tx, Side::Module, keys);
        let f = self.add_reader(&mut tx, Side::Library, keys);
        self.select(&mut tx, Side::Module);
        let replies = tx.run(con);
        (
            self.parse_reader(&replies, m, keys.len()),
            self.parse_reader(&replies, f, keys.len()),
        )
    }

    pub fn step(&mut self, con: &mut Connection, step: Step) {
        match step {
            Step::Call { verb, keys, args } => {
                let args: Vec<Vec<u8>> = args.into_iter().map(String::into_bytes).collect();
                self.call(con, verb, &keys, &args)
            }
            Step::Age { keys, by_ms } => {
                let sides: Vec<Vec<Vec<u8>>> = match self.naming {
                    // One script for both, at one instant.
                    Naming::Prefixed => vec![keys
                        .iter()
                        .flat_map(|&i| [self.key(Side::Module, i), self.key(Side::Library, i)])
                        .collect()],
                    Naming::Databases(_) => vec![
                        self.keys_of(Side::Module, &keys),
                        self.keys_of(Side::Library, &keys),
                    ],
                };
                for (n, twins) in sides.iter().enumerate() {
                    self.use_db(con, if n == 0 { Side::Module } else { Side::Library });
                    let mut cmd = redis::cmd("EVAL");
                    cmd.arg(age_script()).arg(twins.len());
                    for k in twins {
                        cmd.arg(k);
                    }
                    let _: i64 = cmd.arg(by_ms).query(con).unwrap();
                }
                self.use_db(con, Side::Module);
                self.compare_keys(con, &keys, "age");
            }
            Step::Seed {
                key,
                label,
                commands,
            } => {
                for side in [Side::Module, Side::Library] {
                    let twin = self.key(side, key);
                    self.use_db(con, side);
                    let mut pipe = redis::pipe();
                    for command in &commands {
                        let c = pipe.cmd(&command[0]);
                        for a in &command[1..] {
                            if a == "{k}" {
                                c.arg(&twin);
                            } else {
                                c.arg(a);
                            }
                        }
                    }
                    let _: Vec<Value> = pipe.query(con).unwrap();
                }
                self.use_db(con, Side::Module);
                self.ids[key].clear();
                self.seeded[key] = (label != "plain").then_some(label);
                self.compare_keys(con, &[key], "seed");
            }
        }
    }

    /// The library's arguments: lease ids the module made, as the library
    /// made them.
    fn library_args(&self, verb: &str, keys: &[usize], args: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let ids = keys.first().map(|&k| &self.ids[k]);
        let map = |id: &Vec<u8>| -> Vec<u8> { ids.and_then(|m| m.get(id)).unwrap_or(id).clone() };
        args.iter()
            .enumerate()
            .map(|(i, a)| match verb {
                "acquire" if i == 3 => map(a),
                "release" => map(a),
                "renew" if i == 0 => map(a),
                _ => a.clone(),
            })
            .collect()
    }

    /// `RATELIMIT.<verb>` on the module twins of `keys` (MCHECK's and
    /// MPEEK's `numkeys` is their count) and the library's on the function
    /// twins, at one instant, compared: replies, error texts, values and
    /// expiries, and every reply integer at most [`MAX_EXACT`].
    pub fn call(
        &mut self,
        con: &mut Connection,
        verb: &'static str,
        keys: &[usize],
        args: &[Vec<u8>],
    ) {
        let m_keys = self.keys_of(Side::Module, keys);
        let f_keys = self.keys_of(Side::Library, keys);
        let f_args = self.library_args(verb, keys, args);
        let mut distinct: Vec<usize> = keys.to_vec();
        distinct.extend(&self.watched);
        distinct.sort_unstable();
        distinct.dedup();
        self.turn += 1;
        let by_module = self.handover && self.turn % 2 == 0;
        let context = format!("{verb} {} {}", shown(&m_keys), shown(args));
        // On the server's clock the library gets no clock pair of ours:
        // arguments ending like one mean something else to it.
        if self.clock == Clock::Server
            && !by_module
            && reads_as_clock_pair(verb, keys.len(), &f_args)
        {
            self.ambiguous += 1;
            return;
        }
        // The library takes a clock pair only after the command's least
        // number of arguments: a call cut shorter is refused before any
        // clock is read, and is given none.
        let numkeys = usize::from(counts_keys(verb));
        let takes_a_clock = numkeys + keys.len() + args.len() >= least_arguments(verb);
        let pinned_args = |at: i64| {
            let mut pinned = f_args.clone();
            if takes_a_clock {
                pinned.push(b"NOW".to_vec());
                pinned.push(at.to_string().into_bytes());
            }
            pinned
        };

        // A call the server refuses by its declared arity is refused when
        // queued in MULTI (then discarded, unrun); such a refusal depends on
        // no clock.
        let queued: Vec<Value> = redis::pipe()
            .ignore_errors()
            .cmd("MULTI")
            .add_command(module_cmd(verb, &m_keys, args))
            .cmd("DISCARD")
            .query(con)
            .unwrap();
        if let Some(refused) = error_text(&queued[1]) {
            let module = module_cmd(verb, &m_keys, args)
                .query::<Value>(con)
                .unwrap_err();
            let library_args = match self.clock {
                Clock::Pinned => pinned_args(unix_ms()),
                Clock::Server => f_args.clone(),
            };
            self.use_db(con, Side::Library);
            let library = self
                .route
                .cmd(verb, &f_keys, &library_args)
                .query::<Value>(con);
            self.use_db(con, Side::Module);
            let library = library.err().unwrap_or_else(|| {
                panic!("the server refuses the module's call ({refused}), the library runs it: {context}")
            });
            assert_eq!(
                (module.code(), module.detail()),
                (library.code(), library.detail()),
                "refusals differ: {context}"
            );
            assert!(refused.contains("wrong number of arguments"), "{refused}");
            self.compared += 1;
            *self.seen.entry(format!("{verb} arity")).or_default() += 1;
            return;
        }
        let (module_reply, library_reply, m_states, f_states, pinned) = match self.clock {
            Clock::Pinned => {
                let mut first = Tx::new();
                self.select(&mut first, Side::Module);
                let p1 = first.add(self.probe.module());
                let m = first.add(module_cmd(verb, &m_keys, args));
                let p2 = first.add(self.probe.module());
                let first = first.run(con);
                let (t1, t2) = (
                    self.probe.instant(&first[p1]),
                    self.probe.instant(&first[p2]),
                );
                let library = if by_module {
                    module_cmd(verb, &f_keys, &f_args)
                } else {
                    self.route.cmd(verb, &f_keys, &pinned_args(t1))
                };
                let mut second = Tx::new();
                self.select(&mut second, Side::Library);
                let p3 = second.add(self.probe.module());
                let f = second.add(library);
                let p4 = second.add(self.probe.module());
                let f_read = self.add_reader(&mut second, Side::Library, &distinct);
                let m_read = self.add_reader(&mut second, Side::Module, &distinct);
                let second = second.run(con);
                let (t3, t4) = (
                    self.probe.instant(&second[p3]),
                    self.probe.instant(&second[p4]),
                );
                let m_states = self.parse_reader(&second, m_read, distinct.len());
                let f_states = self.parse_reader(&second, f_read, distinct.len());
                // The library runs later than the module, at the module's
                // instant: a twin expiring in between is there for one and
                // gone for the other (the module's transaction may have
                // started, and judged expiries, a millisecond before its
                // probe; and a key of another kind is refused even when
                // its time is up), and so is one written to expire by the
                // time the library writes it.
                let expiring = |at: i64| at >= t1 - 1 && at <= t4 + 1;
                let lost = distinct.iter().any(|&i| expiring(self.last_expiry[i]))
                    || m_states
                        .iter()
                        .chain(&f_states)
                        .any(|s| expiring(s.expires_at));
                let pinned = t1 == t2 && !lost && (!by_module || (t3 == t1 && t4 == t1));
                (
                    first[m].clone(),
                    second[f].clone(),
                    m_states,
                    f_states,
                    pinned,
                )
            }
            Clock::Server => {
                let library = if by_module {
                    module_cmd(verb, &f_keys, &f_args)
                } else {
                    self.route.cmd(verb, &f_keys, &f_args)
                };
                let mut tx = Tx::new();
                self.select(&mut tx, Side::Module);
                let p1 = tx.add(self.probe.module());
                let m = tx.add(module_cmd(verb, &m_keys, args));
                self.select(&mut tx, Side::Library);
                let f = tx.add(library);
                let pf = tx.add(self.probe.library(&self.route));
                let p2 = tx.add(self.probe.module());
                let f_read = self.add_reader(&mut tx, Side::Library, &distinct);
                let m_read = self.add_reader(&mut tx, Side::Module, &distinct);
                let replies = tx.run(con);
                let t1 = self.probe.instant(&replies[p1]);
                let at_f = self.probe.instant(&replies[pf]);
                let t2 = self.probe.instant(&replies[p2]);
                // Expiries are judged from the transaction's start, which
                // may be a millisecond before the probe, and a key of
                // another kind is refused even when its time is up: a twin
                // whose time came then may be there for one and not the
                // other.
                let expiring = |at: i64| at >= t1 - 1 && at <= t1;
                let lost = distinct.iter().any(|&i| expiring(self.last_expiry[i]));
                let pinned = t1 == t2 && t1 == at_f && !lost;
                (
                    replies[m].clone(),
                    replies[f].clone(),
                    self.parse_reader(&replies, m_read, distinct.len()),
                    self.parse_reader(&replies, f_read, distinct.len()),
                    pinned,
                )
            }
        };
        if !pinned {
            self.resync(con, &distinct);
            return;
        }
        // Arguments the library refuses with an error of its own (a product
        // past 2^53 that the module computes exactly) are outside what it
        // stands in for.
        if error_text(&library_reply).is_some_and(|e| e.contains(BEYOND_THE_FALLBACK)) {
            *self
                .seen
                .entry(format!("{verb} beyond the fallback"))
                .or_default() += 1;
            self.resync(con, &distinct);
            return;
        }
        self.compare_replies(verb, keys, args, &module_reply, &library_reply, &context);
        for (n, &i) in distinct.iter().enumerate() {
            self.compare_states(i, &m_states[n], &f_states[n], &context);
        }
        for (side, reply) in [("module", &module_reply), ("library", &library_reply)] {
            let mut integers = Vec::new();
            reply_integers(reply, &mut integers);
            assert!(
                integers.iter().all(|&n| n <= MAX_EXACT),
                "the {side} replied an integer above 2^53 - 1: {reply:?} to {context}"
            );
        }
        self.compared += 1;
        let outcome = match error_text(&module_reply) {
            Some(e) if e.starts_with("WRONGTYPE") => "wrongtype",
            Some(_) => "error",
            None => "ok",
        };
        *self.seen.entry(format!("{verb} {outcome}")).or_default() += 1;
        for &i in distinct.iter().filter(|i| keys.contains(i)) {
            if let Some(label) = &self.seeded[i] {
                *self
                    .after_seed
                    .entry(format!("{label} / {verb}"))
                    .or_default() += 1;
            }
        }
    }

    fn compare_replies(
        &mut self,
        verb: &str,
        keys: &[usize],
        args: &[Vec<u8>],
        module: &Value,
        library: &Value,
        context: &str,
    ) {
        if let (Some(m), Some(l)) = (error_text(module), error_text(library)) {
            assert_eq!(m, l, "error texts differ: {context}");
            return;
        }
        if verb == "acquire" {
            if let (Value::Array(m), Value::Array(l)) = (module, library) {
                assert_eq!(m.len(), 6, "{context}: {module:?}");
                assert_eq!(&m[..5], &l[..5], "replies differ: {context}");
                let key = keys[0];
                match (&m[5], &l[5]) {
                    (Value::Nil, Value::Nil) => {}
                    (Value::BulkString(mid), Value::BulkString(lid)) => {
                        if args.len() < 4 {
                            for id in [mid, lid] {
                                assert!(
                                    id.len() == 32
                                        && id
                                            .iter()
                                            .all(|b| b.is_ascii_hexdigit()
                                                && !b.is_ascii_uppercase()),
                                    "a made id is 32 lower-case hex digits: {} ({context})",
                                    id.escape_ascii()
                                );
                            }
                            self.ids[key].insert(mid.clone(), lid.clone());
                        } else {
                            let expected = self.ids[key].get(mid).unwrap_or(mid);
                            assert_eq!(expected, lid, "ids differ: {context}");
                        }
                    }
                    (m, l) => panic!("ids differ: {m:?} {l:?}: {context}"),
                }
                return;
            }
        }
        assert_eq!(module, library, "replies differ: {context}");
    }

    /// The function twin's state with the library's lease ids read as the
    /// module's.
    fn compare_states(&mut self, i: usize, m: &KeyState, f: &KeyState, context: &str) {
        self.last_expiry[i] = f.expires_at;
        // Both twins are read in one MULTI, the module's first; where a
        // transaction runs on a running clock (Redis 7.0), a twin whose
        // expiry came between the two reads is there for one and gone for
        // the other. By now it is gone for both.
        let lapsed = |s: &KeyState| s.expires_at > 0 && s.expires_at <= unix_ms();
        if (m.kind == "none" && lapsed(f)) || (f.kind == "none" && lapsed(m)) {
            return;
        }
        let mut f = f.clone();
        if f.kind == "zset" {
            let back: BTreeMap<&Vec<u8>, &Vec<u8>> =
                self.ids[i].iter().map(|(m, l)| (l, m)).collect();
            for member in f.value.iter_mut().step_by(2) {
                if let Some(mid) = back.get(member) {
                    *member = (*mid).clone();
                }
            }
            let pairs = |value: &[Vec<u8>]| {
                let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = value
                    .chunks(2)
                    .map(|c| (c[1].clone(), c[0].clone()))
                    .collect();
                pairs.sort();
                pairs
            };
            assert_eq!(
                (m.kind.as_str(), pairs(&m.value)),
                ("zset", pairs(&f.value)),
                "lease sets differ for key {i}: {context}"
            );
            assert_eq!(
                m.expires_at, f.expires_at,
                "expiries differ for key {i}: {context}"
            );
            return;
        }
        assert_eq!(*m, f, "keys differ for key {i}: {context}");
    }

    fn compare_keys(&mut self, con: &mut Connection, keys: &[usize], context: &str) {
        let mut distinct = keys.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let (m_states, f_states) = self.read_both(con, &distinct);
        for (n, &i) in distinct.iter().enumerate() {
            self.compare_states(i, &m_states[n], &f_states[n], context);
        }
    }

    /// The module twins copied over the function twins, after a step whose
    /// instant could not be pinned.
    fn resync(&mut self, con: &mut Connection, keys: &[usize]) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(copy_script()).arg(keys.len() * 2);
        for &i in keys {
            cmd.arg(self.key(Side::Module, i))
                .arg(self.key(Side::Library, i));
        }
        match (self.naming.db(Side::Library), self.naming.db(Side::Module)) {
            (Some(to), Some(from)) => cmd.arg(to).arg(from),
            _ => cmd.arg("").arg(""),
        };
        let _: i64 = cmd.query(con).unwrap();
        for &i in keys {
            self.ids[i].clear();
        }
        self.resynced += 1;
        self.compare_keys(con, keys, "resync");
    }

    /// A summary line for the test's output.
    pub fn summary(&self) -> String {
        format!(
            "{} calls compared, {} steps resynced, {} not run (a clock pair to the library); {:?}",
            self.compared, self.resynced, self.ambiguous, self.seen
        )
    }
}

/// Runs `steps` seeded steps through the library alone, on the function
/// twins (`f:{i}`) and the server's clock: a workload of every command for
/// servers without the module. Returns how many calls succeeded and how
/// many were refused.
pub fn library_workload(
    con: &mut Connection,
    route: &Route,
    seed: u64,
    steps: usize,
) -> (u64, u64) {
    let mut generator = Generator::new(seed);
    let mut made: Vec<Vec<String>> = vec![Vec::new(); generator.homes.len()];
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..steps {
        match generator.next(&made) {
            Step::Call { verb, keys, args } => {
                let f_keys: Vec<Vec<u8>> = keys.iter().map(|&i| function_key(i)).collect();
                let f_args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
                match route.cmd(verb, &f_keys, &f_args).query::<Value>(con) {
                    Ok(Value::Array(reply)) if verb == "acquire" && args.len() == 2 => {
                        if let Value::BulkString(id) = &reply[5] {
                            made[keys[0]].push(String::from_utf8(id.clone()).unwrap());
                        }
                        ok += 1;
                    }
                    Ok(_) => ok += 1,
                    Err(_) => refused += 1,
                }
            }
            Step::Age { keys, by_ms } => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(age_script()).arg(keys.len());
                for &i in &keys {
                    cmd.arg(function_key(i));
                }
                let _: i64 = cmd.arg(by_ms).query(con).unwrap();
            }
            Step::Seed { key, commands, .. } => {
                run_seed(con, &function_key(key), &commands);
                made[key].clear();
            }
        }
    }
    (ok, refused)
}

fn module_key(i: usize) -> Vec<u8> {
    Naming::Prefixed.key(Side::Module, i)
}

fn function_key(i: usize) -> Vec<u8> {
    Naming::Prefixed.key(Side::Library, i)
}

/// Runs a seed's commands on `key`.
fn run_seed(con: &mut Connection, key: &[u8], commands: &[Vec<String>]) {
    let mut pipe = redis::pipe();
    for command in commands {
        let c = pipe.cmd(&command[0]);
        for a in &command[1..] {
            if a == "{k}" {
                c.arg(key);
            } else {
                c.arg(a);
            }
        }
    }
    let _: Vec<Value> = pipe.query(con).unwrap();
}

/// What [`audit_reply_integers`] found.
#[derive(Debug, Default)]
pub struct Audit {
    /// Replies read, and integers in them, per side (module, library).
    pub replies: [u64; 2],
    pub integers: [u64; 2],
    /// The largest integer each side replied.
    pub largest: [i64; 2],
    /// Replies holding an integer above [`MAX_EXACT`]: side, call, reply.
    pub over: Vec<String>,
    /// Calls on a key set to a hostile state, by `label / verb`.
    pub after_seed: BTreeMap<String, u64>,
}

/// Runs `steps` of `generator` on the module twins and, separately, on the
/// function twins through the library on the server's clock, comparing
/// nothing between them: every integer of every reply of both sides is
/// recorded, so that an inexact one is found whatever else differs.
pub fn audit_reply_integers(
    con: &mut Connection,
    route: &Route,
    mut generator: Generator,
    steps: usize,
) -> Audit {
    let keys = generator.homes.len();
    // Ids each side made, in the order made: the library's i-th id stands
    // for the module's i-th.
    let mut made: Vec<Vec<String>> = vec![Vec::new(); keys];
    let mut library_made: Vec<Vec<String>> = vec![Vec::new(); keys];
    let mut seeded: Vec<Option<String>> = vec![None; keys];
    let mut audit = Audit::default();
    let record = |audit: &mut Audit, side: usize, reply: &Value, context: &str| {
        audit.replies[side] += 1;
        let mut integers = Vec::new();
        reply_integers(reply, &mut integers);
        audit.integers[side] += integers.len() as u64;
        for n in integers {
            audit.largest[side] = audit.largest[side].max(n);
            if n > MAX_EXACT {
                let name = ["module", "library"][side];
                audit.over.push(format!("{name}: {context} -> {reply:?}"));
            }
        }
    };
    for _ in 0..steps {
        match generator.next(&made) {
            Step::Call { verb, keys, args } => {
                let m_keys: Vec<Vec<u8>> = keys.iter().map(|&i| module_key(i)).collect();
                let f_keys: Vec<Vec<u8>> = keys.iter().map(|&i| function_key(i)).collect();
                let m_args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
                let f_args: Vec<Vec<u8>> = args
                    .iter()
                    .map(|a| {
                        let known = keys.first().and_then(|&k| {
                            let at = made[k].iter().position(|m| m == a)?;
                            library_made[k].get(at).cloned()
                        });
                        known.unwrap_or_else(|| a.clone()).into_bytes()
                    })
                    .collect();
                let context = format!("{verb} {keys:?} {args:?}");
                // An error holds no integer.
                let module: Value = module_cmd(verb, &m_keys, &m_args)
                    .query::<Value>(con)
                    .unwrap_or(Value::Nil);
                let library: Value = route
                    .cmd(verb, &f_keys, &f_args)
                    .query::<Value>(con)
                    .unwrap_or(Value::Nil);
                record(&mut audit, 0, &module, &context);
                record(&mut audit, 1, &library, &context);
                if verb == "acquire" && args.len() == 2 {
                    for (reply, ids) in [(&module, &mut made), (&library, &mut library_made)] {
                        if let Value::Array(items) = reply {
                            if let Some(Value::BulkString(id)) = items.get(5) {
                                ids[keys[0]].push(String::from_utf8_lossy(id).into_owned());
                            }
                        }
                    }
                }
                for &i in &keys {
                    if let Some(label) = &seeded[i] {
                        *audit
                            .after_seed
                            .entry(format!("{label} / {verb}"))
                            .or_default() += 1;
                    }
                }
            }
            Step::Age { keys, by_ms } => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(age_script()).arg(keys.len() * 2);
                for &i in &keys {
                    cmd.arg(module_key(i)).arg(function_key(i));
                }
                let _: i64 = cmd.arg(by_ms).query(con).unwrap();
            }
            Step::Seed {
                key,
                label,
                commands,
            } => {
                run_seed(con, &module_key(key), &commands);
                run_seed(con, &function_key(key), &commands);
                made[key].clear();
                library_made[key].clear();
                seeded[key] = (label != "plain").then_some(label);
            }
        }
    }
    audit
}
