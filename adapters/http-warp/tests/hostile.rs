//! What a hostile web page or a hostile client can make the daemon do:
//! cross-origin writes and rebound hosts are refused before any handler
//! (nothing written), junk methods cannot grow `/metrics`, half-sent
//! requests are closed by the header timeout while `/gettac` keeps
//! answering, and connections over the cap get 503.
// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{services, store, Harness, Kind};
use serde_json::json;
use slavealloc_fixtures::sample_fleet;
use slavealloc_http_warp::{routes, serve_with, AllowedHosts, Guard, Limits, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const SLAVE: &str = "bld-linux64-spot-003";

/// Request headers as name and value.
type Headers<'a> = &'a [(&'a str, &'a str)];

fn guarded() -> ServerConfig {
    ServerConfig {
        guard: Guard {
            trusted_origins: vec!["https://tools.example".into()],
            allowed_hosts: AllowedHosts::from_names(["slavealloc.example"]),
        },
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn a_page_on_another_site_cannot_write_and_nothing_is_written() {
    let h = Harness::new(Kind::Memory, guarded()).await.unwrap();
    let before = h.dump().await;
    let master = json!({"nickname": "evil", "fqdn": "evil.example", "http_port": 0, "pb_port": 9999,
                        "dcid": 1, "poolid": 1});
    let body = master.to_string();
    let host = ("host", "slavealloc.example");
    let attempts: &[(&str, &str, Headers<'_>)] = &[
        // A form or a text/plain fetch from another site: a "simple" request
        // the browser sends without asking.
        (
            "POST",
            "/api/masters",
            &[
                host,
                ("content-type", "text/plain"),
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ],
        ),
        (
            "POST",
            "/api/masters",
            &[
                host,
                ("content-type", "application/json"),
                ("sec-fetch-site", "same-site"),
                ("origin", "https://www.slavealloc.example"),
            ],
        ),
        (
            "PUT",
            "/api/slaves/1",
            &[host, ("content-type", "text/plain"), ("origin", "https://evil.example")],
        ),
        ("DELETE", "/api/slaves/1", &[host, ("origin", "null")]),
        ("POST", "/ui/anything", &[host, ("sec-fetch-site", "cross-site")]),
    ];
    for (method, path, headers) in attempts {
        let r = h.request(method, path, Some(body.as_bytes()), headers).await;
        assert_eq!(r.status, 403, "{method} {path} {headers:?}: {}", r.body);
        assert!(r.error().contains("cross-origin"), "{}", r.body);
    }
    assert_eq!(h.dump().await, before, "a refused request wrote nothing");

    // The UI's own requests, a trusted tool's, and curl's still write.
    let ok: &[&[(&str, &str)]] = &[
        &[
            host,
            ("content-type", "application/json"),
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://slavealloc.example"),
        ],
        &[
            host,
            ("content-type", "application/json"),
            ("origin", "http://slavealloc.example"),
        ],
        &[
            host,
            ("content-type", "application/json"),
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://tools.example"),
        ],
        &[("content-type", "application/json")],
    ];
    for headers in ok {
        let r = h
            .request("PUT", "/api/slaves/1", Some(br#"{"notes": "from a friend"}"#), headers)
            .await;
        assert_eq!(r.status, 200, "{headers:?}: {}", r.body);
    }
    h.finish().await;
}

#[tokio::test]
async fn a_rebound_host_reaches_neither_the_api_nor_the_ui_but_machines_boot() {
    let h = Harness::new(Kind::Memory, guarded()).await.unwrap();
    let rebound = [("host", "rebind.attacker.example:8010")];
    for path in ["/api/slaves", "/api/gettac/bld-linux64-spot-003", "/ui/"] {
        let r = h.request("GET", path, None, &rebound).await;
        assert_eq!(r.status, 421, "{path}: {}", r.body);
        assert!(r.error().contains("allowed_hosts"), "{}", r.body);
    }
    let r = h.request("GET", &format!("/gettac/{SLAVE}"), None, &rebound).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for path in ["/healthz", "/metrics"] {
        assert_eq!(h.request("GET", path, None, &rebound).await.status, 200, "{path}");
    }
    for host in ["slavealloc.example", "localhost:8010", "127.0.0.1:8010", "10.9.8.7"] {
        let r = h.request("GET", "/api/slaves", None, &[("host", host)]).await;
        assert_eq!(r.status, 200, "{host}");
    }
    h.finish().await;
}

/// A daemon on a real socket with these limits.
struct Live {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Live {
    async fn start(limits: Limits) -> Self {
        let (store, _) = store(Kind::Memory, &sample_fleet()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let filter = routes(services(store), ServerConfig::default());
        let task = tokio::spawn(async move {
            serve_with(
                listener,
                filter,
                async {
                    let _ = stopped.await;
                },
                limits,
            )
            .await
            .unwrap();
        });
        Self { addr, stop, task }
    }

    /// One request on a new connection; the status and body.
    async fn ask(&self, head: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
            .await
            .expect("answered within 10 s")
            .unwrap();
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, text)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        self.ask(&format!(
            "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
        ))
        .await
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

#[tokio::test]
async fn junk_methods_cannot_grow_the_metrics() {
    let live = Live::start(Limits::default()).await;
    for i in 0..2000 {
        let method = format!("JUNK{i:05}X");
        let (status, _) = live
            .ask(&format!(
                "{method} /api/slaves HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
            ))
            .await;
        assert_eq!(status, 405, "{method}");
    }
    let (status, metrics) = live.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.len() < 64 * 1024, "/metrics is {} bytes", metrics.len());
    assert!(!metrics.contains("JUNK"), "a client's method became a label");
    assert!(metrics.contains("method=\"other\""), "junk is counted as other");
    live.stop().await;
}

#[tokio::test]
async fn half_sent_requests_are_closed_by_the_timeout_while_machines_boot() {
    let live = Live::start(Limits {
        header_read_timeout: Duration::from_secs(2),
        ..Limits::default()
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..500 {
        let mut s = TcpStream::connect(live.addr).await.unwrap();
        s.write_all(b"GET /gettac/bld-linux64-spot-003 HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
            .await
            .unwrap();
        stalled.push(s);
    }
    // Meanwhile a booting machine is answered.
    let (status, tac) = live.get(&format!("/gettac/{SLAVE}")).await;
    assert_eq!(status, 200, "{tac}");
    // Every stalled connection is closed by the server (EOF or reset), not
    // left open: read until it ends, with a deadline well past the timeout.
    for mut s in stalled {
        let mut buf = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
        assert!(ended.is_ok(), "a half-sent request was left open");
    }
    let (status, _) = live.get("/healthz").await;
    assert_eq!(status, 200);
    live.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_the_slots_come_back() {
    let live = Live::start(Limits {
        max_connections: 4,
        header_read_timeout: Duration::from_secs(30),
        ..Limits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(live.addr).await.unwrap());
    }
    // Wait until the server has taken all four: the fifth is refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = live.get("/healthz").await;
        if status == 503 {
            assert!(body.contains("too many connections"), "{body}");
            assert!(body.to_ascii_lowercase().contains("retry-after: 1"), "{body}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never refused: {status} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = live.get("/healthz").await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the slots never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    live.stop().await;
}
