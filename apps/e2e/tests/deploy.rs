//! The deployment files in apps/slavealloc/deploy/ that need no daemon,
//! checked as far as this machine allows: the systemd units by
//! `systemd-analyze verify` and `security` (parsed here when systemd-analyze
//! is missing), the scripts by shellcheck, and the backup script run for
//! real against SQLite (retention, verification, restore after an
//! accidental `dbinit --force`). deploy_http.rs puts nginx and the
//! monitoring check in front of a real daemon.

// Helpers outside #[test] functions too: a panic is the failure report here.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{deploy_dir, have, read, run, sample_db};
use slavealloc_e2e::process::Finished;
use slavealloc_e2e::workspace::binaries;
use tempfile::TempDir;

/// A unit file's `[Section] Key=Value` pairs (a key may repeat).
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

#[test]
fn systemd_units_are_hardened_restart_on_failure_and_verify() {
    let dir = deploy_dir().join("systemd");
    let units: Vec<PathBuf> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
    let names: BTreeSet<String> = units.iter().map(name).collect();
    for wanted in [
        "slavealloc@.service",
        "slavealloc-backup@.service",
        "slavealloc-backup@.timer",
        "slavealloc-restore@.service",
        "runslave.service",
    ] {
        assert!(names.contains(wanted), "{wanted} missing from {}", dir.display());
    }

    let daemon = parse_unit(&read(&dir.join("slavealloc@.service")));
    let exec = one(&daemon, "Service.ExecStart");
    assert!(
        exec.starts_with("/usr/local/bin/slavealloc serve --config "),
        "the daemon must read everything from its configuration file: {exec}"
    );
    assert_eq!(one(&daemon, "Service.Restart"), "on-failure");
    // The shared configuration, then each instance's own layered over it;
    // its own database and user.
    assert_eq!(
        daemon.get("Service.LoadCredential").map(Vec::as_slice),
        Some(
            ["base:/etc/slavealloc/slavealloc.toml", "config:/etc/slavealloc/%i.toml"]
                .map(String::from)
                .as_slice()
        )
    );
    assert!(
        exec.ends_with("--config ${CREDENTIALS_DIRECTORY}/base --config ${CREDENTIALS_DIRECTORY}/config"),
        "the instance's file is layered over the shared one: {exec}"
    );
    assert_eq!(one(&daemon, "Service.StateDirectory"), "slavealloc/%i");
    assert_eq!(one(&daemon, "Service.User"), "slavealloc-%i");
    assert_eq!(one(&daemon, "Install.WantedBy"), "multi-user.target");
    for service in [
        "slavealloc@.service",
        "slavealloc-backup@.service",
        "slavealloc-restore@.service",
    ] {
        let unit = parse_unit(&read(&dir.join(service)));
        for (key, value) in [
            ("DynamicUser", "yes"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("CapabilityBoundingSet", ""),
        ] {
            assert_eq!(one(&unit, &format!("Service.{key}")), value, "{service}: {key}");
        }
    }
    let timer = parse_unit(&read(&dir.join("slavealloc-backup@.timer")));
    assert_eq!(one(&timer, "Timer.Persistent"), "true");
    assert!(one(&timer, "Timer.OnCalendar").contains("*-*-*"), "nightly");
    let backup = parse_unit(&read(&dir.join("slavealloc-backup@.service")));
    assert!(
        one(&backup, "Service.ExecStart").contains(" --keep "),
        "a retention count"
    );
    let restore = parse_unit(&read(&dir.join("slavealloc-restore@.service")));
    assert_eq!(one(&restore, "Unit.Conflicts"), "slavealloc@%i.service");

    if !have("systemd-analyze", false) {
        return;
    }
    // verify wants every executable to exist: point the units at the real
    // binary and script, change nothing else.
    let bins = binaries().unwrap();
    let tmp = TempDir::new().unwrap();
    for unit in &units {
        let text = read(unit)
            .replace(
                "/usr/local/bin/slavealloc-backup",
                deploy_dir().join("slavealloc-backup").to_str().unwrap(),
            )
            .replace("/usr/local/bin/slavealloc ", &format!("{} ", bins.slavealloc.display()))
            .replace("/usr/local/bin/runslave ", &format!("{} ", bins.runslave.display()));
        fs::write(tmp.path().join(name(unit)), text).unwrap();
    }
    let copies: Vec<PathBuf> = units.iter().map(|u| tmp.path().join(name(u))).collect();
    let done = run(
        "systemd-analyze verify",
        Command::new("systemd-analyze").arg("verify").args(&copies),
        tmp.path(),
    );
    // It exits 0 on unknown keys and bad values; any word from it is a fault.
    assert!(
        done.status.success() && done.output.trim().is_empty(),
        "systemd-analyze verify: {}",
        done.output
    );
    // runslave.service runs the build worker itself, which needs the
    // machine: it is not sandboxed, on purpose.
    let sandboxed = |u: &&PathBuf| u.extension().is_some_and(|e| e == "service") && !u.ends_with("runslave.service");
    for unit in copies.iter().filter(sandboxed) {
        // Exposure 2.0 or less ("OK" in systemd's words; a plain unit is 9.6).
        let done = run(
            "systemd-analyze security",
            Command::new("systemd-analyze")
                .args(["security", "--offline=yes", "--threshold=20"])
                .arg(unit),
            tmp.path(),
        );
        assert!(done.status.success(), "{}: {}", unit.display(), done.output);
    }
}

#[test]
fn shell_scripts_pass_shellcheck() {
    if !have("shellcheck", true) {
        return;
    }
    let tmp = TempDir::new().unwrap();
    let done = run(
        "shellcheck",
        Command::new("shellcheck")
            .arg(deploy_dir().join("slavealloc-backup"))
            .arg(deploy_dir().join("monitoring/slavealloc-check")),
        tmp.path(),
    );
    assert!(done.status.success(), "{}", done.output);
}

fn backup(args: &[&str], dir: &Path) -> Finished {
    run(
        "slavealloc-backup",
        Command::new(deploy_dir().join("slavealloc-backup"))
            .env("SLAVEALLOC", &binaries().unwrap().slavealloc)
            .env_remove("SLAVEALLOC_DB")
            .args(args),
        dir,
    )
}

fn dumps_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn dbdump(db: &str, dir: &Path) -> String {
    let out = dir.join("now.json");
    let done = run(
        "dbdump",
        Command::new(&binaries().unwrap().slavealloc)
            .args(["dbdump", "--db", db])
            .arg(&out),
        dir,
    );
    assert!(done.status.success(), "{}", done.output);
    read(&out)
}

#[test]
fn backup_script_keeps_the_newest_dumps_and_restores_after_an_accidental_dbinit() {
    let tmp = TempDir::new().unwrap();
    let db = sample_db(tmp.path());
    let config = tmp.path().join("production.toml");
    // The daemon's own configuration file, with its other keys.
    fs::write(
        &config,
        format!("db = \"{db}\"\nlisten = \"127.0.0.1:1080\"\n\n[tac]\ndefault_template = \"buildbot-worker\"\n"),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let backups = tmp.path().join("backups");
    let dir = backups.to_str().unwrap();
    let textfile = tmp.path().join("backup.prom");

    for _ in 0..3 {
        let done = backup(
            &[
                "dump",
                "--config",
                cfg,
                "--dir",
                dir,
                "--keep",
                "2",
                "--textfile",
                textfile.to_str().unwrap(),
            ],
            tmp.path(),
        );
        assert!(done.status.success(), "{}", done.output);
        assert!(done.output.contains("restores identically"), "{}", done.output);
    }
    let kept = dumps_in(&backups);
    assert_eq!(kept.len(), 2, "retention 2: {kept:?}");
    assert!(
        kept.iter()
            .all(|n| n.starts_with("slavealloc-") && n.ends_with("Z.json")),
        "{kept:?}"
    );
    let current = dbdump(&db, tmp.path());
    for name in &kept {
        assert_eq!(read(&backups.join(name)), current, "{name} is the database's dump");
    }
    let metrics = read(&textfile);
    assert!(
        metrics.contains("\nslavealloc_backup_last_success_timestamp_seconds "),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("\nslavealloc_backup_size_bytes {}\n", current.len())),
        "{metrics}"
    );

    // Bad input: a clear error, nothing deleted, no stray files.
    for (args, says) in [
        (vec!["dump", "--config", cfg, "--dir", dir, "--keep", "0"], "--keep"),
        (vec!["dump", "--config", cfg, "--dir", dir, "--keep", "x"], "--keep"),
        (
            vec!["dump", "--config", "/nonexistent.toml", "--dir", dir],
            "cannot read",
        ),
        (vec!["restore", "--config", cfg, "/nonexistent.json"], "cannot read"),
        (vec!["dump", "--dir", dir], "slavealloc-backup dump --config FILE"),
    ] {
        let done = backup(&args, tmp.path());
        assert!(!done.status.success(), "{args:?} succeeded: {}", done.output);
        assert!(done.output.contains(says), "{args:?}: {}", done.output);
        assert_eq!(dumps_in(&backups), kept);
    }
    // A database that cannot be dumped deletes no dump.
    let broken = tmp.path().join("broken.toml");
    fs::write(&broken, "db = \"sqlite:///nonexistent/dir/slavealloc.db\"\n").unwrap();
    let done = backup(
        &[
            "dump",
            "--config",
            broken.to_str().unwrap(),
            "--dir",
            dir,
            "--keep",
            "1",
        ],
        tmp.path(),
    );
    assert!(!done.status.success(), "{}", done.output);
    assert!(done.output.contains("nothing deleted"), "{}", done.output);
    assert_eq!(dumps_in(&backups), kept);

    // Newcomer bug 2: a misspelt database path made an empty database and
    // "successful" empty dumps that rotated the good ones away. A path that
    // is not there, or a database with no slaves and no masters, fails and
    // deletes nothing (an empty fleet is dumped with --allow-empty).
    let misspelt = db.replace("slavealloc.db", "slavealoc.db");
    assert_ne!(misspelt, db);
    let empty_db = format!("sqlite://{}", tmp.path().join("empty.db").display());
    let init = run(
        "dbinit",
        Command::new(&binaries().unwrap().slavealloc).args(["dbinit", "--db", &empty_db]),
        tmp.path(),
    );
    assert!(init.status.success(), "{}", init.output);
    for (url, says) in [
        (&misspelt, "no SQLite database"),
        (&empty_db, "no slaves and no masters"),
    ] {
        let typo = tmp.path().join("typo.toml");
        fs::write(&typo, format!("db = \"{url}\"\n")).unwrap();
        let args = ["dump", "--config", typo.to_str().unwrap(), "--dir", dir, "--keep", "1"];
        let done = backup(&args, tmp.path());
        assert!(!done.status.success(), "{url}: {}", done.output);
        assert!(
            done.output.contains(says) && done.output.contains("nothing deleted"),
            "{url}: {}",
            done.output
        );
        assert_eq!(dumps_in(&backups), kept, "{url}");
    }
    assert!(!tmp.path().join("slavealoc.db").exists(), "no database was created");
    let empty_dir = tmp.path().join("empty-backups");
    let typo = tmp.path().join("typo.toml");
    let args = [
        "dump",
        "--config",
        typo.to_str().unwrap(),
        "--dir",
        empty_dir.to_str().unwrap(),
        "--allow-empty",
    ];
    let done = backup(&args, tmp.path());
    assert!(done.status.success(), "{}", done.output);
    assert_eq!(dumps_in(&empty_dir).len(), 1);

    // The accident the nightly dump is for: dbinit --force on the live
    // database. Restore the newest dump and get the same database back.
    let wiped = run(
        "dbinit --force",
        Command::new(&binaries().unwrap().slavealloc).args(["dbinit", "--force", "--db", &db]),
        tmp.path(),
    );
    assert!(wiped.status.success(), "{}", wiped.output);
    assert_ne!(dbdump(&db, tmp.path()), current);
    let newest = backups.join(kept.last().unwrap());
    let done = backup(&["restore", "--config", cfg, newest.to_str().unwrap()], tmp.path());
    assert!(done.status.success(), "{}", done.output);
    assert!(done.output.contains("dumps back identically"), "{}", done.output);
    assert_eq!(dbdump(&db, tmp.path()), current);
}

/// The mode bits of `path`.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Runs `sql` on the shared PostgreSQL server as `postgres`.
fn psql(sql: &str, dir: &Path) {
    let done = run(
        "psql",
        Command::new("psql").args(["-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql]),
        dir,
    );
    assert!(done.status.success(), "{sql}: {}", done.output);
}

/// A database password must never be on a command line (any user sees it
/// in `ps`): the backup script hands the URL to slavealloc in its
/// environment. The slavealloc it runs here is a wrapper that records its
/// arguments; the database is a PostgreSQL one reached with a password
/// (the shared server trusts loopback, so any password does). Its dumps are
/// its owner's only.
#[test]
fn backup_script_keeps_the_password_off_command_lines_and_its_dumps_private() {
    let tmp = TempDir::new().unwrap();
    let name = format!("slavealloc_backup_argv_{}", std::process::id());
    psql(&format!("DROP DATABASE IF EXISTS {name}"), tmp.path());
    psql(&format!("CREATE DATABASE {name}"), tmp.path());
    let password = "s3cret-backup-pw";
    let db = format!("postgres://postgres:{password}@127.0.0.1:5432/{name}");
    let real = binaries().unwrap().slavealloc.clone();
    let argv_log = tmp.path().join("argv.log");
    let wrapper = tmp.path().join("slavealloc-wrapper");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >>'{}'\nexec '{}' \"$@\"\n",
            argv_log.display(),
            real.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let loaded = run(
        "dbinit",
        Command::new(&real)
            // Dumps a --force writes "next to" a network database land in
            // the working directory: keep them out of the source tree.
            .current_dir(tmp.path())
            .arg("dbinit")
            .arg(slavealloc_e2e::workspace::repo_dir().join("fixtures/sample-fleet.json"))
            .env("SLAVEALLOC_DB", &db),
        tmp.path(),
    );
    assert!(loaded.status.success(), "{}", loaded.output);
    let config = tmp.path().join("production.toml");
    fs::write(&config, format!("db = \"{db}\"\n")).unwrap();
    let backups = tmp.path().join("backups");
    let run_backup = |args: &[&str]| {
        run(
            "slavealloc-backup",
            Command::new(deploy_dir().join("slavealloc-backup"))
                .current_dir(tmp.path())
                .env("SLAVEALLOC", &wrapper)
                .env_remove("SLAVEALLOC_DB")
                .args(args),
            tmp.path(),
        )
    };
    let dumped = run_backup(&[
        "dump",
        "--config",
        config.to_str().unwrap(),
        "--dir",
        backups.to_str().unwrap(),
    ]);
    let kept = dumps_in(&backups);
    let restored = kept.first().map(|dump| {
        run_backup(&[
            "restore",
            "--config",
            config.to_str().unwrap(),
            backups.join(dump).to_str().unwrap(),
        ])
    });
    psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), tmp.path());

    assert!(dumped.status.success(), "{}", dumped.output);
    let restored = restored.unwrap();
    assert!(restored.status.success(), "{}", restored.output);
    assert!(!dumped.output.contains(password), "{}", dumped.output);
    let argv = read(&argv_log);
    assert!(argv.contains("dbdump") && argv.contains("dbinit --force"), "{argv}");
    assert!(!argv.contains(password), "the password is on a command line:\n{argv}");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(mode(&backups.join(&kept[0])), 0o600, "{}", kept[0]);
}
