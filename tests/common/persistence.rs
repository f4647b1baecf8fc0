//! Servers started one after another on the same files: restarts from an
//! RDB snapshot or the AOF, and what the AOF holds.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use redis::ConnectionLike;

use super::reply::run;
use super::server::{Builder, Server};

/// How long a background AOF rewrite may take.
pub const REWRITE_DEADLINE: Duration = Duration::from_secs(15);

/// A directory the servers of a test share, one after another.
pub struct DataDir {
    dir: tempfile::TempDir,
}

impl DataDir {
    pub fn new() -> DataDir {
        DataDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A server on these files, which writes them only when told (SAVE).
    pub fn rdb(&self) -> Builder {
        Server::builder().dir(self.path())
    }

    /// A server on these files with the AOF on, fsynced before every reply
    /// (`appendfsync always`): a kill loses nothing a reply acknowledged.
    pub fn aof(&self) -> Builder {
        self.rdb()
            .arg("appendonly", "yes")
            .arg("appendfsync", "always")
    }

    /// The AOF files: a directory of parts since Redis 7.0, one file before.
    pub fn aof_files(&self) -> Vec<PathBuf> {
        let parts = self.path().join("appendonlydir");
        if parts.is_dir() {
            return std::fs::read_dir(parts)
                .unwrap()
                .map(|f| f.unwrap().path())
                .collect();
        }
        vec![self.path().join("appendonly.aof")]
    }

    /// Every byte of the AOF files, as lower-case text.
    pub fn aof_contents(&self) -> String {
        let mut contents = Vec::new();
        for file in self.aof_files() {
            contents.extend(std::fs::read(file).unwrap());
        }
        String::from_utf8_lossy(&contents).to_lowercase()
    }

    /// The commands the AOF holds, in the order the server replays them,
    /// each as its arguments; parts written as an RDB (a base or preamble
    /// of Redis 7.0+) are left out. The manifest gives the order of the
    /// parts where there is one (Redis 7.0+).
    pub fn aof_commands(&self) -> Vec<Vec<Vec<u8>>> {
        let parts = self.path().join("appendonlydir");
        let files: Vec<PathBuf> = match std::fs::read_dir(&parts) {
            Err(_) => vec![self.path().join("appendonly.aof")],
            Ok(entries) => {
                let manifest = entries
                    .map(|e| e.unwrap().path())
                    .find(|p| p.to_string_lossy().ends_with(".manifest"))
                    .expect("an AOF manifest");
                // `file <name> seq <n> type <b|h|i>`: the base, then the
                // increments in order.
                let mut listed: Vec<(bool, u64, PathBuf)> = std::fs::read_to_string(manifest)
                    .unwrap()
                    .lines()
                    .filter_map(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        let at = |name: &str| {
                            let i = fields.iter().position(|f| *f == name)?;
                            fields.get(i + 1).copied()
                        };
                        let kind = at("type")?;
                        (kind != "h").then(|| {
                            (
                                kind == "i",
                                at("seq").unwrap().parse().unwrap(),
                                parts.join(at("file").unwrap()),
                            )
                        })
                    })
                    .collect();
                listed.sort();
                listed.into_iter().map(|(_, _, path)| path).collect()
            }
        };
        let mut commands = Vec::new();
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            if bytes.starts_with(b"REDIS") {
                continue;
            }
            commands.extend(parse_resp_commands(&bytes));
        }
        commands
    }

    /// Total size of the AOF files.
    pub fn aof_size(&self) -> u64 {
        self.aof_files()
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum()
    }
}

/// Waits until no AOF rewrite is running or scheduled, and asserts the last
/// one succeeded.
pub fn wait_for_rewrite(con: &mut dyn ConnectionLike) {
    let deadline = Instant::now() + REWRITE_DEADLINE;
    loop {
        let info: String = run(con, &["INFO", "persistence"]);
        if info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0") {
            assert!(
                info.contains("aof_last_bgrewrite_status:ok"),
                "the rewrite failed:\n{info}"
            );
            return;
        }
        assert!(Instant::now() < deadline, "AOF rewrite still busy:\n{info}");
        sleep(Duration::from_millis(20));
    }
}

/// The commands of a RESP stream (`*<n>` arrays of `$<len>` bulk strings),
/// as an AOF writes them; stops at a truncated tail.
pub fn parse_resp_commands(bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
    fn line(bytes: &[u8], at: &mut usize, prefix: u8) -> Option<usize> {
        let rest = bytes.get(*at..)?;
        if rest.first() != Some(&prefix) {
            return None;
        }
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let number = std::str::from_utf8(&rest[1..end]).ok()?.parse().ok()?;
        *at += end + 2;
        Some(number)
    }
    let mut at = 0;
    let mut commands = Vec::new();
    while at < bytes.len() {
        let Some(count) = line(bytes, &mut at, b'*') else {
            break;
        };
        let mut args = Vec::with_capacity(count);
        for _ in 0..count {
            let Some(len) = line(bytes, &mut at, b'$') else {
                return commands;
            };
            let Some(arg) = bytes.get(at..at + len) else {
                return commands;
            };
            args.push(arg.to_vec());
            at += len + 2;
        }
        commands.push(args);
    }
    commands
}
