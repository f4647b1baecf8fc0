//! The script fallback (`fallback/ratelimit.lua`) beside the module: loading
//! it, calling it as a function or through EVAL, reading keys exactly, and
//! a differential engine that sends the same seeded calls to the module and
//! to the library on twin keys of one server, at one instant, and compares
//! replies, error texts, values and absolute expiries.
//!
//! Each logical key `i` has a module twin `m:{i}` and a function twin
//! `f:{i}`. The module always reads the server's clock; the instant is
//! revealed by `RATELIMIT.PEEK probe 10 1000000000` on a counter whose
//! expiry is known (its `reset_after_ms` is the expiry minus now), which
//! changes nothing. Two ways to give the library that same instant:
//!
//! - [`Clock::Pinned`]: the module call runs in MULTI between two probes;
//!   when they agree, the library is called with `NOW` at that instant.
//! - [`Clock::Server`]: the library reads TIME itself, in the same
//!   MULTI as the module call, between probes of both clocks; the step
//!   counts when all of them name one millisecond.
//!
//! A step whose instant cannot be pinned is not compared: the module twin
//! is copied over the function twin (DUMP/RESTORE with its expiry) and the
//! run goes on. Runs assert how many steps they compared.
//!
//! Time moves on by itself (periods of 1 to 3 s turn over during a run),
//! and further by ageing both twins alike: their expiries and lease
//! deadlines moved back by up to 10 s, which is what that much waiting
//! would leave them, so windows end, buckets refill and leases lapse
//! without a sleep.
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

/// The module's command for `verb`, in lower case: `ratelimit.<verb>
/// [numkeys] keys… args…`.
pub fn module_cmd(verb: &str, keys: &[Vec<u8>], args: &[Vec<u8>]) -> Cmd {
    let mut cmd = redis::cmd(&format!("ratelimit.{verb}"));
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

/// A script prelude: `expiry(key)`, the absolute expiry in ms (-1 none, -2
/// no key), with PEXPIRETIME where the server has it, else TIME, PTTL, TIME
/// until both readings of the clock name one millisecond.
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
/// value of a sorted set is ZRANGE WITHSCORES, of another type its name.
fn reader_script() -> String {
    format!(
        "{EXPIRY_LUA}
local out = {{}}
for i, key in ipairs(KEYS) do
  local t = redis.call('TYPE', key).ok
  local value = t
  if t == 'string' then value = redis.call('GET', key)
  elseif t == 'zset' then value = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  elseif t == 'none' then value = false end
  out[i] = {{t, value, expiry(key)}}
end
return out"
    )
}

/// Copies KEYS[2i-1] over KEYS[2i], with its absolute expiry; a key about
/// to expire (PEXPIREAT would delete the copy at once) goes from both.
fn copy_script() -> String {
    format!(
        "{EXPIRY_LUA}
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS, 2 do
  local dump = redis.call('DUMP', KEYS[i])
  redis.call('DEL', KEYS[i + 1])
  if dump then
    local at = expiry(KEYS[i])
    if at > 0 and at <= now_ms + 1 then
      redis.call('DEL', KEYS[i])
    else
      redis.call('RESTORE', KEYS[i + 1], 0, dump)
      if at > 0 then redis.call('PEXPIREAT', KEYS[i + 1], at) end
    end
  end
end
return 1"
    )
}

/// Moves every key of KEYS ARGV[1] ms back in time: its expiry, and the
/// scores of a sorted set (lease deadlines), as if that much time had
/// passed.
fn age_script() -> String {
    format!(
        "{EXPIRY_LUA}
local by = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local at = expiry(key)
  if at > 0 then
    if redis.call('TYPE', key).ok == 'zset' then
      local members = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
      for i = 1, #members, 2 do
        redis.call('ZADD', key, string.format('%.17g', tonumber(members[i + 1]) - by), members[i])
      end
    end
    redis.call('PEXPIREAT', key, string.format('%d', at - by))
  end
end
return 1"
    )
}

/// What a key holds, read exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyState {
    /// `TYPE`.
    pub kind: String,
    /// A string's value; a sorted set's members and scores, in order;
    /// otherwise empty.
    pub value: Vec<Vec<u8>>,
    /// PEXPIRETIME: UNIX ms, -1 for none, -2 for no key.
    pub expires_at: i64,
}

fn key_state(v: &Value) -> KeyState {
    let Value::Array(parts) = v else {
        panic!("not a key state: {v:?}")
    };
    let kind = redis::from_redis_value_ref::<String>(&parts[0]).unwrap();
    let value = match &parts[1] {
        Value::Nil => Vec::new(),
        Value::BulkString(b) if kind == "string" => vec![b.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| redis::from_redis_value_ref::<Vec<u8>>(i).unwrap())
            .collect(),
        _ => Vec::new(),
    };
    let expires_at = redis::from_redis_value_ref::<i64>(&parts[2]).unwrap();
    KeyState {
        kind,
        value,
        expires_at,
    }
}

/// Reads `keys` at one instant.
pub fn read_keys(con: &mut dyn ConnectionLike, keys: &[Vec<u8>]) -> Vec<KeyState> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(reader_script()).arg(keys.len());
    for key in keys {
        cmd.arg(key);
    }
    let states: Vec<Value> = cmd.query(con).unwrap();
    states.iter().map(key_state).collect()
}

fn reader_cmd(keys: &[Vec<u8>]) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(reader_script()).arg(keys.len());
    for key in keys {
        cmd.arg(key);
    }
    cmd
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
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("PXAT")
            .arg(expires_at)
            .query(con)
            .unwrap();
        Probe {
            key: key.to_string(),
            expires_at,
        }
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
    /// wrote: the commands, with `{k}` for the key.
    Seed {
        key: usize,
        commands: Vec<Vec<String>>,
    },
}

/// Seeded calls over [`homes`]: every command, algorithm and option,
/// cost 0, denials, changed parameters, foreign values and every error
/// form.
pub struct Generator {
    rng: Lcg,
    pub homes: Vec<Home>,
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

impl Generator {
    pub fn new(seed: u64) -> Generator {
        Generator {
            rng: Lcg::new(seed),
            homes: homes(),
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

    /// A lease id: a client's, one the module made for this key, or
    /// unknown.
    fn lease_id(&mut self, made: &[String]) -> String {
        match self.rng.below(6) {
            0 | 1 if !made.is_empty() => pick(&mut self.rng, made).clone(),
            5 => "nobody".into(),
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
        let all: Vec<usize> = (0..self.homes.len()).collect();
        let checks = self.keys_where(|h| matches!(h, Home::Check { .. }));
        let counted = self.keys_where(|h| matches!(h, Home::Check { .. } | Home::Foreign));
        let throttles = self.keys_where(|h| matches!(h, Home::Throttle { .. }));
        let leases = self.keys_where(|h| matches!(h, Home::Leases { .. }));
        let roll = self.rng.below(100);
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
            90..=96 => {
                let keys = self.distinct(&all, 2);
                let by_ms = match self.rng.below(3) {
                    0 => 1 + self.rng.below(50),
                    1 => 1 + self.rng.below(1500),
                    _ => 1 + self.rng.below(10_000),
                };
                Step::Age { keys, by_ms }
            }
            _ => self.seed(),
        }
    }

    /// Both twins of a key set by hand: foreign values, and limiter state
    /// the module would read (no expiry, odd widths, stale expiries).
    fn seed(&mut self) -> Step {
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
        Step::Seed { key, commands }
    }

    /// A call that is refused: every error form of every command.
    fn malformed(&mut self) -> Step {
        let rng = &mut self.rng;
        let key = rng.index(self.homes.len());
        let not_int = pick(rng, &NOT_INTEGERS).to_string();
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let (verb, keys, args): (&'static str, Vec<usize>, Vec<String>) = match rng.below(40) {
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

/// Whether any key state in a reader's reply expires at an instant `at`
/// for which `expiring(at)`.
fn states_expiring(states: &Value, expiring: impl Fn(i64) -> bool) -> bool {
    match states {
        Value::Array(states) => states.iter().any(|s| expiring(key_state(s).expires_at)),
        _ => false,
    }
}

/// A differential run on one server.
pub struct Twins {
    pub route: Route,
    pub clock: Clock,
    probe: Probe,
    generator: Generator,
    /// Per logical key: lease ids the module made, and the library's id
    /// for each.
    ids: Vec<BTreeMap<String, String>>,
    /// The function twins' expiries as last read (pinned runs only).
    last_expiry: Vec<i64>,
    /// Calls compared, and steps whose instant could not be pinned.
    pub compared: u64,
    pub resynced: u64,
    /// Steps compared, by verb and outcome (error or not).
    pub seen: BTreeMap<String, u64>,
    /// Alternate the function twin between the module and the library:
    /// each key is handed over at every other call.
    pub handover: bool,
    turn: u64,
}

fn module_key(i: usize) -> Vec<u8> {
    format!("m:{i}").into_bytes()
}

fn function_key(i: usize) -> Vec<u8> {
    format!("f:{i}").into_bytes()
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

impl Twins {
    pub fn new(con: &mut Connection, route: Route, clock: Clock, seed: u64) -> Twins {
        let probe = Probe::set(con, "probe");
        let generator = Generator::new(seed);
        let n = generator.homes.len();
        Twins {
            route,
            clock,
            probe,
            generator,
            ids: vec![BTreeMap::new(); n],
            last_expiry: vec![-2; n],
            compared: 0,
            resynced: 0,
            seen: BTreeMap::new(),
            handover: false,
            turn: 0,
        }
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
                .map(|m| m.keys().cloned().collect())
                .collect();
            let step = self.generator.next(&made);
            self.step(con, step);
        }
    }

    fn both(&self, keys: &[usize]) -> Vec<Vec<u8>> {
        keys.iter()
            .flat_map(|&i| [module_key(i), function_key(i)])
            .collect()
    }

    pub fn step(&mut self, con: &mut Connection, step: Step) {
        match step {
            Step::Call { verb, keys, args } => self.call(con, verb, &keys, &args),
            Step::Age { keys, by_ms } => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(age_script()).arg(keys.len() * 2);
                for k in self.both(&keys) {
                    cmd.arg(k);
                }
                let _: i64 = cmd.arg(by_ms).query(con).unwrap();
                self.compare_keys(con, &keys, "age");
            }
            Step::Seed { key, commands } => {
                for twin in [module_key(key), function_key(key)] {
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
                self.ids[key].clear();
                self.compare_keys(con, &[key], "seed");
            }
        }
    }

    /// The library's arguments: lease ids the module made, as the library
    /// made them.
    fn library_args(&self, verb: &str, keys: &[usize], args: &[String]) -> Vec<Vec<u8>> {
        let ids = keys.first().map(|&k| &self.ids[k]);
        let map = |id: &String| -> Vec<u8> {
            ids.and_then(|m| m.get(id))
                .unwrap_or(id)
                .as_bytes()
                .to_vec()
        };
        args.iter()
            .enumerate()
            .map(|(i, a)| match verb {
                "acquire" if i == 3 => map(a),
                "release" => map(a),
                "renew" if i == 0 => map(a),
                _ => a.as_bytes().to_vec(),
            })
            .collect()
    }

    fn call(&mut self, con: &mut Connection, verb: &'static str, keys: &[usize], args: &[String]) {
        let m_keys: Vec<Vec<u8>> = keys.iter().map(|&i| module_key(i)).collect();
        let f_keys: Vec<Vec<u8>> = keys.iter().map(|&i| function_key(i)).collect();
        let m_args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        let f_args = self.library_args(verb, keys, args);
        let mut distinct: Vec<usize> = keys.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let read = self.both(&distinct);
        self.turn += 1;
        let by_module = self.handover && self.turn % 2 == 0;

        let context = format!("{verb} {keys:?} {args:?}");
        // A call the server refuses by its declared arity is refused when
        // queued in MULTI (then discarded, unrun); such a refusal depends on
        // no clock.
        let queued: Vec<Value> = redis::pipe()
            .ignore_errors()
            .cmd("MULTI")
            .add_command(module_cmd(verb, &m_keys, &m_args))
            .cmd("DISCARD")
            .query(con)
            .unwrap();
        if let Some(refused) = error_text(&queued[1]) {
            let module = module_cmd(verb, &m_keys, &m_args)
                .query::<Value>(con)
                .unwrap_err();
            let library = self
                .route
                .cmd(verb, &f_keys, &f_args)
                .query::<Value>(con)
                .unwrap_err();
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
        let (module_reply, library_reply, states, pinned) = match self.clock {
            Clock::Pinned => {
                let first: Vec<Value> = redis::pipe()
                    .atomic()
                    .ignore_errors()
                    .add_command(self.probe.module())
                    .add_command(module_cmd(verb, &m_keys, &m_args))
                    .add_command(self.probe.module())
                    .query(con)
                    .unwrap();
                let (t1, t2) = (self.probe.instant(&first[0]), self.probe.instant(&first[2]));
                let library = if by_module {
                    module_cmd(verb, &f_keys, &f_args)
                } else {
                    let mut pinned_args = f_args.clone();
                    pinned_args.push(b"NOW".to_vec());
                    pinned_args.push(t1.to_string().into_bytes());
                    self.route.cmd(verb, &f_keys, &pinned_args)
                };
                let second: Vec<Value> = redis::pipe()
                    .atomic()
                    .ignore_errors()
                    .add_command(self.probe.module())
                    .add_command(library)
                    .add_command(self.probe.module())
                    .add_command(reader_cmd(&read))
                    .query(con)
                    .unwrap();
                let (t3, t4) = (
                    self.probe.instant(&second[0]),
                    self.probe.instant(&second[2]),
                );
                // The library runs later than the module, at the module's
                // instant: a twin expiring in between is there for one and
                // gone for the other (the module's transaction may have
                // started, and judged expiries, a millisecond before its
                // probe; and a key of another kind is refused even when
                // its time is up), and so is one written to expire by the
                // time the library writes it.
                let expiring = |at: i64| at >= t1 - 1 && at <= t4 + 1;
                let lost = distinct.iter().any(|&i| expiring(self.last_expiry[i]))
                    || states_expiring(&second[3], expiring);
                let pinned = t1 == t2 && !lost && (!by_module || (t3 == t1 && t4 == t1));
                (
                    first[1].clone(),
                    second[1].clone(),
                    second[3].clone(),
                    pinned,
                )
            }
            Clock::Server => {
                let library = if by_module {
                    module_cmd(verb, &f_keys, &m_args)
                } else {
                    self.route.cmd(verb, &f_keys, &f_args)
                };
                let replies: Vec<Value> = redis::pipe()
                    .atomic()
                    .ignore_errors()
                    .add_command(self.probe.module())
                    .add_command(module_cmd(verb, &m_keys, &m_args))
                    .add_command(library)
                    .add_command(self.probe.library(&self.route))
                    .add_command(self.probe.module())
                    .add_command(reader_cmd(&read))
                    .query(con)
                    .unwrap();
                let t1 = self.probe.instant(&replies[0]);
                let f = self.probe.instant(&replies[3]);
                let t2 = self.probe.instant(&replies[4]);
                // Expiries are judged from the transaction's start, which
                // may be a millisecond before the probe, and a key of
                // another kind is refused even when its time is up: a twin
                // whose time came then may be there for one and not the
                // other.
                let expiring = |at: i64| at >= t1 - 1 && at <= t1;
                let lost = distinct.iter().any(|&i| expiring(self.last_expiry[i]));
                let pinned = t1 == t2 && t1 == f && !lost;
                (
                    replies[1].clone(),
                    replies[2].clone(),
                    replies[5].clone(),
                    pinned,
                )
            }
        };
        let Value::Array(states) = states else {
            panic!("reading the keys failed: {states:?}")
        };
        let states: Vec<KeyState> = states.iter().map(key_state).collect();
        if !pinned {
            self.resync(con, &distinct);
            return;
        }
        self.compare_replies(verb, keys, args, &module_reply, &library_reply, &context);
        for (n, &i) in distinct.iter().enumerate() {
            self.compare_states(i, &states[2 * n], &states[2 * n + 1], &context);
        }
        self.compared += 1;
        let outcome = match error_text(&module_reply) {
            Some(e) if e.starts_with("WRONGTYPE") => "wrongtype",
            Some(_) => "error",
            None => "ok",
        };
        *self.seen.entry(format!("{verb} {outcome}")).or_default() += 1;
    }

    fn compare_replies(
        &mut self,
        verb: &str,
        keys: &[usize],
        args: &[String],
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
                        let (mid, lid) = (
                            String::from_utf8(mid.clone()).unwrap(),
                            String::from_utf8(lid.clone()).unwrap(),
                        );
                        let asked = args.get(3).cloned();
                        if asked.is_none() {
                            for id in [&mid, &lid] {
                                assert!(
                                    id.len() == 32
                                        && id
                                            .bytes()
                                            .all(|b| b.is_ascii_hexdigit()
                                                && !b.is_ascii_uppercase()),
                                    "a made id is 32 lower-case hex digits: {id} ({context})"
                                );
                            }
                            self.ids[key].insert(mid, lid);
                        } else {
                            let expected = self.ids[key].get(&mid).cloned().unwrap_or(mid);
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
        let mut f = f.clone();
        if f.kind == "zset" {
            let back: BTreeMap<&String, &String> =
                self.ids[i].iter().map(|(m, l)| (l, m)).collect();
            for member in f.value.iter_mut().step_by(2) {
                if let Some(mid) = String::from_utf8(member.clone())
                    .ok()
                    .and_then(|l| back.get(&l).copied())
                {
                    *member = mid.clone().into_bytes();
                }
            }
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = f
                .value
                .chunks(2)
                .map(|c| (c[1].clone(), c[0].clone()))
                .collect();
            let mut m_pairs: Vec<(Vec<u8>, Vec<u8>)> = m
                .value
                .chunks(2)
                .map(|c| (c[1].clone(), c[0].clone()))
                .collect();
            pairs.sort();
            m_pairs.sort();
            assert_eq!(m_pairs, pairs, "lease sets differ for key {i}: {context}");
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
        let states = read_keys(con, &self.both(&distinct));
        for (n, &i) in distinct.iter().enumerate() {
            self.compare_states(i, &states[2 * n], &states[2 * n + 1], context);
        }
    }

    /// The module twins copied over the function twins, after a step whose
    /// instant could not be pinned.
    fn resync(&mut self, con: &mut Connection, keys: &[usize]) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(copy_script()).arg(keys.len() * 2);
        for k in self.both(keys) {
            cmd.arg(k);
        }
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
            "{} calls compared, {} steps resynced; {:?}",
            self.compared, self.resynced, self.seen
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
            Step::Seed { key, commands } => {
                let mut pipe = redis::pipe();
                for command in &commands {
                    let c = pipe.cmd(&command[0]);
                    for a in &command[1..] {
                        if a == "{k}" {
                            c.arg(function_key(key));
                        } else {
                            c.arg(a);
                        }
                    }
                }
                let _: Vec<Value> = pipe.query(con).unwrap();
                made[key].clear();
            }
        }
    }
    (ok, refused)
}
