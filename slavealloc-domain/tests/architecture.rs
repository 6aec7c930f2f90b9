//! Architecture invariant: the domain crate depends on no I/O crate.

use std::process::Command;

/// Crates that do I/O (or pull a runtime/driver in); none may appear among the
/// domain crate's normal dependencies.
const IO_CRATES: &[&str] = &[
    "sqlx",
    "warp",
    "hyper",
    "minijinja",
    "tokio",
    "clap",
    "reqwest",
    "ureq",
    "mio",
    "libsqlite3-sys",
];

/// The crate names of `cargo tree -p slavealloc-domain` with `edges`,
/// to `depth` when given.
fn tree(edges: &str, depth: Option<&str>) -> (Vec<String>, String) {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "tree",
        "-p",
        "slavealloc-domain",
        "-e",
        edges,
        "--prefix",
        "none",
        "--offline",
    ]);
    if let Some(depth) = depth {
        cmd.args(["--depth", depth]);
    }
    let out = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let names = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    (names, text)
}

#[test]
fn the_domain_crate_depends_on_no_io_crate() {
    let (names, tree) = tree("normal", None);
    assert!(names.iter().any(|n| n == "serde"), "the tree was read: {tree}");
    for io in IO_CRATES {
        assert!(
            !names.iter().any(|n| n == io),
            "slavealloc-domain depends on {io}:\n{tree}"
        );
    }
}

/// The domain's tests use its own mocks, never an adapter: an adapter's
/// behaviour is tested in the adapter, and the domain builds alone.
#[test]
fn the_domain_crate_depends_on_no_adapter_even_for_its_tests() {
    let (names, tree) = tree("normal,dev", Some("1"));
    assert!(tree.contains("proptest"), "the dev tree was read: {tree}");
    let ours: Vec<&String> = names
        .iter()
        .filter(|name| name.starts_with("slavealloc-") && *name != "slavealloc-domain")
        .collect();
    assert_eq!(ours, Vec::<&String>::new(), "{tree}");
}
