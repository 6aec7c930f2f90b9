//! Newcomer bug 7: `cargo run --release -p slavealloc -- serve --demo`
//! recompiled 19 crates right after a workspace build, because members
//! asked for different features of shared crates (the domain's mocks, the
//! store's test support, tokio's process, ureq's TLS). Every crate the
//! allocator is built from must get the same features in both builds, so
//! the second one reuses the first.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// `package -> features` of the normal dependency tree `cargo tree` prints
/// for `selection` (`-p slavealloc`, `--workspace`).
fn features(selection: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .arg("tree")
        .args(selection)
        .args([
            "-e",
            "normal",
            "--prefix",
            "none",
            "-f",
            "{p}|{f}",
            "--offline",
            "--locked",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim_end_matches(" (*)");
        let Some((package, list)) = line.split_once('|') else {
            continue;
        };
        map.entry(package.to_owned())
            .or_default()
            .extend(list.split(',').filter(|f| !f.is_empty()).map(str::to_owned));
    }
    map
}

#[test]
fn the_allocator_alone_builds_with_the_workspace_features() {
    let alone = features(&["-p", "slavealloc"]);
    let workspace = features(&["--workspace"]);
    assert!(
        alone.keys().any(|p| p.starts_with("tokio ")),
        "the tree was read: {alone:?}"
    );
    let differing: Vec<String> = alone
        .iter()
        .filter(|(package, f)| workspace.get(*package) != Some(*f))
        .map(|(package, f)| format!("{package}: alone {f:?}, in the workspace {:?}", workspace.get(package)))
        .collect();
    assert!(differing.is_empty(), "{}", differing.join("\n"));
}
