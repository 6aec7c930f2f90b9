//! apps/slavealloc/deploy/systemd/runslave.service: it runs `runslave
//! --supervise` the way runslave's stop and restart rules expect, and
//! `systemd-analyze verify` accepts it (when systemd-analyze is on this
//! machine).

// Test helpers outside #[test] functions: a panic is the failure report we want.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn unit_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../slavealloc/deploy/systemd/runslave.service")
}

/// A unit file's `Section.Key` values (a key may repeat).
fn parse_unit(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut section = String::new();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not Key=Value: {line}", n + 1));
        assert!(!section.is_empty(), "line {}: a key outside any section", n + 1);
        keys.entry(format!("{section}.{}", k.trim()))
            .or_default()
            .push(v.trim().to_owned());
    }
    keys
}

fn one<'a>(unit: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match unit.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("{key}: expected one value, found {other:?}"),
    }
}

/// A systemd time span of one number and unit (`30s`, `30min`, `2h`).
fn span(value: &str) -> Duration {
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("{value:?} is not a time span"));
    match &value[digits.len()..] {
        "" | "s" => Duration::from_secs(n),
        "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => panic!("{value:?}: unit {other:?}"),
    }
}

#[test]
fn the_unit_runs_runslave_supervise_as_the_build_user_and_stops_it_gracefully() {
    let text = std::fs::read_to_string(unit_path()).unwrap();
    let unit = parse_unit(&text);
    let exec: Vec<&str> = one(&unit, "Service.ExecStart").split_whitespace().collect();
    assert!(
        exec[0].ends_with("/runslave") && exec[1] == "--supervise",
        "ExecStart must run runslave --supervise: {exec:?}"
    );
    assert_eq!(one(&unit, "Service.User"), "cltbld");
    // runslave restarts the worker; systemd restarts runslave only as a last resort.
    assert_eq!(one(&unit, "Service.Restart"), "always");
    assert_eq!(one(&unit, "Unit.StartLimitIntervalSec"), "0", "never gives up");
    // The signal goes to runslave alone, which forwards it and does not restart.
    assert_eq!(one(&unit, "Service.KillSignal"), "SIGTERM");
    assert_eq!(one(&unit, "Service.KillMode"), "mixed");
    assert!(
        span(one(&unit, "Service.TimeoutStopSec")) >= Duration::from_secs(10 * 60),
        "a generous stop timeout"
    );
    assert!(span(one(&unit, "Service.RestartSec")) >= Duration::from_secs(10));
    for key in ["Unit.After", "Unit.Wants"] {
        assert!(
            one(&unit, key).split_whitespace().any(|u| u == "network-online.target"),
            "{key}"
        );
    }
    assert_eq!(one(&unit, "Install.WantedBy"), "multi-user.target");

    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("systemd-analyze is not installed: the unit is not verified");
            return;
        }
        Err(e) => panic!("systemd-analyze: {e}"),
    }
    // verify wants the executable to exist: this build's runslave, nothing
    // else changed.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("runslave.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/runslave", env!("CARGO_BIN_EXE_runslave")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It exits 0 on unknown keys and bad values; any word from it is a fault.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}
