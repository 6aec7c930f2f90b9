//! The real `slavealloc serve` for the tests of this directory: started on
//! a port the kernel picks, found through the `listening on http://ADDR`
//! line it prints, its log kept, stopped with SIGTERM; and the HTTP
//! requests the tests make of it.
// Test helpers: a panic, with what failed, is the report a test wants; not
// every test file uses every helper.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::{Body, Client, Method, Request};
use serde_json::Value as Json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Settings the host's environment must not leak into a test daemon.
pub const ENV: [&str; 11] = [
    "SLAVEALLOC_CONFIG",
    "SLAVEALLOC_DB",
    "SLAVEALLOC_LISTEN",
    "SLAVEALLOC_BASE_URL",
    "SLAVEALLOC_NO_UI",
    "SLAVEALLOC_NO_ALLOCATOR",
    "SLAVEALLOC_DEMO",
    "SLAVEALLOC_FQDN",
    "SLAVEALLOC_SIGNING_KEY",
    "SLAVEALLOC_OPEN_WRITES",
    "SLAVEALLOC_TRUSTED_PROXIES",
];

/// A running `slavealloc serve`.
pub struct Daemon {
    pub child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
    drain: JoinHandle<()>,
}

impl Daemon {
    pub async fn start(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Daemon {
        Daemon::start_on("127.0.0.1:0", args, env, cwd).await
    }

    /// Like [`Daemon::start`], listening on `listen`; a wildcard address is
    /// reached through loopback.
    pub async fn start_on(listen: &str, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slavealloc"));
        cmd.arg("serve")
            .args(args)
            .args(["--listen", listen])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "info")
            .kill_on_drop(true);
        for var in ENV {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no listening line within 60 s: {:?}", log.lock().unwrap()));
            let Some(line) = line.unwrap() else {
                panic!("serve exited before listening: {:?}", log.lock().unwrap());
            };
            log.lock().unwrap().push(line.clone());
            if let Some(addr) = line.strip_prefix("listening on http://") {
                break addr.replacen("0.0.0.0:", "127.0.0.1:", 1);
            }
        };
        let sink = Arc::clone(&log);
        // Keeps reading so the daemon never blocks on a full pipe.
        let drain = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Daemon {
            child,
            base: format!("http://{addr}"),
            log,
            drain,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM, then waits for the exit.
    pub async fn stop(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().unwrap();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("serve did not stop within 30 s of SIGTERM")
            .unwrap();
        let _ = (&mut self.drain).await;
        (status, self.log())
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub async fn request(method: &str, url: &str, body: Option<Json>, headers: &[(&str, &str)]) -> Resp {
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let r = Client::new().request(req).await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let bytes = hyper::body::to_bytes(r.into_body()).await.unwrap();
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn get(url: &str) -> Resp {
    request("GET", url, None, &[]).await
}

/// A GET that must be answered within `limit`.
pub async fn get_within(url: &str, limit: Duration) -> Resp {
    tokio::time::timeout(limit, get(url))
        .await
        .unwrap_or_else(|_| panic!("GET {url} was not answered within {limit:?}"))
}

/// Polls `url` until it answers 200; panics if that takes longer than
/// `limit`.
pub async fn until_ok(url: &str, limit: Duration) -> Resp {
    let start = Instant::now();
    loop {
        let left = limit.saturating_sub(start.elapsed());
        if let Ok(r) = tokio::time::timeout(left, get(url)).await {
            if r.status == 200 {
                return r;
            }
        }
        assert!(start.elapsed() < limit, "GET {url} did not answer 200 within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
