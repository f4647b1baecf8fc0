//! Docs that cannot drift: every Markdown file of the repository is held to
//! the server it describes.
//!
//! - Every redis-cli session a document shows is replayed against a fresh
//!   real server, and each reply must be the one shown (times within a
//!   tolerance). A block that cannot be replayed says why in its info
//!   string; the test lists those. (`tests/markdown/mod.rs` says how a
//!   block is marked.)
//! - The reference tables are checked against a real server: the commands
//!   each table names, `COMMAND INFO` (flags, arity, key specs, ACL
//!   categories), the `INFO ratelimit` fields, the load log line. A table
//!   is checked rather than generated because what a server can say depends
//!   on its version (key specs from 7.0, categories from 7.2, `@ratelimit`
//!   from 7.4 and Valkey 8): the same table is checked on every server of
//!   the matrix, as far as that server can tell.
//! - Each ACL recipe of docs/operations.md is given to a real user, who must
//!   be able to run every command of its backend (the module, the fallback
//!   library as functions, the same as a script) and be refused the rest.
//! - The version the docs quote is Cargo.toml's (`make docs` rewrites it).
//! - Every performance figure quoted outside docs/performance.md is one of
//!   its figures, and its result tables are the committed result files'.
//! - Links and anchors resolve, tables are well formed, the files the docs
//!   name exist, and the README stays short.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod markdown;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Instant;

use common::{module_path, run, try_run, wait_until_past, Abilities, Server};
use markdown::{
    anchors, assert_reply_matches, code_blocks, headings, kind, link_targets, longest_period_s,
    markdown_files, prose, read, repo, resolve, section, tables, words_of, Block, Kind, Replay,
    Shown,
};
use redis::{Connection, Value};

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

/// What redis-cli prints for one command shown, sent to the server on
/// `port` as the document shows it: typed at redis-cli's prompt (its own
/// quoting), or as a shell command line run in the repository.
fn redis_cli(port: u16, shown: &Shown) -> String {
    let connection = format!("redis-cli --no-raw -h 127.0.0.1 -p {port}");
    let output = if shown.shell {
        Command::new("sh")
            .arg("-c")
            .arg(format!("{connection} {}", shown.command))
            .current_dir(repo())
            .output()
            .expect("run sh")
    } else {
        let mut words = connection.split_whitespace();
        let mut child = Command::new(words.next().unwrap())
            .args(words)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run redis-cli");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", shown.command).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    assert!(
        output.status.success(),
        "redis-cli {}: {output:?}",
        shown.command
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A server a session runs on, what it was started with, and when the
/// session's first command ran.
struct Session {
    server: Server,
    replay: Replay,
    started: Option<Instant>,
}

/// Whether the server can run what `since` asks for.
fn server_has(abilities: &Abilities, since: &str) -> bool {
    match since {
        "7.0" => abilities.command_info(),
        "7.2" => abilities.acl_categories(),
        "7.4" => abilities.own_category(),
        other => panic!("since:{other}"),
    }
}

/// A fresh server for a block.
fn start_for(replay: &Replay) -> Server {
    let mut builder = Server::builder();
    if replay.no_module {
        builder = builder.without_module();
    }
    for (name, value) in &replay.load {
        builder = builder.module_arg(name, value);
    }
    builder.start()
}

/// When a block counts on a sliding window, waits for the next window when
/// the current one ends within 5 s, so that the session stays in one.
fn stay_in_one_sliding_window(con: &mut Connection, shown: &[Shown]) {
    let Some(words) = shown
        .iter()
        .map(|s| words_of(&s.command))
        .find(|w| w.iter().any(|w| w == "SLIDING"))
    else {
        return;
    };
    let period_ms = longest_period_s(&words) * 1000;
    if period_ms == 0 {
        return;
    }
    let now = common::server_ms(con);
    let window_end = now - now.rem_euclid(period_ms) + period_ms;
    if window_end - now < 5_000 {
        wait_until_past(con, window_end);
    }
}

/// What a file's blocks are, every block read (a block that cannot be
/// read fails the test with its place).
fn kinds(file: &Path) -> Vec<(Block, Kind)> {
    code_blocks(&read(file))
        .into_iter()
        .map(|block| {
            let kind =
                kind(&block).unwrap_or_else(|e| panic!("{}:{}: {e}", file.display(), block.line));
            (block, kind)
        })
        .collect()
}

/// What replaying a file did: the blocks replayed, the blocks marked
/// `not-replayed` (place and reason), and the blocks this server cannot
/// run (place and what they need).
#[derive(Default)]
struct Replayed {
    replayed: usize,
    not_replayed: Vec<(String, String)>,
    not_here: Vec<(String, String)>,
}

/// Replays every session of a file, in order.
fn replay_file(file: &Path) -> Replayed {
    let mut done = Replayed::default();
    let mut current: Option<Session> = None;
    for (block, kind) in kinds(file) {
        let place = format!("{}:{}", file.display(), block.line);
        let (replay, shown) = match kind {
            Kind::Replayed(replay, shown) => (replay, shown),
            Kind::NotReplayed(reason) => {
                done.not_replayed.push((place, reason));
                continue;
            }
            Kind::Unmarked => panic!(
                "{place}: shows a redis-cli session or replies, but its info string says \
                 neither `redis-cli` (replayed) nor `not-replayed: <why>`"
            ),
            Kind::Other => continue,
        };
        if replay.continued {
            let session = current
                .as_ref()
                .unwrap_or_else(|| panic!("{place}: `continued`, but no session before it"));
            assert!(
                replay.no_module == session.replay.no_module
                    && (replay.load.is_empty() || replay.load == session.replay.load),
                "{place}: a continued session keeps its server"
            );
        } else {
            current = Some(Session {
                server: start_for(&replay),
                replay: replay.clone(),
                started: None,
            });
        }
        let session = current.as_mut().unwrap();
        let mut con = session.server.connect();
        if let Some(since) = &replay.since {
            if !server_has(&Abilities::of(&mut con), since) {
                done.not_here.push((place, format!("needs Redis {since}+")));
                continue;
            }
        }
        stay_in_one_sliding_window(&mut con, &shown);
        let started = *session.started.get_or_insert_with(Instant::now);
        let module = module_path().to_string_lossy().into_owned();
        for one in &shown {
            let mut actual = redis_cli(session.server.port(), one);
            if let Some(shown_path) = &replay.module_at {
                actual = actual.replace(&module, shown_path);
            }
            if one.command.eq_ignore_ascii_case("MODULE LIST") {
                actual = only_this_module(&actual);
            }
            let place = format!("{}:{}", file.display(), one.line);
            let late_ms = i64::try_from(started.elapsed().as_millis()).unwrap();
            assert_reply_matches(&place, one, &actual, late_ms);
        }
        done.replayed += 1;
    }
    done
}

/// The message of a thread's panic.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// Every redis-cli session of every Markdown file replies what the file
/// shows, each block on a fresh server (or going on from the block before,
/// where it says `continued`). Blocks that are not replayed are listed,
/// and each must say why.
#[test]
fn docs_sessions_reply_what_the_docs_show() {
    let files = markdown_files();
    let results: Vec<(PathBuf, Result<Replayed, String>)> = thread::scope(|scope| {
        let handles: Vec<_> = files
            .iter()
            .map(|file| (file, scope.spawn(|| replay_file(file))))
            .collect();
        handles
            .into_iter()
            .map(|(file, handle)| (file.clone(), handle.join().map_err(panic_text)))
            .collect()
    });
    let mut failures = Vec::new();
    let mut with_sessions = BTreeSet::new();
    let mut listed = Vec::new();
    for (file, result) in results {
        match result {
            Ok(done) => {
                if done.replayed + done.not_here.len() > 0 {
                    with_sessions.insert(file);
                }
                for (place, reason) in &done.not_replayed {
                    listed.push(format!("  {place}: {reason}"));
                    if reason.is_empty() {
                        failures.push(format!("{place}: not-replayed, without saying why"));
                    }
                }
                for (place, needs) in &done.not_here {
                    eprintln!("not run on this server: {place}: {needs}");
                }
            }
            Err(text) => failures.push(format!("{}: {text}", file.display())),
        }
    }
    eprintln!("Blocks not replayed, and why:\n{}", listed.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    for file in [
        "README.md",
        "docs/commands.md",
        "docs/operations.md",
        "examples/redis-cli.md",
    ] {
        assert!(
            with_sessions.contains(Path::new(file)),
            "no session replayed in {file}: {with_sessions:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Links, tables, the files the docs name, the README's size
// ---------------------------------------------------------------------------

/// Every relative link of every Markdown file names a file that exists, and
/// every `#anchor` a heading of the file it points into: sections moved
/// from one document to another are where the links say they are.
#[test]
fn docs_links_and_anchors_resolve() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for document in markdown_files() {
        let text = read(&document);
        for target in link_targets(&text) {
            let Some((file, anchor)) = resolve(&document, &target) else {
                continue;
            };
            checked += 1;
            let path = repo().join(&file);
            if !path.exists() {
                broken.push(format!("{}: {target}: no such file", document.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let headings = anchors(&read(&file));
                if !headings.contains(&anchor) {
                    broken.push(format!(
                        "{}: {target}: no such heading in {}",
                        document.display(),
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    assert!(checked > 40, "only {checked} links found");
}

/// Every table row has as many cells as its header (a `|` inside a cell is
/// written `\|`).
#[test]
fn docs_tables_are_well_formed() {
    let mut malformed = Vec::new();
    for file in markdown_files() {
        for table in tables(&read(&file)) {
            for line in table.malformed {
                malformed.push(format!(
                    "{}:{line}: not {} cells, as its header (line {})",
                    file.display(),
                    table.rows[0].len(),
                    table.line
                ));
            }
        }
    }
    assert!(malformed.is_empty(), "{}", malformed.join("\n"));
}

/// The repository's paths a text names (`tests/check.rs`, `scripts/run`…):
/// words that start with one of its folders, without placeholders.
fn named_paths(text: &str) -> Vec<String> {
    const FOLDERS: [&str; 9] = [
        "src/",
        "tests/",
        "scripts/",
        "bench/",
        "examples/",
        "fallback/",
        "docs/",
        "prometheus/",
        ".ci/",
    ];
    let mut paths = Vec::new();
    for word in text.split(|c: char| c.is_whitespace() || "`()[],;\"'".contains(c)) {
        let word = word.split('#').next().unwrap().trim_end_matches(['.', ':']);
        let starts = FOLDERS.iter().any(|f| word.starts_with(f));
        let placeholder = word.contains(['<', '*', '…', '{', '$']);
        if starts && !placeholder {
            paths.push(word.to_string());
        }
    }
    paths
}

/// Every path of the repository a document names exists (the changelog
/// names what existed then, and is left out).
#[test]
fn docs_name_only_files_that_exist() {
    let mut missing = Vec::new();
    for file in markdown_files() {
        if file == Path::new("CHANGELOG.md") {
            continue;
        }
        for (line, text) in prose(&read(&file)) {
            for path in named_paths(text) {
                if !repo().join(&path).exists() {
                    missing.push(format!("{}:{line}: {path}", file.display()));
                }
            }
        }
    }
    assert!(missing.is_empty(), "no such file:\n{}", missing.join("\n"));
}

/// The README is read in five minutes: at most about 20 KB, and what a
/// newcomer needs first (what it is, the quick start, running without the
/// module, using it from applications) comes before the reference.
#[test]
fn readme_reads_in_five_minutes() {
    let readme = read("README.md");
    assert!(
        readme.len() <= 20 * 1024,
        "README.md is {} bytes; keep it under 20 KB and move reference material to docs/",
        readme.len()
    );
    let sections: Vec<String> = headings(&readme)
        .into_iter()
        .filter(|(level, _)| *level == 2)
        .map(|(_, text)| text)
        .collect();
    let position = |name: &str| {
        sections
            .iter()
            .position(|s| s == name)
            .unwrap_or_else(|| panic!("README has no section {name:?}: {sections:?}"))
    };
    assert_eq!(position("Quick start"), 0, "{sections:?}");
    assert!(position("Without the module") <= 2, "{sections:?}");
    assert!(position("From applications") <= 3, "{sections:?}");
}

// ---------------------------------------------------------------------------
// Reference tables, against a real server
// ---------------------------------------------------------------------------

/// A reply element as text.
fn text(value: &Value) -> String {
    match value {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Okay => "OK".to_string(),
        other => panic!("expected a text, got {other:?}"),
    }
}

/// A reply element's elements (a map as a key/value list, as RESP2 has it).
fn items(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items.clone(),
        Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect(),
        Value::Nil => Vec::new(),
        other => panic!("expected a list, got {other:?}"),
    }
}

/// The value after `name` in a key/value list.
fn field(list: &Value, name: &str) -> Value {
    let items = items(list);
    items
        .chunks(2)
        .find(|pair| matches!(&pair[0], Value::BulkString(_) | Value::SimpleString(_) if text(&pair[0]) == name))
        .map(|pair| pair[1].clone())
        .unwrap_or_else(|| panic!("no {name:?} in {list:?}"))
}

/// The module's commands, as the server lists them (`COMMAND`), in lower
/// case.
fn module_commands(con: &mut Connection) -> BTreeSet<String> {
    let all: Value = run(con, &["COMMAND"]);
    items(&all)
        .iter()
        .map(|entry| text(&items(entry)[0]).to_lowercase())
        .filter(|name| name.starts_with("ratelimit.") || name == "cl.throttle")
        .collect()
}

/// The words of a text that name commands (`RATELIMIT.CHECK`,
/// `+ratelimit.check`, `CL.THROTTLE`), in lower case.
fn command_words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
        .map(|w| w.trim_matches('.').to_lowercase())
        .filter(|w| w.starts_with("ratelimit.") || w == "cl.throttle")
        .collect()
}

/// A server with the module and every command (`cl-throttle yes`).
fn server_with_every_command() -> Server {
    Server::builder().module_arg("cl-throttle", "yes").start()
}

/// The first table of a document's section.
fn table_of(file: &str, heading: &str) -> markdown::Table {
    let text = read(file);
    let section =
        section(&text, heading).unwrap_or_else(|| panic!("{file} has no section {heading:?}"));
    tables(section)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{file}: no table in {heading:?}"))
}

/// The COMMAND INFO table of docs/operations.md.
const COMMAND_INFO: (&str, &str) = ("docs/operations.md", "COMMAND INFO, COMMAND DOCS and ACL");
/// The INFO fields table of docs/operations.md.
const INFO_FIELDS: (&str, &str) = ("docs/operations.md", "Metrics: INFO ratelimit");
/// The ACL recipes of docs/operations.md.
const ACL_RECIPES: (&str, &str) = ("docs/operations.md", "ACL recipes");

/// The first word of a cell in backticks, in lower case: the command a row
/// is about.
fn command_of_row(row: &[String]) -> String {
    row[0].split('`').nth(1).unwrap_or(&row[0]).to_lowercase()
}

/// Adding a command makes this fail until every table that lists the
/// commands names it: README's command table, a section of
/// docs/commands.md, the COMMAND INFO table, the ACL recipe that names
/// each command, the INFO fields, and the fallback library's mapping.
#[test]
fn docs_name_every_command_in_every_table() {
    let server = server_with_every_command();
    let mut con = server.connect();
    let commands = module_commands(&mut con);
    assert!(commands.len() >= 10, "{commands:?}");

    let readme = read("README.md");
    let readme_table = section(&readme, "Commands").expect("README has a Commands section");
    let commands_md = read("docs/commands.md");
    let headings: BTreeSet<String> = headings(&commands_md)
        .iter()
        .flat_map(|(_, h)| command_words(h))
        .collect();
    let info_table: BTreeSet<String> = table_of(COMMAND_INFO.0, COMMAND_INFO.1)
        .body()
        .iter()
        .map(|row| command_of_row(row))
        .collect();
    let operations = read("docs/operations.md");
    let recipes = section(&operations, ACL_RECIPES.1).expect("the ACL recipes");
    let info_fields = section(&operations, INFO_FIELDS.1).expect("the INFO fields");
    let fallback = tables(&read("fallback/README.md"))
        .into_iter()
        .find(|t| t.header().first().map(String::as_str) == Some("module"))
        .expect("fallback/README.md's table of the module's commands");
    let fallback: BTreeSet<String> = fallback
        .body()
        .iter()
        .flat_map(|row| command_words(&row[0]))
        .collect();

    let mut missing = Vec::new();
    for command in &commands {
        let verb = command.rsplit('.').next().unwrap();
        let mut lacks = |place: &str, named: bool| {
            if !named {
                missing.push(format!("{command}: {place}"));
            }
        };
        lacks(
            "README.md's Commands section",
            command_words(readme_table).contains(command),
        );
        lacks("a heading of docs/commands.md", headings.contains(command));
        lacks(
            "docs/operations.md's COMMAND INFO table",
            info_table.contains(command),
        );
        lacks(
            "docs/operations.md's ACL recipes (+name)",
            recipes.contains(&format!("+{command}")),
        );
        lacks(
            "docs/operations.md's INFO fields (ratelimit_<verb>_calls)",
            info_fields.contains(&format!("ratelimit_{verb}_calls")),
        );
        lacks(
            "fallback/README.md's table",
            fallback.contains(&format!("ratelimit.{verb}")),
        );
    }
    assert!(missing.is_empty(), "not named:\n{}", missing.join("\n"));
    let unknown: Vec<&String> = info_table.difference(&commands).collect();
    assert!(
        unknown.is_empty(),
        "the COMMAND INFO table names {unknown:?}"
    );
}

/// A key spec of `COMMAND INFO`, in the words of the docs' table: its
/// flags, then where its keys are.
fn describe_key_spec(spec: &Value) -> String {
    let flags: Vec<String> = items(&field(spec, "flags")).iter().map(text).collect();
    let begin = field(spec, "begin_search");
    assert_eq!(text(&field(&begin, "type")), "index", "{spec:?}");
    let first: i64 = text(&field(&field(&begin, "spec"), "index"))
        .parse()
        .unwrap();
    let find = field(spec, "find_keys");
    let find_spec = field(&find, "spec");
    let place = match text(&field(&find, "type")).as_str() {
        "range" => match text(&field(&find_spec, "lastkey")).as_str() {
            "0" => format!("the key at {first}"),
            "-1" => format!("every argument from {first}"),
            last => format!("keys {first} to {first} + {last}"),
        },
        "keynum" => {
            let count: i64 = text(&field(&find_spec, "keynumidx")).parse().unwrap();
            format!("`numkeys` at {}, the keys after it", first + count)
        }
        other => panic!("key spec of type {other}"),
    };
    format!("{}: {place}", flags.join(" "))
}

/// The module's flags as it registers them, from the server's: `denyoom`
/// is `deny-oom`; `module` and `movablekeys` are the server's own.
fn registered_flags(flags: &Value) -> BTreeSet<String> {
    items(flags)
        .iter()
        .map(text)
        .filter(|f| f != "module" && f != "movablekeys")
        .map(|f| {
            if f == "denyoom" {
                "deny-oom".to_string()
            } else {
                f
            }
        })
        .collect()
}

/// The words of a cell, without backticks.
fn cell_words(cell: &str) -> BTreeSet<String> {
    cell.replace('`', " ")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// docs/operations.md's COMMAND INFO table says what `COMMAND INFO` says,
/// as far as this server can tell: the flags everywhere, the arity and key
/// specs from Redis 7.0, the ACL categories from 7.2 (`@ratelimit` from
/// 7.4 and Valkey 8).
#[test]
fn docs_command_info_table_is_what_the_server_says() {
    let server = server_with_every_command();
    let mut con = server.connect();
    let abilities = Abilities::of(&mut con);
    let table = table_of(COMMAND_INFO.0, COMMAND_INFO.1);
    let header: Vec<&str> = table.header().iter().map(String::as_str).collect();
    assert_eq!(
        header[..4],
        ["command", "flags", "arity", "key spec"],
        "{header:?}"
    );
    assert!(header[4].starts_with("ACL categories"), "{header:?}");
    let mut wrong = Vec::new();
    for row in table.body() {
        let command = command_of_row(row);
        let info: Value = run(&mut con, &["COMMAND", "INFO", &command]);
        let info = items(&items(&info)[0]);
        assert!(!info.is_empty(), "COMMAND INFO {command}: no such command");
        let mut differs = |what: &str, doc: String, server: String| {
            if doc != server {
                wrong.push(format!(
                    "{command} {what}: the doc says {doc:?}, the server {server:?}"
                ));
            }
        };
        let doc_flags = cell_words(&row[1]);
        differs(
            "flags",
            format!("{doc_flags:?}"),
            format!("{:?}", registered_flags(&info[2])),
        );
        if abilities.command_info() {
            differs("arity", row[2].clone(), text(&info[1]));
            let specs: Vec<String> = items(&info[8]).iter().map(describe_key_spec).collect();
            differs("key spec", row[3].clone(), specs.join("; "));
        }
        if abilities.acl_categories() {
            let mut doc: BTreeSet<String> = cell_words(&row[4]);
            if !abilities.own_category() {
                doc.remove("@ratelimit");
            }
            let server: BTreeSet<String> = items(&info[6]).iter().map(text).collect();
            differs("ACL categories", format!("{doc:?}"), format!("{server:?}"));
        }
    }
    if !abilities.command_info() {
        eprintln!("not checked (arity, key specs): no RedisModule_SetCommandInfo before Redis 7.0");
    }
    if !abilities.acl_categories() {
        eprintln!("not checked (ACL categories): none for module commands before Redis 7.2");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The fields of `INFO ratelimit` as the server gives them.
fn info_fields(con: &mut Connection) -> BTreeSet<String> {
    let info: String = run(con, &["INFO", "ratelimit"]);
    info.lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.to_string()))
        .collect()
}

/// docs/operations.md's table of `INFO ratelimit` names every field the
/// server gives, and no other.
#[test]
fn docs_info_fields_are_the_servers() {
    let server = Server::start();
    let mut con = server.connect();
    let fields = info_fields(&mut con);
    assert!(fields.len() >= 40, "{fields:?}");
    let table = table_of(INFO_FIELDS.0, INFO_FIELDS.1);
    let named: BTreeSet<String> = table
        .body()
        .iter()
        .flat_map(|row| {
            row[0]
                .split('`')
                .filter(|w| w.starts_with("ratelimit_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let undocumented: Vec<&String> = fields.difference(&named).collect();
    let unknown: Vec<&String> = named.difference(&fields).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "fields the table lacks: {undocumented:?}; fields the server lacks: {unknown:?}"
    );
}

/// The load log line docs/operations.md shows is the server's: the same
/// version, the same options and server APIs named, and, on the server it
/// was taken from (Redis 7.0, which it names), the same line.
#[test]
fn docs_load_log_line_is_the_servers() {
    let operations = read("docs/operations.md");
    let log_section = section(&operations, "Log").expect("docs/operations.md has a Log section");
    let shown = code_blocks(log_section)
        .into_iter()
        .flat_map(|b| b.lines)
        .find(|l| l.starts_with("<ratelimit> version"))
        .expect("the Log section shows the load line");
    let server = Server::start();
    let mut con = server.connect();
    let abilities = Abilities::of(&mut con);
    if !abilities.command_info() {
        // Before 7.0 there are no module configs: the line says
        // load-time arguments only, where the docs show 7.0's.
        eprintln!("not run on this server: the docs show the load line of Redis 7.0+");
        return;
    }
    let log = server.log();
    let logged = log
        .lines()
        .find_map(|l| l.find("<ratelimit> version").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no load line in the log:\n{log}"))
        .to_string();
    // What the line names (the first two words of each part), whatever the
    // server offers.
    let named = |line: &str| -> Vec<String> {
        line.split([';', ','])
            .map(|part| {
                let part = part.split('(').next().unwrap();
                part.split_whitespace()
                    .filter(|w| !["found", "absent", "yes", "no"].contains(w))
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    let version = |line: &str| line.split(';').next().unwrap().to_string();
    assert_eq!(version(&shown), version(&logged));
    assert_eq!(named(&shown), named(&logged), "{shown}\n{logged}");
    let redis_7_0 = abilities.valkey.is_none() && (abilities.redis.0, abilities.redis.1) == (7, 0);
    if redis_7_0 {
        assert_eq!(shown, logged);
    } else {
        eprintln!("not checked (what the server offers): the docs show Redis 7.0's line");
    }
}

// ---------------------------------------------------------------------------
// ACL recipes, with real users
// ---------------------------------------------------------------------------

/// One recipe: a block of docs/operations.md whose info string is
/// `acl <backend> [since:<version>] [before:7.0]`, each line an
/// `ACL SETUSER`.
#[derive(Debug)]
struct Recipe {
    place: String,
    backend: String,
    since: Option<String>,
    before_7_0: bool,
    /// Each user: its name and its rules (what follows the name).
    users: Vec<(String, Vec<String>)>,
}

impl Recipe {
    /// Whether the server is one this recipe is for.
    fn is_for(&self, abilities: &Abilities) -> bool {
        let since = self
            .since
            .as_deref()
            .is_none_or(|v| server_has(abilities, v));
        since && !(self.before_7_0 && abilities.command_info())
    }
}

/// The recipes of docs/operations.md.
fn recipes() -> Vec<Recipe> {
    let operations = read(ACL_RECIPES.0);
    let offset = operations
        .find(&format!("### {}", ACL_RECIPES.1))
        .map(|at| operations[..at].lines().count())
        .expect("the ACL recipes");
    let section = section(&operations, ACL_RECIPES.1).unwrap();
    let mut recipes = Vec::new();
    for block in code_blocks(section) {
        let mut words = block.info.split_whitespace();
        if words.next() != Some("acl") {
            continue;
        }
        let place = format!("{}:{}", ACL_RECIPES.0, offset + block.line);
        let backend = words
            .next()
            .unwrap_or_else(|| panic!("{place}: acl <backend>"));
        let mut recipe = Recipe {
            place: place.clone(),
            backend: backend.to_string(),
            since: None,
            before_7_0: false,
            users: Vec::new(),
        };
        for word in words {
            match word.split_once(':') {
                Some(("since", version)) => recipe.since = Some(version.to_string()),
                Some(("before", "7.0")) => recipe.before_7_0 = true,
                _ => panic!("{place}: unknown word {word}"),
            }
        }
        for line in &block.lines {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            assert!(
                words.len() > 3 && words[0] == "ACL" && words[1] == "SETUSER",
                "{place}: {line}"
            );
            recipe.users.push((words[2].clone(), words[3..].to_vec()));
        }
        recipes.push(recipe);
    }
    recipes
}

/// One call of each command a backend offers, run in this order (a lease
/// is acquired, renewed and released, the keys reset last), on keys under
/// `prefix`: (verb, keys, arguments).
fn calls(prefix: &str) -> Vec<(&'static str, Vec<String>, Vec<String>)> {
    let key = |name: &str| format!("{prefix}{name}");
    let words = |text: &str| {
        text.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    vec![
        ("check", vec![key("c")], words("5 60")),
        ("peek", vec![key("c")], words("5 60")),
        (
            "mcheck",
            vec![key("m1"), key("m2")],
            words("LIMIT 5 60 LIMIT 9 60"),
        ),
        (
            "mpeek",
            vec![key("m1"), key("m2")],
            words("LIMIT 5 60 LIMIT 9 60"),
        ),
        ("throttle", vec![key("t")], words("5 1 60")),
        ("acquire", vec![key("l")], words("2 60000 ID job-1")),
        ("renew", vec![key("l")], words("job-1 60000")),
        ("release", vec![key("l")], words("job-1")),
        (
            "reserve",
            vec![key("h"), key("m2")],
            words("req-1 30000 LIMIT 9 60 HOLD 3"),
        ),
        ("extend", vec![key("h")], words("req-1 30000")),
        (
            "settle",
            vec![key("h"), key("m2")],
            words("req-1 LIMIT 9 60 ACTUAL 2"),
        ),
        ("version", vec![], vec![]),
        ("reset", vec![key("c"), key("t")], vec![]),
    ]
}

/// The verbs that only read.
const READ_ONLY: [&str; 3] = ["peek", "mpeek", "version"];

/// The commands whose first key (the holds key) comes before some of their
/// arguments and then a `numkeys`: how many arguments come between. The
/// library takes every key first, as FCALL's keys.
const HOLDS_FIRST: [(&str, usize); 2] = [("reserve", 2), ("settle", 1)];

/// How a backend is called.
enum Backend {
    Module,
    Functions,
    Script { sha: String },
}

impl Backend {
    /// The command line of a call.
    fn command(&self, verb: &str, keys: &[String], args: &[String]) -> Vec<String> {
        let mut line = match self {
            Backend::Module => {
                let mut line = vec![format!("RATELIMIT.{}", verb.to_uppercase())];
                if let Some((_, between)) = HOLDS_FIRST.iter().find(|(v, _)| *v == verb) {
                    let (head, tail) = args.split_at(*between);
                    line.extend(keys.first().cloned());
                    line.extend(head.iter().cloned());
                    line.push(keys.len().saturating_sub(1).to_string());
                    line.extend(keys.iter().skip(1).cloned());
                    line.extend(tail.iter().cloned());
                    return line;
                }
                if verb.starts_with('m') {
                    line.push(keys.len().to_string());
                }
                line.extend(keys.iter().cloned());
                line
            }
            Backend::Functions => {
                let fcall = if READ_ONLY.contains(&verb) {
                    "FCALL_RO"
                } else {
                    "FCALL"
                };
                let mut line = vec![fcall.to_string(), format!("ratelimit_{verb}")];
                line.push(keys.len().to_string());
                line.extend(keys.iter().cloned());
                line
            }
            Backend::Script { sha } => {
                let mut line = vec!["EVALSHA".to_string(), sha.clone(), keys.len().to_string()];
                line.extend(keys.iter().cloned());
                line.push(format!("ratelimit_{verb}"));
                line
            }
        };
        line.extend(args.iter().cloned());
        line
    }
}

/// The commands the fallback library runs (`redis.call('GET', …)`): a
/// function or script runs them with its caller's permissions.
fn library_commands() -> BTreeSet<String> {
    let library = read("fallback/ratelimit.lua");
    let mut found = BTreeSet::new();
    for quote in ["call('", "call(\""] {
        for rest in library.split(quote).skip(1) {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase())
                .collect();
            if !name.is_empty() {
                found.insert(name.to_lowercase());
            }
        }
    }
    assert!(found.contains("get") && found.contains("time"), "{found:?}");
    found
}

/// The verbs the library serves (its `VERBS` list), for a server where it
/// cannot be listed (a script on Redis 6.2).
fn library_verbs() -> Vec<String> {
    let library = read("fallback/ratelimit.lua");
    let list = library
        .split_once("local VERBS = {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(list, _)| list)
        .expect("fallback/ratelimit.lua's VERBS");
    list.split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The verbs a backend offers on this server: the module's commands, or
/// the library's functions.
fn offered(con: &mut Connection, backend: &Backend) -> Vec<String> {
    let verbs: Vec<String> = match backend {
        Backend::Module => module_commands(con)
            .into_iter()
            .filter_map(|c| c.strip_prefix("ratelimit.").map(str::to_string))
            .collect(),
        Backend::Functions => {
            let libraries: Value = run(con, &["FUNCTION", "LIST", "LIBRARYNAME", "ratelimit"]);
            let library = &items(&libraries)[0];
            items(&field(library, "functions"))
                .iter()
                .map(|f| {
                    text(&field(f, "name"))
                        .trim_start_matches("ratelimit_")
                        .to_string()
                })
                .collect()
        }
        Backend::Script { .. } => library_verbs(),
    };
    let known: Vec<&str> = calls("").iter().map(|(verb, ..)| *verb).collect();
    for verb in &verbs {
        assert!(
            known.contains(&verb.as_str()),
            "{verb}: a command the ACL recipe tests do not know how to call (add it to calls())"
        );
    }
    verbs
}

/// A connection of `user`, whose password the recipe sets (`>secret`).
fn connect_as(server: &Server, user: &str, rules: &[String]) -> Connection {
    let password = rules
        .iter()
        .find_map(|r| r.strip_prefix('>'))
        .expect("a recipe sets a password");
    let mut con = server.connect();
    let _: () = run(&mut con, &["AUTH", user, password]);
    con
}

/// Whether a reply is a refusal: the ACL's, or a command this server does
/// not have (Redis 6.2 has no functions), which it refuses before its ACL.
fn refused(result: &redis::RedisResult<Value>) -> bool {
    match result {
        Err(e) if e.code() == Some("NOPERM") => true,
        Err(e) => e.to_string().to_lowercase().contains("unknown command"),
        Ok(_) => false,
    }
}

/// Gives each recipe of `backend` that is for this server to a real user,
/// and checks what the user can do: `app` every command of the backend
/// (each one succeeds), `dashboard` the read-only ones only; both are
/// refused keys outside their pattern, `COMMAND INFO` (a client that
/// detects its backend with it adds `+command|info`), the other backends'
/// commands and the administration of the server. Returns how many
/// recipes ran.
fn check_recipes(server: &Server, backend: &Backend, name: &str) -> usize {
    let mut admin = server.connect();
    let abilities = Abilities::of(&mut admin);
    let verbs = offered(&mut admin, backend);
    let mut ran = 0;
    for recipe in recipes().iter().filter(|r| r.backend == name) {
        if !recipe.is_for(&abilities) {
            eprintln!(
                "not run here: the recipe at {}, for another server version",
                recipe.place
            );
            continue;
        }
        ran += 1;
        for (user, rules) in &recipe.users {
            let place = format!("{} ({user})", recipe.place);
            let _: Value = run(&mut admin, &["ACL", "DELUSER", user]);
            let mut setuser = vec!["ACL".to_string(), "SETUSER".to_string(), user.clone()];
            setuser.extend(rules.iter().cloned());
            if let Err(e) = try_run(&mut admin, &setuser) {
                panic!("{place}: {}: {e}", setuser.join(" "));
            }
            let mut con = connect_as(server, user, rules);
            let reads_only = match user.as_str() {
                "app" => false,
                "dashboard" => true,
                other => panic!("{place}: a recipe for `app` or `dashboard`, not {other}"),
            };
            // What the keys need first: a lease to renew and release.
            let _: Value = run(&mut admin, &["FLUSHALL"]);
            for (verb, keys, args) in calls("ratelimit:") {
                if !verbs.iter().any(|v| v == verb) {
                    continue;
                }
                let line = backend.command(verb, &keys, &args);
                let result = try_run(&mut con, &line);
                if reads_only && !READ_ONLY.contains(&verb) {
                    assert!(
                        refused(&result),
                        "{place}: {} ran: {result:?}",
                        line.join(" ")
                    );
                    // The administrator makes what the next verbs need.
                    let _: Value = run(&mut admin, &line);
                } else if let Err(e) = result {
                    panic!("{place}: {}: {e}", line.join(" "));
                }
                if !keys.is_empty() {
                    let elsewhere = calls("other:")
                        .into_iter()
                        .find(|(v, ..)| *v == verb)
                        .unwrap();
                    let line = backend.command(verb, &elsewhere.1, &elsewhere.2);
                    let result = try_run(&mut con, &line);
                    assert!(
                        refused(&result),
                        "{place}: {} ran: {result:?}",
                        line.join(" ")
                    );
                }
            }
            let mut never: Vec<Vec<&str>> = vec![
                vec!["FLUSHALL"],
                vec!["CONFIG", "GET", "maxmemory"],
                vec!["FUNCTION", "DELETE", "ratelimit"],
                vec!["SCRIPT", "FLUSH"],
            ];
            // A user given `@read` may read any key its patterns allow.
            if !rules.iter().any(|r| r == "+@read") {
                never.push(vec!["KEYS", "*"]);
            }
            if !rules.iter().any(|r| r == "+command|info") {
                never.push(vec!["COMMAND", "INFO", "ratelimit.check"]);
            }
            match backend {
                Backend::Module => {
                    if !rules.iter().any(|r| r == "+@read") {
                        never.push(vec!["GET", "ratelimit:c"]);
                    }
                    never.push(vec![
                        "FCALL",
                        "ratelimit_check",
                        "1",
                        "ratelimit:c",
                        "5",
                        "60",
                    ]);
                }
                Backend::Functions => {
                    never.push(vec!["RATELIMIT.CHECK", "ratelimit:c", "5", "60"]);
                    never.push(vec!["EVAL", "return 1", "0"]);
                    if !rules.iter().any(|r| r == "+function|load") {
                        never.push(vec![
                            "FUNCTION",
                            "LOAD",
                            "REPLACE",
                            "#!lua name=ratelimit\n",
                        ]);
                    }
                }
                Backend::Script { .. } => {
                    never.push(vec!["RATELIMIT.CHECK", "ratelimit:c", "5", "60"]);
                    never.push(vec![
                        "FCALL",
                        "ratelimit_check",
                        "1",
                        "ratelimit:c",
                        "5",
                        "60",
                    ]);
                    if !rules.iter().any(|r| r == "+eval") {
                        never.push(vec!["EVAL", "return 1", "0"]);
                    }
                }
            }
            for line in never {
                let result = try_run(&mut con, &line);
                assert!(
                    refused(&result),
                    "{place}: {} ran: {result:?}",
                    line.join(" ")
                );
            }
        }
    }
    ran
}

/// The recipe section says what a client adds beyond a recipe: for
/// detecting the backend, loading the library, sending the script's text;
/// and the recipes for the fallback grant every command the library runs.
#[test]
fn docs_acl_recipes_name_what_the_library_runs() {
    let operations = read(ACL_RECIPES.0);
    let section = section(&operations, ACL_RECIPES.1).unwrap();
    for extra in ["+command|info", "+function|load", "+eval"] {
        assert!(
            section.contains(extra),
            "the ACL recipes never mention {extra}"
        );
    }
    let commands = library_commands();
    for recipe in recipes().iter().filter(|r| r.backend != "module") {
        for (user, rules) in &recipe.users {
            for command in &commands {
                // Redis 6.2 has no PEXPIRETIME, and the library does without.
                if recipe.before_7_0 && command == "pexpiretime" {
                    continue;
                }
                assert!(
                    rules.iter().any(|r| r == &format!("+{command}")),
                    "{} ({user}): the library runs {command}, which the recipe does not grant",
                    recipe.place
                );
            }
        }
    }
}

/// The module's recipes, on a server with the module.
#[test]
fn docs_acl_recipes_for_the_module_give_every_command_and_no_more() {
    let server = Server::start();
    let ran = check_recipes(&server, &Backend::Module, "module");
    assert!(ran >= 1, "no recipe for the module ran");
}

/// The functions' recipes, the library loaded by an administrator
/// (`FUNCTION LOAD`); then the same recipe with `+function|load` loads it
/// itself. The module is loaded too: the user may not run its commands.
#[test]
fn docs_acl_recipes_for_functions_give_every_function_and_no_more() {
    let server = Server::start();
    let mut admin = server.connect();
    if !Abilities::of(&mut admin).command_info() {
        eprintln!("not run (functions): no FUNCTION before Redis 7.0");
        return;
    }
    common::fallback::load_library(&mut admin);
    let ran = check_recipes(&server, &Backend::Functions, "functions");
    assert!(ran >= 1, "no recipe for functions ran");
    for recipe in recipes().iter().filter(|r| r.backend == "functions") {
        let (user, rules) = &recipe.users[0];
        let _: () = run(&mut admin, &["ACL", "SETUSER", user, "+function|load"]);
        let mut con = connect_as(&server, user, rules);
        let loaded: String = run(
            &mut con,
            &["FUNCTION", "LOAD", "REPLACE", common::fallback::LIBRARY],
        );
        assert_eq!(loaded, "ratelimit", "{}", recipe.place);
    }
}

/// The script's recipes (the script loaded with SCRIPT LOAD, by the user
/// too); then EVAL, with `+eval`. The module is loaded too: the user may
/// not run its commands.
#[test]
fn docs_acl_recipes_for_the_script_give_every_call_and_no_more() {
    let server = Server::start();
    let mut admin = server.connect();
    let sha: String = run(
        &mut admin,
        &["SCRIPT", "LOAD", common::fallback::eval_script()],
    );
    let ran = check_recipes(&server, &Backend::Script { sha }, "script");
    assert!(ran >= 1, "no recipe for the script ran");
    let abilities = Abilities::of(&mut admin);
    for recipe in recipes()
        .iter()
        .filter(|r| r.backend == "script" && r.is_for(&abilities))
    {
        let (user, rules) = &recipe.users[0];
        let mut con = connect_as(&server, user, rules);
        let _: String = run(
            &mut con,
            &["SCRIPT", "LOAD", common::fallback::eval_script()],
        );
        let _: () = run(&mut admin, &["ACL", "SETUSER", user, "+eval"]);
        let script = common::fallback::eval_script();
        let reply: Vec<i64> = run(
            &mut con,
            &[
                "EVAL",
                script,
                "1",
                "ratelimit:e",
                "ratelimit_check",
                "5",
                "60",
            ],
        );
        assert_eq!(reply[..4], [1, 4, 5, -1], "{}", recipe.place);
    }
}

// ---------------------------------------------------------------------------
// The version the docs quote
// ---------------------------------------------------------------------------

/// The documents whose version strings `make docs` rewrites: every
/// Markdown file but the changelog (which names each version on purpose)
/// and the fallback library's README (its own; checked, not rewritten).
fn versioned_documents() -> Vec<PathBuf> {
    markdown_files()
        .into_iter()
        .filter(|f| f != Path::new("CHANGELOG.md") && f != Path::new("fallback/README.md"))
        .collect()
}

/// Cargo.toml's version, and the module's number for it in `MODULE LIST`
/// (major × 10000 + minor × 100 + patch).
fn cargo_version() -> (String, String) {
    let version = env!("CARGO_PKG_VERSION").to_string();
    let parts: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    let number = parts[0] * 10000 + parts[1] * 100 + parts[2];
    (version, number.to_string())
}

/// Replaces the run of characters `accepts` takes right after each `marker`
/// in `text` with `by`.
fn replace_after(text: &str, marker: &str, accepts: fn(char) -> bool, by: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        let (before, after) = rest.split_at(at + marker.len());
        out.push_str(before);
        let end = after.find(|c: char| !accepts(c)).unwrap_or(after.len());
        out.push_str(if end > 0 { by } else { "" });
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// A document with every version string it quotes as Cargo.toml's: the
/// module's number after `ver=` (INFO modules) and on the line after
/// `"ver"` (MODULE LIST), the library's after `ratelimit_version`, and the
/// version of the load log line.
fn with_current_version(text: &str) -> String {
    let (version, number) = cargo_version();
    let digits = |c: char| c.is_ascii_digit();
    let dotted = |c: char| c.is_ascii_digit() || c == '.';
    let text = replace_after(text, "ver=", digits, &number);
    let text = replace_after(&text, "<ratelimit> version ", dotted, &version);
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    for index in 1..lines.len() {
        let before = lines[index - 1].clone();
        let after_ver = before.trim_end().ends_with("\"ver\"");
        let after_version = before.contains("ratelimit_version 0");
        if (after_ver || after_version) && lines[index].contains("(integer) ") {
            lines[index] = replace_after(&lines[index], "(integer) ", digits, &number);
        }
    }
    lines.join("\n")
}

/// The docs quote Cargo.toml's version wherever they quote the module's
/// version (MODULE LIST, INFO modules, the library's version, the load log
/// line). `make docs` (`RATELIMIT_UPDATE_DOCS=1`) rewrites them after a
/// version change.
#[test]
fn docs_quote_cargo_tomls_version() {
    let update = std::env::var_os("RATELIMIT_UPDATE_DOCS").is_some();
    let mut stale = Vec::new();
    for file in versioned_documents() {
        let text = read(&file);
        let current = with_current_version(&text);
        if current != text {
            if update {
                std::fs::write(repo().join(&file), current).unwrap();
                eprintln!("rewrote the version strings of {}", file.display());
            } else {
                stale.push(file.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "these quote another version than Cargo.toml's {}: {stale:?}; run `make docs`",
        env!("CARGO_PKG_VERSION")
    );
    // The rewriting itself.
    let (version, number) = cargo_version();
    let old =
        "ver=100,api=1\n   3) \"ver\"\n   4) (integer) 100\n<ratelimit> version 0.1.0 loaded;\n\
               127.0.0.1:6379> FCALL_RO ratelimit_version 0\n(integer) 100";
    let new = format!(
        "ver={number},api=1\n   3) \"ver\"\n   4) (integer) {number}\n<ratelimit> version {version} loaded;\n\
         127.0.0.1:6379> FCALL_RO ratelimit_version 0\n(integer) {number}"
    );
    assert_eq!(with_current_version(old), new);
}

// ---------------------------------------------------------------------------
// Performance figures: one source
// ---------------------------------------------------------------------------

/// The numbers of a text, commas dropped ("31,092" is "31092"), leaving out
/// versions (7.0.15, Redis 7.0), powers (2^53) and numbers inside words
/// (p99, 2b).
fn numbers(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_digit()
                || (matches!(chars[i], ',' | '.')
                    && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit())))
        {
            i += 1;
        }
        let token: String = chars[start..i].iter().collect();
        let before: String = chars[start.saturating_sub(7)..start].iter().collect();
        let glued_before =
            start > 0 && (chars[start - 1].is_alphabetic() || chars[start - 1] == '^');
        let glued_after = chars.get(i).is_some_and(|c| c.is_alphabetic() || *c == '^');
        let version = token.matches('.').count() > 1
            || before.ends_with("Redis ")
            || before.ends_with("Valkey ");
        if !(glued_before || glued_after || version) {
            found.push(token.replace(',', ""));
        }
    }
    found
}

/// What marks a paragraph as one that quotes performance figures.
const FIGURE_WORDS: [&str; 13] = [
    "requests/s",
    "req/s",
    "instructions",
    "×",
    "latency",
    "p99",
    "throughput",
    " ns",
    "bytes per",
    "bytes of",
    "MEMORY USAGE",
    " MB",
    "callgrind",
];

/// A text without its code spans (`` `…` ``): a command or a value, not a
/// figure.
fn without_code_spans(text: &str) -> String {
    text.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// The paragraphs of a Markdown text's prose, without code spans or list
/// markers: each list item and each table row is one.
fn paragraphs(markdown: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (line, text) in prose(markdown) {
        let trimmed = text.trim_start();
        let row = trimmed.starts_with('|');
        let numbered = trimmed
            .split_once(". ")
            .filter(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        let item = trimmed
            .strip_prefix("- ")
            .or(numbered.map(|(_, rest)| rest));
        if text.trim().is_empty() || row || item.is_some() || text.starts_with('#') {
            out.extend(current.take());
            if row {
                out.push((line, text.to_string()));
            }
            if let Some(item) = item {
                current = Some((line, item.to_string()));
            }
            continue;
        }
        match current.as_mut() {
            Some((_, paragraph)) => {
                paragraph.push(' ');
                paragraph.push_str(text);
            }
            None => current = Some((line, text.to_string())),
        }
    }
    out.extend(current);
    out.into_iter()
        .map(|(line, text)| (line, without_code_spans(&text)))
        .collect()
}

/// Every number a document quotes as a performance figure (in a paragraph
/// that speaks of requests/s, instructions, ratios, latency or memory) is
/// one of docs/performance.md's, where each figure stands next to the
/// command that reproduces it and the result file it came from.
#[test]
fn docs_quote_performance_figures_from_docs_performance_md() {
    let performance: BTreeSet<String> = numbers(&read("docs/performance.md")).into_iter().collect();
    let mut strays = Vec::new();
    for file in [
        "README.md",
        "CONTRIBUTING.md",
        "ARCHITECTURE.md",
        "docs/operations.md",
        "docs/commands.md",
        "examples/redis-cli.md",
    ] {
        for (line, paragraph) in paragraphs(&read(file)) {
            if !FIGURE_WORDS.iter().any(|w| paragraph.contains(w)) {
                continue;
            }
            for number in numbers(&paragraph) {
                if !performance.contains(&number) {
                    strays.push(format!("{file}:{line}: {number}"));
                }
            }
        }
    }
    assert!(
        strays.is_empty(),
        "figures that docs/performance.md does not give:\n{}",
        strays.join("\n")
    );
}

/// Every table of docs/performance.md with the header of a committed
/// result file's table (`make bench`: bench/results/latest.txt; `make
/// bench-instructions`: bench/results/instructions.md) is rows of that
/// table, as the run wrote them; and the files it names exist.
#[test]
fn docs_performance_tables_are_the_committed_results() {
    let performance = read("docs/performance.md");
    let results: Vec<markdown::Table> =
        ["bench/results/latest.txt", "bench/results/instructions.md"]
            .iter()
            .flat_map(|file| tables(&read(file)))
            .collect();
    let mut copied = 0;
    for table in tables(&performance) {
        let same_header: Vec<&markdown::Table> = results
            .iter()
            .filter(|r| r.header() == table.header())
            .collect();
        if same_header.is_empty() {
            continue;
        }
        copied += 1;
        let found = same_header
            .iter()
            .any(|result| table.body().iter().all(|row| result.body().contains(row)));
        assert!(
            found,
            "docs/performance.md:{}: rows that no committed result table holds as they are",
            table.line
        );
    }
    assert!(
        copied >= 3,
        "only {copied} result tables in docs/performance.md"
    );
}

/// `MODULE LIST` as redis-cli prints it, less the modules a server ships
/// with (Redis 8's `vectorset`): the docs show this module's entry only.
fn only_this_module(reply: &str) -> String {
    let mut entries: Vec<Vec<&str>> = Vec::new();
    for line in reply.lines() {
        let starts_entry = line
            .split_once(") ")
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        match entries.last_mut() {
            Some(entry) if !starts_entry => entry.push(line),
            _ => entries.push(vec![line]),
        }
    }
    let ours: Vec<Vec<&str>> = entries
        .into_iter()
        .filter(|entry| entry.iter().any(|l| l.ends_with("\"ratelimit\"")))
        .collect();
    let mut out = Vec::new();
    for (i, entry) in ours.iter().enumerate() {
        for (j, line) in entry.iter().enumerate() {
            if j == 0 {
                let rest = line.split_once(") ").map_or(*line, |(_, r)| r);
                out.push(format!("{}) {rest}", i + 1));
            } else {
                out.push(line.to_string());
            }
        }
    }
    out.join("\n")
}
