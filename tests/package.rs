//! `make package` and `make install`, as a user gets them: the release
//! tarball unpacked and checked against SHA256SUMS (every link of its
//! documents resolving inside it), the installed file, each stripped and
//! loaded into a real server.
//!
//! Both targets are given the module the other tests load (`MODULE=…`, the
//! debug build by default) instead of building the release one: packing and
//! installing do the same to either file, and a release build would add
//! minutes to `make test`. The debug build carries far more symbols and debug
//! information for strip to remove.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod markdown;

use common::{check, module_path, Server};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `make <args>` in the repository; panics with make's output on failure.
fn make(args: &[String]) {
    let output = Command::new("make")
        .current_dir(repo())
        .arg("--no-print-directory")
        .args(args)
        // A `make test` around this test passes its own flags down; this
        // make starts afresh.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .expect("run make (`apt-get install make`)");
    assert!(
        output.status.success(),
        "make {}: {}\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `program args` in `dir` and returns its stdout; panics on failure.
fn output_of(dir: &Path, program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    files
}

/// The section names of an ELF file (`readelf -S`, from binutils).
fn has_section(file: &Path, section: &str) -> bool {
    let sections = output_of(repo(), "readelf", &["-SW", file.to_str().unwrap()]);
    sections.split_whitespace().any(|word| word == section)
}

/// Loads `module` into a new server and runs one check on it.
fn assert_loads_and_checks(module: &Path) {
    let server = Server::builder()
        .without_module()
        .arg("loadmodule", module.to_str().unwrap())
        .start();
    let mut con = server.connect();
    let reply = check(&mut con, "user:42", 3, 60, &[]);
    assert_eq!(
        reply.without_reset(),
        (true, 2, 3, -1),
        "RATELIMIT.CHECK user:42 3 60"
    );
}

#[test]
fn package_is_a_checksummed_tarball_of_the_stripped_module_and_the_docs_it_links() {
    let module = module_path();
    let out = tempfile::Builder::new()
        .prefix("ratelimit-package-")
        .tempdir()
        .unwrap();
    make(&[
        "package".to_string(),
        format!("MODULE={}", module.display()),
        format!("PACKAGE_DIR={}", out.path().display()),
    ]);

    let name = format!(
        "redis-ratelimit-{}-linux-{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    );
    let tarball = format!("{name}.tar.gz");
    assert_eq!(
        files_under(out.path()),
        BTreeSet::from([PathBuf::from(&tarball), PathBuf::from("SHA256SUMS")])
    );
    let sums = std::fs::read_to_string(out.path().join("SHA256SUMS")).unwrap();
    assert!(
        sums.lines().count() == 1 && sums.trim_end().ends_with(&format!("  {tarball}")),
        "SHA256SUMS:\n{sums}"
    );
    output_of(
        out.path(),
        "sha256sum",
        &["--check", "--strict", "SHA256SUMS"],
    );

    let unpacked = out.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    output_of(
        out.path(),
        "tar",
        &["-xzf", &tarball, "-C", unpacked.to_str().unwrap()],
    );
    let top = unpacked.join(&name);
    let shipped = files_under(&top);
    let mut required: BTreeSet<PathBuf> = [
        "libredis_ratelimit.so",
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "docs/commands.md",
        "docs/operations.md",
        "docs/performance.md",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect();
    // The fallback Lua library ships when the repository has it.
    let fallback = repo().join("fallback");
    if fallback.is_dir() {
        required.extend(
            files_under(&fallback)
                .into_iter()
                .map(|f| Path::new("fallback").join(f)),
        );
    }
    let lacking: Vec<&PathBuf> = required.difference(&shipped).collect();
    assert!(lacking.is_empty(), "the tarball lacks {lacking:?}");
    assert_eq!(
        files_under(&unpacked),
        shipped.iter().map(|f| Path::new(&name).join(f)).collect(),
        "one folder, {name}, holds everything"
    );
    for file in shipped
        .iter()
        .filter(|f| f.as_os_str() != "libredis_ratelimit.so")
    {
        assert!(
            !file.components().any(|c| c.as_os_str() == "node_modules"),
            "{} ships",
            file.display()
        );
        assert_eq!(
            std::fs::read(top.join(file)).unwrap(),
            std::fs::read(repo().join(file)).unwrap(),
            "{} differs from the repository's",
            file.display()
        );
    }
    // Every relative link of a shipped document resolves inside the
    // tarball: the file it names, and the heading its anchor names.
    let mut broken = Vec::new();
    for document in shipped
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(top.join(document)).unwrap();
        for target in markdown::link_targets(&text) {
            let Some((file, anchor)) = markdown::resolve(document, &target) else {
                continue;
            };
            let path = top.join(&file);
            if !path.exists() {
                broken.push(format!("{}: {target}", document.display()));
            } else if let Some(anchor) = anchor {
                let headings = markdown::anchors(&std::fs::read_to_string(&path).unwrap());
                if !headings.contains(&anchor) {
                    broken.push(format!("{}: {target}", document.display()));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links that leave the tarball: {broken:?}"
    );

    let packed = top.join("libredis_ratelimit.so");
    let mode = std::fs::metadata(&packed).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    // The debug build `make test` packs has both sections to remove.
    for section in [".symtab", ".debug_info"] {
        assert!(
            !has_section(&packed, section),
            "the packed module keeps {section}"
        );
    }
    assert_loads_and_checks(&packed);
}

#[test]
fn install_puts_the_stripped_module_under_prefix_lib_redis_modules() {
    let module = module_path();
    let prefix = tempfile::Builder::new()
        .prefix("ratelimit-prefix-")
        .tempdir()
        .unwrap();
    make(&[
        "install".to_string(),
        format!("MODULE={}", module.display()),
        format!("PREFIX={}", prefix.path().display()),
    ]);
    assert_eq!(
        files_under(prefix.path()),
        BTreeSet::from([PathBuf::from("lib/redis/modules/libredis_ratelimit.so")])
    );
    let installed = prefix
        .path()
        .join("lib/redis/modules/libredis_ratelimit.so");
    // Stripped, as the packaged module is: the debug build `make test`
    // installs has both sections to remove.
    for section in [".symtab", ".debug_info"] {
        assert!(
            !has_section(&installed, section),
            "the installed module keeps {section}"
        );
    }
    assert!(
        std::fs::metadata(&installed).unwrap().len() < std::fs::metadata(&module).unwrap().len()
    );
    // Redis 7 refuses to load a module file without execute permission.
    let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_loads_and_checks(&installed);
}
