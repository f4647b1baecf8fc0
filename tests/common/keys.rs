//! What keys hold: values, absolute expiries, whole databases.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use redis::{ConnectionLike, ToRedisArgs};

use super::abilities::has_command;
use super::reply::run;

pub fn get<K: ToRedisArgs>(con: &mut dyn ConnectionLike, key: K) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query(con).unwrap()
}

pub fn get_str(con: &mut dyn ConnectionLike, key: &str) -> Option<String> {
    get(con, key).map(|v| String::from_utf8(v).unwrap())
}

pub fn exists<K: ToRedisArgs>(con: &mut dyn ConnectionLike, key: K) -> bool {
    let n: i64 = redis::cmd("EXISTS").arg(key).query(con).unwrap();
    n == 1
}

/// `DUMP` of a key (`None` when missing): type, value and encoding at once.
pub fn dump<K: ToRedisArgs>(con: &mut dyn ConnectionLike, key: K) -> Option<Vec<u8>> {
    redis::cmd("DUMP").arg(key).query(con).unwrap()
}

pub fn pttl<K: ToRedisArgs>(con: &mut dyn ConnectionLike, key: K) -> i64 {
    redis::cmd("PTTL").arg(key).query(con).unwrap()
}

/// Every key of the current database.
pub fn all_keys(con: &mut dyn ConnectionLike) -> BTreeSet<Vec<u8>> {
    run::<Vec<Vec<u8>>>(con, &["KEYS", "*"])
        .into_iter()
        .collect()
}

/// The key's absolute expiry in UNIX ms (-1 without one, -2 without the
/// key), exactly. Servers before Redis 7.0 lack PEXPIRETIME: there it is read
/// as TIME, PTTL, TIME inside one script, until both clock readings fall in
/// the same millisecond, which is then the one PTTL was computed against.
pub fn pexpiretime<K: ToRedisArgs>(con: &mut dyn ConnectionLike, key: K) -> i64 {
    let key = key.to_redis_args();
    if has_command(con, "PEXPIRETIME") {
        return redis::cmd("PEXPIRETIME").arg(&key).query(con).unwrap();
    }
    let script = "local a = redis.call('TIME') \
                  local ttl = redis.call('PTTL', KEYS[1]) \
                  local b = redis.call('TIME') \
                  return {a[1], a[2], ttl, b[1], b[2]}";
    for _ in 0..1000 {
        let (a_s, a_us, ttl, b_s, b_us): (i64, i64, i64, i64, i64) = redis::cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg(&key)
            .query(con)
            .unwrap();
        if ttl < 0 {
            return ttl;
        }
        let (a_ms, b_ms) = (a_s * 1000 + a_us / 1000, b_s * 1000 + b_us / 1000);
        if a_ms == b_ms {
            return a_ms + ttl;
        }
    }
    panic!("could not read the expiry of {key:?} within one millisecond");
}

/// A key as stored: its value (`GET`) and its exact absolute expiry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stored {
    pub value: Option<Vec<u8>>,
    /// UNIX ms; -1 without an expiry, -2 without the key.
    pub expires_at: i64,
}

impl Stored {
    /// The value as text.
    pub fn text(&self) -> Option<&str> {
        self.value
            .as_deref()
            .map(|v| std::str::from_utf8(v).unwrap())
    }
}

pub fn stored<K: ToRedisArgs>(con: &mut dyn ConnectionLike, key: K) -> Stored {
    let key = key.to_redis_args();
    Stored {
        value: get(con, &key),
        expires_at: pexpiretime(con, &key),
    }
}

/// `DUMP` and the absolute expiry: type, value, encoding and expiry, for
/// asserting that nothing about a key changed.
pub fn dumped<K: ToRedisArgs>(con: &mut dyn ConnectionLike, key: K) -> (Option<Vec<u8>>, i64) {
    let key = key.to_redis_args();
    (dump(con, &key), pexpiretime(con, &key))
}

/// Every key of some databases as stored, by database and key. Only for
/// databases of string keys (limiters and plain values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset(pub BTreeMap<u32, BTreeMap<Vec<u8>, Stored>>);

impl Dataset {
    /// Reads `databases` on `con` (which ends in database 0).
    pub fn read(con: &mut dyn ConnectionLike, databases: &[u32]) -> Dataset {
        let mut all = BTreeMap::new();
        for db in databases {
            let _: () = run(con, &["SELECT", &db.to_string()]);
            let keys = all_keys(con);
            let entries = keys
                .into_iter()
                .map(|k| {
                    let state = stored(con, k.as_slice());
                    (k, state)
                })
                .collect();
            all.insert(*db, entries);
        }
        let _: () = run(con, &["SELECT", "0"]);
        Dataset(all)
    }

    /// Every key: its database, name and state.
    pub fn entries(&self) -> impl Iterator<Item = (u32, &[u8], &Stored)> {
        self.0
            .iter()
            .flat_map(|(db, keys)| keys.iter().map(move |(k, s)| (*db, k.as_slice(), s)))
    }

    /// The state of `key` in database `db`, which must be there.
    pub fn get(&self, db: u32, key: &str) -> &Stored {
        self.0
            .get(&db)
            .and_then(|keys| keys.get(key.as_bytes()))
            .unwrap_or_else(|| panic!("{key} is not in database {db}"))
    }

    /// Asserts that this is `expected`, naming the entries that differ.
    pub fn assert_same(&self, expected: &Dataset, what: &str) {
        if self == expected {
            return;
        }
        type Entry = (u32, String, Option<String>, i64);
        let flat = |d: &Dataset| -> BTreeSet<Entry> {
            d.entries()
                .map(|(db, k, s)| {
                    let text = |b: &[u8]| b.escape_ascii().to_string();
                    (db, text(k), s.value.as_deref().map(text), s.expires_at)
                })
                .collect()
        };
        let (actual, expected) = (flat(self), flat(expected));
        panic!(
            "{what}: (db, key, value, expiry) expected but missing: {:#?}\nfound instead: {:#?}",
            expected.difference(&actual).collect::<Vec<_>>(),
            actual.difference(&expected).collect::<Vec<_>>()
        );
    }
}

/// The leases in a key (`ZRANGE key 0 -1 WITHSCORES`): (id, deadline in
/// UNIX ms), earliest deadline first. Empty without the key.
pub fn leases<K: ToRedisArgs>(con: &mut dyn ConnectionLike, key: K) -> Vec<(Vec<u8>, i64)> {
    let flat: Vec<Vec<u8>> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(con)
        .unwrap();
    flat.chunks(2)
        .map(|pair| {
            let score = std::str::from_utf8(&pair[1]).unwrap();
            let deadline: i64 = score
                .parse()
                .unwrap_or_else(|_| panic!("the score {score} is not a whole number of ms"));
            (pair[0].clone(), deadline)
        })
        .collect()
}

/// A key of leases as stored: its ids and deadlines, and its exact
/// absolute expiry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredLeases {
    /// (id, deadline in UNIX ms), earliest first.
    pub leases: Vec<(Vec<u8>, i64)>,
    /// UNIX ms; -1 without an expiry, -2 without the key.
    pub expires_at: i64,
}

impl StoredLeases {
    /// The latest deadline, which the key's expiry must be.
    pub fn last_deadline(&self) -> Option<i64> {
        self.leases.iter().map(|(_, at)| *at).max()
    }

    /// The ids, in deadline order.
    pub fn ids(&self) -> Vec<Vec<u8>> {
        self.leases.iter().map(|(id, _)| id.clone()).collect()
    }
}

pub fn stored_leases<K: ToRedisArgs>(con: &mut dyn ConnectionLike, key: K) -> StoredLeases {
    let key = key.to_redis_args();
    StoredLeases {
        leases: leases(con, &key),
        expires_at: pexpiretime(con, &key),
    }
}

/// Every key of the current database, each a key of leases, as stored.
pub fn all_lease_sets(con: &mut dyn ConnectionLike) -> BTreeMap<Vec<u8>, StoredLeases> {
    all_keys(con)
        .into_iter()
        .map(|key| {
            let kind: String = redis::cmd("TYPE").arg(&key).query(con).unwrap();
            assert_eq!(
                kind,
                "zset",
                "{} is not a key of leases",
                key.escape_ascii()
            );
            let state = stored_leases(con, key.as_slice());
            (key, state)
        })
        .collect()
}
