//! The `slavealloc serve` daemon, started on a port the kernel picks.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::process::{tail, wait_until, ChildGuard};
use crate::Result;

/// Binding a socket and opening a SQLite file take milliseconds; the bound
/// only ends a daemon that will never listen.
const START_LIMIT: Duration = Duration::from_secs(60);

/// What the daemon prints once it is bound, followed by its address.
const LISTENING: &str = "listening on ";

/// A running `slavealloc serve`, stopped when dropped.
#[derive(Debug)]
pub struct Slavealloc {
    url: String,
    log: PathBuf,
    _guard: ChildGuard,
}

impl Slavealloc {
    /// Runs `slavealloc serve ARGS... --listen 127.0.0.1:0`, waits for the
    /// `listening on http://ADDR` line, then for `/healthz` to answer 200. Its output goes to
    /// `log_dir/slavealloc.log`.
    pub fn start<S: AsRef<OsStr>>(bin: &Path, args: &[S], log_dir: &Path) -> Result<Self> {
        let log = log_dir.join("slavealloc.log");
        let log_file = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let log_file = Arc::new(Mutex::new(log_file));
        let mut guard = ChildGuard::spawn(
            "slavealloc serve",
            Command::new(bin)
                .arg("serve")
                .args(args)
                .args(["--listen", "127.0.0.1:0"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )?;
        let (tx, rx) = mpsc::channel();
        let child = guard.child_mut();
        let stdout = child.stdout.take().ok_or("slavealloc serve has no stdout")?;
        let stderr = child.stderr.take().ok_or("slavealloc serve has no stderr")?;
        // The line may come on either stream. Both are drained into the log
        // for the daemon's whole life, so it never blocks on a full pipe.
        drain(stdout, Arc::clone(&log_file), tx.clone());
        drain(stderr, log_file, tx);
        let url = match rx.recv_timeout(START_LIMIT) {
            Ok(url) => url.trim_end_matches('/').to_owned(),
            Err(_) => {
                return Err(format!(
                    "slavealloc serve did not print `{LISTENING}...` (exit: {:?})\n{}",
                    guard.exited()?,
                    tail(&log, 30)
                ))
            }
        };
        // It listens before its database is ready (and answers 503 until
        // then): wait for /healthz to say ok, as a load balancer would.
        let health = format!("{url}/healthz");
        let mut last = String::new();
        wait_until("slavealloc's /healthz to answer 200", START_LIMIT, || {
            match ureq::get(&health).call() {
                Ok(_) => return Ok(Some(())),
                Err(e) => last = e.to_string(),
            }
            match guard.exited()? {
                Some(status) => Err(format!("slavealloc serve exited ({status})")),
                None => Ok(None),
            }
        })
        .map_err(|e| format!("{e}; last answer: {last}\n{}", tail(&log, 30)))?;
        Ok(Self {
            url,
            log,
            _guard: guard,
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The end of the daemon's log, to explain a failure.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 30)
    }

    /// The first `n` lines of the daemon's log at level WARN or ERROR: what
    /// explains a failure in a log full of allocations.
    pub fn log_warnings(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .take(n)
            .collect();
        lines.join("\n")
    }
}

/// Copies `stream` line by line into `log` on a thread of its own, sending
/// the address of a `listening on ADDR` line to `found`.
fn drain(stream: impl Read + Send + 'static, log: Arc<Mutex<File>>, found: mpsc::Sender<String>) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut log) = log.lock() {
                let _ = writeln!(log, "{line}");
            }
            if let Some((_, addr)) = line.split_once(LISTENING) {
                let _ = found.send(addr.trim().to_owned());
            }
        }
    });
}
