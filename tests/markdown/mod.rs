//! The repository's Markdown as the documentation tests read it: the files
//! (found by walking the repository), their fenced code blocks and info
//! strings, the redis-cli sessions those show, headings, links and tables.
//!
//! A code block that shows a redis-cli session says what to do with it in
//! its info string (the words after the opening fence; GitHub shows only
//! the first as a language):
//!
//! - ```` ```redis-cli ````: replayed against a fresh server with the
//!   module, each reply compared with the one shown (times within a
//!   tolerance). More words change the server or the order:
//!   - `no-module`: a server without the module;
//!   - `load:NAME=VALUE`: a module option given at load time;
//!   - `continued`: no fresh server, the session goes on where the previous
//!     replayed block of the same file left it;
//!   - `since:7.0` (`7.2`, `7.4`): needs that server version (7.4: also
//!     Valkey 8); replayed only there, and said so elsewhere;
//!   - `module-at:PATH`: the module is shown as loaded from `PATH`
//!     (`MODULE LIST`), wherever the test loads it from.
//! - ```` ```text not-replayed: REASON ````: shown, not replayed, and why.
//!
//! A session is lines after a `127.0.0.1:6379> ` prompt (sent to redis-cli
//! as typed at its prompt) or `$ redis-cli …` (run by `sh` in the
//! repository, as typed in a shell), each followed by its reply; a reply
//! line may end in a `# comment`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// The repository's root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Folders that hold no documentation of the repository's own.
const SKIPPED: [&str; 3] = ["target", "node_modules", ".git"];

/// Every Markdown file of the repository, relative to its root, sorted.
pub fn markdown_files() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![repo().to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                if !SKIPPED.contains(&name.as_str()) && !name.starts_with('.') {
                    pending.push(path);
                }
            } else if name.ends_with(".md") {
                found.push(path.strip_prefix(repo()).unwrap().to_path_buf());
            }
        }
    }
    found.sort();
    found
}

/// A file of the repository, as text.
pub fn read(file: impl AsRef<Path>) -> String {
    let path = repo().join(file.as_ref());
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// One fenced code block.
#[derive(Debug, Clone)]
pub struct Block {
    /// The words after the opening fence.
    pub info: String,
    /// The line of the opening fence, from 1.
    pub line: usize,
    /// The lines between the fences.
    pub lines: Vec<String>,
}

/// The fenced (```` ``` ````) code blocks of a Markdown text.
pub fn code_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (fence, open.take()) {
            (Some(_), Some(block)) => blocks.push(block),
            (Some(info), None) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    line: index + 1,
                    lines: Vec::new(),
                })
            }
            (None, Some(mut block)) => {
                block.lines.push(line.to_string());
                open = Some(block);
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a code block is never closed");
    blocks
}

/// The lines of a Markdown text outside its code blocks, with their line
/// numbers (from 1).
pub fn prose(markdown: &str) -> Vec<(usize, &str)> {
    let mut in_code = false;
    let mut lines = Vec::new();
    for (index, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code {
            lines.push((index + 1, line));
        }
    }
    lines
}

/// The prompt redis-cli shows on its default port.
pub const PROMPT: &str = "127.0.0.1:6379> ";
/// A command typed in a shell.
pub const SHELL: &str = "$ redis-cli ";

/// One command a session shows, and the reply shown after it.
#[derive(Debug, Clone)]
pub struct Shown {
    /// What follows the prompt (`$ redis-cli ` or `127.0.0.1:6379> `).
    pub command: String,
    /// Typed in a shell (`$ redis-cli …`) rather than at redis-cli's prompt.
    pub shell: bool,
    /// The reply's lines, without comments and blank lines.
    pub reply: Vec<String>,
    /// The command's line in the file, from 1.
    pub line: usize,
}

/// The commands of a block and their replies.
pub fn shown(block: &Block) -> Vec<Shown> {
    let mut shown: Vec<Shown> = Vec::new();
    for (offset, line) in block.lines.iter().enumerate() {
        let prompt = line.strip_prefix(PROMPT).map(|c| (c, false));
        let shell = line.strip_prefix(SHELL).map(|c| (c, true));
        match (prompt.or(shell), shown.last_mut()) {
            (Some((command, shell)), _) => shown.push(Shown {
                command: command.trim().to_string(),
                shell,
                reply: Vec::new(),
                line: block.line + 1 + offset,
            }),
            (None, Some(last)) => {
                let value = line.split(" #").next().unwrap().trim_end();
                if !value.trim().is_empty() {
                    last.reply.push(value.to_string());
                }
            }
            (None, None) => {}
        }
    }
    shown
}

/// Whether a line looks like a reply as redis-cli shows it.
pub fn looks_like_a_reply(line: &str) -> bool {
    let line = line.trim_start();
    let numbered = line
        .split_once(") ")
        .is_some_and(|(n, _)| !n.is_empty() && n.trim().chars().all(|c| c.is_ascii_digit()));
    numbered
        || ["(integer) ", "(error) ", "(nil)", "(empty array)"]
            .iter()
            .any(|p| line.starts_with(p))
}

/// What a block's info string asks for a session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    pub no_module: bool,
    pub continued: bool,
    /// Module options given at load time.
    pub load: Vec<(String, String)>,
    /// The server version it needs: "7.0", "7.2" or "7.4".
    pub since: Option<String>,
    /// Where `MODULE LIST` is shown to have loaded the module from.
    pub module_at: Option<String>,
}

/// What a code block is to the documentation tests.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A session to replay.
    Replayed(Replay, Vec<Shown>),
    /// A session or replies shown but not replayed, and why (possibly
    /// empty: the tests refuse that).
    NotReplayed(String),
    /// Shows replies, or a redis-cli prompt, without saying what to do
    /// with them (the tests refuse that too).
    Unmarked,
    /// Anything else: code, configuration, commands without replies.
    Other,
}

/// Reads a block's info string and lines.
pub fn kind(block: &Block) -> Result<Kind, String> {
    if let Some((_, reason)) = block.info.split_once("not-replayed") {
        let reason = reason.trim_start_matches(':').trim();
        return Ok(Kind::NotReplayed(reason.to_string()));
    }
    let mut words = block.info.split_whitespace();
    if words.next() != Some("redis-cli") {
        let sessionlike = block
            .lines
            .iter()
            .any(|l| l.starts_with(PROMPT) || l.starts_with(SHELL) || looks_like_a_reply(l));
        return Ok(if sessionlike {
            Kind::Unmarked
        } else {
            Kind::Other
        });
    }
    let mut replay = Replay::default();
    for word in words {
        if word == "no-module" {
            replay.no_module = true;
        } else if word == "continued" {
            replay.continued = true;
        } else if let Some(option) = word.strip_prefix("load:") {
            let (name, value) = option
                .split_once('=')
                .ok_or_else(|| format!("`{word}`: load:NAME=VALUE"))?;
            replay.load.push((name.to_string(), value.to_string()));
        } else if let Some(version) = word.strip_prefix("since:") {
            if !["7.0", "7.2", "7.4"].contains(&version) {
                return Err(format!("`{word}`: since:7.0, 7.2 or 7.4"));
            }
            replay.since = Some(version.to_string());
        } else if let Some(path) = word.strip_prefix("module-at:") {
            replay.module_at = Some(path.to_string());
        } else {
            return Err(format!("unknown word `{word}` in the info string"));
        }
    }
    let shown = shown(block);
    if shown.is_empty() {
        return Err("a redis-cli block that shows no command".to_string());
    }
    Ok(Kind::Replayed(replay, shown))
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped,
/// spaces as hyphens.
pub fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The headings of a Markdown text (outside code blocks): level and text.
pub fn headings(markdown: &str) -> Vec<(usize, String)> {
    prose(markdown)
        .into_iter()
        .filter(|(_, l)| l.starts_with('#'))
        .map(|(_, l)| {
            let level = l.chars().take_while(|c| *c == '#').count();
            (level, l[level..].trim().to_string())
        })
        .collect()
}

/// The anchors of a Markdown text's headings.
pub fn anchors(markdown: &str) -> Vec<String> {
    headings(markdown)
        .iter()
        .map(|(_, h)| anchor_of(h))
        .collect()
}

/// The targets of a Markdown text's inline links, `[text](target)`, outside
/// code blocks.
pub fn link_targets(markdown: &str) -> Vec<String> {
    let prose: Vec<&str> = prose(markdown).into_iter().map(|(_, l)| l).collect();
    prose
        .join("\n")
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target.to_string()))
        .collect()
}

/// A relative link's file, resolved from the document that holds it (the
/// document itself for `#anchor`), and its anchor.
pub fn resolve(document: &Path, target: &str) -> Option<(PathBuf, Option<String>)> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (file, anchor) = match target.split_once('#') {
        Some((file, anchor)) => (file, Some(anchor.to_string())),
        None => (target, None),
    };
    let path = if file.is_empty() {
        document.to_path_buf()
    } else {
        document.parent().unwrap().join(file)
    };
    Some((path, anchor))
}

/// One Markdown table: the line of its header (from 1) and its rows of
/// cells, the header first, the delimiter row left out.
#[derive(Debug, Clone)]
pub struct Table {
    pub line: usize,
    pub rows: Vec<Vec<String>>,
    /// Rows with another number of cells than the header, by line.
    pub malformed: Vec<usize>,
}

impl Table {
    /// The header's cells.
    pub fn header(&self) -> &[String] {
        &self.rows[0]
    }

    /// The rows after the header.
    pub fn body(&self) -> &[Vec<String>] {
        &self.rows[1..]
    }
}

/// The cells of a table row; `\|` is a `|` inside a cell.
pub fn cells(row: &str) -> Vec<String> {
    let inner = row.trim();
    let inner = inner.strip_prefix('|').unwrap_or(inner);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

/// The tables of a Markdown text (outside code blocks).
pub fn tables(markdown: &str) -> Vec<Table> {
    let lines = prose(markdown);
    let mut tables = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let (line, text) = lines[index];
        let delimiter = lines.get(index + 1).map(|(_, l)| *l).unwrap_or("");
        let is_delimiter = delimiter.trim_start().starts_with('|')
            && delimiter.contains("---")
            && delimiter
                .chars()
                .all(|c| matches!(c, '|' | '-' | ':' | ' '));
        if text.trim_start().starts_with('|') && is_delimiter {
            let header = cells(text);
            let mut table = Table {
                line,
                rows: vec![header.clone()],
                malformed: Vec::new(),
            };
            if cells(delimiter).len() != header.len() {
                table.malformed.push(lines[index + 1].0);
            }
            index += 2;
            while let Some((line, row)) = lines.get(index) {
                if !row.trim_start().starts_with('|') {
                    break;
                }
                let row = cells(row);
                if row.len() != header.len() {
                    table.malformed.push(*line);
                }
                table.rows.push(row);
                index += 1;
            }
            tables.push(table);
        } else {
            index += 1;
        }
    }
    tables
}

/// The text of a Markdown file's section: from the heading whose text is
/// `heading` to the next heading of the same level or above.
pub fn section<'a>(markdown: &'a str, heading: &str) -> Option<&'a str> {
    let mut start = None;
    let mut level = 0;
    let mut offset = 0;
    let mut in_code = false;
    for line in markdown.split_inclusive('\n') {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            let this = line.chars().take_while(|c| *c == '#').count();
            match start {
                None if line[this..].trim() == heading => {
                    start = Some(offset);
                    level = this;
                }
                Some(from) if this <= level => return Some(&markdown[from..offset]),
                _ => {}
            }
        }
        offset += line.len();
    }
    start.map(|from| &markdown[from..])
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

/// The words of a command, in upper case.
pub fn words_of(command: &str) -> Vec<String> {
    command
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect()
}

/// The module command a command stands for: itself, or the function an
/// `FCALL`/`FCALL_RO` calls (`ratelimit_check` is `RATELIMIT.CHECK`).
pub fn module_command(words: &[String]) -> String {
    match words.first().map(String::as_str) {
        Some("FCALL" | "FCALL_RO") => words
            .get(1)
            .and_then(|f| f.strip_prefix("RATELIMIT_"))
            .map(|verb| format!("RATELIMIT.{verb}"))
            .unwrap_or_default(),
        Some(name) => name.to_string(),
        None => String::new(),
    }
}

/// The longest period of a command's limits, in seconds.
pub fn longest_period_s(words: &[String]) -> i64 {
    let command = module_command(words);
    let periods: Vec<i64> = if command.starts_with("RATELIMIT.M") {
        words
            .iter()
            .enumerate()
            .filter(|(_, w)| *w == "LIMIT")
            .filter_map(|(i, _)| words.get(i + 2)?.parse().ok())
            .collect()
    } else {
        // CHECK and PEEK: key limit period; through FCALL, two words more.
        let at = if words[0].starts_with("FCALL") { 5 } else { 3 };
        words
            .get(at)
            .and_then(|p| p.parse().ok())
            .into_iter()
            .collect()
    };
    periods.into_iter().max().unwrap_or(0)
}

/// The number of the innermost element a reply line shows: 4 for
/// `   2) 4) (integer) 59968`; `None` for a line without one.
pub fn element_of(line: &str) -> Option<u32> {
    let mut last = None;
    let mut rest = line.trim_start();
    while let Some((number, after)) = rest.split_once(") ") {
        match number.trim().parse() {
            Ok(n) => last = Some(n),
            Err(_) => break,
        }
        rest = after.trim_start();
    }
    last
}

/// A time in a reply, which depends on the moment the command runs: how far
/// it may be from the one shown, and how many milliseconds its unit is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Time {
    pub tolerance: i64,
    pub unit_ms: i64,
}

/// Whether a reply line is a time, and how far it may be from the one shown;
/// `None` for every other line, which must be exactly as shown.
pub fn time_tolerance(command: &str, line: &str) -> Option<Time> {
    let words = words_of(command);
    let element = element_of(line);
    let times = matches!(element, Some(4 | 5));
    // RESERVE's ninth element: the ms until its hold expires.
    let hold_ttl = matches!(element, Some(9)) && line.trim_start().starts_with("9)");
    let ms = |tolerance| {
        Some(Time {
            tolerance,
            unit_ms: 1,
        })
    };
    match module_command(&words).as_str() {
        "PTTL" => ms(1_000),
        "RATELIMIT.RESERVE" if hold_ttl => ms(1_000),
        "RATELIMIT.CHECK" | "RATELIMIT.PEEK" | "RATELIMIT.MCHECK" | "RATELIMIT.MPEEK"
        | "RATELIMIT.ACQUIRE" | "RATELIMIT.RESERVE" | "RATELIMIT.SETTLE"
            if times =>
        {
            if words.iter().any(|w| w == "SLIDING") {
                // Windows are aligned to the epoch: the times depend on
                // where in the period the session runs.
                ms(2 * longest_period_s(&words) * 1000)
            } else {
                ms(1_000)
            }
        }
        // Seconds, rounded up.
        "RATELIMIT.THROTTLE" | "CL.THROTTLE" if times => Some(Time {
            tolerance: 1,
            unit_ms: 1000,
        }),
        _ => None,
    }
}

/// The integer of a line such as `4) (integer) 59996` or `(integer) 59983`.
pub fn integer_of(line: &str) -> Option<i64> {
    line.split_once("(integer) ")?.1.trim().parse().ok()
}

/// Asserts that redis-cli's output is the reply a document shows, times
/// within their tolerance; `place` names the document and line. A session
/// that has run for `late_ms` since its first command may see its times
/// that much shorter than shown (a loaded machine runs it slower than it
/// was recorded).
pub fn assert_reply_matches(place: &str, shown: &Shown, actual: &str, late_ms: i64) {
    let actual: Vec<&str> = actual
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let report = || {
        format!(
            "{place} shows for `{}`:\n{}\nthe server replies:\n{}",
            shown.command,
            shown.reply.join("\n"),
            actual.join("\n")
        )
    };
    assert_eq!(shown.reply.len(), actual.len(), "{}", report());
    for (index, (want, got)) in shown.reply.iter().zip(&actual).enumerate() {
        match (time_tolerance(&shown.command, want), integer_of(want)) {
            (Some(time), Some(want_time)) => {
                let got_time = integer_of(got).unwrap_or_else(|| panic!("{}", report()));
                let late = (late_ms + time.unit_ms - 1) / time.unit_ms;
                let close = if want_time < 0 {
                    want_time == got_time
                } else {
                    got_time >= 0
                        && got_time <= want_time + time.tolerance
                        && got_time >= want_time - time.tolerance - late
                };
                assert!(close, "line {}: {}", index + 1, report());
            }
            _ => assert_eq!(want, got, "line {}: {}", index + 1, report()),
        }
    }
}
