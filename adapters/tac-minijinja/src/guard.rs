//! What keeps a stored minijinja template from hurting the daemon: an
//! allow-list of constructs checked on the template's tokens, an
//! allow-list environment, and an output buffer with a cap.
//!
//! Fuel alone bounds the number of instructions, not what one instruction
//! costs: `~`, `+` and `*` on strings double a string per instruction
//! (2^30 bytes after 30 of them), and a `{% set %}` block, a macro or a
//! recursive loop builds its output in memory, out of reach of the output
//! cap. So those are refused, and what is left costs at most
//! (fuel × longest value) and writes at most the cap.
//!
//! The token check relies on minijinja's `unstable_machinery` tokenizer
//! (pinned in the workspace's `Cargo.toml`: its API has no semver promise).

use std::io;

use minijinja::machinery::{Token, Tokenizer, WhitespaceConfig};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Template, Value};

use crate::Fill;

/// The statements a tac template may use. Not `macro`/`call` (they
/// capture output in memory), not a `set` block or `filter` block (same),
/// not `include`/`import`/`extends`/`from`/`block` (templates are
/// self-contained), not `autoescape`/`do`/`with`.
const STATEMENTS: [&str; 8] = ["if", "elif", "else", "endif", "for", "endfor", "set", "raw"];

/// The filters, tests and functions (`range` only) a tac may use: none builds a string (no
/// `replace`, `join`, `indent`, `string` — which would write a nested
/// list out in memory — nor `format`, ...); `lower`, `upper` and `trim`
/// take only a string.
pub(crate) fn allow_list(env: &mut Environment<'_>) {
    use minijinja::{filters, tests};
    // Over strings only (minijinja's own would write a list out first).
    env.add_filter("lower", |s: &str| s.to_lowercase());
    env.add_filter("upper", |s: &str| s.to_uppercase());
    env.add_filter("trim", |s: &str| s.trim().to_owned());
    env.add_filter("default", filters::default);
    env.add_filter("d", filters::default);
    env.add_filter("length", filters::length);
    env.add_filter("int", filters::int);
    env.add_filter("first", filters::first);
    env.add_filter("last", filters::last);
    // Lazy, and refuses more than 100,000 items; fuel bounds the loop.
    env.add_function("range", minijinja::functions::range);
    env.add_test("defined", tests::is_defined);
    env.add_test("undefined", tests::is_undefined);
    env.add_test("none", tests::is_none);
    env.add_test("string", tests::is_string);
    env.add_test("number", tests::is_number);
    env.add_test("odd", tests::is_odd);
    env.add_test("even", tests::is_even);
}

/// At most this many `~`/`+` in one `{{ ... }}`: each operand is a value
/// or a literal, so one output expression is at most 9 values long.
const MAX_CONCATENATIONS: usize = 8;

/// Refuses the constructs that can grow a value or the output without
/// bound, naming the first one and its line.
///
/// `~` and `+` are allowed only in a `{{ ... }}` whose operands are the
/// tac's values (`basedir`, ...) and literals, at most
/// [`MAX_CONCATENATIONS`] of them (`{{ basedir ~ '/logs' }}`): the result
/// goes straight to the capped output and can never feed another
/// concatenation, because `{% set %}` and `{% for %}` cannot bind a
/// concatenation (no `~` in statements) nor rebind the values' names.
///
/// # Errors
/// The message to show, e.g. `line 3: the operator * ... is not allowed ...`.
// `SyntaxConfig` is a unit struct unless minijinja's `custom_syntax`
// feature is on; `default()` compiles either way.
#[allow(clippy::default_constructed_unit_structs)]
pub(crate) fn refuse_unbounded(text: &str) -> Result<(), String> {
    let mut tokens = Tokenizer::new(
        text,
        "<template>",
        false,
        SyntaxConfig::default(),
        WhitespaceConfig::default(),
    );
    // Whether the previous token opened a `{% ... %}` block, so that the
    // next one is the statement's keyword.
    let mut statement_next = false;
    // Inside `{% set ... %}`: whether `=` was seen (a `set` block has none).
    let mut in_set: Option<(bool, u32)> = None;
    // Inside `{% for ... in`: the loop's targets.
    let mut in_for_targets = false;
    let mut in_statement = false;
    // The tokens of the current `{{ ... }}`.
    let mut expression: Option<Vec<Token<'_>>> = None;
    loop {
        let (token, span) = match tokens.next_token() {
            Ok(Some(next)) => next,
            Ok(None) => return Ok(()),
            // The parser already accepted the text; a tokenizer that
            // disagrees is refused rather than trusted.
            Err(e) => return Err(e.to_string()),
        };
        let line = span.start_line;
        let refuse = |what: String| Err(format!("line {line}: {what} is not allowed in a tac template"));
        if std::mem::take(&mut statement_next) {
            match token {
                Token::Ident(keyword) if STATEMENTS.contains(&keyword) => {
                    if keyword == "set" {
                        in_set = Some((false, line.into()));
                    }
                    in_for_targets = keyword == "for";
                }
                Token::Ident(keyword) => return refuse(format!("the statement {{% {keyword} %}}")),
                _ => return refuse("this statement".to_owned()),
            }
            continue;
        }
        if let Some((false, _)) = in_set {
            if let Token::Ident(name) = token {
                if Fill::NAMES.contains(&name) {
                    return refuse(format!("setting {name}"));
                }
            }
        }
        if in_for_targets {
            match token {
                Token::Ident("in") => in_for_targets = false,
                Token::Ident(name) if Fill::NAMES.contains(&name) => {
                    return refuse(format!("a loop variable named {name}"));
                }
                _ => {}
            }
        }
        match token {
            Token::BlockStart => {
                statement_next = true;
                in_statement = true;
            }
            Token::BlockEnd => {
                in_statement = false;
                in_for_targets = false;
                if let Some((false, set_line)) = in_set.take() {
                    return Err(format!(
                        "line {set_line}: a {{% set %}} block (without =) is not allowed in a tac template: \
                         it builds its text in memory"
                    ));
                }
            }
            Token::Assign => {
                if let Some((seen, _)) = in_set.as_mut() {
                    *seen = true;
                }
            }
            Token::VariableStart => expression = Some(Vec::new()),
            Token::VariableEnd => {
                if let Some(tokens) = expression.take() {
                    check_concatenation(&tokens).map_err(|what| format!("line {line}: {what}"))?;
                }
            }
            Token::Tilde | Token::Plus if in_statement => {
                return refuse("~ or + in a statement (it could build an ever longer value)".to_owned());
            }
            Token::Mul => return refuse("the operator * (it repeats strings)".to_owned()),
            Token::Pow => return refuse("the operator **".to_owned()),
            // `{% for ... recursive %}` and its `loop(...)` capture output.
            Token::Ident("recursive") => return refuse("a recursive loop".to_owned()),
            _ => {}
        }
        if let Some(tokens) = expression.as_mut() {
            if !matches!(token, Token::VariableStart) {
                tokens.push(token);
            }
        }
    }
}

/// A `{{ ... }}` with `~` or `+` may hold only values, literals and
/// parentheses, and at most [`MAX_CONCATENATIONS`] operators.
fn check_concatenation(tokens: &[Token<'_>]) -> Result<(), String> {
    let operators = tokens
        .iter()
        .filter(|t| matches!(t, Token::Tilde | Token::Plus))
        .count();
    if operators == 0 {
        return Ok(());
    }
    if operators > MAX_CONCATENATIONS {
        return Err(format!(
            "{operators} ~ or + in one expression (at most {MAX_CONCATENATIONS}) is not allowed in a tac template"
        ));
    }
    for token in tokens {
        match token {
            Token::Ident(name) if Fill::NAMES.contains(name) => {}
            Token::Str(_)
            | Token::String(_)
            | Token::Int(_)
            | Token::Tilde
            | Token::Plus
            | Token::ParenOpen
            | Token::ParenClose => {}
            other => {
                return Err(format!(
                    "{other:?} next to ~ or + is not allowed in a tac template: concatenate only the tac's values \
                     ({}) and literals",
                    Fill::NAMES.join(", ")
                ))
            }
        }
    }
    Ok(())
}

/// Renders `template` into a buffer of at most `cap` bytes.
///
/// # Errors
/// minijinja's error; [`minijinja::ErrorKind::WriteFailure`] when the
/// output would pass the cap (the render stops there, it never builds the
/// whole output first).
pub(crate) fn render_capped(
    template: &Template<'_, '_>,
    context: Value,
    cap: usize,
) -> Result<String, minijinja::Error> {
    let mut out = Capped {
        buf: Vec::with_capacity(4096),
        cap,
    };
    template.render_captured_to(context, &mut out)?;
    String::from_utf8(out.buf).map_err(|_| {
        minijinja::Error::new(
            minijinja::ErrorKind::BadSerialization,
            "the template wrote bytes that are not UTF-8",
        )
    })
}

/// A `Vec` that refuses to grow past `cap` bytes.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            return Err(io::Error::other("the tac is too long"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        refuse_unbounded(text).expect_err(text)
    }

    #[test]
    fn every_amplifying_construct_is_refused() {
        for (text, says) in [
            ("{% set a = basedir ~ '' %}", "~"),
            ("{% set a = basedir + '' %}", "+"),
            ("{% if (basedir ~ basedir) %}{% endif %}", "~"),
            ("{{ a ~ a }}", "Ident(\"a\")"),
            ("{{ [basedir, basedir] ~ basedir }}", "BracketOpen"),
            ("{{ basedir|default('x') ~ basedir }}", "Pipe"),
            ("{{ a~a~a~a~a~a~a~a~a~a }}", "at most 8"),
            ("{% set basedir = [basedir, basedir] %}", "setting basedir"),
            (
                "{% for basedir in [basedir, basedir] %}{% endfor %}",
                "loop variable named basedir",
            ),
            ("{{ basedir * 1000 }}", "*"),
            ("{{ 2 ** 64 }}", "**"),
            ("{% macro m() %}x{% endmacro %}", "macro"),
            ("{% call m() %}x{% endcall %}", "call"),
            ("{% set a %}{{ basedir }}{% endset %}", "set"),
            ("{% filter upper %}x{% endfilter %}", "filter"),
            ("{% include 'buildslave' %}", "include"),
            ("{% import 'x' as y %}", "import"),
            ("{% extends 'buildslave' %}", "extends"),
            ("{% for c in basedir recursive %}{{ loop(c) }}{% endfor %}", "recursive"),
            ("{% with a = 1 %}{% endwith %}", "with"),
        ] {
            let message = refused(text);
            assert!(message.contains(says), "{text}: {message}");
            assert!(message.starts_with("line 1:"), "{message}");
        }
    }

    #[test]
    fn what_a_tac_needs_passes() {
        for text in [
            "x = {{ basedir }}\n",
            "{% if slavename is defined and port > 1 %}{{ port - 1 }}{% else %}{{ basedir|default('') }}{% endif %}",
            "logdir = {{ basedir ~ '/logs' }}\nx = {{ (slavename ~ '-') ~ port + 1 }}",
            "{% for c in [1, 2] %}{{ loop.index }}{% endfor %}",
            "{% set a = basedir %}{{ a }}",
            "{% raw %}{{ a ~ b }}{% endraw %}",
            "# a ~ b * c + d in Python code\n{{ basedir }}",
        ] {
            refuse_unbounded(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn the_output_stops_at_the_cap() {
        let mut env = Environment::empty();
        env.add_template("t", "{% for c in s %}{{ s }}{% endfor %}").unwrap();
        let s = "y".repeat(1000);
        let template = env.get_template("t").unwrap();
        let err = render_capped(&template, minijinja::context! { s => s }, 10_000).unwrap_err();
        assert_eq!(err.kind(), minijinja::ErrorKind::WriteFailure);
        let short = render_capped(&template, minijinja::context! { s => "ab" }, 10_000).unwrap();
        assert_eq!(short, "abab");
    }
}
