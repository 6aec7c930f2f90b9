//! Values that try to break out of their literal: whatever a name, basedir
//! or password holds, the tac runs only its template's code and hands the
//! worker exactly the stored values. Judged by Python itself (`ast`, and a
//! run against stand-in modules), under Python 3 and, when present, 2.

// Test helpers outside #[test] functions unwrap too: a panic is the report.
#![allow(clippy::unwrap_used)]

mod support;

use proptest::prelude::*;
use serde_json::json;
use slavealloc_domain::ports::TacValues;
use slavealloc_domain::{TacRenderer, TacTemplate};
use slavealloc_tac_minijinja::{BuiltinTemplate, MinijinjaRenderer, RendererConfig};
use support::*;

/// Each template under test, with the module-level variables that must
/// hold the slave's name, basedir and password.
fn templates() -> Vec<(&'static str, BuiltinTemplate, Option<TacTemplate>, &'static str)> {
    vec![
        ("buildslave", BuiltinTemplate::Buildslave, None, "slavename"),
        ("buildbot-worker", BuiltinTemplate::BuildbotWorker, None, "workername"),
        (
            "legacy %-template",
            BuiltinTemplate::Buildslave,
            Some(stored("legacy", LEGACY_TEMPLATE)),
            "workername",
        ),
        (
            "minijinja template",
            BuiltinTemplate::Buildslave,
            Some(stored("jinja", MINIJINJA_TEMPLATE)),
            "workername",
        ),
    ]
}

/// The cases `check_tac.py` judges for one set of values.
fn cases(label: &str, v: &TacValues) -> Vec<Case> {
    let harmless = TacValues {
        port: v.port,
        ..values("x", "x", "x")
    };
    templates()
        .into_iter()
        .map(|(name, default_template, template, name_var)| {
            // The idleizer depends on the name; keep it the same for both.
            let renderer = MinijinjaRenderer::new(RendererConfig {
                default_template,
                no_idleizer: Vec::new(),
            });
            let render = |v: &TacValues| renderer.render(&enabled(template.clone(), v.clone())).unwrap();
            Case {
                name: format!("{name} with {label}"),
                tac: render(v),
                reference: render(&harmless),
                expected: json!({
                    "buildmaster_host": v.buildmaster_host,
                    "port": v.port,
                    name_var: v.slavename,
                    "passwd": v.passwd,
                    "basedir": v.basedir,
                }),
            }
        })
        .collect()
}

const HOSTILE: &[&str] = &[
    "'",
    "\"",
    "\\",
    "\n",
    "'''",
    "\"\"\"",
    "x'; import os; os.system('touch /tmp/pwned'); y='",
    "x\"; import os; os.system(\"touch /tmp/pwned\"); y=\"",
    "'''\nimport os\nos.system('touch /tmp/pwned')\n'''",
    "\"\"\"\nimport os\n\"\"\"",
    "trailing backslash\\",
    "\\'",
    "\\\"",
    "\\x41\\u0041\\N{BULLET}",
    "line\r\nbreaks\rand\x0bvertical\x0cfeeds",
    "\t\x01\x1b[31m\x7f",
    "\u{85}\u{2028}\u{2029}",
    "caf\u{e9} \u{20ac} \u{1f600} \u{10ffff}",
    "# a comment?",
    "%(passwd)r %s %% {{ passwd }} {% if x %}",
    "{{ 7 * 7 }}",
    "",
];

#[test]
fn hostile_values_stay_data() {
    let mut all = Vec::new();
    for (i, hostile) in HOSTILE.iter().enumerate() {
        let v = TacValues {
            buildmaster_host: format!("bm{i}{hostile}"),
            port: 9001,
            slavename: format!("{hostile}name"),
            basedir: format!("/builds/{hostile}"),
            passwd: hostile.to_string(),
        };
        all.extend(cases(&format!("value {hostile:?}"), &v));
    }
    check_tacs(&all).unwrap();
}

#[test]
fn hostile_values_reach_the_worker_unchanged() {
    let hostile = "'''\\\"\n\u{e9}\u{1f600}%(passwd)r{{ passwd }}";
    let v = TacValues {
        buildmaster_host: "bm01.example.com".to_owned(),
        port: 9001,
        slavename: format!("n{hostile}"),
        basedir: format!("/b{hostile}"),
        passwd: format!("p{hostile}"),
    };
    for (name, default_template, template, _) in templates() {
        let renderer = MinijinjaRenderer::new(RendererConfig {
            default_template,
            no_idleizer: Vec::new(),
        });
        let tac = renderer.render(&enabled(template, v.clone())).unwrap();
        let class = if name == "buildslave" { "BuildSlave" } else { "Worker" };
        for python in pythons() {
            let run = run_tac(python, &tac);
            let events = run["events"].as_array().unwrap();
            let made = events.iter().find(|e| e["new"] == class).unwrap();
            assert_eq!(
                made["args"].as_array().unwrap()[..5],
                [
                    json!(v.buildmaster_host),
                    json!(v.port),
                    json!(v.slavename),
                    json!(v.passwd),
                    json!(v.basedir)
                ],
                "{name} under {python}"
            );
        }
    }
}

/// Strings built mostly from the characters that end or escape literals.
fn nasty() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("'".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("\n".to_owned()),
        Just("\r".to_owned()),
        Just("'''".to_owned()),
        Just("\"\"\"".to_owned()),
        Just("%(passwd)r".to_owned()),
        Just("{{".to_owned()),
        "[a-z0-9 #;()=]{1,4}",
        "[\\x00-\\x1f\\x7f]",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat())
}

proptest! {
    // Each case starts the interpreters once; 48 cases cover the pieces'
    // combinations well without making the suite slow.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_values_stay_data(
        host in nasty(), name in nasty(), basedir in nasty(), passwd in nasty(), port in any::<i32>()
    ) {
        let v = TacValues { buildmaster_host: host, port, slavename: name, basedir, passwd };
        let result = check_tacs(&cases("random values", &v));
        prop_assert!(result.is_ok(), "{:?}\n{}", v, result.unwrap_err());
    }
}
