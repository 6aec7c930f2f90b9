//! runslave as a build machine runs it: the real binary against tiny HTTP
//! servers on 127.0.0.1 that answer a tac, an HTML error page, a 404, or
//! nothing at all.

// Test helpers outside #[test] functions: a panic is the failure report we want.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Answer, Server};

const TAC: &str =
    "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n# generated: Thu Jan  1 00:00:00 1970 on alloc\n\nprint('worker')\n";
const CACHED: &str = "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n# cached\n";

/// The slave name every test runs as (runslave lower-cases `-n`).
const SLAVE: &str = "tst-linux64-01";

/// A key pair: the signer, and the public key's file in a directory kept
/// alive with it.
struct Keys {
    signer: slavealloc_tac_signing::TacSigner,
    pubkey: String,
    _dir: tempfile::TempDir,
}

fn keys() -> Keys {
    let (private, public) = slavealloc_tac_signing::generate_key_pair().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pubkey = dir.path().join("tac.pub");
    std::fs::write(&pubkey, public).unwrap();
    Keys {
        signer: slavealloc_tac_signing::TacSigner::from_pem(&private).unwrap(),
        pubkey: pubkey.to_string_lossy().into_owned(),
        _dir: dir,
    }
}

impl Keys {
    /// `tac` signed for `slave`, as a `'static` body for [`Answer`].
    fn sign(&self, tac: &str, slave: &str) -> &'static str {
        Box::leak(
            self.signer
                .sign(tac, slave, std::time::SystemTime::now())
                .unwrap()
                .into_boxed_str(),
        )
    }
}

/// A URL where nothing listens.
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/gettac/SLAVE")
}

fn runslave(url: &str, basedir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runslave"));
    cmd.args(["-a", url, "-n", "TST-Linux64-01", "-d"])
        .arg(basedir)
        .args(["--retries", "1", "--retry-delay", "0", "--timeout", "5"])
        .args(extra)
        .env_remove("RUNSLAVE_ALLOCATOR_URL")
        .env_remove("RUNSLAVE_POLL_INTERVAL");
    cmd
}

fn run(url: &str, basedir: &Path, extra: &[&str]) -> Output {
    runslave(url, basedir, extra).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The file names in a directory, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn tac_in(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("buildbot.tac")).ok()
}

/// A fake worker command: records its arguments and exits with `status`.
fn fake_worker(dir: &Path, status: u8) -> String {
    let script = dir.join("fake-worker");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" > \"{}\"\nexit {status}\n",
            dir.join("args").display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    script.to_string_lossy().into_owned()
}

#[test]
fn a_new_tac_is_written_and_the_worker_started() {
    let server = Server::start(Answer::Ok(TAC));
    let basedir = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let worker = fake_worker(bin.path(), 0);
    let out = run(&server.url, basedir.path(), &["-c", &worker]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The name is lower-cased and put where the URL says SLAVE.
    assert_eq!(*server.paths.lock().unwrap(), ["/gettac/tst-linux64-01"]);
    assert_eq!(tac_in(basedir.path()).as_deref(), Some(TAC));
    assert_eq!(files(basedir.path()), ["buildbot.tac"], "no temporary file is left");
    let args = std::fs::read_to_string(bin.path().join("args")).unwrap();
    assert_eq!(args.trim(), format!("start {}", basedir.path().display()));
}

/// Without `-c`, the worker command is the one the tac is for: a
/// `buildslave.bot` tac (the original's, and the default template's) starts
/// `buildslave`, a `buildbot_worker` one `buildbot-worker`.
#[test]
fn without_a_command_the_tac_says_which_worker_to_start() {
    const BUILDSLAVE: &str =
        "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n# generated: x on alloc\n\nfrom buildslave.bot import BuildSlave\n";
    const WORKER: &str = "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n# generated: x on alloc\n\nfrom buildbot_worker.bot import Worker\n";
    for (tac, expected) in [(BUILDSLAVE, "buildslave"), (WORKER, "buildbot-worker")] {
        let server = Server::start(Answer::Ok(tac));
        let basedir = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        for name in ["buildslave", "buildbot-worker"] {
            let script = fake_worker(bin.path(), 0);
            let named = bin.path().join(name);
            std::fs::write(
                &named,
                std::fs::read_to_string(&script)
                    .unwrap()
                    .replace("/args", &format!("/ran-{name}")),
            )
            .unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&named, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
        let out = runslave(&server.url, basedir.path(), &[])
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let ran: Vec<String> = files(bin.path())
            .into_iter()
            .filter(|f| f.starts_with("ran-"))
            .collect();
        assert_eq!(ran, [format!("ran-{expected}")], "{tac}");
    }
}

#[test]
fn a_disabled_slave_is_told_so_and_no_worker_is_started() {
    const DISABLED: &str = "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n# generated: x on alloc\n\nimport sys\nprint(\"SLAVE DISABLED; NOT STARTING\")\nsys.exit(0)\n";
    let server = Server::start(Answer::Ok(DISABLED));
    let basedir = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let worker = fake_worker(bin.path(), 0);
    let out = run(&server.url, basedir.path(), &["-c", &worker]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "SLAVE DISABLED; NOT STARTING"
    );
    assert_eq!(
        tac_in(basedir.path()).as_deref(),
        Some(DISABLED),
        "the tac is still written"
    );
    assert!(!bin.path().join("args").exists(), "the worker command was not run");
    assert!(
        stderr(&out).contains("tst-linux64-01 is disabled in slavealloc"),
        "said plainly, without -v: {}",
        stderr(&out)
    );
}

#[test]
fn verbose_says_which_master_the_tac_names() {
    const WITH_MASTER: &str = "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n# generated: x on alloc\n\nbuildmaster_host = 'bm01.example.com'\nport = 9001\nslavename = 'tst-linux64-01'\n";
    let server = Server::start(Answer::Ok(WITH_MASTER));
    let basedir = tempfile::tempdir().unwrap();
    let out = run(&server.url, basedir.path(), &["-v", "--no-start"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("tst-linux64-01 is to connect to master bm01.example.com:9001"),
        "{}",
        stderr(&out)
    );
    let quiet = run(&server.url, basedir.path(), &["--no-start"]);
    assert!(!stderr(&quiet).contains("is to connect"), "only with -v");
}

#[test]
fn the_worker_commands_exit_status_is_runslaves() {
    let server = Server::start(Answer::Ok(TAC));
    let basedir = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let worker = fake_worker(bin.path(), 3);
    let out = run(&server.url, basedir.path(), &["-c", &worker]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = run(&server.url, basedir.path(), &["-c", "/nonexistent/buildbot-worker"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot run"), "{}", stderr(&out));
}

#[test]
fn an_html_error_page_is_not_a_tac_and_the_cached_one_is_kept() {
    let page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
    for answer in [Answer::Ok(page), Answer::Status(502, page)] {
        let server = Server::start(answer);
        let basedir = tempfile::tempdir().unwrap();
        std::fs::write(basedir.path().join("buildbot.tac"), CACHED).unwrap();
        let out = run(&server.url, basedir.path(), &["--no-start"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("using the cached"), "{}", stderr(&out));
        assert_eq!(tac_in(basedir.path()).as_deref(), Some(CACHED));
        assert_eq!(files(basedir.path()), ["buildbot.tac"]);
        assert_eq!(server.requests(), 2, "tried once and retried once");
    }
}

#[test]
fn an_html_error_page_without_a_cached_tac_fails_and_writes_nothing() {
    let server = Server::start(Answer::Ok("<html><body>Service Unavailable</body></html>"));
    let basedir = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let worker = fake_worker(bin.path(), 0);
    let out = run(&server.url, basedir.path(), &["-c", &worker]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("no buildbot.tac") && err.contains("Service Unavailable"),
        "{err}"
    );
    assert!(files(basedir.path()).is_empty());
    assert!(!bin.path().join("args").exists(), "the worker is not started");
}

#[test]
fn a_dead_allocator_falls_back_to_the_cached_tac() {
    let url = dead_url();
    let basedir = tempfile::tempdir().unwrap();
    let out = run(&url, basedir.path(), &["--no-start"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&url.replace("SLAVE", "tst-linux64-01")),
        "{}",
        stderr(&out)
    );
    assert!(files(basedir.path()).is_empty());

    std::fs::write(basedir.path().join("buildbot.tac"), CACHED).unwrap();
    let out = run(&url, basedir.path(), &["--no-start"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tac_in(basedir.path()).as_deref(), Some(CACHED));
}

#[test]
fn no_allocation_is_not_retried() {
    let server = Server::start(Answer::Status(404, "no allocation available"));
    let basedir = tempfile::tempdir().unwrap();
    let out = run(&server.url, basedir.path(), &["--no-start", "--retries", "5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("HTTP 404: no allocation available"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.requests(), 1);
}

/// The gaps between the requests the server saw.
fn gaps(server: &Server) -> Vec<std::time::Duration> {
    let times = server.times.lock().unwrap();
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn a_busy_allocator_is_asked_again_when_its_retry_after_says_without_using_up_retries() {
    // Three busy answers and --retries 0: only honoured pacing gets the tac,
    // and the 30 s --retry-delay is not what runslave waits.
    let server = Server::start(Answer::Busy {
        times: 3,
        after: "1",
        body: TAC,
    });
    let basedir = tempfile::tempdir().unwrap();
    let out = run(
        &server.url,
        basedir.path(),
        &["--no-start", "--retries", "0", "--retry-delay", "30"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tac_in(basedir.path()).as_deref(), Some(TAC));
    assert_eq!(server.requests(), 4);
    for gap in gaps(&server) {
        // Retry-After: 1 plus up to a second of runslave's own jitter.
        assert!(gap >= std::time::Duration::from_secs(1), "{gap:?}");
        assert!(gap < std::time::Duration::from_secs(5), "{gap:?}");
    }
    assert!(stderr(&out).contains("asks to come back in 1s"), "{}", stderr(&out));
}

#[test]
fn retry_after_is_bounded_and_so_is_the_time_spent_being_paced() {
    // An hour's Retry-After is cut to --max-retry-after; after
    // --max-paced-wait in all, busy answers are failures, and with
    // --retries 0 runslave falls back to the cached tac.
    let server = Server::start(Answer::Busy {
        times: 1000,
        after: "3600",
        body: TAC,
    });
    let basedir = tempfile::tempdir().unwrap();
    std::fs::write(basedir.path().join("buildbot.tac"), CACHED).unwrap();
    let out = run(
        &server.url,
        basedir.path(),
        &[
            "--no-start",
            "--retries",
            "0",
            "--max-retry-after",
            "0.2",
            "--max-paced-wait",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tac_in(basedir.path()).as_deref(), Some(CACHED));
    // Each wait is 0.2 s plus up to 1 s of jitter, 2 s in all: a few tries.
    let tries = server.requests();
    assert!((2..=12).contains(&tries), "{tries} requests");
    assert!(gaps(&server)
        .iter()
        .all(|g| *g < std::time::Duration::from_millis(1500)));
}

#[test]
fn a_server_that_never_answers_times_out() {
    let server = Server::start(Answer::Silence);
    let basedir = tempfile::tempdir().unwrap();
    let out = run(&server.url, basedir.path(), &["--no-start", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).to_lowercase().contains("timed out"), "{}", stderr(&out));
    assert!(files(basedir.path()).is_empty());
    assert_eq!(server.requests(), 2);

    std::fs::write(basedir.path().join("buildbot.tac"), CACHED).unwrap();
    let out = run(
        &server.url,
        basedir.path(),
        &["--no-start", "--timeout", "1", "--retries", "0"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tac_in(basedir.path()).as_deref(), Some(CACHED));
}

#[test]
fn do_not_start_holds_the_machine_back_until_removed() {
    let server = Server::start(Answer::Ok(TAC));
    let basedir = tempfile::tempdir().unwrap();
    let flag = basedir.path().join("DO_NOT_START");
    std::fs::write(&flag, "held for bug 123").unwrap();
    let mut child = runslave(
        &server.url,
        basedir.path(),
        &["--no-start", "-v", "--poll-interval", "0.05"],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    // Wait until it says it is waiting, then until it has polled again.
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        lines.push(line);
    }
    assert!(
        lines[0].contains("waiting until") && lines[1].contains("still exists"),
        "{lines:?}"
    );
    assert_eq!(server.requests(), 0, "nothing is fetched while DO_NOT_START exists");
    assert!(child.try_wait().unwrap().is_none());
    assert!(tac_in(basedir.path()).is_none());

    std::fs::remove_file(&flag).unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    assert_eq!(server.requests(), 1);
    assert_eq!(tac_in(basedir.path()).as_deref(), Some(TAC));
}

#[test]
fn a_qualified_slave_name_is_refused() {
    let basedir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_runslave"))
        .args(["-a", &dead_url(), "-n", "tst.build.example.com", "--no-start", "-d"])
        .arg(basedir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unqualified hostname"), "{}", stderr(&out));
}

#[test]
fn help_documents_the_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_runslave"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--allocator-url",
        "--slavename",
        "--basedir",
        "--buildslave-cmd",
        "--no-start",
        "--pubkey",
        "--ca",
        "--require-https",
        "--require-signature",
        "--supervise",
        "--min-run",
        "Exit status",
        "3  --require-https",
        "4  --require-signature",
        "With --supervise",
    ] {
        assert!(help.contains(opt), "{opt} in {help}");
    }
}

#[test]
fn a_tac_must_begin_with_the_generated_header() {
    let body = "import os; os.system('id')\n# AUTOMATICALLY GENERATED - DO NOT MODIFY\n";
    let server = Server::start(Answer::Ok(body));
    let basedir = tempfile::tempdir().unwrap();
    std::fs::write(basedir.path().join("buildbot.tac"), CACHED).unwrap();
    let out = run(&server.url, basedir.path(), &["--no-start", "--retries", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did not answer a generated buildbot.tac"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tac_in(basedir.path()).as_deref(), Some(CACHED));
}

#[test]
fn with_pubkey_a_tac_signed_for_this_slave_is_written() {
    let keys = keys();
    let signed = keys.sign(TAC, SLAVE);
    let server = Server::start(Answer::Ok(signed));
    let basedir = tempfile::tempdir().unwrap();
    let out = run(
        &server.url,
        basedir.path(),
        &["--no-start", "--pubkey", &keys.pubkey, "--require-signature"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tac_in(basedir.path()).as_deref(), Some(signed));
}

/// Each bad answer with `--pubkey`: refused, not retried, the cached tac
/// used and left byte for byte; with `--require-signature`, exit 4 and the
/// cache not used (nor changed).
#[test]
fn with_pubkey_unsigned_altered_and_other_slaves_tacs_are_refused_and_the_cache_kept() {
    let keys = keys();
    let cached = keys.sign(CACHED, SLAVE);
    let good = keys.sign(TAC, SLAVE);
    let altered: &'static str = Box::leak(good.replacen("print('worker')", "print('worKer')", 1).into_boxed_str());
    let other_key = self::keys();
    let cases = [
        ("unsigned", TAC, "not signed"),
        ("altered by one byte", altered, "does not verify"),
        (
            "another slave's",
            keys.sign(TAC, "tst-linux64-02"),
            "signed for slave \"tst-linux64-02\"",
        ),
        ("another key's", other_key.sign(TAC, SLAVE), "does not verify"),
    ];
    for (what, body, why) in cases {
        let server = Server::start(Answer::Ok(body));
        let basedir = tempfile::tempdir().unwrap();
        std::fs::write(basedir.path().join("buildbot.tac"), cached).unwrap();
        let bin = tempfile::tempdir().unwrap();
        let worker = fake_worker(bin.path(), 0);
        let out = run(&server.url, basedir.path(), &["-c", &worker, "--pubkey", &keys.pubkey]);
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(why) && err.contains("using the cached"), "{what}: {err}");
        assert_eq!(tac_in(basedir.path()).as_deref(), Some(cached), "{what}");
        assert!(
            bin.path().join("args").exists(),
            "{what}: the worker starts from the cache"
        );
        assert_eq!(server.requests(), 1, "{what}: a refused tac is not asked for again");

        std::fs::remove_file(bin.path().join("args")).unwrap();
        let out = run(
            &server.url,
            basedir.path(),
            &["-c", &worker, "--pubkey", &keys.pubkey, "--require-signature"],
        );
        assert_eq!(out.status.code(), Some(4), "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains("--require-signature"), "{what}: {}", stderr(&out));
        assert_eq!(tac_in(basedir.path()).as_deref(), Some(cached), "{what}");
        assert_eq!(files(basedir.path()), ["buildbot.tac"], "{what}");
        assert!(!bin.path().join("args").exists(), "{what}: no worker is started");
    }
}

#[test]
fn with_pubkey_a_cached_tac_that_does_not_verify_is_not_used() {
    let keys = keys();
    let url = dead_url();
    for cached in [CACHED, keys.sign(CACHED, "tst-linux64-02")] {
        let basedir = tempfile::tempdir().unwrap();
        std::fs::write(basedir.path().join("buildbot.tac"), cached).unwrap();
        let out = run(&url, basedir.path(), &["--no-start", "--pubkey", &keys.pubkey]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("is refused"), "{}", stderr(&out));
        assert_eq!(tac_in(basedir.path()).as_deref(), Some(cached));
    }
    // A good cached tac is used.
    let basedir = tempfile::tempdir().unwrap();
    let good = keys.sign(CACHED, SLAVE);
    std::fs::write(basedir.path().join("buildbot.tac"), good).unwrap();
    let out = run(&url, basedir.path(), &["--no-start", "--pubkey", &keys.pubkey]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn require_https_refuses_an_http_url_with_exit_3_and_asks_nothing() {
    let server = Server::start(Answer::Ok(TAC));
    let basedir = tempfile::tempdir().unwrap();
    std::fs::write(basedir.path().join("buildbot.tac"), CACHED).unwrap();
    let out = run(&server.url, basedir.path(), &["--no-start", "--require-https"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("not an https:// URL"), "{}", stderr(&out));
    assert_eq!(server.requests(), 0);
    assert_eq!(tac_in(basedir.path()).as_deref(), Some(CACHED));
}

#[test]
fn require_signature_needs_a_pubkey_and_a_bad_pubkey_is_a_usage_error() {
    let basedir = tempfile::tempdir().unwrap();
    let out = run(&dead_url(), basedir.path(), &["--no-start", "--require-signature"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let missing = basedir.path().join("none.pub");
    let out = run(
        &dead_url(),
        basedir.path(),
        &["--no-start", "--pubkey", missing.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("none.pub"), "{}", stderr(&out));
    let out = run(
        &dead_url(),
        basedir.path(),
        &["--no-start", "--ca", missing.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_redirect_to_another_host_is_refused_and_one_on_the_same_host_followed() {
    let target = Server::start(Answer::Ok(TAC));
    // 127.0.0.1 and localhost are one machine but two hosts to a URL.
    let elsewhere: &'static str = Box::leak(format!("http://localhost:{}/gettac/x", target.port()).into_boxed_str());
    let redirector = Server::start(Answer::Redirect(elsewhere));
    let basedir = tempfile::tempdir().unwrap();
    std::fs::write(basedir.path().join("buildbot.tac"), CACHED).unwrap();
    let out = run(&redirector.url, basedir.path(), &["--no-start"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("refused (another host)"), "{}", stderr(&out));
    assert_eq!(target.requests(), 0, "the other host is never asked");
    assert_eq!(tac_in(basedir.path()).as_deref(), Some(CACHED));

    let same: &'static str = Box::leak(format!("http://127.0.0.1:{}/gettac/x", target.port()).into_boxed_str());
    let redirector = Server::start(Answer::Redirect(same));
    let out = run(&redirector.url, basedir.path(), &["--no-start"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(target.requests(), 1);
    assert_eq!(tac_in(basedir.path()).as_deref(), Some(TAC));

    // A redirect loop ends.
    let self_loop = Server::start(Answer::Redirect("/gettac/again"));
    let out = run(&self_loop.url, basedir.path(), &["--no-start"]);
    assert!(stderr(&out).contains("more than 5 redirects"), "{}", stderr(&out));
    assert_eq!(self_loop.requests(), 6);
}

#[cfg(unix)]
#[test]
fn the_tac_is_written_0600_and_a_stale_temporary_file_blocks_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start(Answer::Ok(TAC));
    let basedir = tempfile::tempdir().unwrap();
    std::fs::write(basedir.path().join("buildbot.tac"), CACHED).unwrap();
    // What a crashed run leaves, under the very name (the pid) the old code
    // would have used: `exec` keeps the shell's pid.
    let script = format!(
        "touch \"$1/buildbot.tac.tmp.$$\" && exec \"$0\" -a \"$2\" -n {SLAVE} -d \"$1\" --no-start --retries 0"
    );
    let out = Command::new("sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_runslave")])
        .arg(basedir.path())
        .arg(&server.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tac_in(basedir.path()).as_deref(), Some(TAC), "{}", stderr(&out));
    let mode = std::fs::metadata(basedir.path().join("buildbot.tac"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let names = files(basedir.path());
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names[1].starts_with("buildbot.tac.tmp."),
        "the stale file is left alone: {names:?}"
    );
}
