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
    // Globals are not placeholders.
    assert_eq!(body("{% for i in range(2) %}{{ i }}{% endfor %}"), "01");
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
    // Templates are self-contained: no include, import or extends.
    assert_invalid("{% include 'nowhere' %}", "include");
    // A loop that never ends is cut short.
    assert_invalid(
        "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
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

/// The template that aborted the daemon on an 800 MB allocation: each
/// `set` doubles the string.
fn doubling_bomb() -> String {
    let mut text = String::from("{% set a = basedir %}");
    for _ in 0..40 {
        text.push_str("{% set a = a ~ a %}");
    }
    text.push_str("x = {{ a|length }}\n");
    text
}

/// Quick on a short basedir, slow on a long one: every iteration does work
/// proportional to the basedir, and there is one iteration per character.
fn slow_on_a_long_basedir() -> String {
    "{% for c in basedir %}{% if basedir|lower == basedir|upper %}{% endif %}{% endfor %}x = 1\n".to_owned()
}

#[test]
fn the_doubling_bomb_is_refused_when_stored_and_when_rendered() {
    let err = validate_template(&doubling_bomb()).unwrap_err();
    assert!(
        matches!(&err, RenderError::Invalid { message, .. } if message.contains('~')),
        "{err:?}"
    );
    assert_invalid(&doubling_bomb(), "~");
    // Without `set`: one long expression, or nested lists written out.
    let long_concat = format!("{{{{ basedir{} }}}}", " ~ basedir".repeat(100));
    assert_invalid(&long_concat, "at most 8");
    let mut lists = String::from("{% set a = [slavename, slavename] %}");
    for i in 0..40 {
        lists.push_str(&format!("{{% set a{i} = [a, a] %}}{{% set a = a{i} %}}"));
    }
    lists.push_str("{{ a }}");
    assert!(validate_template(&lists).is_err());
    assert!(render(&lists).is_err());
}

#[test]
fn a_template_slow_on_a_long_basedir_is_refused_when_stored() {
    let text = slow_on_a_long_basedir();
    // Harmless with the short sample basedir...
    render(&text).unwrap();
    // ...refused with 64 KiB values (out of fuel or over the time budget).
    let err = validate_template(&text).unwrap_err();
    assert!(
        matches!(&err, RenderError::Invalid { message, .. } if message.contains("64 KiB")),
        "{err:?}"
    );
}

#[test]
fn the_template_and_the_output_are_capped() {
    let huge = format!("x = 1\n#{}\n", "y".repeat(slavealloc_tac_minijinja::MAX_TEMPLATE_BYTES));
    assert_invalid(&huge, "bytes long");
    // A loop that writes the basedir 100,000 times stops at the cap.
    let mut values = values("tst-01", &"/b".repeat(10_000), "pw");
    values.port = 1;
    let writes = "{% for c in basedir %}{% for d in basedir %}{{ basedir }}{% endfor %}{% endfor %}";
    let err = MinijinjaRenderer::default()
        .render(&enabled(Some(stored("custom", writes)), values.clone()))
        .unwrap_err();
    assert!(
        matches!(&err, RenderError::Invalid { message, .. } if message.contains("longer than")),
        "{err:?}"
    );
    // The legacy `%` path too.
    let percent = "%(basedir)r".repeat(5_000);
    let err = MinijinjaRenderer::default()
        .render(&enabled(Some(stored("custom", &percent)), values))
        .unwrap_err();
    assert!(
        matches!(&err, RenderError::Invalid { message, .. } if message.contains("longer than")),
        "{err:?}"
    );
}

#[test]
fn only_allow_listed_filters_and_functions_exist() {
    for text in [
        "{{ basedir|replace('', basedir) }}",
        "{{ [basedir]|join(basedir) }}",
        "{{ dict(a=basedir) }}",
        "{{ namespace() }}",
        "{{ basedir|indent(100000) }}",
        "{{ basedir|string }}",
    ] {
        assert!(validate_template(text).is_err(), "{text}");
    }
    assert_eq!(
        body("{{ slavename|upper }} {{ basedir|length }} {{ passwd|default('') }}"),
        "'TST-01' 13 's3cret'"
    );
}
