//! A MariaDB Galera cluster of its own on loopback, for the tests of
//! "past one database server": each node a `mariadbd` with its data
//! directory under one temporary directory, the first bootstrapped with
//! `--wsrep-new-cluster`, the others joining by rsync SST; a node can be
//! killed (SIGKILL) and brought back the way a real operator does it,
//! `mariadbd --wsrep-recover` first so that it rejoins by IST.
//!
//! Like [`servers`](super::servers), it needs Debian's `mariadb-server`,
//! `galera-4` and `rsync`, and the `mysql` user when run as root; when one
//! is missing, [`GaleraCluster::start`] panics if `CI=true` and otherwise
//! says why and returns `None`.

// Test support: a panic, with what failed, is the report a test wants.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::servers::{free_port, give, run, server_url, server_user, unavailable, wait_for_port};

/// The Galera provider Debian's `galera-4` installs.
pub const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";

/// How long a node may take to be synced: bootstrap, SST of a small
/// database, or IST after a restart.
const SYNC: Duration = Duration::from_secs(90);

/// One node: its ports, its files, its server process while it runs.
#[derive(Debug)]
struct Node {
    port: u16,
    gcomm_port: u16,
    ist_port: u16,
    sst_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }
}

/// A running Galera cluster on 127.0.0.1, stopped and removed when
/// dropped; its database `slavealloc` is usable by `root` without a
/// password on every node.
#[derive(Debug)]
pub struct GaleraCluster {
    dir: tempfile::TempDir,
    base: Option<PathBuf>,
    user: Option<(u32, u32)>,
    nodes: Vec<Node>,
}

impl GaleraCluster {
    /// Starts `size` nodes, one after the other, each synced before the
    /// next joins. With `base`, every node reads that option file first
    /// (the deployment's node configuration); the loopback addresses,
    /// ports and paths given on the command line override it.
    pub fn start(size: usize, base: Option<&Path>) -> Option<GaleraCluster> {
        let missing = [
            "/usr/sbin/mariadbd",
            "/usr/bin/mariadb-install-db",
            PROVIDER,
            "/usr/bin/rsync",
        ]
        .into_iter()
        .find(|p| !Path::new(p).exists());
        if let Some(path) = missing {
            return unavailable(format!(
                "no {path}: a Galera cluster needs mariadb-server, galera-4 and rsync"
            ));
        }
        let user = match server_user("mysql") {
            Ok(user) => user,
            Err(why) => return unavailable(why),
        };
        let dir = tempfile::tempdir().unwrap();
        if let Some(ids) = user {
            give(dir.path(), ids);
        }
        let nodes = (0..size)
            .map(|i| {
                let node = Node {
                    port: free_port(),
                    gcomm_port: free_port(),
                    ist_port: free_port(),
                    sst_port: free_port(),
                    dir: dir.path().join(format!("node{}", i + 1)),
                    child: None,
                };
                std::fs::create_dir(&node.dir).unwrap();
                if let Some(ids) = user {
                    give(&node.dir, ids);
                }
                node
            })
            .collect();
        let mut cluster = GaleraCluster {
            dir,
            base: base.map(Path::to_owned),
            user,
            nodes,
        };
        for i in 0..size {
            cluster.install(i);
            cluster.launch(i, i == 0, None);
            cluster.wait_synced(i);
            if i == 0 {
                cluster.sql(0, "CREATE DATABASE slavealloc");
            }
        }
        Some(cluster)
    }

    /// How many nodes it has (running or not).
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`'s port on 127.0.0.1.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// `mysql://root@127.0.0.1:PORT/slavealloc` for node `i`, then `query`
    /// when given.
    pub fn url(&self, i: usize, query: &str) -> String {
        server_url("mysql://root", "127.0.0.1", self.nodes[i].port, "slavealloc", query)
    }

    /// Kills node `i` with SIGKILL, as a crash or a pulled cable would
    /// end it: no goodbye to the cluster, no clean InnoDB shutdown.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("the node runs");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Brings killed node `i` back: `mariadbd --wsrep-recover` reads the
    /// last committed position from InnoDB (a killed node's grastate.dat
    /// says -1), then the node starts from there and receives only what
    /// it missed (IST). Returns once it accepts connections; see
    /// [`GaleraCluster::wait_synced`].
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} still runs");
        let position = self.recover(i);
        self.launch(i, false, Some(&position));
    }

    /// Waits until node `i` says it is `Synced`; panics after 90 s.
    pub fn wait_synced(&self, i: usize) {
        let deadline = Instant::now() + SYNC;
        loop {
            if self.status(i, "wsrep_local_state_comment").as_deref() == Some("Synced") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} not synced within {SYNC:?}: {}",
                std::fs::read_to_string(self.nodes[i].log()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A status variable of node `i` (`SHOW STATUS`), or `None` when the
    /// node does not answer.
    pub fn status(&self, i: usize, variable: &str) -> Option<String> {
        let out = self
            .client(i)
            .args(["-N", "-B", "-e"])
            .arg(format!("SHOW GLOBAL STATUS LIKE '{variable}'"))
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().nth(1).map(str::to_owned)
    }

    /// Runs `statement` on node `i` as root, panicking when it fails.
    pub fn sql(&self, i: usize, statement: &str) -> String {
        run(self.client(i).args(["-N", "-B", "-e", statement]))
    }

    /// The end of node `i`'s error log, for a failing test's message.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(self.nodes[i].log()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn client(&self, i: usize) -> Command {
        let mut cmd = Command::new("mariadb");
        cmd.args(["--no-defaults", "-u", "root", "--connect-timeout=2"])
            .arg(format!("--socket={}", self.nodes[i].socket().display()));
        cmd
    }

    fn install(&self, i: usize) {
        let mut cmd = Command::new("/usr/bin/mariadb-install-db");
        cmd.args([
            "--no-defaults",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .arg(format!("--datadir={}", self.nodes[i].data().display()));
        if self.user.is_some() {
            cmd.arg("--user=mysql");
        }
        run(&mut cmd);
    }

    /// `mariadbd` for node `i` with its loopback addresses, ports and
    /// paths, after the base option file when there is one.
    fn server(&self, i: usize) -> Command {
        let node = &self.nodes[i];
        let mut cmd = Command::new("/usr/sbin/mariadbd");
        match &self.base {
            Some(base) => cmd.arg(format!("--defaults-file={}", base.display())),
            None => cmd.arg("--no-defaults"),
        };
        let peers: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.gcomm_port))
            .collect();
        cmd.arg(format!("--datadir={}", node.data().display()))
            .arg(format!("--port={}", node.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", node.socket().display()))
            .arg(format!("--pid-file={}", node.dir.join("pid").display()))
            .arg(format!("--log-error={}", node.log().display()))
            .args([
                "--skip-ssl",
                "--skip-log-bin",
                "--binlog-format=ROW",
                "--innodb-autoinc-lock-mode=2",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-buffer-pool-size=64M",
                "--wsrep-on=ON",
                "--wsrep-sst-method=rsync",
                "--wsrep-cluster-name=slavealloc-test",
            ])
            .arg(format!("--wsrep-provider={PROVIDER}"))
            .arg(format!("--wsrep-cluster-address=gcomm://{}", peers.join(",")))
            .arg(format!("--wsrep-node-name=node{}", i + 1))
            .arg(format!("--wsrep-node-address=127.0.0.1:{}", node.gcomm_port))
            .arg(format!("--wsrep-sst-receive-address=127.0.0.1:{}", node.sst_port))
            .arg(format!(
                "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{};ist.recv_addr=127.0.0.1:{};gcache.size=64M",
                node.gcomm_port, node.ist_port
            ));
        if self.user.is_some() {
            cmd.arg("--user=mysql");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    }

    fn launch(&mut self, i: usize, bootstrap: bool, position: Option<&str>) {
        let mut cmd = self.server(i);
        if bootstrap {
            cmd.arg("--wsrep-new-cluster");
        }
        if let Some(position) = position {
            cmd.arg(format!("--wsrep-start-position={position}"));
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start node {i}: {e}"));
        self.nodes[i].child = Some(child);
        wait_for_port(self.nodes[i].port, &format!("Galera node {i}"), &self.nodes[i].log());
    }

    /// `UUID:SEQNO` that `mariadbd --wsrep-recover` finds in node `i`'s
    /// InnoDB.
    fn recover(&self, i: usize) -> String {
        let log = self.nodes[i].dir.join("recover.log");
        let status = self
            .server(i)
            .arg("--wsrep-recover")
            .arg(format!("--log-error={}", log.display()))
            .status()
            .unwrap();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(status.success(), "mariadbd --wsrep-recover failed: {text}");
        const MARK: &str = "WSREP: Recovered position: ";
        let position = text
            .lines()
            .filter_map(|l| l.split_once(MARK).map(|(_, p)| p.trim().to_owned()))
            .next_back();
        position.unwrap_or_else(|| panic!("no recovered position in: {text}"))
    }

    /// The temporary directory holding every node's files.
    pub fn files(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for GaleraCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
