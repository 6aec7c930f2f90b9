//! Bad templates stored straight into a shared MariaDB database (as an old
//! database or an operator's SQL could, bypassing validation), served by
//! two real `slavealloc serve` daemons: the bad slaves get 500 naming
//! their template, every other slave's gettac answers 200 (within the
//! daemons' own deadline, past which they answer 503) while the bad ones
//! are being asked for concurrently, and both daemons stay up.
// Test helpers outside #[test] functions: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use slavealloc_domain::{Dump, DumpStore};
use slavealloc_store_sql::Backend;
use slavealloc_store_sql_testing::TestDatabase;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Doubles a string forty times: aborted the daemon on an 800 MB allocation.
fn bomb() -> String {
    let mut text = String::from("{% set a = basedir %}");
    for _ in 0..40 {
        text.push_str("{% set a = a ~ a %}");
    }
    text + "x = {{ a|length }}\n"
}

/// Allowed constructs only, but seconds of work on a 60 KB basedir.
const SLOW: &str = "{% for c in basedir %}{% if basedir|lower == basedir|upper %}{% endif %}{% endfor %}x = 1\n";

const BAD: [(&str, &str); 2] = [("bld-linux64-spot-010", "bomb"), ("bld-linux64-spot-011", "slow")];
const GOOD: [&str; 6] = [
    "bld-linux64-spot-001",
    "bld-linux64-spot-002",
    "bld-linux64-spot-003",
    "bld-linux64-spot-006",
    "try-linux64-spot-001",
    "tst-linux64-ec2-001",
];

/// The sample fleet with the two bad templates and their slaves.
fn fleet() -> Dump {
    let mut dump: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(slavealloc_fixtures::sample_fleet_path()).unwrap()).unwrap();
    let tables = &mut dump["tables"];
    let templates = tables["tac_templates"].as_array_mut().unwrap();
    templates.push(serde_json::json!({"tplid": 2, "name": "bomb", "template": bomb()}));
    templates.push(serde_json::json!({"tplid": 3, "name": "slow", "template": SLOW}));
    for slave in tables["slaves"].as_array_mut().unwrap() {
        match slave["name"].as_str().unwrap() {
            "bld-linux64-spot-010" => slave["custom_tplid"] = 2.into(),
            "bld-linux64-spot-011" => {
                slave["custom_tplid"] = 3.into();
                slave["basedir"] = format!("/{}", "b".repeat(60_000)).into();
            }
            _ => {}
        }
    }
    serde_json::from_value(dump).unwrap()
}

struct Daemon {
    child: Child,
    base: String,
}

impl Daemon {
    async fn start(db: &str, cwd: &Path) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_slavealloc"))
            .args(["serve", "--db", db, "--listen", "127.0.0.1:0"])
            .current_dir(cwd)
            .env_remove("SLAVEALLOC_CONFIG")
            .env_remove("SLAVEALLOC_DB")
            .env_remove("SLAVEALLOC_LISTEN")
            .env_remove("SLAVEALLOC_BASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let base = loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .expect("no listening line within 60 s")
                .unwrap()
                .expect("serve exited before listening");
            if let Some(addr) = line.strip_prefix("listening on http://") {
                break format!("http://{addr}");
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Daemon { child, base }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let uri = format!("{}{path}", self.base);
        let answer = tokio::time::timeout(Duration::from_secs(60), async {
            let r = hyper::Client::new().get(uri.parse().unwrap()).await.unwrap();
            let status = r.status().as_u16();
            let body = hyper::body::to_bytes(r.into_body()).await.unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        });
        answer.await.unwrap_or_else(|_| panic!("GET {uri} hung"))
    }

    async fn ready(&self) {
        for _ in 0..600 {
            if self.get("/healthz").await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} never became healthy", self.base);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_templates_fail_only_their_slaves_on_two_daemons_sharing_mariadb() {
    let Some(db) = TestDatabase::create(Backend::MySql).await else {
        return;
    };
    let store = db.store().await;
    store.replace_all(&fleet()).await.unwrap();
    store.close().await;
    let dir = tempfile::tempdir().unwrap();
    let daemons = std::sync::Arc::new([
        Daemon::start(db.url(), dir.path()).await,
        Daemon::start(db.url(), dir.path()).await,
    ]);
    for d in daemons.iter() {
        d.ready().await;
    }

    // The bad slaves, asked for over and over on both daemons...
    let mut hammers = Vec::new();
    for i in 0..4 {
        let daemons = std::sync::Arc::clone(&daemons);
        hammers.push(tokio::spawn(async move {
            let (slave, template) = BAD[i % 2];
            let mut answers = Vec::new();
            for round in 0..3 {
                answers.push((
                    template,
                    daemons[(i + round) % 2].get(&format!("/gettac/{slave}")).await,
                ));
            }
            answers
        }));
    }
    // ...while every other slave is served, by both.
    for round in 0..3 {
        for slave in GOOD {
            for d in daemons.iter() {
                let (status, body) = d.get(&format!("/gettac/{slave}")).await;
                assert_eq!(status, 200, "round {round}, {slave} on {}: {body}", d.base);
                assert!(body.contains(slave), "{body}");
            }
        }
    }
    for h in hammers {
        for (template, (status, body)) in h.await.unwrap() {
            assert_eq!(status, 500, "{template}: {body}");
            assert!(body.contains(template), "{template}: {body}");
        }
    }
    for d in daemons.iter() {
        assert_eq!(d.get("/healthz").await.0, 200, "{} stays up", d.base);
    }
    let daemons = std::sync::Arc::into_inner(daemons).unwrap();
    for mut d in daemons {
        assert!(d.child.try_wait().unwrap().is_none(), "the daemon is still running");
        d.child.kill().await.unwrap();
    }
    db.destroy().await;
}
