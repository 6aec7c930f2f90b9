//! Fake Buildbot masters on loopback: a std listener per master, a thread
//! per connection, and a reply chosen per request, from a faithful answer
//! to the worst a broken master or a proxy can do. Shared by the tests and
//! the benchmark.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

/// The real Buildbot 4.3 answers, from a master of `apps/e2e` with three
/// workers: one connected and paused, one connected and shutting down
/// gracefully, one never connected.
pub const WORKERS_4_3: &str = include_str!("../fixtures/workers-4.3.json");
/// That master's `/config`.
pub const CONFIG_4_3: &str = include_str!("../fixtures/config-4.3.json");

/// A request the fake master read.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request target, e.g. `/api/v2/workers`.
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What the fake master does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A complete HTTP/1.1 answer with a Content-Length; the connection
    /// stays open for the next request.
    Http { status: u16, body: Vec<u8> },
    /// A 200 whose chunked body is `total` bytes of JSON-looking filler.
    Chunked { total: usize },
    /// These bytes, then close.
    Raw(Vec<u8>),
    /// Nothing, ever: the connection stays open until the client closes it.
    Silent,
    /// Headers promising a megabyte, then one byte every 200 ms.
    Trickle,
}

impl Reply {
    pub fn json(body: &str) -> Self {
        Reply::Http {
            status: 200,
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn status(status: u16, body: &str) -> Self {
        Reply::Http {
            status,
            body: body.as_bytes().to_vec(),
        }
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// What a fake master saw.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// Requests read and not answered yet (a request is answered when its
    /// reply starts, so a client can never see its answer before the count
    /// went down).
    pub busy: AtomicUsize,
    /// The most `busy` ever was.
    pub max_busy: AtomicUsize,
    /// Bytes of bodies written before the client went away.
    pub body_bytes_written: AtomicU64,
    /// Every request, in arrival order.
    pub requests: Mutex<Vec<Seen>>,
}

/// A fake master listening on 127.0.0.1; its threads live as long as the
/// test process (each ends when its client closes).
pub struct FakeMaster {
    addr: SocketAddr,
    pub stats: Arc<Stats>,
}

impl FakeMaster {
    /// A master answering every request with `handler`'s reply.
    pub fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_holding(Duration::ZERO, handler)
    }

    /// A master that holds every request `hold` before answering it.
    pub fn start_holding(hold: Duration, handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let handler: Arc<Handler> = Arc::new(handler);
        let server_stats = Arc::clone(&stats);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                server_stats.connections.fetch_add(1, Ordering::SeqCst);
                let stats = Arc::clone(&server_stats);
                let handler = Arc::clone(&handler);
                thread::spawn(move || serve(stream, hold, &*handler, &stats));
            }
        });
        Self { addr, stats }
    }

    /// A real Buildbot 4.3 master: the fixture's workers and `/config`.
    pub fn buildbot_4_3() -> Self {
        Self::start(|seen| match seen.path.as_str() {
            "/api/v2/workers" => Reply::json(WORKERS_4_3),
            "/config" => Reply::json(CONFIG_4_3),
            _ => Reply::status(404, r#"{"error": "Invalid path"}"#),
        })
    }

    /// The URL of its workers list.
    pub fn url(&self) -> String {
        format!("http://{}/api/v2/workers", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.stats.requests.lock().unwrap().clone()
    }
}

/// A URL on which nothing listens: a port the kernel gave and took back.
pub fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/api/v2/workers")
}

/// A workers list shaped exactly like Buildbot 4.3's (the fixture's
/// fields, pretty-printed as Buildbot does), `n` workers of which every
/// third is disconnected and every tenth paused.
pub fn workers_json(n: usize) -> String {
    let workers: Vec<_> = (0..n)
        .map(|i| {
            let connected = i % 3 != 0;
            json!({
                "configured_on": [{"builderid": 1 + i % 4, "masterid": 1}],
                "connected_to": if connected { json!([{"masterid": 1}]) } else { json!([]) },
                "graceful": false,
                "name": format!("t-w1064-ix-{i:03}"),
                "pause_reason": if i % 10 == 0 { json!("maintenance") } else { json!(null) },
                "paused": i % 10 == 0,
                "workerid": i + 1,
                "workerinfo": if connected {
                    json!({
                        "access_uri": null,
                        "admin": "Release Engineering <release@example.invalid>\n",
                        "host": format!("t-w1064-ix-{i:03}.test.releng.example.invalid, Windows 10 21H2\n"),
                        "version": "4.3.0"
                    })
                } else {
                    json!({})
                },
            })
        })
        .collect();
    serde_json::to_string_pretty(&json!({"meta": {"total": n}, "workers": workers})).unwrap()
}

fn serve(stream: TcpStream, hold: Duration, handler: &Handler, stats: &Stats) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let Some(seen) = read_request(&mut reader) else { return };
        let busy = stats.busy.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_busy.fetch_max(busy, Ordering::SeqCst);
        stats.requests.lock().unwrap().push(seen.clone());
        let reply = handler(&seen);
        thread::sleep(hold);
        stats.busy.fetch_sub(1, Ordering::SeqCst);
        match reply {
            Reply::Http { status, body } => {
                let head = format!(
                    "HTTP/1.1 {status} Fake\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                // One write, as a buffering server makes: a head and a body
                // written apart meet Nagle and delayed ACKs (40 ms a request).
                if stream.write_all(&[head.as_bytes(), &body].concat()).is_err() {
                    return;
                }
                stats.body_bytes_written.fetch_add(body.len() as u64, Ordering::SeqCst);
            }
            Reply::Chunked { total } => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk = vec![b' '; 64 * 1024];
                let mut sent = 0;
                while sent < total {
                    let n = chunk.len().min(total - sent);
                    let framed = [format!("{n:x}\r\n").as_bytes(), &chunk[..n], b"\r\n"].concat();
                    if stream.write_all(&framed).is_err() {
                        return;
                    }
                    sent += n;
                    stats.body_bytes_written.fetch_add(n as u64, Ordering::SeqCst);
                }
                let _ = stream.write_all(b"0\r\n\r\n");
            }
            Reply::Raw(bytes) => {
                let _ = stream.write_all(&bytes);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            Reply::Silent => {
                // Until the client gives up and closes.
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
                return;
            }
            Reply::Trickle => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n";
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let give_up = Instant::now() + Duration::from_secs(120);
                while Instant::now() < give_up {
                    if stream.write_all(b" ").is_err() {
                        return;
                    }
                    stats.body_bytes_written.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(200));
                }
                return;
            }
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Some(Seen { path, headers })
}
