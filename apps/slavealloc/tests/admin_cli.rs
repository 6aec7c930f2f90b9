//! The admin command line end to end: the real `slavealloc` binary against
//! real databases (a temporary SQLite file; MariaDB and PostgreSQL for the
//! dump round trips) and against a running `slavealloc serve`.

// Test helpers outside #[test] functions: a panic is the failure report we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use slavealloc_store_sql::Backend;
use slavealloc_store_sql_testing::TestDatabase;

const MARKER: &str = "# AUTOMATICALLY GENERATED - DO NOT MODIFY";
/// A write token long enough for the daemon to accept it.
const TOKEN: &str = "3c1f0e9b7a52d48e6f10a2b3c4d5e6f7";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// `slavealloc ARGS`, with no SLAVEALLOC_* variable of the caller's leaking in.
fn slavealloc(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slavealloc"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SLAVEALLOC_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> Output {
    assert!(o.status.success(), "failed: {}{}", stdout(&o), stderr(&o));
    o
}

/// A failure: exit status 1, one line on stderr, no panic; returns the line.
#[track_caller]
fn fails(o: Output) -> String {
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "stdout: {}\nstderr: {err}", stdout(&o));
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
    err
}

/// A temporary SQLite database.
struct Sqlite {
    dir: tempfile::TempDir,
    url: String,
}

impl Sqlite {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("slavealloc.db").display());
        Self { dir, url }
    }

    fn dump(&self) -> Vec<u8> {
        ok(slavealloc(&["dbdump", "-D", &self.url])).stdout
    }
}

/// A running `slavealloc serve`, stopped when dropped.
struct Daemon {
    child: Child,
    api: String,
    root: String,
}

impl Daemon {
    fn start(db: &str, config: Option<&Path>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slavealloc"));
        cmd.args([
            "serve",
            "--db",
            db,
            "--listen",
            "127.0.0.1:0",
            "--fqdn",
            "alloc.example.com",
        ]);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let root = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("the daemon stopped: {seen:?}"))
                .unwrap();
            if let Some(at) = line.find("listening on ") {
                break line[at + "listening on ".len()..]
                    .trim()
                    .trim_end_matches('/')
                    .to_owned();
            }
            seen.push(line);
        };
        // Keep reading its log so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        wait_until_ready(&root);
        Self {
            child,
            api: format!("{root}/api"),
            root,
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        let mut all = vec!["-A", self.api.as_str()];
        all.extend_from_slice(args);
        slavealloc(&all)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `/healthz` answers 200: the daemon listens at once and
/// says 503 until its schema is checked and migrated.
fn wait_until_ready(root: &str) {
    use std::io::{Read as _, Write as _};
    let (addr, base) = root
        .trim_start_matches("http://")
        .split_once('/')
        .unwrap_or((root.trim_start_matches("http://"), ""));
    let path = if base.is_empty() {
        "/healthz".to_owned()
    } else {
        format!("/{base}/healthz")
    };
    for _ in 0..300 {
        if let Ok(mut conn) = std::net::TcpStream::connect(addr) {
            let _ = write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            let mut answer = String::new();
            let _ = conn.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
                return;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{root}/healthz never answered 200");
}

/// A SQLite database holding the pickle fixture's fleet.
fn fleet() -> Sqlite {
    let db = Sqlite::new();
    let pickle = fixtures().join("pickle/original-proto0.pkl");
    ok(slavealloc(&["dbinit", "-D", &db.url, pickle.to_str().unwrap()]));
    db
}

fn import_args<'a>(db: &'a str, files: &'a [(&'a str, String)]) -> Vec<&'a str> {
    let mut args = vec!["dbimport", "-D", db];
    for (flag, path) in files {
        args.push(flag);
        args.push(path);
    }
    args
}

#[test]
fn dbinit_dbimport_dbdump_on_sqlite() {
    let db = Sqlite::new();
    let out = ok(slavealloc(&["dbinit", "-D", &db.url]));
    assert!(stderr(&out).contains("holds 0 rows"), "{}", stderr(&out));
    let import = |f: &str| fixtures().join("import").join(f).display().to_string();
    let files = [
        ("--master-data", import("masters.csv")),
        ("--slave-data", import("slaves.csv")),
        ("--password-data", import("passwords.csv")),
    ];
    let mut args = import_args(&db.url, &files);
    args.push("--enable");
    let out = ok(slavealloc(&args));
    assert!(
        stderr(&out).contains("added 3 masters, 4 slaves, 3 passwords"),
        "{}",
        stderr(&out)
    );

    let dump_file = db.dir.path().join("dump.json");
    ok(slavealloc(&["dbdump", "-D", &db.url, dump_file.to_str().unwrap()]));
    let dump = std::fs::read(&dump_file).unwrap();
    assert_eq!(db.dump(), dump, "stdout and file dumps are the same bytes");
    let json: serde_json::Value = serde_json::from_slice(&dump).unwrap();
    assert_eq!(json["format"], "slavealloc-dump");
    assert_eq!(
        json["tables"]["slaves"][2]["name"], "t-w864-ix-001",
        "names are lower-cased"
    );
    assert_eq!(json["tables"]["slaves"][2]["enabled"], true);

    // A database with rows is not replaced without --force ...
    let err = fails(slavealloc(&["dbinit", "-D", &db.url]));
    assert!(err.contains("--force"), "{err}");
    assert_eq!(db.dump(), dump);
    // ... and with it, only after a dump of it is written beside it.
    let out = ok(slavealloc(&[
        "dbinit",
        "--force",
        "-D",
        &db.url,
        dump_file.to_str().unwrap(),
    ]));
    let backups: Vec<PathBuf> = std::fs::read_dir(db.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".before-dbinit-"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(
        stderr(&out).contains(&backups[0].display().to_string()),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&backups[0]).unwrap(), dump);
    assert_eq!(db.dump(), dump, "dbdump → dbinit → dbdump is byte-identical");
}

#[test]
fn dbimport_errors_name_file_line_and_column_and_change_nothing() {
    let db = fleet();
    let before = db.dump();
    let bad = |f: &str| fixtures().join("import/bad").join(f).display().to_string();
    let cases = [
        (
            "--slave-data",
            bad("missing-column.csv"),
            "missing-column.csv:1: missing column \"basedir\"",
        ),
        (
            "--slave-data",
            bad("duplicate-name.csv"),
            "duplicate-name.csv:3: column \"name\"",
        ),
        ("--master-data", bad("port.csv"), "port.csv:3: column \"pb_port\""),
        (
            "--password-data",
            bad("unknown-pool.csv"),
            "unknown-pool.csv:2: column \"pool\": unknown pool",
        ),
        (
            "--slave-data",
            bad("qualified-name.csv"),
            "qualified-name.csv:3: column \"name\"",
        ),
        ("--slave-data", bad("short-row.csv"), "short-row.csv:3:"),
        (
            "--slave-data",
            "/nonexistent/slaves.csv".to_owned(),
            "/nonexistent/slaves.csv",
        ),
    ];
    for (flag, path, want) in cases {
        let files = [(flag, path)];
        let err = fails(slavealloc(&import_args(&db.url, &files)));
        assert!(err.contains(want), "{err}\nshould contain {want}");
        assert_eq!(db.dump(), before, "{want}: nothing written");
    }
    // A slave that is already in the database.
    let dup = fixtures().join("import/more-slaves.csv").display().to_string();
    ok(slavealloc(&import_args(&db.url, &[("--slave-data", dup.clone())])));
    let after_first = db.dump();
    let err = fails(slavealloc(&import_args(&db.url, &[("--slave-data", dup)])));
    assert!(err.contains("already exists (in the database)"), "{err}");
    assert_eq!(db.dump(), after_first);
}

#[test]
fn the_originals_pickles_load_through_dbinit() {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("pickle/expected.json")).unwrap()).unwrap();
    let mut dumps = Vec::new();
    for file in ["original-proto0.pkl", "original-proto2.pkl"] {
        let db = Sqlite::new();
        let pickle = fixtures().join("pickle").join(file);
        ok(slavealloc(&["dbinit", "-D", &db.url, pickle.to_str().unwrap()]));
        let dump = db.dump();
        let json: serde_json::Value = serde_json::from_slice(&dump).unwrap();
        assert_eq!(json, expected, "{file}");
        dumps.push(dump);
    }
    assert_eq!(dumps[0], dumps[1]);
    // Not a dump at all: refused before the database is touched.
    let db = fleet();
    let before = db.dump();
    let csv = fixtures().join("import/slaves.csv");
    let err = fails(slavealloc(&["dbinit", "--force", "-D", &db.url, csv.to_str().unwrap()]));
    assert!(err.contains("neither a JSON dump"), "{err}");
    assert_eq!(db.dump(), before);
}

/// Bug: a template or note holding both quote kinds, as real Python 2.7
/// cPickle writes it (`S'...\'...'`), made dbinit refuse the whole dump.
/// The checked-in fixture is what Python 2.7 writes; with an interpreter
/// at hand (SLAVEALLOC_TEST_PYTHON2, which the test script sets where
/// pyenv's 2.7 is installed, as on CI) it is written afresh and must match.
#[test]
fn a_python27_dump_with_both_quote_kinds_loads_through_dbinit() {
    let fixture = fixtures().join("pickle/python27-quotes-proto0.pkl");
    let pickle = match std::env::var_os("SLAVEALLOC_TEST_PYTHON2") {
        Some(python) => {
            let dir = tempfile::tempdir().unwrap();
            let fresh = dir.path().join("fresh.pkl");
            let made = Command::new(python)
                .arg(fixtures().join("pickle/make_py27_pickles.py"))
                .arg(&fresh)
                .output()
                .unwrap();
            assert!(made.status.success(), "{}", stderr(&made));
            let bytes = std::fs::read(&fresh).unwrap();
            assert_eq!(
                bytes,
                std::fs::read(&fixture).unwrap(),
                "the fixture is what Python 2.7 writes"
            );
            (dir, fresh)
        }
        None => (tempfile::tempdir().unwrap(), fixture),
    };
    let db = Sqlite::new();
    ok(slavealloc(&["dbinit", "-D", &db.url, pickle.1.to_str().unwrap()]));
    let dump: serde_json::Value = serde_json::from_slice(&db.dump()).unwrap();
    let template = dump["tables"]["tac_templates"][0]["template"].as_str().unwrap();
    assert!(template.starts_with("# it's \"quoted\"\n"), "{template:?}");
    assert!(template.contains(r#"path = 'C:\\builds\\' + "it\'s""#), "{template:?}");
    let notes = dump["tables"]["masters"][0]["notes"].as_str().unwrap();
    assert_eq!(notes, "bug 1234: it's \"flaky\" \\' caf\u{e9}");
}

/// dbdump → dbinit → dbdump, and dbcopy, between SQLite, MariaDB and
/// PostgreSQL: every copy dumps to the same bytes.
#[tokio::test(flavor = "multi_thread")]
async fn dumps_round_trip_on_every_backend_and_across_them() {
    // The source: the pickle fleet with allocations and audit entries made
    // through the daemon, so that every table and value kind is in the dump.
    let source = fleet();
    {
        let daemon = Daemon::start(&source.url, None);
        ok(daemon.cli(&["gettac", "tst-linux64-01", "bld-centos6-01"]));
        ok(daemon.cli(&["disable", "tst-linux64-02", "-m", "quotes ' \" and ünïcode"]));
    }
    let reference = source.dump();
    let reference_file = source.dir.path().join("reference.json");
    std::fs::write(&reference_file, &reference).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&reference).unwrap();
    assert!(!json["tables"]["audit_log"].as_array().unwrap().is_empty());

    let mut databases = Vec::new();
    for backend in [Backend::MySql, Backend::Postgres, Backend::Sqlite] {
        // Unreachable server: None outside CI; a panic (failure) in CI.
        if let Some(db) = TestDatabase::create(backend).await {
            databases.push(db);
        }
    }
    // Every step runs (and every database is dropped) before anything is
    // asserted, so a failure leaves no database behind.
    let mut problems = Vec::new();
    let mut previous = source.url.clone();
    for db in &databases {
        let (url, backend) = (db.url().to_owned(), db.backend());
        let file = reference_file.display().to_string();
        let backups = source.dir.path().display().to_string();
        let from = previous.clone();
        let reference = reference.clone();
        let steps = tokio::task::spawn_blocking(move || {
            let loaded = ok(slavealloc(&["dbinit", "-D", &url, &file])).status.success()
                && ok(slavealloc(&["dbdump", "-D", &url])).stdout == reference;
            ok(slavealloc(&[
                "dbcopy",
                "--from",
                &from,
                "--to",
                &url,
                "--force",
                "--backup-dir",
                &backups,
            ]));
            let copied = ok(slavealloc(&["dbdump", "-D", &url])).stdout == reference;
            (loaded, copied)
        })
        .await;
        match steps {
            Ok((true, true)) => {}
            Ok((loaded, copied)) => problems.push(format!(
                "{backend:?}: dbinit+dbdump identical: {loaded}; dbcopy from {previous} identical: {copied}"
            )),
            Err(e) => problems.push(format!("{backend:?}: {e}")),
        }
        previous = db.url().to_owned();
    }
    for db in databases {
        db.destroy().await;
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn api_subcommands_against_a_running_daemon() {
    let db = fleet();
    let daemon = Daemon::start(&db.url, None);

    // gettac -n shows without recording; gettac records and says where.
    let out = ok(daemon.cli(&["gettac", "-n", "tst-linux64-01"]));
    assert!(stdout(&out).starts_with(MARKER), "{}", stdout(&out));
    let out = ok(daemon.cli(&["gettac", "TST-LINUX64-01"]));
    assert!(stdout(&out).contains("bm01.build.example.com"));
    assert_eq!(
        stderr(&out),
        "Allocated 'tst-linux64-01' to 'bm01-tests' (bm01.build.example.com:9201)\n"
    );
    let out = ok(daemon.cli(&["gettac", "w64-ix-slave01"]));
    assert_eq!(stderr(&out), "Slave 'w64-ix-slave01' is disabled; no allocation made\n");
    // -A after the subcommand's name works as before it; so does the
    // environment, which the command line beats.
    let out = ok(slavealloc(&["gettac", "-n", "-A", &daemon.api, "tst-linux64-01"]));
    assert!(stdout(&out).starts_with(MARKER), "{}", stdout(&out));
    let out = Command::new(env!("CARGO_BIN_EXE_slavealloc"))
        .args(["gettac", "-n", "tst-linux64-01"])
        .env("SLAVEALLOC_API", &daemon.api)
        .output()
        .unwrap();
    assert!(ok(out).status.success());
    let err = fails(slavealloc(&["gettac", "-n", "no-such-slave", "-A", &daemon.api]));
    assert!(err.contains("no slave has this name"), "bug 6: {err}");

    // lock / unlock
    let out = ok(daemon.cli(&["lock", "tst-linux64-01", "bm03-build"]));
    assert_eq!(
        stderr(&out),
        "Locked 'tst-linux64-01' to 'bm03-build' (bm03.build.example.com:9001)\n"
    );
    ok(daemon.cli(&["lock", "-u", "tst-linux64-01"]));
    let err = fails(daemon.cli(&["unlock", "tst-linux64-01"]));
    assert!(err.contains("is not locked"), "{err}");

    // disable / enable / notes, with the original's messages.
    let out = ok(daemon.cli(&["disable", "tst-linux64-01", "-m", "bug 42: reimage"]));
    assert_eq!(stderr(&out), "tst-linux64-01 disabled\n");
    let out = ok(daemon.cli(&["disable", "tst-linux64-01"]));
    assert_eq!(
        stderr(&out),
        "previous slave notes: 'bug 42: reimage'\ntst-linux64-01 is already disabled\n"
    );
    assert_eq!(
        stdout(&ok(daemon.cli(&["notes", "tst-linux64-01"]))),
        "bug 42: reimage\n"
    );
    ok(daemon.cli(&["enable", "tst-linux64-01", "-m", ""]));
    assert_eq!(stdout(&ok(daemon.cli(&["notes", "tst-linux64-01"]))), "");

    // list / show / silos
    let out = ok(daemon.cli(&["list", "slaves", "--disabled", "--format", "csv"]));
    let text = stdout(&out);
    let names: Vec<&str> = text.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(names, ["w64-ix-slave01"], "decommissioned slaves are left out");
    let out = ok(daemon.cli(&["list", "masters", "--pool", "tests-mdc1", "--format", "json"]));
    let masters: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(masters.as_array().unwrap().len(), 2);
    let out = ok(daemon.cli(&["show", "tst-linux64-02"]));
    assert!(
        stdout(&out).contains("locked_master:") && stdout(&out).contains("bm02-tests"),
        "{}",
        stdout(&out)
    );
    let out = ok(daemon.cli(&["silos", "--format", "csv"]));
    assert!(
        stdout(&out)
            .starts_with("environment,purpose,distro,bitlength,datacenter,trustlevel,build-mdc2,tests-mdc1,total\n"),
        "{}",
        stdout(&out)
    );

    // drain, with a note and an end; undrain
    let out = daemon.cli(&["drain", "bm01-tests"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(stderr(&out).contains("--message"), "a drain says why: {}", stderr(&out));
    let out = ok(daemon.cli(&["drain", "bm01-tests", "-m", "OS upgrade", "--until", "+2h"]));
    assert_eq!(stdout(&out), "tst-linux64-01\n");
    assert!(
        stderr(&out).starts_with("Master 'bm01-tests' drained until 20"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains(": OS upgrade\n"), "{}", stderr(&out));
    let history = stdout(&ok(daemon.cli(&["history", "bm01-tests"])));
    assert!(history.contains("drained: OS upgrade (until 20"), "{history}");
    let out = ok(daemon.cli(&["undrain", "bm01-tests"]));
    assert!(
        stderr(&out).starts_with("Master 'bm01-tests' undrained"),
        "{}",
        stderr(&out)
    );
    let out = ok(daemon.cli(&["undrain", "bm01-tests"]));
    assert_eq!(stderr(&out), "Master 'bm01-tests' is enabled; it was not drained\n");

    // Several slaves at once: names, a file, filters; a dry run first.
    let names = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        names.path(),
        "# the rack\ntst-linux64-01\n\nbld-centos6-01  # and this one\n",
    )
    .unwrap();
    let file = names.path().to_str().unwrap();
    let out = ok(daemon.cli(&[
        "disable",
        "--from-file",
        file,
        "-m",
        "rack 7",
        "--until",
        "1d",
        "--dry-run",
    ]));
    assert!(
        stderr(&out).ends_with("(dry run: nothing written)\n"),
        "{}",
        stderr(&out)
    );
    let out = ok(daemon.cli(&["disable", "--from-file", file, "-m", "rack 7", "--until", "1d"]));
    assert_eq!(stderr(&out), "disable: 2 slave(s) matched, 2 changed, 2 hold(s)\n");
    let out = ok(daemon.cli(&[
        "set",
        "tst-linux64-01",
        "bld-centos6-01",
        "environment=staging",
        "-m",
        "to staging",
    ]));
    assert_eq!(stderr(&out), "set: 2 slave(s) matched, 2 changed\n");
    let err = fails(daemon.cli(&["set", "tst-linux64-01", "pool=no-such-pool"]));
    assert!(err.contains("no-such-pool"), "{err}");
    let out = ok(daemon.cli(&["enable", "--environment", "staging"]));
    assert!(
        stderr(&out).starts_with("enable: 2 slave(s) matched, 2 changed, 2 hold(s)"),
        "{}",
        stderr(&out)
    );
    ok(daemon.cli(&["set", "tst-linux64-01", "bld-centos6-01", "environment=prod"]));

    // Errors: one line, exit status 1.
    assert_eq!(
        fails(daemon.cli(&["enable", "nosuch"])),
        "slavealloc: No slave found named 'nosuch'.\n"
    );
    let err = fails(daemon.cli(&["gettac", "nosuch"]));
    assert!(err.contains("no allocation available for nosuch"), "{err}");
    let err = fails(daemon.cli(&["disable", "tst-linux64-01.build.example.com"]));
    assert!(err.contains("give the unqualified hostname"), "{err}");
    let err = fails(slavealloc(&["-A", "http://127.0.0.1:9/api", "notes", "tst-linux64-01"]));
    assert!(
        err.contains("cannot reach the slavealloc server at http://127.0.0.1:9/api/slaves/"),
        "{err}"
    );
    let err = fails(slavealloc(&[
        "-A",
        &format!("{}/ui", daemon.root),
        "notes",
        "tst-linux64-01",
    ]));
    assert!(err.contains("unexpected answer") || err.contains("HTTP"), "{err}");
}

#[test]
fn writes_need_the_token_when_the_daemon_has_tokens() {
    let db = fleet();
    let config = db.dir.path().join("slavealloc.toml");
    std::fs::write(&config, format!("[tokens]\nrelops = \"{TOKEN}\"\n")).unwrap();
    let daemon = Daemon::start(&db.url, Some(&config));
    let before = db.dump();
    // Bug 6: a missing token and a wrong one said the same thing.
    let err = fails(daemon.cli(&["disable", "tst-linux64-01"]));
    assert!(err.contains("needs a write token") && err.contains("--token"), "{err}");
    assert_eq!(db.dump(), before);
    let err = fails(daemon.cli(&["--token", "wrong-token-wrong-token-wrong", "disable", "tst-linux64-01"]));
    assert!(err.contains("refused the write token"), "{err}");
    assert_eq!(db.dump(), before);
    ok(daemon.cli(&["disable", "tst-linux64-01", "--token", TOKEN]));
    // Already so: nothing to write, so no token needed.
    assert_eq!(
        stderr(&ok(daemon.cli(&["disable", "tst-linux64-01"]))),
        "tst-linux64-01 is already disabled\n"
    );
}

#[test]
fn runslave_gets_its_tac_from_a_live_daemon() {
    let runslave = Path::new(env!("CARGO_BIN_EXE_slavealloc")).with_file_name("runslave");
    if !runslave.exists() {
        let built = Command::new(env!("CARGO"))
            .args(["build", "-p", "runslave", "--bin", "runslave"])
            .status()
            .unwrap();
        assert!(built.success());
    }
    let db = fleet();
    let daemon = Daemon::start(&db.url, None);
    let basedir = tempfile::tempdir().unwrap();
    let out = Command::new(&runslave)
        .args([
            "-a",
            &format!("{}/gettac/SLAVE", daemon.root),
            "-n",
            "tst-linux64-02",
            "--no-start",
            "-d",
        ])
        .arg(basedir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let tac = std::fs::read_to_string(basedir.path().join("buildbot.tac")).unwrap();
    assert!(tac.starts_with(MARKER), "{tac}");
    assert!(tac.contains("bm02.build.example.com"), "locked to bm02: {tac}");
    // The allocation was recorded.
    let json: serde_json::Value = serde_json::from_slice(&db.dump()).unwrap();
    assert_eq!(json["tables"]["slaves"][1]["current_masterid"], 2);
}

#[test]
fn help_on_every_subcommand_and_completions() {
    let subcommands = [
        "dbinit",
        "dbdump",
        "dbimport",
        "dbcopy",
        "gettac",
        "lock",
        "unlock",
        "enable",
        "disable",
        "notes",
        "list",
        "show",
        "drain",
        "silos",
        "why",
        "whatif",
        "history",
        "drift",
        "completions",
        "serve",
        "db",
        "db status",
    ];
    for sub in subcommands {
        let mut args: Vec<&str> = sub.split(' ').collect();
        args.push("--help");
        let out = ok(slavealloc(&args));
        assert!(stdout(&out).contains("Usage: slavealloc"), "{sub}: {}", stdout(&out));
    }
    let top = ok(slavealloc(&["--help"]));
    assert!(
        stdout(&top).contains("Exit codes:") && stdout(&top).contains("already so"),
        "{}",
        stdout(&top)
    );
    // Bug 5: -A/--api and --token were on every subcommand, serve and
    // dbinit included. Only the API subcommands take them.
    for sub in ["serve", "dbinit", "dbdump", "dbimport", "dbcopy", "keygen", "db status"] {
        let mut args: Vec<&str> = sub.split(' ').collect();
        args.push("--help");
        let help = stdout(&ok(slavealloc(&args)));
        assert!(!help.contains("--api") && !help.contains("--token"), "{sub}: {help}");
    }
    for sub in [
        "gettac", "lock", "unlock", "enable", "disable", "notes", "list", "show", "drain", "silos",
    ] {
        let help = stdout(&ok(slavealloc(&[sub, "--help"])));
        assert!(help.contains("--api") && help.contains("--token"), "{sub}: {help}");
    }
    let out = slavealloc(&["serve", "--api", "http://x/api"]);
    assert_eq!(out.status.code(), Some(2), "a usage error: {}", stderr(&out));
    let err = fails(slavealloc(&["-A", "http://x/api", "dbinit"]));
    assert!(err.contains("REST API subcommands"), "{err}");

    for shell in ["bash", "zsh", "fish"] {
        let out = ok(slavealloc(&["completions", shell]));
        let script = stdout(&out);
        assert!(script.contains("slavealloc") && script.contains("dbimport"), "{shell}");
    }
    let out = slavealloc(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Bug: `dbdump -D sqlite:<misspelt path>` created an empty database and
/// wrote a valid empty dump with exit 0, so a typo in a backup job made
/// "successful" empty backups. Read-only commands create nothing.
#[test]
fn reading_a_database_that_is_not_there_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("slavealoc.db");
    let url = format!("sqlite://{}", typo.display());
    let out = dir.path().join("backup.json");
    let err = fails(slavealloc(&["dbdump", "-D", &url, out.to_str().unwrap()]));
    assert!(
        err.contains("no SQLite database") && err.contains("slavealoc.db"),
        "{err}"
    );
    let err = fails(slavealloc(&["dbcopy", "--from", &url, "--to", &Sqlite::new().url]));
    assert!(err.contains("no SQLite database"), "{err}");
    let status = slavealloc(&["db", "status", "-D", &url]);
    assert_eq!(status.status.code(), Some(1), "{}", stderr(&status));
    assert!(!typo.exists(), "no database was created");
    assert!(!out.exists(), "no dump was written");

    // A database file without the tables is no better.
    std::fs::write(&typo, b"").unwrap();
    let err = fails(slavealloc(&["dbdump", "-D", &url]));
    assert!(err.contains("no slavealloc tables") && err.contains("dbinit"), "{err}");
}

#[test]
fn db_status_lists_the_migrations_and_exits_1_until_they_are_applied() {
    let db = Sqlite::new();
    std::fs::write(db.dir.path().join("slavealloc.db"), b"").unwrap();
    let before = slavealloc(&["db", "status", "-D", &db.url]);
    assert_eq!(before.status.code(), Some(1), "{}", stderr(&before));
    let text = stdout(&before);
    assert!(
        text.contains("schema version: none") && text.contains("audit log") && text.contains("pending"),
        "{text}"
    );

    ok(slavealloc(&["dbinit", "-D", &db.url]));
    let after = stdout(&ok(slavealloc(&["db", "status", "-D", &db.url])));
    assert!(after.contains("     1  audit log"), "{after}");
    assert!(!after.contains("pending"), "{after}");
    let last = after.lines().last().unwrap();
    assert!(last.ends_with("applied"), "{after}");
}

/// What the polls of the masters said, written into the daemon's database
/// as its poller would.
fn record_poll(db: &str, masterid: i32, workers: &[(&str, bool)]) {
    use slavealloc_domain::LiveStore;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = slavealloc_store_sql::SqlStore::connect(db).await.unwrap();
        let poll = slavealloc_domain::testing::answered_poll(masterid, std::time::SystemTime::now(), workers);
        store.record_poll(&poll).await.unwrap();
        store.close().await;
    });
}

#[test]
fn list_show_and_drift_show_the_live_fleet() {
    let db = fleet();
    let config = db.dir.path().join("no-poll.toml");
    std::fs::write(&config, "[poll]\nenabled = false\n").unwrap();
    let daemon = Daemon::start(&db.url, Some(&config));
    // tst-linux64-01 is recorded on bm01-tests and connected there;
    // tst-linux64-02 is recorded on bm02-tests but connected to bm01-tests.
    record_poll(&db.url, 1, &[("tst-linux64-01", true), ("tst-linux64-02", true)]);
    record_poll(&db.url, 2, &[]);

    let out = ok(daemon.cli(&["list", "slaves", "--connected", "--format", "csv"]));
    let listed = stdout(&out);
    let lines: Vec<&str> = listed.lines().collect();
    assert!(
        lines[0].ends_with("live.state,live.connected_master,live.last_seen"),
        "{}",
        lines[0]
    );
    assert_eq!(lines.len(), 3, "{}", stdout(&out));
    assert!(lines[1].starts_with("tst-linux64-01,") && lines[1].contains(",connected,bm01-tests,"));
    let out = ok(daemon.cli(&[
        "list",
        "slaves",
        "--stale",
        "7d",
        "--master",
        "bm03-build",
        "--format",
        "csv",
    ]));
    assert_eq!(stdout(&out).lines().count(), 2, "never seen: stale: {}", stdout(&out));
    assert!(stdout(&out).contains("bld-centos6-01,"));
    let out = ok(daemon.cli(&[
        "list",
        "slaves",
        "--disconnected",
        "--master",
        "bm01-tests",
        "--format",
        "csv",
    ]));
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));

    let out = ok(daemon.cli(&["show", "tst-linux64-02"]));
    assert!(
        stdout(&out).contains("live.state:") && stdout(&out).contains("connected"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("bm01-tests"));

    let out = daemon.cli(&["drift"]);
    assert_eq!(out.status.code(), Some(1), "drift exits 1: {}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("connected elsewhere than recorded: 1"), "{text}");
    assert!(
        text.contains("tst-linux64-02") && text.contains("unknown workers: 0"),
        "{text}"
    );
    let out = daemon.cli(&["drift", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["elsewhere"][0]["connected_master"], "bm01-tests");

    // Back where it was sent: no drift, exit 0.
    record_poll(&db.url, 1, &[("tst-linux64-01", true)]);
    record_poll(&db.url, 2, &[("tst-linux64-02", true)]);
    let out = ok(daemon.cli(&["drift"]));
    assert!(stdout(&out).contains("connected elsewhere than recorded: 0"));
}

#[test]
fn why_says_which_master_and_why_the_others_were_not() {
    let db = fleet();
    let daemon = Daemon::start(&db.url, None);
    let before = db.dump();
    let out = ok(daemon.cli(&["why", "tst-linux64-01"]));
    let text = stdout(&out);
    assert!(text.starts_with("tst-linux64-01: balanced → "), "{text}");
    assert!(text.contains("* bm0"), "the chosen master is starred: {text}");
    assert!(text.contains("peers counted: recorded"), "{text}");
    assert_eq!(db.dump(), before, "why records nothing");
    // And the allocation that follows agrees.
    let chosen = text
        .lines()
        .find(|l| l.trim_start().starts_with("* "))
        .unwrap()
        .trim_start()[2..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let out = ok(daemon.cli(&["gettac", "tst-linux64-01"]));
    assert!(
        stderr(&out).contains(&format!("to '{chosen}'")),
        "{} vs {chosen}",
        stderr(&out)
    );
    let out = ok(daemon.cli(&["why", "w64-ix-slave01"]));
    assert!(stdout(&out).contains("disabled"), "{}", stdout(&out));
    let err = fails(daemon.cli(&["why", "nobody-here"]));
    assert!(!err.is_empty());
}

#[test]
fn whatif_lists_the_moves_of_a_drain_and_writes_nothing() {
    let db = fleet();
    let daemon = Daemon::start(&db.url, None);
    let before = db.dump();
    let out = ok(daemon.cli(&["whatif", "--drain", "bm01-tests"]));
    let text = stdout(&out);
    assert!(text.starts_with("slaves that would move: 1"), "{text}");
    // bm02-tests, the pool's other master, is disabled in this fleet.
    assert!(
        text.contains("tst-linux64-01") && text.contains("none: no enabled master in pool 2"),
        "{text}"
    );
    assert_eq!(db.dump(), before, "whatif writes nothing");
    let out = ok(daemon.cli(&["whatif", "--drain", "bm01-tests", "--format", "json"]));
    let w: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&w["moves"][0]["slave"], &w["moves"][0]["to"]),
        (&serde_json::json!("tst-linux64-01"), &serde_json::Value::Null)
    );
    let err = fails(daemon.cli(&["whatif", "--drain", "bm99"]));
    assert!(err.contains("bm99"), "{err}");
}

#[test]
fn history_shows_what_changed_of_one_slave_or_master() {
    let db = fleet();
    let daemon = Daemon::start(&db.url, None);
    ok(daemon.cli(&["notes", "tst-linux64-01", "-m", "bug 1234: disk"]));
    // Locked to bm01-tests, its next boot moves it there: an allocation.
    ok(daemon.cli(&["lock", "tst-linux64-02", "bm01-tests"]));
    ok(daemon.cli(&["gettac", "tst-linux64-02"]));
    let out = ok(daemon.cli(&["history", "tst-linux64-01", "--since", "1d", "--edits"]));
    let text = stdout(&out);
    assert!(
        text.contains("tst-linux64-01") && text.contains("bug 1234: disk"),
        "{text}"
    );
    assert!(!text.contains("tst-linux64-02"), "{text}");
    let out = ok(daemon.cli(&["history", "--allocations", "--format", "json"]));
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = entries.as_array().unwrap();
    assert!(
        !entries.is_empty() && entries.iter().all(|e| e["actor"] == "gettac"),
        "{entries:?}"
    );
    let out = ok(daemon.cli(&["history", "bm01-tests"]));
    assert!(stdout(&out).starts_with("at"), "{}", stdout(&out));
    let err = fails(daemon.cli(&["history", "nobody-at-all"]));
    assert!(err.contains("nobody-at-all"), "{err}");
}
