//! Values as Python source: the only way a value reaches a tac.

use std::fmt::Write as _;

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// Writes `s` as a Python string literal that evaluates to `s` under both
/// Python 2 and Python 3, using only printable ASCII.
///
/// The quotes are chosen as Python's `repr` chooses them. Output is ASCII
/// because Python 2 rejects a source file holding any other byte unless it
/// declares an encoding, and the tac's first two lines are taken by the
/// header. A string with non-ASCII characters therefore gets the `u` prefix:
/// without it Python 2 would read `\u20ac` as six characters (Python 3
/// accepts and ignores the prefix).
///
/// ```
/// use slavealloc_tac_minijinja::python_str_literal;
/// assert_eq!(python_str_literal("it's"), r#""it's""#);
/// assert_eq!(python_str_literal("a\nb'\"\\"), r#"'a\nb\'"\\'"#);
/// assert_eq!(python_str_literal("caf\u{e9} \u{20ac}"), r"u'caf\xe9 \u20ac'");
/// ```
pub fn python_str_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    push_str_literal(&mut out, s);
    out
}

fn push_str_literal(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    if !s.is_ascii() {
        out.push('u');
    }
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            // Writing to a String cannot fail.
            c if u32::from(c) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if u32::from(c) < 0x1_0000 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push(quote);
}

/// The minijinja formatter: every `{{ ... }}` becomes a Python literal, so a
/// template cannot be made to emit a value as code.
pub(crate) fn format_value(out: &mut minijinja::Output, value: &Value) -> Result<(), Error> {
    let mut text = String::new();
    push_value(&mut text, value, 0)?;
    out.write_str(&text).map_err(Error::from)
}

// Deeper than any tac needs; stops a self-referencing value from recursing
// without end.
const MAX_DEPTH: usize = 32;

fn push_value(out: &mut String, value: &Value, depth: usize) -> Result<(), Error> {
    // A list of lists of lists... of long strings is small in memory (the
    // items are shared) but huge written out: stop at the tac's cap.
    if out.len() > crate::MAX_TAC_BYTES {
        return Err(Error::new(ErrorKind::WriteFailure, "value too long for a tac"));
    }
    if depth > MAX_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "value nested too deeply for a Python literal",
        ));
    }
    match value.kind() {
        ValueKind::Undefined => {
            return Err(Error::new(
                ErrorKind::UndefinedError,
                "an undefined value cannot be written to a tac",
            ));
        }
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => push_number(out, value)?,
        ValueKind::String => push_str_literal(out, value.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_value(out, &item, depth + 1)?;
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_value(out, &key, depth + 1)?;
                out.push_str(": ");
                push_value(out, &value.get_item(&key)?, depth + 1)?;
            }
            out.push('}');
        }
        kind => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("a {kind} value cannot be written as a Python literal"),
            ));
        }
    }
    Ok(())
}

fn push_number(out: &mut String, value: &Value) -> Result<(), Error> {
    if value.is_integer() {
        let n = i128::try_from(value.clone())?;
        let _ = write!(out, "{n}");
        return Ok(());
    }
    let f = f64::try_from(value.clone())?;
    if !f.is_finite() {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{f} has no Python literal"),
        ));
    }
    // Debug keeps a decimal point or exponent ("1.0", "1e100"), so Python
    // reads a float back, never an int.
    let _ = write!(out, "{f:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_python_repr() {
        assert_eq!(python_str_literal(""), "''");
        assert_eq!(python_str_literal("abc"), "'abc'");
        assert_eq!(python_str_literal("a'b"), "\"a'b\"");
        assert_eq!(python_str_literal("a\"b"), "'a\"b'");
        assert_eq!(python_str_literal("a'\"b"), "'a\\'\"b'");
        assert_eq!(python_str_literal("'''"), "\"'''\"");
    }

    #[test]
    fn escapes_everything_but_printable_ascii() {
        assert_eq!(python_str_literal("\0\x01\x1f\x7f"), "'\\x00\\x01\\x1f\\x7f'");
        assert_eq!(python_str_literal("\t\r\n\\"), "'\\t\\r\\n\\\\'");
        assert_eq!(
            python_str_literal("\u{85}\u{2028}\u{1f600}"),
            "u'\\x85\\u2028\\U0001f600'"
        );
        assert!(python_str_literal("\u{10ffff}").is_ascii());
    }

    #[test]
    fn formats_minijinja_values() {
        let fmt = |v: Value| {
            let mut s = String::new();
            push_value(&mut s, &v, 0).map(|()| s)
        };
        assert_eq!(fmt(Value::from(9001)).unwrap(), "9001");
        assert_eq!(fmt(Value::from(-3)).unwrap(), "-3");
        assert_eq!(fmt(Value::from(1.0)).unwrap(), "1.0");
        assert_eq!(fmt(Value::from(true)).unwrap(), "True");
        assert_eq!(fmt(Value::from(())).unwrap(), "None");
        assert_eq!(fmt(Value::from_safe_string("x'".into())).unwrap(), "\"x'\"");
        assert_eq!(fmt(Value::from(vec!["a", "b"])).unwrap(), "['a', 'b']");
        assert!(fmt(Value::UNDEFINED).is_err());
        assert!(fmt(Value::from(f64::NAN)).is_err());
    }
}
