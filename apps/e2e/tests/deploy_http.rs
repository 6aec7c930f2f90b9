//! The deployment files that sit in front of a running daemon: the nginx
//! sites (`nginx -t`, then a real nginx proxying to a real `slavealloc
//! serve`), the monitoring check and alert rules against its /healthz and
//! /metrics, and the production and staging configuration files the
//! systemd units hand it.

// Helpers outside #[test] functions too: a panic is the failure report here.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::{deploy_dir, free_port, get, have, read, run, sample_db, start_daemon};
use slavealloc_e2e::daemon::Slavealloc;
use slavealloc_e2e::nginx::Nginx;
use slavealloc_e2e::process::Finished;
use slavealloc_e2e::workspace::{binaries, repo_dir};
use tempfile::TempDir;

/// The production or staging site, made to run here: listening on `listen`,
/// proxying to `daemon` instead of 127.0.0.1:1080/1079.
fn site_for_test(instance: &str, port: u16, listen: u16, daemon: &str) -> String {
    let site = read(&deploy_dir().join(format!("nginx/slavealloc-{instance}.conf")));
    let upstream = format!("server 127.0.0.1:{port};");
    assert!(site.contains(&upstream), "the {instance} site proxies to port {port}");
    assert!(site.contains("listen 80;"));
    site.replace(&upstream, &format!("server {daemon};"))
        .replace("listen 80;", &format!("listen 127.0.0.1:{listen};"))
        .replace("listen [::]:80;", "")
}

#[test]
fn nginx_sites_pass_nginx_t_and_proxy_to_the_daemon() {
    if !have("nginx", true) {
        return;
    }
    let tmp = TempDir::new().unwrap();
    let db = sample_db(tmp.path());
    // As fixtures/production.toml: nginx on this host is trusted.
    let daemon = Slavealloc::start(
        &binaries().unwrap().slavealloc,
        &["--db", &db, "--trusted-proxy", "127.0.0.1"],
        tmp.path(),
    )
    .unwrap();
    let daemon_addr = daemon.url().trim_start_matches("http://").to_owned();

    for (instance, port) in [("production", 1080), ("staging", 1079)] {
        let dir = tmp.path().join(instance);
        fs::create_dir_all(&dir).unwrap();
        let listen = free_port();
        let site = dir.join("site.conf");
        fs::write(&site, site_for_test(instance, port, listen, &daemon_addr)).unwrap();
        let _nginx = Nginx::start(&dir, &[site], &[listen]).unwrap_or_else(|e| panic!("{instance}: {e}"));
        let base = format!("http://127.0.0.1:{listen}");

        let root = get(&format!("{base}/"));
        assert_eq!(root.status, 302);
        let to = root.location.unwrap_or_default();
        assert!(to == "/ui/" || to == format!("{base}/ui/"), "/ redirects to {to}");
        let tac = get(&format!("{base}/gettac/bld-linux64-spot-003"));
        assert_eq!(tac.status, 200, "{}", tac.body);
        assert!(
            tac.body.starts_with("# AUTOMATICALLY GENERATED - DO NOT MODIFY"),
            "{}",
            tac.body
        );
        let unknown = get(&format!("{base}/gettac/no-such-slave"));
        assert_eq!((unknown.status, unknown.body.trim()), (404, "no allocation available"));
        let pools = get(&format!("{base}/api/pools"));
        assert_eq!(pools.status, 200);
        assert!(pools.body.trim_start().starts_with('['), "{}", pools.body);
        let ui = get(&format!("{base}/ui/"));
        assert_eq!(ui.status, 200, "{}", ui.body);
        // Monitoring may read health and metrics from loopback.
        assert_eq!(get(&format!("{base}/healthz")).status, 200);
        assert!(get(&format!("{base}/metrics")).body.contains("slavealloc_"));
        // Nothing else is served.
        assert_eq!(get(&format!("{base}/etc/passwd")).status, 404);
        assert_eq!(
            audited_client_of_a_put_through(&base, &dir),
            "127.0.0.2",
            "{instance}: the audit names the machine behind nginx, not nginx nor a forged header"
        );
    }
}

/// PUTs a slave's notes through nginx from 127.0.0.2 with a forged
/// `X-Real-IP`, and answers the actor the audit log recorded.
fn audited_client_of_a_put_through(base: &str, dir: &Path) -> String {
    let put = run(
        "curl PUT",
        Command::new("curl").args([
            "-sS",
            "--fail",
            "--interface",
            "127.0.0.2",
            "-X",
            "PUT",
            "-H",
            "content-type: application/json",
            "-H",
            "X-Real-IP: 203.0.113.9",
            "-d",
            r#"{"notes": "through nginx"}"#,
            &format!("{base}/api/slaves/3"),
        ]),
        dir,
    );
    assert!(put.status.success(), "{}", put.output);
    let audit = get(&format!("{base}/api/audit?table=slaves&id=3&limit=1"));
    let entries: serde_json::Value = serde_json::from_str(&audit.body).unwrap();
    entries[0]["actor"].as_str().unwrap_or_default().to_owned()
}

fn check(args: &[&str], dir: &Path) -> Finished {
    run(
        "slavealloc-check",
        Command::new(deploy_dir().join("monitoring/slavealloc-check")).args(args),
        dir,
    )
}

#[test]
fn monitoring_check_and_alert_rules_match_the_real_daemon() {
    if !have("curl", true) {
        return;
    }
    let tmp = TempDir::new().unwrap();
    let db = sample_db(tmp.path());
    let daemon = start_daemon(tmp.path(), &db);
    let url = daemon.url();

    let ok = check(&["--url", url, "--slave", "bld-linux64-spot-003"], tmp.path());
    assert_eq!(ok.status.code(), Some(0), "{}", ok.output);
    assert!(ok.output.starts_with("SLAVEALLOC OK - "), "{}", ok.output);
    assert!(ok.output.contains("6 pools"), "{}", ok.output);

    let unknown = check(&["--url", url, "--slave", "no-such-slave"], tmp.path());
    assert_eq!(unknown.status.code(), Some(2), "{}", unknown.output);
    assert!(
        unknown.output.starts_with("SLAVEALLOC CRITICAL - "),
        "{}",
        unknown.output
    );

    let backups = tmp.path().join("backups");
    fs::create_dir(&backups).unwrap();
    let backup_dir = backups.to_str().unwrap();
    let none = check(&["--url", url, "--backup-dir", backup_dir], tmp.path());
    assert_eq!(none.status.code(), Some(1), "no dump is a warning: {}", none.output);
    fs::write(backups.join("slavealloc-20260101T021500.000Z.json"), "{}").unwrap();
    let fresh = check(&["--url", url, "--backup-dir", backup_dir], tmp.path());
    assert_eq!(fresh.status.code(), Some(0), "{}", fresh.output);

    let dead = format!("http://127.0.0.1:{}", free_port());
    let down = check(&["--url", &dead, "--timeout", "5"], tmp.path());
    assert_eq!(down.status.code(), Some(2), "{}", down.output);
    assert!(down.output.starts_with("SLAVEALLOC CRITICAL - "), "{}", down.output);

    // Every series the alert rules use exists in a real scrape (after the
    // traffic that creates labelled series), so a renamed metric fails here
    // and not in production. The backup's own series come from the backup
    // script (checked by the backup test).
    get(&format!("{url}/gettac/bld-linux64-spot-006"));
    get(&format!("{url}/gettac/no-such-slave"));
    let scrape = get(&format!("{url}/metrics")).body;
    let rules = read(&deploy_dir().join("monitoring/slavealloc-alerts.yml"));
    let mut names = BTreeSet::new();
    for (i, _) in rules.match_indices("slavealloc_") {
        let name: String = rules[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    let series: Vec<&str> = scrape.lines().filter(|l| !l.starts_with('#')).collect();
    for name in names.iter().filter(|n| !n.starts_with("slavealloc_backup_")) {
        assert!(
            series.iter().any(|l| l
                .strip_prefix(name.as_str())
                .is_some_and(|rest| rest.starts_with(['{', ' ']))),
            "the alert rules use {name}, which /metrics does not export:\n{scrape}"
        );
    }
    for label in ["route=\"/gettac/{slave}\"", "status=\"404\""] {
        assert!(
            scrape.contains(label),
            "the alert rules match {label}, which /metrics lacks:\n{scrape}"
        );
    }
}

#[test]
fn production_and_staging_configurations_start_the_daemon() {
    // The files a unit's LoadCredential= points at start from
    // fixtures/production.toml and staging.toml; only the database (a
    // placeholder MySQL URL there) and the port are overridden here.
    let tmp = TempDir::new().unwrap();
    let db = sample_db(tmp.path());
    for (instance, port) in [("production", 1080), ("staging", 1079)] {
        let base = repo_dir().join("fixtures/slavealloc.toml");
        let config = repo_dir().join(format!("fixtures/{instance}.toml"));
        assert!(read(&config).contains(&format!("listen = \"127.0.0.1:{port}\"")));
        let dir = tmp.path().join(instance);
        fs::create_dir_all(&dir).unwrap();
        let daemon = Slavealloc::start(
            &binaries().unwrap().slavealloc,
            &[
                "--config".as_ref(),
                base.as_os_str(),
                "--config".as_ref(),
                config.as_os_str(),
                "--db".as_ref(),
                db.as_ref(),
            ],
            &dir,
        )
        .unwrap();
        let health = get(&format!("{}/healthz", daemon.url()));
        assert_eq!(health.status, 200, "{instance}: {}\n{}", health.body, daemon.log_tail());
    }
}
