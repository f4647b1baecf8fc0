//! Running the module in production: the `INFO ratelimit` counters, keyspace
//! events, what `COMMAND INFO`/`COMMAND DOCS` and ACL know of each command,
//! the module configs and the line the module logs at load.
//!
//! Every test starts its own server and uses its own keys. What a server
//! version cannot do is not run there, and the test says so on stderr; what
//! a server should support is decided from its version (`INFO server`), never
//! from what the module reports, so a module that stopped describing itself
//! fails instead of skipping. Events are collected until a sentinel message
//! published after the workload arrives: no test waits on a timer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{
    check, counters, error, error_of, events_during, exists, get_str, has_command, parse_section,
    peek, ratelimit_section, reset, run, throttle, try_run, wrong_algorithm, Abilities, DataDir,
    Decision, Server, Throttled, FIELDS, FIXED, THROTTLE, WRONGTYPE,
};
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
// Keyspace events
// ---------------------------------------------------------------------------

/// One event a workload fires: the key, the event name and its class (`d`
/// for module events, `$` for string commands).
type Fired = (String, &'static str, char);

/// What a subscriber sees of `fired` with `notify-keyspace-events` set to
/// `flags` (`K`, `E`, classes; `A` is every class used here).
fn seen(fired: &[Fired], flags: &str) -> Vec<(String, String)> {
    let all = flags.contains('A');
    let mut out = Vec::new();
    for (key, event, class) in fired {
        if !all && !flags.contains(*class) {
            continue;
        }
        if flags.contains('K') {
            out.push((format!("__keyspace@0__:{key}"), event.to_string()));
        }
        if flags.contains('E') {
            out.push((format!("__keyevent@0__:{event}"), key.clone()));
        }
    }
    out
}

/// Every kind of call, on keys under `prefix`; returns the events they must
/// fire, in order, with `denied-events` as given.
fn event_workload(con: &mut Connection, prefix: &str, denied_events: bool) -> Vec<Fired> {
    let key = |name: &str| format!("{prefix}:{name}");
    let (fixed, sliding, token, bare, cell) = (
        key("fixed"),
        key("sliding"),
        key("token"),
        key("bare"),
        key("cell"),
    );
    let mut fired: Vec<Fired> = Vec::new();
    let denied = |fired: &mut Vec<Fired>, key: &str| {
        if denied_events {
            fired.push((key.to_string(), "ratelimit.denied", 'd'));
        }
    };

    // Admitted requests change the key: one event each.
    for remaining in [1, 0] {
        let reply = check(con, &fixed, 2, 60, &[]);
        assert_eq!(
            (reply.allowed, reply.remaining),
            (true, remaining),
            "{reply:?}"
        );
        fired.push((fixed.clone(), "ratelimit.check", 'd'));
    }
    // A denied request changes nothing.
    assert!(!check(con, &fixed, 2, 60, &[]).allowed);
    denied(&mut fired, &fixed);
    // A request that can never fit is denied too.
    let reply = check(con, &fixed, 2, 60, &["COST", "3"]);
    assert_eq!(reply.without_reset(), (false, 0, 2, -1), "{reply:?}");
    denied(&mut fired, &fixed);
    // A COST 0 look and PEEKs (even of a full limiter) change nothing.
    let look = check(con, &fixed, 2, 60, &["COST", "0"]);
    assert_eq!((look.allowed, look.remaining), (true, 0));
    assert!(!peek(con, &fixed, 2, 60, &[]).allowed);
    // Even a look that answers "denied" (a limit now below the count) is a
    // look: no `ratelimit.denied`.
    assert!(!check(con, &fixed, 1, 60, &["COST", "0"]).allowed);

    let sliding_options = ["ALGORITHM", "SLIDING"];
    assert!(check(con, &sliding, 5, 60, &sliding_options).allowed);
    fired.push((sliding.clone(), "ratelimit.check", 'd'));
    assert!(peek(con, &sliding, 5, 60, &sliding_options).allowed);

    let token_options = ["ALGORITHM", "TOKEN"];
    assert!(check(con, &token, 1, 60, &token_options).allowed);
    fired.push((token.clone(), "ratelimit.check", 'd'));
    assert!(!check(con, &token, 1, 60, &token_options).allowed);
    denied(&mut fired, &token);
    assert!(!peek(con, &token, 1, 60, &token_options).allowed);

    // A counter stored without an expiry gets its window from the first
    // request that counts, even a denied one: the key changed.
    let _: () = run(con, &["SET", &bare, "9"]);
    fired.push((bare.clone(), "set", '$'));
    assert!(!check(con, &bare, 5, 60, &[]).allowed);
    fired.push((bare.clone(), "ratelimit.check", 'd'));
    denied(&mut fired, &bare);
    // From then on a denied request changes nothing.
    assert!(!check(con, &bare, 5, 60, &[]).allowed);
    denied(&mut fired, &bare);

    // THROTTLE: admitted, limited, a quantity-0 look.
    assert!(!throttle(con, &cell, 0, 1, 60, None).limited);
    fired.push((cell.clone(), "ratelimit.throttle", 'd'));
    assert!(throttle(con, &cell, 0, 1, 60, None).limited);
    denied(&mut fired, &cell);
    assert!(!throttle(con, &cell, 0, 1, 60, Some(0)).limited);

    // Errors change nothing.
    error(con, &["RATELIMIT.CHECK", &key("error"), "0", "60"]);
    assert_eq!(
        error(con, &["RATELIMIT.THROTTLE", &fixed, "0", "1", "60"]),
        wrong_algorithm(FIXED.name, THROTTLE.name)
    );

    // RESET: one event per key removed, in argument order; none for a
    // missing key.
    assert_eq!(reset(con, &[&fixed, &key("missing"), &cell, &token]), 3);
    for k in [&fixed, &cell, &token] {
        fired.push((k.clone(), "ratelimit.reset", 'd'));
    }
    fired
}

// ---------------------------------------------------------------------------
// INFO ratelimit
// ---------------------------------------------------------------------------

#[test]
fn operations_info_section_lists_every_counter_in_the_right_sections() {
    let server = Server::start();
    let mut con = server.connect();
    // Something counted, so that the values are not all zero.
    check(&mut con, "sections", 1, 60, &[]);

    let own: String = run(&mut con, &["INFO", "ratelimit"]);
    assert_eq!(
        own.lines().next().map(str::trim_end),
        Some("# ratelimit"),
        "INFO ratelimit:\n{own}"
    );
    let lines = ratelimit_section(&own).unwrap();
    let values = parse_section(&lines, "INFO ratelimit");
    assert_eq!(values["check_calls"], 1);
    // Nothing else in the reply but the section.
    let rest: Vec<&str> = own
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(rest.len(), 1 + FIELDS.len(), "INFO ratelimit:\n{own}");

    for section in ["modules", "everything"] {
        let info: String = run(&mut con, &["INFO", section]);
        let lines = ratelimit_section(&info)
            .unwrap_or_else(|| panic!("INFO {section} has no # ratelimit section:\n{info}"));
        assert_eq!(
            parse_section(&lines, &format!("INFO {section}")),
            values,
            "INFO {section}"
        );
    }
    for args in [&["INFO"][..], &["INFO", "default"]] {
        let info: String = run(&mut con, args);
        assert!(
            ratelimit_section(&info).is_none() && !info.contains("ratelimit_"),
            "{}:\n{info}",
            args.join(" ")
        );
    }
}

#[test]
fn operations_info_counts_calls_errors_and_decisions_exactly() {
    let server = Server::start();
    let mut con = server.connect();
    let abilities = Abilities::of(&mut con);
    let before = counters(&mut con);

    // CHECK: fixed window of 3, five requests; sliding admitted; token
    // admitted then denied.
    let mut decisions = Vec::new();
    for _ in 0..5 {
        decisions.push(check(&mut con, "info:fixed", 3, 60, &[]).allowed);
    }
    assert_eq!(decisions, [true, true, true, false, false]);
    let sliding = ["ALGORITHM", "SLIDING"];
    assert!(check(&mut con, "info:sliding", 5, 60, &sliding).allowed);
    let token = ["ALGORITHM", "TOKEN"];
    assert!(check(&mut con, "info:token", 1, 60, &token).allowed);
    assert!(!check(&mut con, "info:token", 1, 60, &token).allowed);
    // Two PEEKs of different algorithms.
    peek(&mut con, "info:fixed", 3, 60, &[]);
    peek(&mut con, "info:sliding", 5, 60, &sliding);
    // Looks through CHECK and THROTTLE: counted as looks, not decisions,
    // even when what they look at is full (the fixed window is).
    assert!(check(&mut con, "info:fixed", 3, 60, &["COST", "0"]).allowed);
    throttle(&mut con, "info:look", 0, 1, 60, Some(0));
    // THROTTLE admitted, then limited.
    assert!(!throttle(&mut con, "info:cell", 0, 1, 60, None).limited);
    assert!(throttle(&mut con, "info:cell", 0, 1, 60, None).limited);
    // RESET of two limiters and a missing key.
    assert_eq!(
        reset(&mut con, &["info:fixed", "info:missing", "info:sliding"]),
        2
    );

    // Errors: bad arguments and keys of the wrong kind, for each command.
    let _: () = run(&mut con, &["RPUSH", "info:list", "x"]);
    let _: () = run(&mut con, &["SET", "info:text", "hello"]);
    let wrong_kind: [(&[&str], String); 6] = [
        (
            &["RATELIMIT.CHECK", "info:list", "1", "60"],
            WRONGTYPE.into(),
        ),
        // A THROTTLE key is no fixed-window counter.
        (
            &["RATELIMIT.CHECK", "info:cell", "1", "60"],
            wrong_algorithm(THROTTLE.name, FIXED.name),
        ),
        (
            &["RATELIMIT.PEEK", "info:list", "1", "60"],
            WRONGTYPE.into(),
        ),
        (&["RATELIMIT.RESET", "info:list"], WRONGTYPE.into()),
        // A limiter and a string that is not one: nothing is removed.
        (
            &["RATELIMIT.RESET", "info:token", "info:text"],
            WRONGTYPE.into(),
        ),
        (
            &["RATELIMIT.THROTTLE", "info:list", "0", "1", "60"],
            WRONGTYPE.into(),
        ),
    ];
    for (args, expected) in wrong_kind {
        assert_eq!(error(&mut con, args), expected, "{}", args.join(" "));
    }
    let bad_arguments: [&[&str]; 4] = [
        &["RATELIMIT.CHECK", "info:e", "0", "60"],
        &["RATELIMIT.CHECK", "info:e", "1", "60", "ALGORITHM", "LEAKY"],
        &["RATELIMIT.PEEK", "info:e", "1", "0"],
        &["RATELIMIT.THROTTLE", "info:e", "-1", "1", "60"],
    ];
    for args in bad_arguments {
        let err = error(&mut con, args);
        assert!(err.starts_with("ERR "), "{}: {err}", args.join(" "));
    }
    // The RESET that failed removed nothing.
    assert!(exists(&mut con, "info:token"));
    // Too few arguments: Redis 7.0+ knows the arity and refuses the call
    // before the module sees it; older servers let the module refuse it.
    assert_eq!(
        error(&mut con, &["RATELIMIT.CHECK", "info:e", "1"]),
        "ERR wrong number of arguments for 'ratelimit.check' command"
    );
    let arity_counted = u64::from(!abilities.command_info());

    let after = counters(&mut con);
    let delta: BTreeMap<&str, u64> = FIELDS
        .iter()
        .map(|f| (*f, after[*f] - before[*f]))
        .collect();
    let expected: BTreeMap<&str, u64> = [
        ("check_calls", 8 + 1 + 4 + arity_counted),
        ("check_errors", 4 + arity_counted),
        ("peek_calls", 2 + 2),
        ("peek_errors", 2),
        ("reset_calls", 1 + 2),
        ("reset_errors", 2),
        ("reset_keys", 2),
        ("throttle_calls", 2 + 1 + 2),
        ("throttle_errors", 2),
        ("allowed", 3 + 1 + 1 + 1),
        ("denied", 2 + 1 + 1),
        ("fixed_allowed", 3),
        ("fixed_denied", 2),
        // One PEEK and one COST 0 look; the PEEK that failed on a list
        // does not count.
        ("fixed_peeks", 1 + 1),
        ("sliding_allowed", 1),
        ("sliding_denied", 0),
        ("sliding_peeks", 1),
        ("token_allowed", 1),
        ("token_denied", 1),
        ("token_peeks", 0),
        ("throttle_allowed", 1),
        ("throttle_denied", 1),
        ("throttle_peeks", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(delta, expected);

    // The totals are the sums over the algorithms.
    for total in ["allowed", "denied"] {
        let sum: u64 = ["fixed", "sliding", "token", "throttle"]
            .iter()
            .map(|a| after[&format!("{a}_{total}")])
            .sum();
        assert_eq!(after[total], sum, "{total}: {after:?}");
    }
}

// ---------------------------------------------------------------------------
// Keyspace events
// ---------------------------------------------------------------------------

#[test]
fn operations_keyspace_events_fire_for_changes_only() {
    let server = Server::start();
    let mut con = server.connect();
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "notify-keyspace-events", "KEA"],
    );
    let mut fired = Vec::new();
    let events = events_during(&server, |con| fired = event_workload(con, "ev", false));
    assert_eq!(events, seen(&fired, "KEA"));
    // The workload fired module events of each kind, on both channels.
    for event in ["ratelimit.check", "ratelimit.throttle", "ratelimit.reset"] {
        let channel = format!("__keyevent@0__:{event}");
        assert!(
            events.iter().any(|(c, _)| *c == channel),
            "{event} missing from {events:?}"
        );
    }
    assert!(!events.iter().any(|(_, e)| e == "ratelimit.denied"));
}

#[test]
fn operations_module_events_are_of_class_d() {
    let server = Server::start();
    let mut con = server.connect();
    // Class d alone: every module event and nothing else, on the channel
    // asked for.
    for (round, flags) in ["Kd", "Ed", "KEd"].into_iter().enumerate() {
        let _: () = run(
            &mut con,
            &["CONFIG", "SET", "notify-keyspace-events", flags],
        );
        let prefix = format!("class{round}");
        let mut fired = Vec::new();
        let events = events_during(&server, |con| fired = event_workload(con, &prefix, false));
        let expected = seen(&fired, flags);
        assert!(!expected.is_empty());
        assert_eq!(events, expected, "notify-keyspace-events {flags}");
    }
    // Every class but d: no module event.
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "notify-keyspace-events", "KEg$lshzxet"],
    );
    let mut fired = Vec::new();
    let events = events_during(&server, |con| fired = event_workload(con, "nod", false));
    assert_eq!(events, seen(&fired, "KE$"));
    assert_eq!(
        events,
        [
            ("__keyspace@0__:nod:bare".to_string(), "set".to_string()),
            ("__keyevent@0__:set".to_string(), "nod:bare".to_string()),
        ]
    );
}

#[test]
fn operations_no_events_with_notifications_off() {
    let server = Server::start();
    let mut con = server.connect();
    let flags: Vec<String> = run(&mut con, &["CONFIG", "GET", "notify-keyspace-events"]);
    assert_eq!(flags, ["notify-keyspace-events", ""]);
    let events = events_during(&server, |con| {
        let fired = event_workload(con, "off", false);
        assert!(fired.len() > 5);
    });
    assert_eq!(events, []);
    // Not even denied events, when asked for, while notifications are off.
    let server = Server::builder().module_arg("denied-events", "yes").start();
    let events = events_during(&server, |con| {
        event_workload(con, "off", true);
    });
    assert_eq!(events, []);
}

#[test]
fn operations_denied_events_from_the_module_argument() {
    let server = Server::builder().module_arg("denied-events", "yes").start();
    let mut con = server.connect();
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "notify-keyspace-events", "KEA"],
    );
    let mut fired = Vec::new();
    let events = events_during(&server, |con| fired = event_workload(con, "arg", true));
    assert_eq!(events, seen(&fired, "KEA"));
    let denied: Vec<&String> = fired
        .iter()
        .filter(|(_, e, _)| *e == "ratelimit.denied")
        .map(|(k, _, _)| k)
        .collect();
    // Denied CHECKs of each kind, the bare counter twice, a limited THROTTLE.
    assert_eq!(
        denied,
        [
            "arg:fixed",
            "arg:fixed",
            "arg:token",
            "arg:bare",
            "arg:bare",
            "arg:cell"
        ]
    );
    assert!(
        server.log().contains("denied-events yes"),
        "{}",
        server.log()
    );
}

#[test]
fn operations_denied_events_switch_with_config_set() {
    let server = Server::start();
    let mut con = server.connect();
    if !Abilities::of(&mut con).command_info() {
        let err = error(
            &mut con,
            &["CONFIG", "SET", "ratelimit.denied-events", "yes"],
        );
        assert!(err.starts_with("ERR"), "{err}");
        eprintln!("not run (denied-events by CONFIG SET): no module configs before Redis 7.0");
        return;
    }
    let _: () = run(&mut con, &["CONFIG", "SET", "notify-keyspace-events", "Kd"]);
    for (round, on) in [false, true, false].into_iter().enumerate() {
        let value = if on { "yes" } else { "no" };
        let _: () = run(
            &mut con,
            &["CONFIG", "SET", "ratelimit.denied-events", value],
        );
        let prefix = format!("set{round}");
        let mut fired = Vec::new();
        let events = events_during(&server, |con| fired = event_workload(con, &prefix, on));
        assert_eq!(events, seen(&fired, "Kd"), "denied-events {value}");
        assert_eq!(
            events.iter().any(|(_, e)| e == "ratelimit.denied"),
            on,
            "denied-events {value}: {events:?}"
        );
    }
}

#[test]
fn operations_watch_sees_an_admitted_throttle_not_a_limited_one() {
    let server = Server::start();
    let mut watcher = server.connect();
    let mut other = server.connect();
    let key = "watched:cell";
    let transaction = |con: &mut Connection| -> Option<(Option<String>,)> {
        redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(key)
            .query(con)
            .unwrap()
    };
    assert!(!throttle(&mut other, key, 0, 1, 60, None).limited);
    let value = get_str(&mut other, key);

    // A limited call and a quantity-0 look change nothing: EXEC runs.
    let _: () = run(&mut watcher, &["WATCH", key]);
    assert!(throttle(&mut other, key, 0, 1, 60, None).limited);
    throttle(&mut other, key, 0, 1, 60, Some(0));
    assert_eq!(transaction(&mut watcher), Some((value,)));

    // An admitted call changes the key: EXEC is aborted.
    let _: () = run(&mut watcher, &["WATCH", key]);
    assert!(!throttle(&mut other, key, 5, 1, 60, None).limited);
    assert_eq!(
        transaction(&mut watcher),
        None,
        "EXEC ran although the key changed"
    );
}

// ---------------------------------------------------------------------------
// Command metadata
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
fn operations_command_metadata_describes_each_command() {
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
fn operations_acl_key_permissions_follow_the_key_specs() {
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
fn operations_acl_categories_let_rules_name_the_commands() {
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
                "ratelimit.check",
                "ratelimit.peek",
                "ratelimit.reset",
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

// ---------------------------------------------------------------------------
// Module configs
// ---------------------------------------------------------------------------

/// `CONFIG GET ratelimit.*` as a map.
fn module_configs(con: &mut Connection) -> BTreeMap<String, String> {
    run(con, &["CONFIG", "GET", "ratelimit.*"])
}

fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn operations_module_configs_show_and_change_the_options() {
    let server = Server::start();
    let mut con = server.connect();
    if !Abilities::of(&mut con).command_info() {
        // Load-time arguments only: covered by the next test.
        assert_eq!(module_configs(&mut con), configs(&[]));
        eprintln!("not run (CONFIG GET/SET ratelimit.*): no module configs before Redis 7.0");
        return;
    }
    assert_eq!(
        module_configs(&mut con),
        configs(&[
            ("ratelimit.cl-throttle", "no"),
            ("ratelimit.denied-events", "no"),
        ])
    );

    // A bad value is refused and the old one stays.
    let err = error(
        &mut con,
        &["CONFIG", "SET", "ratelimit.denied-events", "maybe"],
    );
    assert!(
        err.starts_with("ERR") && err.contains("ratelimit.denied-events"),
        "{err}"
    );
    // cl-throttle registers a command at load: it cannot change later.
    let err = error(&mut con, &["CONFIG", "SET", "ratelimit.cl-throttle", "yes"]);
    assert!(err.starts_with("ERR") && err.contains("immutable"), "{err}");
    assert_eq!(
        module_configs(&mut con),
        configs(&[
            ("ratelimit.cl-throttle", "no"),
            ("ratelimit.denied-events", "no"),
        ])
    );
    assert!(!has_command(&mut con, "CL.THROTTLE"));

    // denied-events takes effect at once.
    let _: () = run(&mut con, &["CONFIG", "SET", "notify-keyspace-events", "Kd"]);
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "ratelimit.denied-events", "yes"],
    );
    assert_eq!(module_configs(&mut con)["ratelimit.denied-events"], "yes");
    let events = events_during(&server, |con| {
        assert!(!check(con, "cfg:full", 1, 60, &["COST", "2"]).allowed);
    });
    assert_eq!(
        events,
        [(
            "__keyspace@0__:cfg:full".to_string(),
            "ratelimit.denied".to_string()
        )]
    );

    // Load-time arguments are the values CONFIG GET shows.
    let server = Server::builder()
        .module_arg("cl-throttle", "yes")
        .module_arg("denied-events", "yes")
        .start();
    let mut con = server.connect();
    assert_eq!(
        module_configs(&mut con),
        configs(&[
            ("ratelimit.cl-throttle", "yes"),
            ("ratelimit.denied-events", "yes"),
        ])
    );
    assert!(has_command(&mut con, "CL.THROTTLE"));
    let err = error(&mut con, &["CONFIG", "SET", "ratelimit.cl-throttle", "no"]);
    assert!(err.contains("immutable"), "{err}");
    let err = error(&mut con, &["CONFIG", "SET", "ratelimit.denied-events", "1"]);
    assert!(err.starts_with("ERR"), "{err}");
    let _: () = run(
        &mut con,
        &["CONFIG", "SET", "ratelimit.denied-events", "no"],
    );
    assert_eq!(
        module_configs(&mut con),
        configs(&[
            ("ratelimit.cl-throttle", "yes"),
            ("ratelimit.denied-events", "no"),
        ])
    );

    // Lines of a configuration file (here included from the command line).
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ratelimit.conf");
    std::fs::write(
        &conf,
        "ratelimit.cl-throttle yes\nratelimit.denied-events yes\n",
    )
    .unwrap();
    let server = Server::builder()
        .arg("include", conf.to_str().unwrap())
        .start();
    let mut con = server.connect();
    assert_eq!(
        module_configs(&mut con),
        configs(&[
            ("ratelimit.cl-throttle", "yes"),
            ("ratelimit.denied-events", "yes"),
        ])
    );
    assert_eq!(
        run::<Throttled>(&mut con, &["CL.THROTTLE", "cfg:cell", "0", "1", "60"]),
        Throttled::admitted(1, 0, 60)
    );
    assert!(
        server
            .log()
            .contains("options: cl-throttle yes, denied-events yes"),
        "{}",
        server.log()
    );
}

#[test]
fn operations_load_time_arguments_work_on_every_server() {
    let server = Server::builder().module_arg("cl-throttle", "yes").start();
    let mut con = server.connect();
    let before = counters(&mut con);
    assert_eq!(
        run::<Throttled>(&mut con, &["CL.THROTTLE", "arg:cell", "0", "1", "60"]),
        Throttled::admitted(1, 0, 60)
    );
    // CL.THROTTLE counts as THROTTLE.
    let after = counters(&mut con);
    assert_eq!(after["throttle_calls"] - before["throttle_calls"], 1);
    assert_eq!(after["throttle_allowed"] - before["throttle_allowed"], 1);
    if !Abilities::of(&mut con).command_info() {
        assert_eq!(module_configs(&mut con), configs(&[]));
        assert!(
            server
                .log()
                .contains("no module configs on this server: load-time arguments only"),
            "{}",
            server.log()
        );
    }
    // Without the option there is no CL.THROTTLE.
    let server = Server::start();
    let mut con = server.connect();
    assert!(!has_command(&mut con, "CL.THROTTLE"));
    let err = error(&mut con, &["CL.THROTTLE", "arg:cell", "0", "1", "60"]);
    assert!(err.contains("unknown command"), "{err}");
}

// ---------------------------------------------------------------------------
// The load log line
// ---------------------------------------------------------------------------

#[test]
fn operations_load_log_line_names_version_options_and_server_apis() {
    let server = Server::start();
    let mut con = server.connect();
    let abilities = Abilities::of(&mut con);
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("<ratelimit> version"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    let found = |b: bool| if b { "found" } else { "absent" };
    let cached = abilities.acl_categories();
    let expected = format!(
        "* <ratelimit> version {} loaded; options: cl-throttle no, denied-events no ({}); \
         server APIs: CachedMicroseconds {} (clock: {}), SetCommandInfo {}, \
         SetCommandACLCategories {}, AddACLCategory {}",
        env!("CARGO_PKG_VERSION"),
        if abilities.command_info() {
            "CONFIG GET/SET ratelimit.*"
        } else {
            "no module configs on this server: load-time arguments only"
        },
        found(cached),
        if cached {
            "the command time the server froze"
        } else {
            "the wall clock"
        },
        found(abilities.command_info()),
        found(abilities.acl_categories()),
        if abilities.own_category() {
            "found (@ratelimit)"
        } else {
            "absent"
        },
    );
    assert!(
        lines[0].ends_with(&expected),
        "log line:\n{}\nexpected it to end with:\n{expected}",
        lines[0]
    );
    // Nothing the module logs is a warning when the load succeeds... except
    // what redis-module itself says of defrag callbacks on old servers.
    for line in log.lines().filter(|l| l.contains("<ratelimit>")) {
        assert!(
            line.contains(" * ") || line.contains("defrag"),
            "unexpected module log line: {line}"
        );
    }
}

#[test]
fn operations_bad_module_option_refuses_the_load_with_a_reason() {
    let cases = [
        (
            "denied-events maybe",
            "module option denied-events must be yes or no",
        ),
        (
            "DENIED-EVENTS 1",
            "module option DENIED-EVENTS must be yes or no",
        ),
        ("denied-events", "module option denied-events has no value"),
        (
            "cl-throttle yes fast yes",
            "unknown module option fast (known: cl-throttle, denied-events)",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (args, reason)) in cases.into_iter().enumerate() {
        // A `loadmodule` line of a configuration file: the harness gives
        // module arguments in pairs, and one case has an odd count.
        let conf = dir.path().join(format!("bad-{i}.conf"));
        let line = format!("loadmodule {} {args}\n", common::module_path().display());
        std::fs::write(&conf, line).unwrap();
        let started = Server::builder()
            .without_module()
            .arg("include", conf.to_str().unwrap())
            .try_start();
        match started {
            Ok(server) => panic!("the server started with `{args}`:\n{}", server.log()),
            Err(log) => {
                assert!(log.contains(reason), "`{args}`; log:\n{log}");
                assert!(log.contains("Module not loaded"), "`{args}`; log:\n{log}");
            }
        }
    }
}

#[test]
fn operations_module_unloads_and_loads_again() {
    // MODULE needs `enable-module-command` from Redis 7.0 on; 6.2 has no
    // such directive and always allows it.
    let data = DataDir::new();
    let server = data
        .aof()
        .arg("enable-module-command", "yes")
        .try_start()
        .unwrap_or_else(|_| data.aof().start());
    let mut con = server.connect();
    let sliding = ["ALGORITHM", "SLIDING"];
    assert!(check(&mut con, "u:a", 5, 60, &sliding).allowed);

    let _: () = run(&mut con, &["MODULE", "UNLOAD", "ratelimit"]);
    let err = error_of(
        redis::cmd("RATELIMIT.CHECK")
            .arg("u:a")
            .arg(5)
            .arg(60)
            .query(&mut con),
    );
    assert!(err.contains("unknown command"), "{err}");

    // Loaded again, a check that propagates a SET … PXAT (whose PXAT string
    // the module keeps from load to unload) works and is written out.
    let module = common::module_path();
    let _: () = run(&mut con, &["MODULE", "LOAD", module.to_str().unwrap()]);
    let b = check(&mut con, "u:b", 5, 60, &sliding);
    assert_eq!((b.allowed, b.remaining), (true, 4));
    let a = check(&mut con, "u:a", 5, 60, &sliding);
    assert_eq!((a.allowed, a.remaining), (true, 3));
    assert_eq!(get_str(&mut con, "u:b").as_deref(), Some("S0:1"));
    assert_eq!(run::<String>(&mut con, &["PING"]), "PONG");
    let aof = data.aof_contents();
    assert!(aof.contains("u:b") && aof.contains("pxat"), "{aof}");
}
