//! A PostgreSQL primary and a hot standby of it, for tests of what a
//! daemon does when its primary dies and the standby is promoted.
//!
//! Replication is synchronous (`synchronous_standby_names = '*'`,
//! `synchronous_commit = on`): a commit is acknowledged only once the
//! standby has flushed it, so a promoted standby holds every write a
//! client saw succeed. That is the guarantee the tests check the daemon
//! keeps; with asynchronous replication an acknowledged allocation could
//! be lost by design, and a test could not tell that from a bug.
//!
//! Both servers are [`PrivatePostgres`] on loopback; the standby's data
//! directory is a `pg_basebackup -R` of the primary's.

// Test support: a panic, with what failed, is the report a test wants.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::servers::{run, server_url, PrivatePostgres, START};

/// The database the pair serves, made on the primary before the base
/// backup so that the standby has it from the start.
pub const DATABASE: &str = "slavealloc";

/// The replication slot the standby streams from: the primary keeps the
/// WAL the standby has not had yet, however long it lags.
const SLOT: &str = "standby";

/// A primary and its synchronous hot standby. Dropping it stops both.
#[derive(Debug)]
pub struct PostgresPair {
    primary: PrivatePostgres,
    standby: PrivatePostgres,
}

impl PostgresPair {
    /// Starts the primary, makes the standby from a base backup of it,
    /// starts the standby, and returns once the primary reports it
    /// streaming as its synchronous standby. `None` (or a panic in CI)
    /// when the PostgreSQL server programs are missing, as for
    /// [`PrivatePostgres::start`].
    pub fn start() -> Option<PostgresPair> {
        let primary = PrivatePostgres::unstarted()?;
        primary.initdb();
        // What initdb writes already trusts replication from loopback;
        // written out so that the test does not rest on initdb's defaults.
        std::fs::write(
            primary.data().join("pg_hba.conf"),
            "local all all trust\n\
             host all all 127.0.0.1/32 trust\n\
             local replication all trust\n\
             host replication all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        // Synchronous only once the standby streams: until then every
        // commit, the database's creation first, would wait for it.
        primary.launch("wal_level = replica\nmax_wal_senders = 4\nmax_replication_slots = 4\n");
        primary.psql("postgres", &format!("CREATE DATABASE {DATABASE}"));

        let standby = PrivatePostgres::unstarted()?;
        let port = primary.port().to_string();
        run(standby
            .program("pg_basebackup")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-D"])
            .arg(standby.data())
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync", "-C", "-S", SLOT])
            .stdout(Stdio::null()));
        // Its postgresql.conf is the primary's: once promoted it would wait
        // for a synchronous standby of its own that never comes, and every
        // commit would hang.
        standby.launch("hot_standby = on\nsynchronous_standby_names = ''\n");
        let pair = PostgresPair { primary, standby };
        pair.primary
            .reload_with("synchronous_standby_names = '*'\nsynchronous_commit = on\n");
        pair.wait_for_sync_standby();
        Some(pair)
    }

    fn wait_for_sync_standby(&self) {
        let deadline = Instant::now() + START;
        loop {
            let state = self
                .primary
                .psql("postgres", "SELECT state || ' ' || sync_state FROM pg_stat_replication");
            if state == "streaming sync" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the standby is not a streaming synchronous standby within {START:?} (pg_stat_replication: {state:?}): {}",
                std::fs::read_to_string(self.standby.log()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/slavealloc` on the primary.
    pub fn primary_url(&self) -> String {
        server_url("postgres://postgres", "127.0.0.1", self.primary.port(), DATABASE, "")
    }

    /// `postgres://postgres@127.0.0.1:PORT/slavealloc` on the standby.
    pub fn standby_url(&self) -> String {
        server_url("postgres://postgres", "127.0.0.1", self.standby.port(), DATABASE, "")
    }

    /// Returns once the standby has replayed everything the primary has
    /// written so far. Synchronous commit waits for the standby to flush
    /// a commit, not to apply it, so a read on the standby right after a
    /// write on the primary may not see it without this.
    pub fn wait_replayed(&self) {
        let lsn = self.primary.psql("postgres", "SELECT pg_current_wal_lsn()");
        let caught_up = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        let deadline = Instant::now() + START;
        while self.standby.psql("postgres", &caught_up) != "t" {
            assert!(
                Instant::now() < deadline,
                "the standby did not replay up to {lsn} within {START:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the primary's postmaster, as a crash of its host would end
    /// it (no shutdown checkpoint, no goodbye to clients or standby), and
    /// returns once its port refuses connections.
    pub fn kill_primary(&self) {
        let pid_file = self.primary.data().join("postmaster.pid");
        let pids = std::fs::read_to_string(&pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        let pid = pids.lines().next().unwrap().trim().to_owned();
        run(Command::new("kill").args(["-KILL", &pid]));
        let deadline = Instant::now() + START;
        while std::net::TcpStream::connect(("127.0.0.1", self.primary.port())).is_ok() {
            assert!(Instant::now() < deadline, "the killed primary still listens");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Promotes the standby to primary (`pg_ctl promote -w`): returns once
    /// it takes writes.
    pub fn promote_standby(&self) {
        run(self
            .standby
            .program("pg_ctl")
            .args(["promote", "-w", "-t", "60", "-D"])
            .arg(self.standby.data())
            .stdout(Stdio::null()));
    }
}
