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
