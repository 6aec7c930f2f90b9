//! Stored templates in both styles: what they may name, and the clear
//! errors for what they may not.

// Test helpers outside #[test] functions unwrap too: a panic is the report.
#![allow(clippy::unwrap_used)]

mod support;

use slavealloc_domain::{RenderError, TacRenderer};
use slavealloc_tac_minijinja::{validate_template, BuiltinTemplate, MinijinjaRenderer, RendererConfig};
use support::*;

fn render(text: &str) -> Result<String, RenderError> {
    MinijinjaRenderer::default().render(&enabled(
        Some(stored("custom", text)),
        values("tst-01", "/builds/slave", "s3cret"),
    ))
}

/// The rendered body, without the header.
fn body(text: &str) -> String {
    let tac = render(text).unwrap();
    let (_, body) = tac.split_once("\n\n").unwrap();
    body.to_owned()
}

fn unknown(placeholder: &str) -> RenderError {
    RenderError::UnknownPlaceholder {
        template: "custom".to_owned(),
        placeholder: placeholder.to_owned(),
    }
}

fn assert_invalid(text: &str, needle: &str) {
    match render(text) {
        Err(RenderError::Invalid { template, message }) => {
            assert_eq!(template, "custom");
            assert!(message.contains(needle), "{message:?} does not mention {needle:?}");
        }
        other => panic!("{text:?} gave {other:?}, want Invalid mentioning {needle:?}"),
    }
    // The API's check before storing agrees with rendering.
    assert!(
        matches!(validate_template(text), Err(RenderError::Invalid { .. })),
        "{text:?}"
    );
}

#[test]
fn percent_placeholders_work_as_in_python() {
    assert_eq!(
        body("a = %(slavename)r\nb = '%(basedir)s/x'\nc = %(port)d\nd = %(port)s\ne = %(port)r\nf = %(port)i\n100%%\n"),
        "a = 'tst-01'\nb = '/builds/slave/x'\nc = 9001\nd = 9001\ne = 9001\nf = 9001\n100%\n"
    );
    assert_eq!(
        body("h = %(buildmaster_host)r; p = %(passwd)r; g = %(gendate)r; n = %(genhost)r"),
        "h = 'bm01.build.example.com'; p = 's3cret'; g = 'Sun Nov  8 14:10:44 2026'; n = 'slavealloc.example.com'"
    );
    // No placeholder at all is a template too.
    assert_eq!(body("print('hi')\n"), "print('hi')\n");
}

#[test]
fn percent_style_keeps_python_dicts_with_placeholder_keys() {
    // `{%(` looks like the start of a minijinja tag but is a dict in Python.
    assert_eq!(body("d = {%(slavename)r: 1}\n"), "d = {'tst-01': 1}\n");
}

#[test]
fn minijinja_templates_work() {
    assert_eq!(
        body("{# comment #}h = {{ buildmaster_host }}\np = {{ port }}\n{% if port == 9001 %}x = {{ slavename|upper }}{% endif %}\n"),
        "h = 'bm01.build.example.com'\np = 9001\nx = 'TST-01'\n"
    );
    // Loops over literals and values work; there are no functions.
    assert_eq!(body("{% for i in [0, 1] %}{{ i }}{% endfor %}"), "01");
    assert_eq!(
        body("logs = {{ basedir ~ '/logs' }}\n"),
        "logs = '/builds/slave/logs'\n"
    );
    assert_eq!(render("{% for i in range(2) %}{% endfor %}"), Err(unknown("range")));
}

#[test]
fn unknown_placeholders_are_named() {
    assert_eq!(render("x = %(slave_name)r\n"), Err(unknown("%(slave_name)r")));
    assert_eq!(render("x = %(workername)s\n"), Err(unknown("%(workername)s")));
    assert_eq!(render("ok = %(port)d\nx = %(nope)x\n"), Err(unknown("%(nope)x")));
    assert_eq!(render("x = {{ workername }}\n"), Err(unknown("workername")));
    assert_eq!(render("{% if password %}x{% endif %}"), Err(unknown("password")));
    // The first in alphabetical order, whatever the set's order.
    assert_eq!(render("{{ zeta }}{{ alpha }}"), Err(unknown("alpha")));
    for text in ["x = %(slave_name)r\n", "{{ workername }}"] {
        assert!(matches!(
            validate_template(text),
            Err(RenderError::UnknownPlaceholder { template, .. }) if template == "(new template)"
        ));
    }
    let message = render("x = %(slave_name)r\n").unwrap_err().to_string();
    assert_eq!(
        message,
        "template \"custom\" uses unknown placeholder \"%(slave_name)r\""
    );
}

#[test]
fn malformed_percent_templates_are_invalid() {
    assert_invalid("x = 100%\n", "line 1");
    assert_invalid("ok\nx = '%s'\n", "line 2");
    assert_invalid("x = %(slavename", "never closed");
    assert_invalid("x = %(port)5d", "not supported");
    assert_invalid("x = %(slavename)d", "needs a number");
    assert_invalid("x = %(port)", "not supported");
}

#[test]
fn plain_s_refuses_values_that_could_leave_their_quotes() {
    for passwd in ["it's", "a\"b", "back\\slash", "new\nline", "nul\0"] {
        let result = MinijinjaRenderer::default().render(&enabled(
            Some(stored("custom", "passwd = '%(passwd)s'\n")),
            values("tst-01", "/b", passwd),
        ));
        match result {
            Err(RenderError::Invalid { message, .. }) => {
                assert!(message.contains("%(passwd)r"), "{message}");
                assert!(
                    !message.contains(passwd),
                    "the error must not show the password: {message}"
                );
            }
            other => panic!("{passwd:?}: {other:?}"),
        }
    }
    // Non-ASCII text is no danger inside quotes.
    let tac = MinijinjaRenderer::default()
        .render(&enabled(
            Some(stored("custom", "basedir = '%(basedir)s'\n")),
            values("tst-01", "/b/caf\u{e9}", "p"),
        ))
        .unwrap();
    assert!(tac.ends_with("basedir = '/b/caf\u{e9}'\n"));
}

#[test]
fn malformed_minijinja_templates_are_invalid() {
    assert_invalid("{% if port %}x", "syntax error");
    assert_invalid("{{ port + }}", "syntax error");
    assert_invalid("{% include 'nowhere' %}", "include");
    // A loop that never ends is cut short.
    let hundred = "x".repeat(100);
    assert_invalid(
        &format!("{{% for a in '{hundred}' %}}{{% for b in '{hundred}' %}}{{% for c in '{hundred}' %}}{{% endfor %}}{{% endfor %}}{{% endfor %}}"),
        "runs too long",
    );
    // Attributes of a known value are not placeholders, and strict
    // undefined behaviour refuses them instead of writing nothing.
    assert_invalid("{{ slavename.nope }}", "undefined");
    // Even where writing nothing would pass unnoticed.
    assert_invalid("{% if slavename.nope %}x = 1{% endif %}", "undefined");
    assert_invalid("{% for x in port.digits %}{% endfor %}", "undefined");
}

#[test]
fn mixing_styles_is_refused_rather_than_half_filled() {
    assert_invalid("{% if port %}x = %(slavename)r{% endif %}", "%(slavename)r");
}

#[test]
fn stored_template_errors_stop_the_render() {
    // Never an empty or partial tac.
    for text in ["x = %(nope)r", "{{ nope }}", "{% if %}"] {
        assert!(render(text).is_err(), "{text:?}");
    }
}

#[test]
fn validate_accepts_what_renders() {
    for text in [LEGACY_TEMPLATE, MINIJINJA_TEMPLATE, "", "plain text, no placeholders\n"] {
        assert_eq!(validate_template(text), Ok(()), "{text:?}");
    }
}

#[test]
fn configuration_reads_from_toml_style_values() {
    let config: RendererConfig = serde_json::from_str(r#"{"default_template": "buildbot-worker"}"#).unwrap();
    assert_eq!(config.default_template, BuiltinTemplate::BuildbotWorker);
    assert_eq!(config.no_idleizer, ["panda-", "tegra"]);
    let config: RendererConfig = serde_json::from_str(r#"{"no_idleizer": []}"#).unwrap();
    assert_eq!(config.default_template, BuiltinTemplate::Buildslave);
    assert!(config.no_idleizer.is_empty());
    for bad in [
        r#"{"default_template": "buildbot_worker"}"#,
        r#"{"default": "buildslave"}"#,
    ] {
        assert!(serde_json::from_str::<RendererConfig>(bad).is_err(), "{bad}");
    }
}

/// Asserts that storing `text` is refused and says `needle`.
fn refused_at_validation(text: &str, needle: &str) {
    match validate_template(text) {
        Err(RenderError::Invalid { message, .. }) => {
            assert!(
                message.contains(needle),
                "{text:?}: {message:?} does not mention {needle:?}"
            );
        }
        other => panic!("{text:?} gave {other:?}, want Invalid mentioning {needle:?}"),
    }
}

#[test]
fn templates_cannot_build_huge_strings_or_reach_other_code() {
    // The string-doubling bomb that aborted the daemon on an 800 MB
    // allocation, and its relatives.
    refused_at_validation(
        "{% set x = 'aaaaaaaa' %}{% for i in [1,2,3,4,5,6,7,8,9,10] %}{% set x = x ~ x %}{% endfor %}{{ x }}",
        "{% set %}",
    );
    refused_at_validation("{{ 'a' * 100000000 }}", "operator `*`");
    refused_at_validation("{{ basedir * 1000 }}", "operator `*`");
    refused_at_validation("{{ port ** 99 }}", "operator `**`");
    refused_at_validation(&format!("{{{{ basedir{} }}}}", " ~ basedir".repeat(17)), "more than 16");
    for statement in [
        "set x = 1",
        "macro m()",
        "call m()",
        "filter upper",
        "import 'x' as y",
        "extends 'x'",
        "block b",
        "with",
    ] {
        refused_at_validation(&format!("{{% {statement} %}}"), "is not allowed");
    }
    for filter in [
        "replace('a', basedir)",
        "indent(100000)",
        "center(100000000)",
        "join",
        "tojson",
    ] {
        refused_at_validation(&format!("{{{{ basedir|{filter} }}}}"), "filter");
    }
    // A template as long as a TEXT column is fine; longer is not.
    refused_at_validation(&"x".repeat(70_000), "longer than");
}

#[test]
fn templates_slow_or_huge_on_a_long_base_directory_are_refused_when_stored() {
    // Fine with a short base directory, tens of MiB with the longest one.
    let huge = "{% for c in basedir %}{{ basedir }}{% endfor %}";
    assert!(render(huge).is_ok(), "short values render");
    refused_at_validation(huge, "longer than");
    // The same in the original's placeholders.
    let legacy = "x = %(basedir)r\n".repeat(40);
    assert!(render(&legacy).is_ok());
    refused_at_validation(&legacy, "longer than");
    // A loop over the long value that writes little runs out of fuel.
    refused_at_validation(
        "{% for a in basedir %}{% for b in slavename %}{% endfor %}{% endfor %}",
        "runs too long",
    );
}
