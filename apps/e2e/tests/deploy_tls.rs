//! Signed tacs over TLS, end to end (SECURITY.md, "Signed tacs and runslave over TLS"): a real nginx runs
//! the TLS site (apps/slavealloc/deploy/nginx/slavealloc-production-tls.conf)
//! with a certificate from a CA this test makes with the `openssl` CLI, in
//! front of the real `slavealloc serve` signing with a key from `slavealloc
//! keygen`; `runslave --ca CA --pubkey PUB` boots a real `buildbot-worker`
//! through it, which connects to the master slavealloc named. Then a tampered
//! tac, a redirect to another host, an https-to-http downgrade, a tac for
//! another slave and an untrusted certificate are each refused with their
//! documented exit code, and the cached tac stays byte for byte as it was.

// Helpers outside #[test] functions too: a panic is the failure report here.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{deploy_dir, free_port, have, read, run};
use serde_json::{json, Value};
use slavealloc_e2e::buildbot::{Master, WorkerAccount, WorkerGuard};
use slavealloc_e2e::daemon::Slavealloc;
use slavealloc_e2e::nginx::Nginx;
use slavealloc_e2e::process::Finished;
use slavealloc_e2e::venv::Venv;
use slavealloc_e2e::workspace::{binaries, repo_dir};

/// The slave that boots, in pool tests-win (masters bm09 and bm10).
const SLAVE: &str = "t-w1064-ix-009";
/// Another slave of the same pool.
const OTHER: &str = "t-w1064-ix-010";
const BM09: i64 = 9;
const CONNECT_LIMIT: Duration = Duration::from_secs(60);

/// runslave's documented exit codes (see `runslave --help`).
const EXIT_INSECURE: i32 = 3;
const EXIT_UNSIGNED: i32 = 4;

fn openssl(args: &[&str], dir: &Path) {
    let done = run("openssl", Command::new("openssl").args(args), dir);
    assert!(done.status.success(), "openssl {args:?}: {}", done.output);
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it:
/// `(ca.pem, server.pem, server.key)`.
fn make_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    let (ca_key, ca_pem) = (p("ca.key"), p("ca.pem"));
    ca.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca_pem,
        "-days",
        "2",
        "-subj",
        "/CN=slavealloc test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&ca, dir);
    let (key, csr, pem, ext) = (p("server.key"), p("server.csr"), p("server.pem"), p("server.ext"));
    let mut req = vec!["req"];
    req.extend(ec);
    req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
    openssl(&req, dir);
    fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
        dir,
    );
    (ca_pem.into(), pem.into(), key.into())
}

/// The fixture's password for a slave: the distro-specific row of its pool,
/// else the pool's wildcard.
fn password_of(dump: &Value, name: &str) -> String {
    let slave = dump["tables"]["slaves"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap();
    let rows = dump["tables"]["slave_passwords"].as_array().unwrap();
    let of_pool = |distro: &Value| {
        rows.iter()
            .find(|r| r["poolid"] == slave["poolid"] && r["distroid"] == *distro)
            .map(|r| r["password"].as_str().unwrap().to_owned())
    };
    of_pool(&slave["distroid"]).or_else(|| of_pool(&Value::Null)).unwrap()
}

/// The TLS site made to run here (listening on `tls`, proxying to `daemon`,
/// the test's certificate), plus the locations the attacks need: a tampered
/// copy of a tac, a redirect to another host and one to plain http.
fn tls_site(tls: u16, http: u16, daemon: &str, cert: &Path, key: &Path, tampered: &Path) -> String {
    let site = read(&deploy_dir().join("nginx/slavealloc-production-tls.conf"));
    for needle in ["server 127.0.0.1:1080;", "listen 443 ssl;", "listen [::]:443 ssl;"] {
        assert!(site.contains(needle), "the TLS site has {needle}");
    }
    let attacks = format!(
        "    location /tampered/ {{\n        alias {}/;\n        default_type text/plain;\n    }}\n\
         \x20   location /elsewhere/ {{\n        rewrite ^/elsewhere/(.*)$ https://localhost:{tls}/gettac/$1 redirect;\n    }}\n\
         \x20   location /downgrade/ {{\n        rewrite ^/downgrade/(.*)$ http://127.0.0.1:{http}/gettac/$1 redirect;\n    }}\n\n\
         \x20   # Nothing else exists",
        tampered.display()
    );
    site.replace("server 127.0.0.1:1080;", &format!("server {daemon};"))
        .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{tls} ssl;"))
        .replace("listen [::]:443 ssl;", "")
        .replace("/etc/ssl/slavealloc/fullchain.pem", &cert.display().to_string())
        .replace("/etc/ssl/slavealloc/privkey.pem", &key.display().to_string())
        .replace("    # Nothing else exists", &attacks)
}

/// The plain production site beside it, on `http`: both sites run together.
fn http_site(http: u16, daemon: &str) -> String {
    read(&deploy_dir().join("nginx/slavealloc-production.conf"))
        .replace("server 127.0.0.1:1080;", &format!("server {daemon};"))
        .replace("listen 80;", &format!("listen 127.0.0.1:{http};"))
        .replace("listen [::]:80;", "")
}

#[test]
fn runslave_boots_a_worker_through_nginx_tls_and_refuses_what_the_allocator_did_not_sign() {
    if !have("nginx", true) || !have("openssl", true) {
        return;
    }
    let venv = Venv::shared().expect("the Buildbot virtualenv");
    let bins = binaries().expect("the slavealloc and runslave binaries");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // A real master for bm09; bm10 disabled, so slavealloc must name bm09.
    let fixture = repo_dir().join("fixtures/sample-fleet.json");
    let mut dump: Value = serde_json::from_str(&read(&fixture)).unwrap();
    let account = WorkerAccount::new(SLAVE, &password_of(&dump, SLAVE));
    let master = Master::spawn(venv, dir, "bm09", &[account])
        .expect("a Buildbot master process")
        .ready()
        .expect("a running Buildbot master");
    let basedir = dir.join("workers").join(SLAVE);
    fs::create_dir_all(&basedir).unwrap();
    for m in dump["tables"]["masters"].as_array_mut().unwrap() {
        if m["masterid"] == BM09 {
            m["fqdn"] = json!("127.0.0.1");
            m["pb_port"] = json!(master.pb_port());
        } else if m["poolid"] == 4 {
            m["enabled"] = json!(false);
        }
    }
    for s in dump["tables"]["slaves"].as_array_mut().unwrap() {
        if s["name"] == SLAVE {
            s["basedir"] = json!(basedir.display().to_string());
        }
    }
    let dump_file = dir.join("fleet.json");
    fs::write(&dump_file, dump.to_string()).unwrap();
    let db = format!("sqlite://{}", dir.join("slavealloc.db").display());
    let init = run(
        "dbinit",
        Command::new(&bins.slavealloc)
            .args(["dbinit", "--db", &db])
            .arg(&dump_file),
        dir,
    );
    assert!(init.status.success(), "{}", init.output);

    // The signing key, from the real command.
    let key = dir.join("tac.key");
    let made = run(
        "keygen",
        Command::new(&bins.slavealloc).arg("keygen").arg("--out").arg(&key),
        dir,
    );
    assert!(made.status.success(), "{}", made.output);
    let pubkey = dir.join("tac.key.pub");
    let config = dir.join("slavealloc.toml");
    fs::write(
        &config,
        format!(
            "[tac]\ndefault_template = \"buildbot-worker\"\nsigning_key = \"{}\"\n",
            key.display()
        ),
    )
    .unwrap();
    let daemon = Slavealloc::start(
        &bins.slavealloc,
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--db".as_ref(),
            db.as_ref(),
            "--no-ui".as_ref(),
        ],
        dir,
    )
    .expect("slavealloc serve");
    let daemon_addr = daemon.url().trim_start_matches("http://").to_owned();

    // nginx: the TLS site and the plain one.
    let (ca, cert, cert_key) = make_ca(dir);
    let tampered_dir = dir.join("tampered");
    fs::create_dir_all(&tampered_dir).unwrap();
    let (tls, http) = (free_port(), free_port());
    let nginx_dir = dir.join("nginx");
    fs::create_dir_all(&nginx_dir).unwrap();
    let tls_file = nginx_dir.join("tls.conf");
    fs::write(
        &tls_file,
        tls_site(tls, http, &daemon_addr, &cert, &cert_key, &tampered_dir),
    )
    .unwrap();
    let http_file = nginx_dir.join("http.conf");
    fs::write(&http_file, http_site(http, &daemon_addr)).unwrap();
    let _nginx = Nginx::start(&nginx_dir, &[tls_file, http_file], &[tls, http]).unwrap_or_else(|e| panic!("{e}"));

    let base = format!("https://127.0.0.1:{tls}");
    let runslave = |url: &str, extra: &[&str]| -> Finished {
        run(
            "runslave",
            Command::new(&bins.runslave)
                .args(["--allocator-url", url, "--slavename", SLAVE, "--basedir"])
                .arg(&basedir)
                .args(["--retries", "0", "--timeout", "20"])
                .arg("--ca")
                .arg(&ca)
                .arg("--pubkey")
                .arg(&pubkey)
                .args(extra),
            dir,
        )
    };
    let strict = ["--require-https", "--require-signature"];

    // The boot: through TLS, signed, a real worker connected to bm09.
    let worker = WorkerGuard::new(venv, &basedir);
    let buildbot_worker = venv.bin("buildbot-worker");
    let mut boot = strict.to_vec();
    boot.extend(["--buildslave-cmd", buildbot_worker.to_str().unwrap()]);
    let booted = runslave(&format!("{base}/gettac/SLAVE"), &boot);
    assert!(
        booted.status.success(),
        "runslave: {}\n{}",
        booted.output,
        daemon.log_tail()
    );
    let tac_path = basedir.join("buildbot.tac");
    let cached = fs::read(&tac_path).unwrap();
    let tac = String::from_utf8(cached.clone()).unwrap();
    assert!(tac.starts_with("# AUTOMATICALLY GENERATED - DO NOT MODIFY\n"), "{tac}");
    assert!(
        tac.contains("# slavealloc-signature: v1 slave=t-w1064-ix-009 "),
        "{tac}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&tac_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the tac holds the password");
    }
    if let Err(e) = master.wait_connected(SLAVE, CONNECT_LIMIT) {
        panic!("{e}\n{}\n{}", worker.log_tail(), daemon.log_tail());
    }

    // A tampered copy: one byte of the tac changed.
    let mut bad = cached.clone();
    let at = tac.find("\n\n").unwrap() + 2;
    bad[at] ^= 0x01;
    fs::write(tampered_dir.join(SLAVE), &bad).unwrap();

    let attacks = [
        (
            "a tampered tac",
            format!("{base}/tampered/SLAVE"),
            EXIT_UNSIGNED,
            "does not verify",
        ),
        (
            "a redirect to another host",
            format!("{base}/elsewhere/SLAVE"),
            EXIT_INSECURE,
            "another host",
        ),
        (
            "an https to http downgrade",
            format!("{base}/downgrade/SLAVE"),
            EXIT_INSECURE,
            "https to http",
        ),
        (
            "a tac for another slave",
            format!("{base}/gettac/{OTHER}"),
            EXIT_UNSIGNED,
            "signed for slave \"t-w1064-ix-010\"",
        ),
        (
            "plain http",
            format!("http://127.0.0.1:{http}/gettac/SLAVE"),
            EXIT_INSECURE,
            "not an https:// URL",
        ),
    ];
    for (what, url, code, why) in &attacks {
        let out = runslave(url, &["--no-start", strict[0], strict[1]]);
        assert_eq!(out.status.code(), Some(*code), "{what}: {}", out.output);
        assert!(out.output.contains(why), "{what}: {}", out.output);
        assert_eq!(
            fs::read(&tac_path).unwrap(),
            cached,
            "{what}: the cached tac is untouched"
        );
    }
    // Without the strict flags the same refusals fall back to the cached tac.
    for (what, url, _, why) in &attacks[..4] {
        let out = runslave(url, &["--no-start"]);
        assert!(out.status.success(), "{what}: {}", out.output);
        assert!(
            out.output.contains(why) && out.output.contains("using the cached"),
            "{what}: {}",
            out.output
        );
        assert_eq!(fs::read(&tac_path).unwrap(), cached, "{what}");
    }
    // A certificate runslave does not trust (no --ca): refused as insecure.
    let out = run(
        "runslave",
        Command::new(&bins.runslave)
            .args([
                "--allocator-url",
                &format!("{base}/gettac/SLAVE"),
                "--slavename",
                SLAVE,
                "--basedir",
            ])
            .arg(&basedir)
            .args(["--retries", "0", "--no-start", "--require-https", "--pubkey"])
            .arg(&pubkey),
        dir,
    );
    assert_eq!(out.status.code(), Some(EXIT_INSECURE), "untrusted CA: {}", out.output);
    assert_eq!(fs::read(&tac_path).unwrap(), cached);
    // The worker is still connected to the master slavealloc named.
    assert!(master.is_connected(SLAVE).unwrap());
}
