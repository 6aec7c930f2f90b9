//! Polling real loopback listeners: a faithful Buildbot 4.3 master, and
//! each way a master can fail, alone and mixed in one round.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use slavealloc_buildbot_poll::{
    parse_workers, poll_master, poll_round, MasterAddress, MasterReport, PollError, PollOptions, PollTarget,
    UrlTemplate, WorkerReport, DEFAULT_MAX_BODY_BYTES,
};
use support::{refused_url, FakeMaster, Reply, CONFIG_4_3, WORKERS_4_3};

/// Short limits so that the failure tests are quick; no jitter, so that a
/// round's time is the polls' time.
fn quick(timeout: Duration) -> PollOptions {
    PollOptions {
        timeout,
        jitter: Duration::ZERO,
        ..PollOptions::default()
    }
}

fn worker(name: &str, connected: bool, paused: bool, graceful: bool) -> WorkerReport {
    WorkerReport {
        name: name.to_owned(),
        connected,
        paused,
        graceful,
    }
}

/// The fixture's workers: Buildbot lists them newest first.
fn fixture_workers() -> Vec<WorkerReport> {
    vec![
        worker("t-w1064-ix-003", false, false, false),
        worker("t-w1064-ix-002", true, false, true),
        worker("t-w1064-ix-001", true, true, false),
    ]
}

async fn poll_one(url: String, opts: &PollOptions) -> Result<MasterReport, PollError> {
    poll_master(&PollTarget::new(1, "bm01", url), opts).await.outcome
}

#[test]
fn the_real_4_3_answer_parses() {
    assert_eq!(parse_workers(WORKERS_4_3.as_bytes()).unwrap(), fixture_workers());
    assert_eq!(
        slavealloc_buildbot_poll::parse_version(CONFIG_4_3.as_bytes()).as_deref(),
        Some("4.3.0")
    );
}

#[tokio::test]
async fn a_4_3_master_gives_its_workers_and_its_version_over_one_connection() {
    let master = FakeMaster::buildbot_4_3();
    let poll = poll_master(
        &PollTarget::new(9, "bm09", master.url()),
        &quick(Duration::from_secs(10)),
    )
    .await;
    assert_eq!(poll.masterid, 9);
    assert_eq!(
        poll.outcome.unwrap(),
        MasterReport {
            buildbot_version: Some("4.3.0".to_owned()),
            workers: fixture_workers(),
        }
    );
    let paths: Vec<String> = master.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/api/v2/workers", "/config"]);
    // The version request reuses the workers request's connection.
    assert_eq!(master.stats.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_template_expands_to_a_pollable_url() {
    let master = FakeMaster::buildbot_4_3();
    let template = UrlTemplate::default();
    let address = MasterAddress {
        masterid: 3,
        nickname: "bm03",
        fqdn: "127.0.0.1",
        http_port: i32::from(master.addr().port()),
    };
    let target = PollTarget::for_master(&template, &address).unwrap();
    assert_eq!(target.url, master.url());
    let poll = poll_master(&target, &quick(Duration::from_secs(10))).await;
    assert_eq!(poll.masterid, 3);
    assert_eq!(poll.outcome.unwrap().workers.len(), 3);
}

#[tokio::test]
async fn an_older_buildbot_without_paused_graceful_or_config_is_fine() {
    let master = FakeMaster::start(|seen| match seen.path.as_str() {
        "/api/v2/workers" => Reply::json(
            r#"{"workers": [{"workerid": 1, "name": "old-1", "connected_to": [{"masterid": 1}]},
                            {"workerid": 2, "name": "old-2", "connected_to": null},
                            {"workerid": 3, "name": "old-3", "paused": null}], "meta": {"total": 3}}"#,
        ),
        _ => Reply::status(404, "No Such Resource"),
    });
    let report = poll_one(master.url(), &quick(Duration::from_secs(10))).await.unwrap();
    assert_eq!(report.buildbot_version, None);
    assert_eq!(
        report.workers,
        [
            worker("old-1", true, false, false),
            worker("old-2", false, false, false),
            worker("old-3", false, false, false),
        ]
    );
}

#[tokio::test]
async fn without_fetch_version_there_is_one_request() {
    let master = FakeMaster::buildbot_4_3();
    let opts = PollOptions {
        fetch_version: false,
        ..quick(Duration::from_secs(10))
    };
    let report = poll_one(master.url(), &opts).await.unwrap();
    assert_eq!(report.buildbot_version, None);
    assert_eq!(master.requests().len(), 1);
}

#[tokio::test]
async fn a_master_that_never_answers_is_one_timeout_and_the_round_ends() {
    let master = FakeMaster::start(|_| Reply::Silent);
    let opts = quick(Duration::from_millis(500));
    let begun = Instant::now();
    let polls = poll_round(vec![PollTarget::new(4, "bm04", master.url())], &opts).await;
    let took = begun.elapsed();
    assert_eq!(polls.len(), 1);
    assert_eq!(polls[0].masterid, 4);
    assert_eq!(
        polls[0].outcome,
        Err(PollError::Timeout {
            limit: Duration::from_millis(500)
        })
    );
    assert!(took < opts.timeout * 3, "the round took {took:?}");
    assert!(polls[0].duration < opts.timeout * 3, "{:?}", polls[0].duration);
    assert_eq!(
        polls[0].outcome.as_ref().unwrap_err().to_string(),
        "no complete answer within the 500ms limit"
    );
}

#[tokio::test]
async fn a_master_that_trickles_times_out() {
    let master = FakeMaster::start(|_| Reply::Trickle);
    let opts = quick(Duration::from_secs(1));
    let begun = Instant::now();
    let outcome = poll_one(master.url(), &opts).await;
    assert_eq!(
        outcome,
        Err(PollError::Timeout {
            limit: Duration::from_secs(1)
        })
    );
    assert!(begun.elapsed() < opts.timeout * 3, "{:?}", begun.elapsed());
    // Bytes kept coming, so no single read waited long: only the overall
    // limit could end it.
    assert!(master.stats.body_bytes_written.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn what_is_not_http_is_not_http() {
    let ssh = FakeMaster::start(|_| Reply::Raw(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n".to_vec()));
    let e = poll_one(ssh.url(), &quick(Duration::from_secs(5))).await.unwrap_err();
    assert!(matches!(e, PollError::NotHttp { .. }), "{e:?}");

    let hangs_up = FakeMaster::start(|_| Reply::Raw(Vec::new()));
    let e = poll_one(hangs_up.url(), &quick(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(
        matches!(e, PollError::Transfer { .. } | PollError::NotHttp { .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn an_html_page_is_not_json() {
    let master = FakeMaster::start(|_| Reply::json("<html><body>It works!</body></html>"));
    let e = poll_one(master.url(), &quick(Duration::from_secs(5)))
        .await
        .unwrap_err();
    match &e {
        PollError::NotJson { reason } => assert!(reason.contains("<html>"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().starts_with("the answer is not JSON: "), "{e}");
}

#[tokio::test]
async fn http_500_gives_the_status_and_a_short_clean_body() {
    let page = format!(
        "Traceback (most recent call last):\n  File \"x.py\", line 1\n\x1b[31m{}",
        "boom ".repeat(500)
    );
    let master = FakeMaster::start(move |_| Reply::status(500, &page));
    let e = poll_one(master.url(), &quick(Duration::from_secs(5)))
        .await
        .unwrap_err();
    match &e {
        PollError::Status { status, body } => {
            assert_eq!(*status, 500);
            assert!(
                body.starts_with("Traceback (most recent call last): File \"x.py\""),
                "{body}"
            );
            assert!(body.chars().count() <= 121, "{body}");
            assert!(!body.chars().any(char::is_control), "{body:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn json_of_another_shape_is_not_a_workers_list() {
    for body in [
        r#"{"masters": [], "meta": {}}"#,
        r#"{"workers": [{"workerid": 1}]}"#,
        r#"{"workers": [{"name": "w", "paused": "yes"}]}"#,
        r#"[1, 2, 3]"#,
    ] {
        let master = FakeMaster::start(move |_| Reply::json(body));
        let e = poll_one(master.url(), &quick(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert!(matches!(e, PollError::NotWorkersList { .. }), "{body}: {e:?}");
        assert!(e.to_string().len() < 200, "{e}");
    }
}

#[tokio::test]
async fn a_10_mb_answer_is_too_large() {
    let ten_mb = 10_000_000;
    // Announced: refused before any of the body is read.
    let announced = FakeMaster::start(move |_| Reply::Http {
        status: 200,
        body: vec![b' '; ten_mb],
    });
    let e = poll_one(announced.url(), &quick(Duration::from_secs(10)))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        PollError::TooLarge {
            limit: DEFAULT_MAX_BODY_BYTES
        }
    );
    assert_eq!(e.to_string(), "the answer is larger than the 8388608-byte limit");

    // Chunked: read up to the limit, then the connection is dropped; what
    // the server managed to send is the limit plus the sockets' buffers,
    // not the whole answer.
    let chunked = FakeMaster::start(move |_| Reply::Chunked { total: ten_mb });
    let opts = PollOptions {
        max_body_bytes: 64 * 1024,
        ..quick(Duration::from_secs(10))
    };
    let e = poll_one(chunked.url(), &opts).await.unwrap_err();
    assert_eq!(e, PollError::TooLarge { limit: 64 * 1024 });
    // The server thread notices the closed connection at its next write.
    std::thread::sleep(Duration::from_millis(300));
    let written = chunked.stats.body_bytes_written.load(Ordering::SeqCst);
    assert!(written < ten_mb as u64, "the server sent all {written} bytes");

    let default_limit = FakeMaster::start(move |_| Reply::Chunked { total: ten_mb });
    let e = poll_one(default_limit.url(), &quick(Duration::from_secs(10)))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        PollError::TooLarge {
            limit: DEFAULT_MAX_BODY_BYTES
        }
    );
}

#[tokio::test]
async fn a_refused_connection_is_unreachable() {
    let e = poll_one(refused_url(), &quick(Duration::from_secs(5)))
        .await
        .unwrap_err();
    match &e {
        PollError::Unreachable { reason } => assert!(reason.to_lowercase().contains("refused"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_redirect_is_reported_not_followed() {
    let elsewhere = FakeMaster::buildbot_4_3();
    let to = elsewhere.url();
    let master = FakeMaster::start(move |_| {
        Reply::Raw(format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n").into_bytes())
    });
    let target = PollTarget::new(1, "bm01", master.url()).with_auth_header("Authorization", "Bearer s3cret");
    let e = poll_master(&target, &quick(Duration::from_secs(5)))
        .await
        .outcome
        .unwrap_err();
    assert_eq!(
        e,
        PollError::Status {
            status: 302,
            body: format!("redirects to {}", elsewhere.url())
        }
    );
    assert!(elsewhere.requests().is_empty(), "the secret header went elsewhere");
}

#[tokio::test]
async fn a_mixed_round_gives_each_master_its_own_outcome_in_order() {
    let good = FakeMaster::buildbot_4_3();
    let silent = FakeMaster::start(|_| Reply::Silent);
    let broken = FakeMaster::start(|_| Reply::status(503, "Service Unavailable"));
    let garbage = FakeMaster::start(|_| Reply::json("not json"));
    let targets = vec![
        PollTarget::new(1, "good", good.url()),
        PollTarget::new(2, "refused", refused_url()),
        PollTarget::new(3, "silent", silent.url()),
        PollTarget::new(4, "broken", broken.url()),
        PollTarget::new(5, "garbage", garbage.url()),
        PollTarget::new(6, "good-again", good.url()),
        PollTarget::new(7, "not-a-url", "http://[::1"),
    ];
    let opts = PollOptions {
        concurrency: 3,
        ..quick(Duration::from_millis(800))
    };
    let begun = Instant::now();
    let polls = poll_round(targets, &opts).await;
    assert!(begun.elapsed() < opts.timeout * 3, "{:?}", begun.elapsed());

    let ids: Vec<i32> = polls.iter().map(|p| p.masterid).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7]);
    let kinds: Vec<String> = polls
        .iter()
        .map(|p| match &p.outcome {
            Ok(report) => format!("ok {} {:?}", report.workers.len(), report.buildbot_version),
            Err(e) => format!("{e:?}").split([' ', '{', '(']).next().unwrap().to_owned(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "ok 3 Some(\"4.3.0\")",
            "Unreachable",
            "Timeout",
            "Status",
            "NotJson",
            "ok 3 Some(\"4.3.0\")",
            "BadTarget"
        ]
    );
}

#[tokio::test]
async fn a_round_polls_at_most_concurrency_masters_at_once() {
    let master = FakeMaster::start_holding(Duration::from_millis(150), |seen| match seen.path.as_str() {
        "/api/v2/workers" => Reply::json(WORKERS_4_3),
        _ => Reply::status(404, ""),
    });
    let targets: Vec<PollTarget> = (0..12)
        .map(|i| PollTarget::new(i, format!("bm{i:02}"), master.url()))
        .collect();
    let opts = PollOptions {
        concurrency: 3,
        ..quick(Duration::from_secs(10))
    };
    let polls = poll_round(targets, &opts).await;
    assert!(polls.iter().all(|p| p.outcome.is_ok()), "{polls:?}");
    let max = master.stats.max_busy.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} masters were polled at once");
    assert!(max >= 2, "the round did not poll in parallel (at most {max} at once)");
    // Each master's own connection: 12 for the workers, 12 for /config.
    assert_eq!(master.requests().len(), 24);
}

#[tokio::test]
async fn the_auth_header_is_sent_and_never_shown() {
    let master = FakeMaster::start(|seen| {
        if seen.header("x-buildbot-token") != Some("t0ps3cret") {
            return Reply::status(401, r#"{"error": "unauthorized"}"#);
        }
        match seen.path.as_str() {
            "/api/v2/workers" => Reply::json(WORKERS_4_3),
            _ => Reply::json(CONFIG_4_3),
        }
    });
    let target = PollTarget::new(1, "bm01", master.url()).with_auth_header("X-Buildbot-Token", "t0ps3cret");
    let shown = format!("{target:?}");
    assert!(!shown.contains("t0ps3cret"), "{shown}");
    assert!(shown.contains("X-Buildbot-Token"), "{shown}");
    let report = poll_master(&target, &quick(Duration::from_secs(10)))
        .await
        .outcome
        .unwrap();
    assert_eq!(report.buildbot_version.as_deref(), Some("4.3.0"));
    assert!(master
        .requests()
        .iter()
        .all(|r| r.header("x-buildbot-token") == Some("t0ps3cret")));

    let wrong = PollTarget::new(1, "bm01", master.url()).with_auth_header("X-Buildbot-Token", "wr0ng");
    let e = poll_master(&wrong, &quick(Duration::from_secs(10)))
        .await
        .outcome
        .unwrap_err();
    assert!(matches!(e, PollError::Status { status: 401, .. }), "{e:?}");
    assert!(!format!("{e:?} {e}").contains("wr0ng"));
}

#[tokio::test]
async fn dropping_a_round_stops_new_requests() {
    let master = FakeMaster::start_holding(Duration::from_millis(200), |_| Reply::json(WORKERS_4_3));
    let targets: Vec<PollTarget> = (0..20).map(|i| PollTarget::new(i, "bm", master.url())).collect();
    let opts = PollOptions {
        concurrency: 1,
        fetch_version: false,
        ..quick(Duration::from_secs(10))
    };
    let cut = tokio::time::timeout(Duration::from_millis(300), poll_round(targets, &opts)).await;
    assert!(cut.is_err(), "the round ended before it was dropped");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let seen = master.requests().len();
    // One or two had started when the round was dropped; the other 18 never do.
    assert!(seen <= 3, "{seen} requests after the round was dropped");
}

#[tokio::test]
async fn jitter_delays_each_master_by_less_than_the_jitter() {
    let master = FakeMaster::buildbot_4_3();
    let targets: Vec<PollTarget> = (0..5).map(|i| PollTarget::new(i, "bm", master.url())).collect();
    let opts = PollOptions {
        jitter: Duration::from_millis(300),
        ..quick(Duration::from_secs(10))
    };
    let begun = Instant::now();
    let polls = poll_round(targets, &opts).await;
    assert!(polls.iter().all(|p| p.outcome.is_ok()), "{polls:?}");
    assert!(begun.elapsed() < Duration::from_secs(5), "{:?}", begun.elapsed());
}
