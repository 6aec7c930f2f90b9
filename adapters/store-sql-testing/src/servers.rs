//! Private database servers for tests that must configure, stop or break a
//! server (TLS, replication, clusters): each runs on loopback from a data
//! directory under a temporary directory, never the shared test servers,
//! and is stopped and removed when dropped.
//!
//! They need the server binaries (Debian's `postgresql` and
//! `mariadb-server`) and, when run as root, the `postgres` and `mysql`
//! users to run them as. When something is missing, `start` panics if
//! `CI=true` and otherwise says why and returns `None`, as
//! [`TestDatabase::create`](super::TestDatabase::create) does.

// Test support: a panic, with what failed, is the report a test wants.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::in_ci;

/// How long a private server may take to start.
pub(crate) const START: Duration = Duration::from_secs(60);

/// Says why a private server cannot be had: a panic in CI, else `None`.
pub(crate) fn unavailable<T>(why: String) -> Option<T> {
    assert!(!in_ci(), "{why}");
    eprintln!("skipping: {why}");
    None
}

/// Runs `cmd`, panicking with its output when it fails.
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

/// `(uid, gid)` of a system user, or `None` when there is no such user.
pub(crate) fn user_ids(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// The ids of `user` to run a server as when this process is root
/// (servers refuse to run as root), `None` when it is not; an error says
/// that the user is missing.
pub(crate) fn server_user(user: &str) -> Result<Option<(u32, u32)>, String> {
    if !is_root() {
        return Ok(None);
    }
    user_ids(user)
        .map(Some)
        .ok_or_else(|| format!("running as root and there is no {user} user"))
}

/// Gives `path` (not recursively) to `user`.
pub(crate) fn give(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// A command that runs `program` as `user` when this process is root
/// (servers refuse to run as root), as this user otherwise.
fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", user, "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// `SCHEME_AND_USER@HOST:PORT/DATABASE`, then `?QUERY` when there is one.
pub(crate) fn server_url(scheme_and_user: &str, host: &str, port: u16, database: &str, query: &str) -> String {
    let url = format!("{scheme_and_user}@{host}:{port}/{database}");
    if query.is_empty() {
        url
    } else {
        format!("{url}?{query}")
    }
}

/// A free TCP port on loopback (free when asked; the server binds it soon
/// after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Waits until something accepts TCP connections on `port`.
pub(crate) fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + START;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within {START:?}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A certificate authority and a server certificate it signed for
/// `localhost` and `127.0.0.1`, made with the `openssl` command.
#[derive(Debug)]
pub struct TestCertificates {
    /// The authority's certificate (PEM), for `sslrootcert` / `ssl-ca`.
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM, mode 0600).
    pub key: PathBuf,
}

impl TestCertificates {
    /// Makes them in `dir`, named after `name`.
    pub fn make(dir: &Path, name: &str) -> TestCertificates {
        let file = |ext: &str| dir.join(format!("{name}.{ext}"));
        let (ca, ca_key) = (file("ca.crt"), file("ca.key"));
        let (cert, key, csr, ext) = (file("crt"), file("key"), file("csr"), file("ext"));
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        run(Command::new("openssl")
            .args(["req", "-x509", "-days", "2", "-subj"])
            .arg(format!("/CN={name} test CA"))
            .args(ec)
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca));
        run(Command::new("openssl")
            .args(["req", "-subj", "/CN=localhost"])
            .args(ec)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        TestCertificates { ca, cert, key }
    }
}

/// The directory holding PostgreSQL's server programs (`initdb`,
/// `pg_ctl`), newest version first.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// A PostgreSQL server of its own on `127.0.0.1`, trusting every local
/// connection (user `postgres`, no password).
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    user: Option<&'static str>,
    port: u16,
}

impl PrivatePostgres {
    /// Initialises and starts one with `settings` appended to its
    /// `postgresql.conf`.
    pub fn start(settings: &str) -> Option<PrivatePostgres> {
        let pg = PrivatePostgres::unstarted()?;
        pg.initdb();
        pg.launch(settings);
        Some(pg)
    }

    /// One with a port and a directory but no data directory yet, for
    /// [`PrivatePostgres::initdb`] or a base backup to fill, then
    /// [`PrivatePostgres::launch`]; its drop stops whatever runs there.
    pub(crate) fn unstarted() -> Option<PrivatePostgres> {
        let Some(bin) = postgres_bin() else {
            return unavailable("no PostgreSQL server programs under /usr/lib/postgresql".into());
        };
        let user = if is_root() {
            if user_ids("postgres").is_none() {
                return unavailable("running as root and there is no postgres user".into());
            }
            Some("postgres")
        } else {
            None
        };
        let dir = tempfile::tempdir().unwrap();
        let pg = PrivatePostgres {
            dir,
            bin,
            user,
            port: free_port(),
        };
        pg.give_to_server(pg.dir.path());
        Some(pg)
    }

    /// Makes a fresh data directory that trusts every local connection.
    pub(crate) fn initdb(&self) {
        run(self
            .program("initdb")
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "-D"])
            .arg(self.data()));
    }

    /// Points the data directory at this server's own port and socket
    /// directory, with `settings` after them (a base backup's
    /// `postgresql.conf` still names its primary's), and starts it.
    pub(crate) fn launch(&self, settings: &str) {
        self.configure(&format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nfsync = off\n{settings}\n",
            self.port,
            self.dir.path().display()
        ));
        run(self
            .program("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.log())
            .arg("start")
            .stdout(Stdio::null()));
        wait_for_port(self.port, "PostgreSQL", &self.log());
    }

    /// A directory the server may read, for certificates and the like.
    pub fn files(&self) -> &Path {
        self.dir.path()
    }

    /// Makes `path` the server's own (keys must be), when running as root.
    pub fn give_to_server(&self, path: &Path) {
        if let Some(user) = self.user {
            give(path, user_ids(user).unwrap());
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What `psql` prints for `sql` run on `database`, unaligned, one row
    /// a line, trimmed.
    pub(crate) fn psql(&self, database: &str, sql: &str) -> String {
        let port = self.port.to_string();
        run(Command::new(self.bin.join("psql"))
            .env("PGCONNECT_TIMEOUT", "10")
            .args([
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
            ])
            .arg(database)
            .arg("-c")
            .arg(sql))
        .trim()
        .to_owned()
    }

    /// `postgres://postgres@HOST:PORT/postgres`, then `query` when given.
    pub fn url(&self, host: &str, query: &str) -> String {
        server_url("postgres://postgres", host, self.port, "postgres", query)
    }

    /// Appends `settings` to `postgresql.conf` and reloads the server.
    pub fn reload_with(&self, settings: &str) {
        self.configure(settings);
        self.reload();
    }

    fn reload(&self) {
        run(self
            .program("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("reload")
            .stdout(Stdio::null()));
    }

    /// Replaces `pg_hba.conf` and reloads.
    pub fn set_hba(&self, hba: &str) {
        std::fs::write(self.data().join("pg_hba.conf"), hba).unwrap();
        self.reload();
    }

    fn configure(&self, settings: &str) {
        use std::io::Write as _;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))
            .unwrap();
        conf.write_all(settings.as_bytes()).unwrap();
    }

    /// Its data directory.
    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log, for failure messages.
    pub(crate) fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// `name`, one of the server's programs, run as the server's user.
    pub(crate) fn program(&self, name: &str) -> Command {
        as_user(self.user, &self.bin.join(name))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .program("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A MariaDB server of its own on `127.0.0.1` (and `127.0.0.2`), with an
/// empty database `slavealloc` that user `root` (no password) may use.
#[derive(Debug)]
pub struct PrivateMariadb {
    dir: tempfile::TempDir,
    child: std::process::Child,
    port: u16,
    certs: Option<TestCertificates>,
}

impl PrivateMariadb {
    /// Initialises and starts one; with `tls`, it has a certificate made
    /// for it (see [`PrivateMariadb::certs`]) and offers TLS.
    pub fn start(tls: bool) -> Option<PrivateMariadb> {
        let (server, install) = (
            Path::new("/usr/sbin/mariadbd"),
            Path::new("/usr/bin/mariadb-install-db"),
        );
        if !server.exists() || !install.exists() {
            return unavailable("no MariaDB server (/usr/sbin/mariadbd, mariadb-install-db)".into());
        }
        let user = match server_user("mysql") {
            Ok(user) => user,
            Err(why) => return unavailable(why),
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut install_cmd = Command::new(install);
        install_cmd
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display()));
        let mut server_cmd = Command::new(server);
        server_cmd.arg("--no-defaults");
        if let Some(ids) = user {
            give(dir.path(), ids);
            install_cmd.arg("--user=mysql");
            server_cmd.arg("--user=mysql");
        }
        run(&mut install_cmd);
        let certs = tls.then(|| {
            let certs = TestCertificates::make(dir.path(), "server");
            if let Some(ids) = user {
                for file in [&certs.cert, &certs.key, &certs.ca] {
                    give(file, ids);
                }
            }
            certs
        });
        let port = free_port();
        let log = dir.path().join("server.log");
        server_cmd
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .args(["--innodb-flush-log-at-trx-commit=0", "--skip-log-bin"]);
        if let Some(c) = &certs {
            server_cmd
                .arg(format!("--ssl-cert={}", c.cert.display()))
                .arg(format!("--ssl-key={}", c.key.display()))
                .arg(format!("--ssl-ca={}", c.ca.display()));
        } else {
            server_cmd.arg("--skip-ssl");
        }
        let child = server_cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
        let db = PrivateMariadb {
            dir,
            child,
            port,
            certs,
        };
        wait_for_port(port, "MariaDB", &log);
        run(Command::new("mariadb")
            .args(["--no-defaults", "-u", "root"])
            .arg(format!("--socket={}", db.dir.path().join("sock").display()))
            .args(["-e", "CREATE DATABASE slavealloc"]));
        Some(db)
    }

    /// The certificates it serves, when started with TLS.
    pub fn certs(&self) -> Option<&TestCertificates> {
        self.certs.as_ref()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://root@HOST:PORT/slavealloc`, then `query` when given.
    pub fn url(&self, host: &str, query: &str) -> String {
        server_url("mysql://root", host, self.port, "slavealloc", query)
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
