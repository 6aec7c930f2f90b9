//! The release `slavealloc serve` under test: started on a port the kernel
//! picks, its log drained as a deployed daemon's journal would be, stopped
//! with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::{Body, Request};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
}

impl Daemon {
    /// `bin serve --db url --listen 127.0.0.1:0 --no-ui` plus `extra`,
    /// logging to `dir/<log>`; returns once `/healthz` answers 200 (the
    /// schema check has passed).
    ///
    /// # Errors
    /// When it does not start, listen or become ready within a minute.
    pub async fn start(bin: &Path, url: &str, extra: &[&str], dir: &Path, log: &str) -> anyhow::Result<Daemon> {
        let log = std::fs::File::create(dir.join(log))?;
        let mut child = Command::new(bin)
            .args(["serve", "--db", url, "--listen", "127.0.0.1:0", "--no-ui"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("while starting the daemon")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .context("the daemon did not start within 60 s")??
                .context("the daemon exited before listening")?;
            if let Some(a) = line.strip_prefix("listening on http://") {
                break a.parse()?;
            }
        };
        // Keep draining the log (one line per allocation), as a deployed
        // daemon's journal would; its errors are the run's too (not its
        // warnings: the generated masters never answer the poller).
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("ERROR") || line.contains("panicked") {
                    eprintln!("  daemon: {line}");
                }
            }
        });
        let start = Instant::now();
        while !healthy(addr).await {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("the daemon's database was not ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Daemon { child, addr })
    }

    /// Its peak resident memory so far (`VmHWM`), in KiB.
    ///
    /// # Errors
    /// When it has exited or /proc says nothing.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("VmHWM:")
    }

    /// A line of /proc/PID/status (`VmRSS:`, `VmHWM:`), in KiB.
    ///
    /// # Errors
    /// When it has exited or /proc has no such line.
    pub fn status_kib(&self, key: &str) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the daemon has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {key} in /proc/PID/status"))
    }

    /// SIGTERM, and its exit within 30 s.
    ///
    /// # Errors
    /// When it does not stop.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        Ok(())
    }
}

/// The slavealloc binary: `given`, or the one beside this program.
///
/// # Errors
/// When it does not exist.
pub fn binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let bin = match given {
        Some(b) => b.to_owned(),
        None => std::env::current_exe()?.with_file_name("slavealloc"),
    };
    if !bin.exists() {
        bail!("{} not found: cargo build --release -p slavealloc", bin.display());
    }
    Ok(bin)
}

/// Whether `GET /healthz` answers 200 within 200 ms.
async fn healthy(addr: std::net::SocketAddr) -> bool {
    let probe = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::handshake(stream).await.ok()?;
        tokio::spawn(conn);
        let req = Request::get("/healthz")
            .header("host", "load")
            .body(Body::empty())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        Some(resp.status().is_success())
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(200), probe).await,
        Ok(Some(true))
    )
}
