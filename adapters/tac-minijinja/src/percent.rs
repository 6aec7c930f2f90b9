//! The original's template language: Python's `template % values`, which
//! databases written by the original slavealloc still hold.
//!
//! Only what a `%` with a dict of values means is supported: `%(name)r`,
//! `%(name)s`, `%(name)d` / `%(name)i` and `%%`. Anything else (flags,
//! widths, a `%` without a name) is refused rather than guessed at.

use slavealloc_domain::RenderError;

use crate::literal::python_str_literal;
use crate::Fill;

/// Whether `text` is written in minijinja rather than in `%` placeholders:
/// it holds a minijinja tag. `{%(` does not count, because Python code
/// may write a dict as `{%(name)r: ...}` and minijinja has no such tag.
pub(crate) fn is_minijinja(text: &str) -> bool {
    text.contains("{{") || text.contains("{#") || text.match_indices("{%").any(|(i, _)| !text[i + 2..].starts_with('('))
}

/// The first `%(name)<conversion>` in `text` that names a value, if any:
/// a minijinja template holding one is almost surely a legacy template that
/// happens to contain a minijinja tag, and would otherwise be written out
/// with its placeholders unfilled.
pub(crate) fn first_known_directive(text: &str) -> Option<&str> {
    text.match_indices("%(").find_map(|(i, _)| {
        let rest = &text[i + 2..];
        let close = rest.find(')')?;
        let conversion = rest[close + 1..].chars().next()?;
        (Fill::NAMES.contains(&&rest[..close]) && matches!(conversion, 'r' | 's' | 'd' | 'i'))
            .then(|| &text[i..i + 2 + close + 2])
    })
}

/// Substitutes `fill` into `text` as Python's `text % values` would, with
/// `%(name)r` written as a Python literal that both Python 2 and 3 read
/// back.
///
/// `%(name)s` writes the value's text unquoted, as the original did. Since
/// that text lands in code (usually inside quotes the template wrote), a
/// string value that could end a string literal or a line — one holding a
/// quote, a backslash or a control character — is refused.
///
/// The tac may be at most `cap` bytes: with at most a 64 KiB template and
/// values from the database this is bounded anyway (each placeholder takes
/// at least 5 bytes of template), but a placeholder-dense template over
/// long values could still reach hundreds of MiB, so the output is checked
/// as it grows.
pub(crate) fn substitute(template: &str, text: &str, fill: &Fill<'_>, cap: usize) -> Result<String, RenderError> {
    let invalid = |offset: usize, message: String| RenderError::Invalid {
        template: template.to_owned(),
        message: format!("line {}: {message}", line_of(text, offset)),
    };
    let mut out = String::with_capacity(text.len() + 256);
    let mut done = 0;
    while let Some(found) = text[done..].find('%') {
        let start = done + found;
        out.push_str(&text[done..start]);
        let after = &text[start + 1..];
        if after.starts_with('%') {
            out.push('%');
            done = start + 2;
            continue;
        }
        let Some(key_and_rest) = after.strip_prefix('(') else {
            let shown: String = text[start..].chars().take(2).collect();
            return Err(invalid(
                start,
                format!("{shown:?} is not a placeholder; write %(name)r or %(name)s, and %% for a percent sign"),
            ));
        };
        // Python matches nested parentheses in the key.
        let mut depth = 1;
        let Some(key_len) = key_and_rest.char_indices().find_map(|(i, c)| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            (depth == 0).then_some(i)
        }) else {
            return Err(invalid(start, "a %( placeholder is never closed".to_owned()));
        };
        let key = &key_and_rest[..key_len];
        let conversion = key_and_rest[key_len + 1..].chars().next();
        let directive_len = 2 + key_len + 1 + conversion.filter(char::is_ascii_alphabetic).map_or(0, char::len_utf8);
        let directive = &text[start..start + directive_len];
        let Some(value) = fill.get(key) else {
            return Err(RenderError::UnknownPlaceholder {
                template: template.to_owned(),
                placeholder: directive.to_owned(),
            });
        };
        match (conversion, value) {
            (Some('r'), Value::Str(s)) => out.push_str(&python_str_literal(s)),
            (Some('s'), Value::Str(s)) => {
                if let Some(bad) = s.chars().find(|&c| matches!(c, '\'' | '"' | '\\') || c.is_control()) {
                    return Err(invalid(
                        start,
                        format!(
                            "{directive} would write the value of {key} unquoted into the tac, and it holds {bad:?}; \
                             use %({key})r"
                        ),
                    ));
                }
                out.push_str(s);
            }
            (Some('r' | 's' | 'd' | 'i'), Value::Int(n)) => out.push_str(&n.to_string()),
            (Some('d' | 'i'), Value::Str(_)) => {
                return Err(invalid(
                    start,
                    format!("{directive} needs a number, but {key} is a string"),
                ));
            }
            _ => {
                let shown = match conversion {
                    Some(c) if !c.is_ascii_alphabetic() => format!("{directive}{c}"),
                    _ => directive.to_owned(),
                };
                return Err(invalid(
                    start,
                    format!("{shown:?} is not supported; write %({key})r, %({key})s or %({key})d"),
                ));
            }
        }
        done = start + directive_len;
        if out.len() > cap {
            return Err(invalid(start, format!("the tac would be longer than {cap} bytes")));
        }
    }
    out.push_str(&text[done..]);
    if out.len() > cap {
        return Err(invalid(text.len(), format!("the tac would be longer than {cap} bytes")));
    }
    Ok(out)
}

/// A value to substitute.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Str(&'a str),
    Int(i32),
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}
