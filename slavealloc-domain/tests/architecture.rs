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

#[test]
fn the_domain_crate_depends_on_no_io_crate() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "slavealloc-domain",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(names.contains(&"serde"), "the tree was read: {tree}");
    for io in IO_CRATES {
        assert!(!names.contains(io), "slavealloc-domain depends on {io}:\n{tree}");
    }
}

/// The domain's tests use its own mocks, never an adapter: an adapter's
/// behaviour is tested in the adapter, and the domain builds alone.
#[test]
fn the_domain_crate_depends_on_no_adapter_even_for_its_tests() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "slavealloc-domain",
            "-e",
            "normal,dev",
            "--depth",
            "1",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    let ours: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with("slavealloc-") && *name != "slavealloc-domain")
        .collect();
    assert!(tree.contains("proptest"), "the dev tree was read: {tree}");
    assert_eq!(ours, Vec::<&str>::new(), "{tree}");
}
