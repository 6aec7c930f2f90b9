//! The rendered tacs byte for byte (golden files, `UPDATE_GOLDEN=1`
//! rewrites them), and what they do when Python runs them.

// Test helpers outside #[test] functions unwrap too: a panic is the report.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use slavealloc_domain::TacRenderer;
use slavealloc_tac_minijinja::{BuiltinTemplate, MinijinjaRenderer, RendererConfig};
use support::*;

fn renderer(default_template: BuiltinTemplate) -> MinijinjaRenderer {
    MinijinjaRenderer::new(RendererConfig {
        default_template,
        ..RendererConfig::default()
    })
}

/// Every golden file with the request it is rendered from.
fn goldens() -> Vec<(&'static str, String)> {
    let slave = || values("tst-linux64-ec2-001", "/builds/slave", "pass'word");
    let buildslave = renderer(BuiltinTemplate::Buildslave);
    let worker = renderer(BuiltinTemplate::BuildbotWorker);
    let render = |r: &MinijinjaRenderer, request| r.render(&request).unwrap();
    vec![
        ("buildslave.tac", render(&buildslave, enabled(None, slave()))),
        (
            "buildslave-no-idleizer.tac",
            render(
                &buildslave,
                enabled(None, values("panda-0123", "/builds/panda-0123", "pw")),
            ),
        ),
        ("buildbot-worker.tac", render(&worker, enabled(None, slave()))),
        ("disabled.tac", render(&buildslave, disabled("tst-linux64-ec2-001"))),
        (
            "legacy-percent.tac",
            render(&buildslave, enabled(Some(stored("legacy", LEGACY_TEMPLATE)), slave())),
        ),
        (
            "custom-minijinja.tac",
            render(&buildslave, enabled(Some(stored("jinja", MINIJINJA_TEMPLATE)), slave())),
        ),
    ]
}

#[test]
fn rendered_tacs_match_golden_files() {
    for (name, tac) in goldens() {
        golden(name, &tac);
    }
}

#[test]
fn every_golden_tac_compiles_under_python() {
    let dir = tempfile::tempdir().unwrap();
    for (name, tac) in goldens() {
        assert!(tac.is_ascii(), "{name} is not ASCII");
        let path = dir.path().join(name);
        std::fs::write(&path, &tac).unwrap();
        for python in pythons() {
            let out = run(python, &["-m", "py_compile", path.to_str().unwrap()], "");
            assert!(
                out.status.success(),
                "{python} -m py_compile {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn header_is_the_originals() {
    let tac = MinijinjaRenderer::default().render(&disabled("x")).unwrap();
    assert!(tac.starts_with(
        "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n# generated: Sun Nov  8 14:10:44 2026 on slavealloc.example.com\n\n"
    ));
}

#[test]
fn header_date_is_pythons_ctime_in_utc() {
    let times = [0, 1, 86_399, 951_782_400, 1_700_000_000, GOLDEN_TIME, 4_102_444_799];
    let script = format!(
        "import time\nfor t in {times:?}:\n    print(time.asctime(time.gmtime(t)))",
        times = times.to_vec()
    );
    let out = run(python3(), &["-c", &script], "");
    let expected: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(expected.len(), times.len());
    for (t, want) in times.iter().zip(expected) {
        let mut request = disabled("x");
        request.header.generated = at(*t);
        let tac = MinijinjaRenderer::default().render(&request).unwrap();
        let line = tac.lines().nth(1).unwrap();
        assert_eq!(
            line,
            format!("# generated: {want} on slavealloc.example.com"),
            "time {t}"
        );
    }
}

#[test]
fn disabled_tac_says_so_and_exits_zero() {
    let tac = MinijinjaRenderer::default().render(&disabled("tst-01")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buildbot.tac");
    std::fs::write(&path, &tac).unwrap();
    for python in pythons() {
        let out = run(python, &[path.to_str().unwrap()], "");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{python}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "SLAVE DISABLED; NOT STARTING\n",
            "{python}"
        );
    }
    // `buildslave start` and `buildbot-worker start` only run a tac holding
    // these; without them they would refuse the directory and never show why.
    assert!(tac.contains("Application('buildslave')"));
    assert!(tac.contains("Application('buildbot-worker')"));
}

/// The argument list the stand-in `BuildSlave`/`Worker` was constructed with.
fn constructed<'a>(run: &'a serde_json::Value, class: &str) -> &'a serde_json::Value {
    let events = run["events"].as_array().unwrap();
    let found: Vec<_> = events.iter().filter(|e| e["new"] == class).collect();
    assert_eq!(found.len(), 1, "{class} constructed {} times: {run}", found.len());
    found[0]
}

#[test]
fn buildslave_tac_starts_the_originals_buildslave() {
    let renderer = renderer(BuiltinTemplate::Buildslave);
    let tac = renderer
        .render(&enabled(None, values("tst-01", "/builds/slave", "s3cret")))
        .unwrap();
    for python in pythons() {
        let run = run_tac(python, &tac);
        assert_eq!(run["max_broker_refs"], 4096);
        assert_eq!(
            run["events"][0],
            json!({"new": "Application", "args": ["buildslave"], "kwargs": {}})
        );
        let slave = constructed(&run, "BuildSlave");
        assert_eq!(
            slave["args"],
            json!([
                "bm01.build.example.com",
                9001,
                "tst-01",
                "s3cret",
                "/builds/slave",
                null,
                false
            ]),
            "{python}"
        );
        assert_eq!(
            slave["kwargs"],
            json!({"umask": 2, "maxdelay": 300, "allow_shutdown": "file"})
        );
        let log = run["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["call"] == "LogFile.fromFullPath");
        assert_eq!(
            log.unwrap()["kwargs"],
            json!({"rotateLength": 1_000_000, "maxRotatedFiles": 10})
        );
        let idleizer = constructed(&run, "Idleizer");
        assert_eq!(idleizer["args"], json!(["<BuildSlave>"]));
        assert_eq!(
            idleizer["kwargs"],
            json!({"max_idle_time": 7 * 3600, "max_disconnected_time": 3600})
        );
        let started: Vec<_> = run["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["call"].as_str().filter(|c| c.ends_with("setServiceParent")))
            .collect();
        assert_eq!(started, ["BuildSlave.setServiceParent", "Idleizer.setServiceParent"]);
    }
}

#[test]
fn idleizer_is_left_out_for_configured_names() {
    let renderer = MinijinjaRenderer::new(RendererConfig {
        default_template: BuiltinTemplate::Buildslave,
        no_idleizer: vec!["panda-".to_owned(), "tegra".to_owned(), "t-yosemite".to_owned()],
    });
    for (name, idleizer) in [
        ("panda-0123", false),
        ("tegra-042", false),
        ("t-yosemite-r7-001", false),
        ("pandaboard", true),
        ("bld-linux64-01", true),
    ] {
        let tac = renderer.render(&enabled(None, values(name, "/b", "p"))).unwrap();
        assert_eq!(tac.contains("idleizer.Idleizer("), idleizer, "{name}");
        assert_eq!(renderer.wants_idleizer(name), idleizer, "{name}");
    }
    // Only the buildslave template has an idleizer.
    let worker = renderer_with_idleizer_everywhere(BuiltinTemplate::BuildbotWorker);
    let tac = worker.render(&enabled(None, values("bld-01", "/b", "p"))).unwrap();
    assert!(!tac.contains("idleizer"));
}

fn renderer_with_idleizer_everywhere(default_template: BuiltinTemplate) -> MinijinjaRenderer {
    MinijinjaRenderer::new(RendererConfig {
        default_template,
        no_idleizer: Vec::new(),
    })
}

#[test]
fn buildbot_worker_tac_starts_a_worker() {
    let renderer = renderer(BuiltinTemplate::BuildbotWorker);
    let tac = renderer
        .render(&enabled(None, values("tst-01", "/builds/worker", "s3cret")))
        .unwrap();
    // What `buildbot-worker start` looks for before it runs the tac.
    assert!(tac.contains("Application('buildbot-worker')"));
    for python in pythons() {
        let run = run_tac(python, &tac);
        assert_eq!(
            run["events"][0],
            json!({"new": "Application", "args": ["buildbot-worker"], "kwargs": {}})
        );
        let worker = constructed(&run, "Worker");
        assert_eq!(
            worker["args"],
            json!([
                "bm01.build.example.com",
                9001,
                "tst-01",
                "s3cret",
                "/builds/worker",
                600
            ]),
            "{python}"
        );
        assert_eq!(
            worker["kwargs"],
            json!({"umask": 2, "maxdelay": 300, "numcpus": null, "allow_shutdown": "file"})
        );
        let events = run["events"].as_array().unwrap();
        let log = events.iter().find(|e| e["call"] == "LogFile.fromFullPath").unwrap();
        assert_eq!(log["args"], json!(["twistd.log"]));
        assert_eq!(log["kwargs"], json!({"rotateLength": 1_000_000, "maxRotatedFiles": 10}));
        assert!(events.iter().any(|e| e["call"] == "Worker.setServiceParent"));
    }
}

#[test]
fn a_stored_template_overrides_the_default() {
    for default in BuiltinTemplate::ALL {
        let tac = renderer(default)
            .render(&enabled(
                Some(stored("legacy", LEGACY_TEMPLATE)),
                values("tst-01", "/b", "p"),
            ))
            .unwrap();
        assert!(tac.contains("workername = 'tst-01'\n"));
        assert!(!tac.contains("idleizer"));
    }
}

#[test]
fn an_empty_stored_template_means_the_default_as_in_the_original() {
    let renderer = renderer(BuiltinTemplate::Buildslave);
    let slave = || values("tst-01", "/b", "p");
    assert_eq!(
        renderer.render(&enabled(Some(stored("empty", "")), slave())).unwrap(),
        renderer.render(&enabled(None, slave())).unwrap()
    );
}
