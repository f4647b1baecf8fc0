//! What the server knows of each command: `COMMAND GETKEYS`, `COMMAND
//! INFO` (arity, key specs, ACL categories), `COMMAND DOCS`, and the ACL
//! rules those make work (key patterns, read-only and write-only keys,
//! categories).
//!
//! What a server version cannot do is not run there, and the test says so
//! on stderr; what a server should support is decided from its version
//! (`INFO server`), never from what the module reports, so a module that
//! stopped describing itself fails instead of skipping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{check, counters, error, get_str, run, try_run, Abilities, Decision, Server};
use redis::{Connection, Value};

/// A reply as a tree of integers, texts and lists (a map is flattened to a
/// key/value list, as RESP2 sends it).
#[derive(Debug, Clone, PartialEq)]
enum Tree {
    Nil,
    Int(i64),
    Text(String),
    List(Vec<Tree>),
}

impl Tree {
    fn of(value: &Value) -> Tree {
        match value {
            Value::Nil => Tree::Nil,
            Value::Int(i) => Tree::Int(*i),
            Value::BulkString(b) => Tree::Text(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Tree::Text(s.clone()),
            Value::Okay => Tree::Text("OK".to_string()),
            Value::Array(items) | Value::Set(items) => {
                Tree::List(items.iter().map(Tree::of).collect())
            }
            Value::Map(pairs) => Tree::List(
                pairs
                    .iter()
                    .flat_map(|(k, v)| [Tree::of(k), Tree::of(v)])
                    .collect(),
            ),
            other => panic!("unexpected reply element {other:?}"),
        }
    }

    fn list(&self) -> &[Tree] {
        match self {
            Tree::List(items) => items,
            other => panic!("expected a list, got {other:?}"),
        }
    }

    fn text(&self) -> &str {
        match self {
            Tree::Text(text) => text,
            other => panic!("expected a text, got {other:?}"),
        }
    }

    fn texts(&self) -> Vec<String> {
        self.list().iter().map(|t| t.text().to_string()).collect()
    }

    /// The value after `name` in a key/value list.
    fn field(&self, name: &str) -> Option<&Tree> {
        self.list()
            .chunks(2)
            .find(|pair| matches!(&pair[0], Tree::Text(t) if t == name))
            .map(|pair| &pair[1])
    }

    /// [`Tree::field`], which must be there.
    fn get(&self, name: &str) -> &Tree {
        self.field(name)
            .unwrap_or_else(|| panic!("no {name:?} in {self:?}"))
    }
}

/// `COMMAND INFO command` as a tree (one entry).
fn command_info(con: &mut Connection, command: &str) -> Tree {
    let reply: Value = run(con, &["COMMAND", "INFO", command]);
    let tree = Tree::of(&reply);
    let entry = tree.list()[0].clone();
    assert_ne!(entry, Tree::Nil, "COMMAND INFO {command}: no such command");
    entry
}

/// The ACL categories of a command (`COMMAND INFO`, Redis 7.0+).
fn categories(con: &mut Connection, command: &str) -> Vec<String> {
    command_info(con, command).list()[6].texts()
}

/// A connection authenticated as `user` (created with `nopass`).
fn connect_as(server: &Server, user: &str) -> Connection {
    let mut con = server.connect();
    let _: () = run(&mut con, &["AUTH", user, "any-password"]);
    con
}

/// Asserts that `args` is refused to this connection by ACL.
fn assert_noperm(con: &mut Connection, args: &[&str]) {
    let err = error(con, args);
    assert!(err.starts_with("NOPERM"), "{}: {err}", args.join(" "));
}

/// Asserts that `args` runs for this connection (any reply but an error).
fn assert_permitted(con: &mut Connection, args: &[&str]) {
    if let Err(e) = try_run(con, args) {
        panic!("{}: {e}", args.join(" "));
    }
}

// ---------------------------------------------------------------------------
// COMMAND INFO, COMMAND DOCS, key specs
// ---------------------------------------------------------------------------

/// One argument of `COMMAND DOCS`, in short: `name:type`, then its key
/// spec, token, flags and sub-arguments.
fn describe_argument(arg: &Tree) -> String {
    let mut text = format!("{}:{}", arg.get("name").text(), arg.get("type").text());
    if let Some(index) = arg.field("key_spec_index") {
        text += &format!(" key_spec={index:?}");
    }
    if let Some(token) = arg.field("token") {
        text += &format!(" token={}", token.text());
    }
    if let Some(flags) = arg.field("flags") {
        text += &format!(" [{}]", flags.texts().join(","));
    }
    if let Some(subargs) = arg.field("arguments") {
        let subargs: Vec<String> = subargs.list().iter().map(describe_argument).collect();
        text += &format!(" ({})", subargs.join(", "));
    }
    text
}

/// Asserts the one key spec of `COMMAND INFO`: its flags, and keys from
/// argument 1 to `lastkey` (0: one key; -1: every remaining argument).
fn assert_key_spec(info: &Tree, flags: &[&str], lastkey: i64) {
    let specs = info.list()[8].list();
    assert_eq!(specs.len(), 1, "key specs: {specs:?}");
    let spec = &specs[0];
    assert_eq!(spec.get("flags").texts(), flags, "{spec:?}");
    let begin = spec.get("begin_search");
    assert_eq!(begin.get("type").text(), "index", "{spec:?}");
    assert_eq!(begin.get("spec").get("index"), &Tree::Int(1), "{spec:?}");
    let find = spec.get("find_keys");
    assert_eq!(find.get("type").text(), "range", "{spec:?}");
    let range = find.get("spec");
    assert_eq!(range.get("lastkey"), &Tree::Int(lastkey), "{spec:?}");
    assert_eq!(range.get("keystep"), &Tree::Int(1), "{spec:?}");
    assert_eq!(range.get("limit"), &Tree::Int(0), "{spec:?}");
}

#[test]
fn command_metadata_describes_each_command() {
    let server = Server::start();
    let mut con = server.connect();
    let abilities = Abilities::of(&mut con);

    // COMMAND GETKEYS works everywhere, from the legacy key range or the
    // key specs.
    for (args, keys) in [
        (
            &["RATELIMIT.CHECK", "k1", "1", "60", "COST", "2"][..],
            &["k1"][..],
        ),
        (&["RATELIMIT.PEEK", "k2", "1", "60"], &["k2"]),
        (&["RATELIMIT.RESET", "a", "b", "c"], &["a", "b", "c"]),
        (&["RATELIMIT.THROTTLE", "k3", "1", "2", "60", "1"], &["k3"]),
    ] {
        let mut getkeys = vec!["COMMAND", "GETKEYS"];
        getkeys.extend_from_slice(args);
        let found: Vec<String> = run(&mut con, &getkeys);
        assert_eq!(found, keys, "{}", getkeys.join(" "));
    }

    let arities = [
        ("ratelimit.check", -4),
        ("ratelimit.peek", -4),
        ("ratelimit.reset", -2),
        ("ratelimit.throttle", -5),
    ];
    if !abilities.command_info() {
        // The module still loads and its commands work; arity, key specs
        // and docs cannot be given.
        for (command, _) in arities {
            let info = command_info(&mut con, command);
            assert_eq!(info.list()[1], Tree::Int(-1), "{command}: {info:?}");
        }
        assert!(check(&mut con, "legacy", 1, 60, &[]).allowed);
        eprintln!(
            "not checked (arity, key specs, COMMAND DOCS): no RedisModule_SetCommandInfo before Redis 7.0"
        );
        return;
    }

    for (command, arity) in arities {
        let info = command_info(&mut con, command);
        assert_eq!(info.list()[0].text(), command);
        assert_eq!(info.list()[1], Tree::Int(arity), "{command}: {info:?}");
    }
    assert_key_spec(
        &command_info(&mut con, "ratelimit.check"),
        &["RW", "access", "update"],
        0,
    );
    assert_key_spec(
        &command_info(&mut con, "ratelimit.peek"),
        &["RO", "access"],
        0,
    );
    assert_key_spec(
        &command_info(&mut con, "ratelimit.reset"),
        &["RW", "delete"],
        -1,
    );
    assert_key_spec(
        &command_info(&mut con, "ratelimit.throttle"),
        &["RW", "access", "update"],
        0,
    );

    let limit_args = [
        "key:key key_spec=Int(0)",
        "limit:integer",
        "period:integer",
        "cost:integer token=COST [optional]",
        "algorithm:oneof token=ALGORITHM [optional] (fixed:pure-token token=FIXED, \
         sliding:pure-token token=SLIDING, token:pure-token token=TOKEN)",
        "burst:integer token=BURST [optional]",
    ];
    let docs: [(&str, &str, &str, &[&str]); 4] = [
        (
            "ratelimit.check",
            "Counts a request against a rate limit and says whether it is allowed",
            "O(1)",
            &limit_args,
        ),
        (
            "ratelimit.peek",
            "Says what RATELIMIT.CHECK would answer, counting nothing",
            "O(1)",
            &limit_args,
        ),
        (
            "ratelimit.reset",
            "Removes the state of rate limiters",
            "O(N) where N is the number of keys",
            &["key:key key_spec=Int(0) [multiple]"],
        ),
        (
            "ratelimit.throttle",
            "Counts a request against a GCRA limit, answering as redis-cell's CL.THROTTLE",
            "O(1)",
            &[
                "key:key key_spec=Int(0)",
                "max_burst:integer",
                "count_per_period:integer",
                "period:integer",
                "quantity:integer [optional]",
            ],
        ),
    ];
    for (command, summary, complexity, args) in docs {
        let reply: Value = run(&mut con, &["COMMAND", "DOCS", command]);
        let reply = Tree::of(&reply);
        let doc = reply.get(command);
        assert_eq!(doc.get("summary").text(), summary, "{command}");
        assert_eq!(doc.get("complexity").text(), complexity, "{command}");
        assert_eq!(doc.get("since").text(), "0.1.0", "{command}");
        assert_eq!(doc.get("group").text(), "module", "{command}");
        assert_eq!(doc.get("module").text(), "ratelimit", "{command}");
        let described: Vec<String> = doc
            .get("arguments")
            .list()
            .iter()
            .map(describe_argument)
            .collect();
        assert_eq!(described, args, "{command}");
    }
}

// ---------------------------------------------------------------------------
// ACL
// ---------------------------------------------------------------------------

/// One call of each command, on `key` (`key2` also for RESET).
fn calls<'a>(key: &'a str, key2: &'a str) -> [Vec<&'a str>; 4] {
    [
        vec!["RATELIMIT.CHECK", key, "5", "60"],
        vec!["RATELIMIT.PEEK", key, "5", "60"],
        vec!["RATELIMIT.RESET", key, key2],
        vec!["RATELIMIT.THROTTLE", key2, "5", "1", "60"],
    ]
}

#[test]
fn command_metadata_acl_key_permissions_follow_the_key_specs() {
    let server = Server::start();
    let mut admin = server.connect();
    let abilities = Abilities::of(&mut admin);

    // Key patterns (every server): every key of every command is checked.
    let _: () = run(
        &mut admin,
        &[
            "ACL", "SETUSER", "scoped", "on", "nopass", "+@all", "~mine:*",
        ],
    );
    let mut scoped = connect_as(&server, "scoped");
    for call in calls("mine:1", "mine:2") {
        assert_permitted(&mut scoped, &call);
    }
    for call in calls("theirs:1", "theirs:2") {
        assert_noperm(&mut scoped, &call);
    }
    // RESET's later keys too.
    assert_noperm(
        &mut scoped,
        &["RATELIMIT.RESET", "mine:1", "mine:2", "theirs:1"],
    );

    if !abilities.command_info() {
        let err = error(
            &mut admin,
            &["ACL", "SETUSER", "reader", "on", "nopass", "%R~*", "+@all"],
        );
        assert!(err.starts_with("ERR"), "{err}");
        eprintln!(
            "not run (read-only and write-only key permissions): no %R~/%W~ before Redis 7.0"
        );
        return;
    }
    // Read-only keys: PEEK only.
    let _: () = run(
        &mut admin,
        &["ACL", "SETUSER", "reader", "on", "nopass", "%R~*", "+@all"],
    );
    let _: () = run(
        &mut admin,
        &["ACL", "SETUSER", "writer", "on", "nopass", "%W~*", "+@all"],
    );
    check(&mut admin, "acl:1", 5, 60, &[]);
    let before = counters(&mut admin);
    let mut reader = connect_as(&server, "reader");
    let [check, peek, reset, throttle] = calls("acl:1", "acl:2");
    assert_noperm(&mut reader, &check);
    assert_noperm(&mut reader, &reset);
    assert_noperm(&mut reader, &throttle);
    assert_eq!(
        run::<Decision>(&mut reader, &peek).without_reset(),
        (true, 4, 5, -1)
    );
    // Refused calls never reached the module.
    let after = counters(&mut admin);
    for field in ["check_calls", "reset_calls", "throttle_calls"] {
        assert_eq!(after[field], before[field], "{field}");
    }
    assert_eq!(get_str(&mut admin, "acl:1").as_deref(), Some("1"));

    // Write-only keys: CHECK and THROTTLE read the state, PEEK only reads
    // it; RESET only removes, like DEL.
    let mut writer = connect_as(&server, "writer");
    assert_noperm(&mut writer, &check);
    assert_noperm(&mut writer, &peek);
    assert_noperm(&mut writer, &throttle);
    assert_noperm(&mut writer, &["GET", "acl:1"]);
    let removed: i64 = run(&mut writer, &reset);
    assert_eq!(removed, 1);
}

#[test]
fn command_metadata_acl_categories_let_rules_name_the_commands() {
    let server = Server::start();
    let mut admin = server.connect();
    let abilities = Abilities::of(&mut admin);
    if !abilities.acl_categories() {
        eprintln!(
            "not run (ACL categories): no RedisModule_SetCommandACLCategories before Redis 7.2"
        );
        return;
    }
    for (command, expected) in [
        ("ratelimit.check", &["@write", "@fast"]),
        ("ratelimit.peek", &["@read", "@fast"]),
        ("ratelimit.reset", &["@write", "@keyspace"]),
        ("ratelimit.throttle", &["@write", "@fast"]),
    ] {
        let found = categories(&mut admin, command);
        for category in expected {
            assert!(found.iter().any(|c| c == category), "{command}: {found:?}");
        }
    }
    let read_only = categories(&mut admin, "ratelimit.peek");
    assert!(!read_only.iter().any(|c| c == "@write"), "{read_only:?}");

    // The categories work in rules.
    for (user, category) in [("writes", "+@write"), ("reads", "+@read")] {
        let _: () = run(
            &mut admin,
            &[
                "ACL", "SETUSER", user, "on", "nopass", "-@all", category, "~*",
            ],
        );
    }
    let [check, peek, reset, throttle] = calls("cat:1", "cat:2");
    let mut writes = connect_as(&server, "writes");
    for call in [&check, &reset, &throttle] {
        assert_permitted(&mut writes, call);
    }
    assert_noperm(&mut writes, &peek);
    let mut reads = connect_as(&server, "reads");
    assert_permitted(&mut reads, &peek);
    for call in [&check, &reset, &throttle] {
        assert_noperm(&mut reads, call);
    }

    if abilities.acl_cat_lists_module_commands() {
        let write: Vec<String> = run(&mut admin, &["ACL", "CAT", "write"]);
        for command in ["ratelimit.check", "ratelimit.reset", "ratelimit.throttle"] {
            assert!(write.iter().any(|c| c == command), "{command}: {write:?}");
        }
        assert!(!write.iter().any(|c| c == "ratelimit.peek"), "{write:?}");
        let read: Vec<String> = run(&mut admin, &["ACL", "CAT", "read"]);
        assert!(read.iter().any(|c| c == "ratelimit.peek"), "{read:?}");
    } else {
        eprintln!("not checked (ACL CAT write lists the commands): Redis leaves module commands out of ACL CAT <category>");
    }

    if !abilities.own_category() {
        let cats: Vec<String> = run(&mut admin, &["ACL", "CAT"]);
        assert!(!cats.iter().any(|c| c == "ratelimit"), "{cats:?}");
        eprintln!(
            "not run (@ratelimit): no RedisModule_AddACLCategory before Redis 7.4 / Valkey 8"
        );
        return;
    }
    let cats: Vec<String> = run(&mut admin, &["ACL", "CAT"]);
    assert!(cats.iter().any(|c| c == "ratelimit"), "{cats:?}");
    for command in [
        "ratelimit.check",
        "ratelimit.peek",
        "ratelimit.reset",
        "ratelimit.throttle",
        "ratelimit.mcheck",
        "ratelimit.mpeek",
        "ratelimit.acquire",
        "ratelimit.release",
        "ratelimit.renew",
        "ratelimit.reserve",
        "ratelimit.settle",
        "ratelimit.extend",
    ] {
        let found = categories(&mut admin, command);
        assert!(
            found.iter().any(|c| c == "@ratelimit"),
            "{command}: {found:?}"
        );
    }
    if abilities.acl_cat_lists_module_commands() {
        let mut listed: Vec<String> = run(&mut admin, &["ACL", "CAT", "ratelimit"]);
        listed.sort();
        assert_eq!(
            listed,
            [
                "ratelimit.acquire",
                "ratelimit.check",
                "ratelimit.extend",
                "ratelimit.mcheck",
                "ratelimit.mpeek",
                "ratelimit.peek",
                "ratelimit.release",
                "ratelimit.renew",
                "ratelimit.reserve",
                "ratelimit.reset",
                "ratelimit.settle",
                "ratelimit.throttle"
            ]
        );
    }
    let _: () = run(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "app",
            "on",
            "nopass",
            "-@all",
            "+@ratelimit",
            "~*",
        ],
    );
    let mut app = connect_as(&server, "app");
    for call in calls("app:1", "app:2") {
        assert_permitted(&mut app, &call);
    }
    assert_noperm(&mut app, &["GET", "app:1"]);
    assert_noperm(&mut app, &["SET", "app:1", "x"]);
}
