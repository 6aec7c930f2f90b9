//! What the runslave tests share: a tiny HTTP server on 127.0.0.1 that
//! plays the allocator.

// Each test crate uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What the test server does with each request.
#[derive(Clone, Copy)]
pub enum Answer {
    /// 200 with this body.
    Ok(&'static str),
    /// 200 with these bodies, one per request in turn; the last one again
    /// once they run out (the allocator naming another master, or a
    /// disabled slave enabled again).
    Sequence(&'static [&'static str]),
    /// This status with this body.
    Status(u16, &'static str),
    /// 302 to this location.
    Redirect(&'static str),
    /// Accept the connection, read the request, never answer.
    Silence,
    /// 503 with `Retry-After: {after}` to the first `times` requests, then
    /// 200 with `body`: an allocator pacing a boot storm.
    Busy {
        times: usize,
        after: &'static str,
        body: &'static str,
    },
}

/// A server that answers every request as told, and remembers the paths
/// asked for.
pub struct Server {
    pub url: String,
    pub paths: Arc<Mutex<Vec<String>>>,
    /// When each request came.
    pub times: Arc<Mutex<Vec<std::time::Instant>>>,
    requests: Arc<AtomicUsize>,
}

impl Server {
    pub fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/gettac/SLAVE", listener.local_addr().unwrap());
        let paths = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let times = Arc::new(Mutex::new(Vec::new()));
        let (p, r, t) = (Arc::clone(&paths), Arc::clone(&requests), Arc::clone(&times));
        thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let path = read_request(&mut stream);
                p.lock().unwrap().push(path);
                t.lock().unwrap().push(std::time::Instant::now());
                let n = r.fetch_add(1, Ordering::SeqCst);
                let (status, body, location) = match answer {
                    Answer::Ok(body) => (200, body, String::new()),
                    Answer::Sequence(bodies) => (200, bodies[n.min(bodies.len() - 1)], String::new()),
                    Answer::Status(status, body) => (status, body, String::new()),
                    Answer::Redirect(to) => (302, "", format!("Location: {to}\r\n")),
                    Answer::Busy { times, after, .. } if n < times => {
                        (503, "busy\n", format!("Retry-After: {after}\r\n"))
                    }
                    Answer::Busy { body, .. } => (200, body, String::new()),
                    Answer::Silence => {
                        held.push(stream);
                        continue;
                    }
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\n{location}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            url,
            paths,
            times,
            requests,
        }
    }

    /// How many requests came so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn port(&self) -> u16 {
        self.url
            .split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// Reads a request head and returns its path.
fn read_request(stream: &mut TcpStream) -> String {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut first = String::new();
    let _ = reader.read_line(&mut first);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    first.split_whitespace().nth(1).unwrap_or_default().to_owned()
}

/// Writes an executable shell script.
pub fn script(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
