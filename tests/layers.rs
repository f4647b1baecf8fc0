//! The layers of ARCHITECTURE.md, read from the source: every file imports
//! only files on its own floor or below, and a file on a shared floor
//! imports its neighbour only where the drawing says so. A new import that
//! climbs a floor, or closes a circle, fails here.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// The floor of each top-level part of `src/`, lowest first, as drawn in
/// ARCHITECTURE.md.
const FLOORS: &[(&str, u8)] = &[
    ("error", 0),
    ("decimal", 0),
    ("metadata", 0),
    ("args", 1),
    ("limiter", 2),
    ("server", 2),
    ("stats", 3),
    ("config", 3),
    ("store", 4),
    ("commands", 5),
    ("lib", 6),
];

/// Imports between parts of one floor that the drawing allows.
const SIDEWAYS: &[(&str, &str)] = &[("server/load.rs", "limiter")];

fn floor(part: &str) -> u8 {
    FLOORS
        .iter()
        .find(|(name, _)| *name == part)
        .unwrap_or_else(|| {
            panic!("src/{part} has no floor in FLOORS: add it, and to ARCHITECTURE.md")
        })
        .1
}

/// The part a file belongs to: its folder under `src/`, or its own name.
fn part_of(relative: &str) -> String {
    let first = relative.split('/').next().unwrap_or(relative);
    first.trim_end_matches(".rs").to_string()
}

/// The parts of the crate a file names (`crate::<part>`), less its own.
fn imports(text: &str, own: &str) -> BTreeSet<String> {
    let mut parts = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let name: String = text[at + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && name != own {
            parts.insert(name);
        }
    }
    parts
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_file_imports_a_higher_floor_or_a_neighbour_the_drawing_does_not_show() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut wrong = Vec::new();
    for path in all {
        let relative = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let own = part_of(&relative);
        let text = fs::read_to_string(&path).unwrap();
        // Tests may reach anything they check.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        for part in imports(text, &own) {
            let climbs = floor(&part) > floor(&own);
            let sideways = floor(&part) == floor(&own)
                && !SIDEWAYS.contains(&(relative.as_str(), part.as_str()));
            if climbs || sideways {
                wrong.push(format!("src/{relative} imports crate::{part}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn error_rs_imports_nothing_of_the_crate() {
    let text = include_str!("../src/error.rs");
    let code = text.split("#[cfg(test)]").next().unwrap();
    assert!(
        imports(code, "error").is_empty(),
        "{:?}",
        imports(code, "error")
    );
}
