//! The one list of algorithms (`kinds!` in src/limiter/mod.rs) and what a
//! server shows of it: every entry must appear in `COMMAND DOCS`, in
//! `INFO ratelimit`, in the error that lists the algorithms, and in RESET
//! and the WRONGTYPE that names what a key holds. The list is read from the
//! source itself, so an entry the server forgets fails here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{error, make_one_of_each, run, wrong_algorithm, Abilities, Server, KINDS};
use redis::Value;

/// The names in `kinds!`: the algorithms CHECK chooses, then the other
/// kinds, each the variant's name in upper case (the unit tests hold each
/// kind to that).
fn listed() -> (Vec<String>, Vec<String>) {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/limiter/mod.rs"))
            .unwrap();
    let list = source
        .split("\nkinds! {")
        .nth(1)
        .expect("src/limiter/mod.rs calls kinds!");
    let block = |name: &str| -> Vec<String> {
        let body = list
            .split(&format!("{name} {{"))
            .nth(1)
            .unwrap_or_else(|| panic!("kinds! has no {name} block"));
        body.split('}')
            .next()
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once("=>"))
            .map(|(variant, _)| variant.trim().to_uppercase())
            .collect()
    };
    (block("algorithms"), block("others"))
}

/// Every text in a nested reply, flattened.
fn texts(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => out.push(s.clone()),
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|v| texts(v, out)),
        Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            texts(k, out);
            texts(v, out)
        }),
        _ => {}
    }
}

#[test]
fn registry_every_listed_kind_is_everywhere_the_list_says() {
    let (algorithms, others) = listed();
    assert!(!algorithms.is_empty(), "no algorithms found in kinds!");
    let server = Server::start();
    let mut con = server.connect();

    // The test kit knows every kind, so the server checks below reach each.
    let kit: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
    for name in algorithms.iter().chain(&others) {
        assert!(
            kit.contains(&name.as_str()),
            "tests/common/limiters.rs lacks {name}"
        );
    }

    // The error that lists the algorithms names each, in order.
    let listed_text = match algorithms.as_slice() {
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
        [] => unreachable!(),
    };
    assert_eq!(
        error(
            &mut con,
            &["RATELIMIT.CHECK", "k", "1", "1", "ALGORITHM", "NONE"]
        ),
        format!("ERR ALGORITHM must be {listed_text}")
    );

    // COMMAND DOCS offers each as a choice of ALGORITHM, for every command
    // that takes one (servers with command docs: 7.0+).
    if Abilities::of(&mut con).command_info() {
        for command in [
            "ratelimit.check",
            "ratelimit.peek",
            "ratelimit.mcheck",
            "ratelimit.mpeek",
        ] {
            let docs: Value = run(&mut con, &["COMMAND", "DOCS", command]);
            let mut words = Vec::new();
            texts(&docs, &mut words);
            for name in &algorithms {
                assert!(words.contains(name), "COMMAND DOCS {command} lacks {name}");
            }
            for name in &others {
                assert!(
                    !words.contains(name),
                    "COMMAND DOCS {command} offers {name}"
                );
            }
        }
    } else {
        eprintln!("not run (COMMAND DOCS): this server takes no command docs (Redis < 7.0)");
    }

    // INFO has each kind's counters.
    let info: String = run(&mut con, &["INFO", "ratelimit"]);
    for name in algorithms.iter().chain(&others) {
        for counter in ["allowed", "denied", "peeks"] {
            let field = format!("ratelimit_{}_{counter}:", name.to_lowercase());
            assert!(info.contains(&field), "INFO ratelimit lacks {field}");
        }
    }

    // Each kind's key is refused by every other kind, naming both, and
    // RESET takes it away.
    let made = make_one_of_each(&mut con, "registry");
    for (held, key) in &made {
        for (wanted, _) in made.iter().filter(|(w, _)| w.kind != held.kind) {
            let args = wanted.take_one(key);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            assert_eq!(
                error(&mut con, &args),
                wrong_algorithm(held.kind.name, wanted.kind.name),
                "{args:?}"
            );
        }
    }
    let keys: Vec<&str> = made.iter().map(|(_, k)| k.as_str()).collect();
    let mut reset = vec!["RATELIMIT.RESET"];
    reset.extend(&keys);
    let removed: i64 = run(&mut con, &reset);
    assert_eq!(removed, made.len() as i64);
}
