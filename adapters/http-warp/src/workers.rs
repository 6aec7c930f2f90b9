//! `GET /api/masters/<name>/workers`: the workers a Buildbot master
//! accepts, each with its password, for the master's `master.cfg` to load
//! at every (re)config (`contrib/slavealloc_workers.py` does that).
//!
//! `<name>` is the master's nickname, percent-decoded; a purely numeric
//! segment is its masterid, as in the other `/api/masters` routes. Which
//! slaves are listed, and with which password, is the domain's
//! ([`slavealloc_domain::workers`]): the same rule that writes the tacs.
//!
//! The answer holds every password of a pool, so only a token with the
//! `admin` or `master` scope reads it ([`Identity::reads_worker_lists`]);
//! without tokens it is refused, unlike the other reads.
//!
//! Two formats (`?format=`):
//! - `json` (the default): `{"master", "masterid", "pool", "workers":
//!   [{"name", "password", "slaveid", "locked"}], "missing_password": [...]}`;
//! - `python`: `text/x-python`, assignments whose values are Python
//!   literals, ASCII only (see [`python_source`]), for a master.cfg that
//!   reads them with `ast.literal_eval`.

use std::fmt::Write as _;
use std::sync::Arc;

use slavealloc_domain::{MasterKey, WorkerList};
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

use crate::auth::Identity;
use crate::handlers::Caller;
use crate::models::{self, ApiError};
use crate::AppState;

/// The formats `?format=` takes, as named in messages.
pub const FORMATS: &str = "json or python";

/// The content type of `?format=python`.
pub const PYTHON_CONTENT_TYPE: &str = "text/x-python; charset=utf-8";

/// What `?format=` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Python,
}

/// `GET /api/masters/<name>/workers[?format=json|python]`: 200 with the
/// list; 401 without a valid token while tokens are on; 403 for a token
/// of another scope, or when tokens are off; 400 for a bad query or
/// name; 404 when no master is so named; 503 while the database is
/// unreachable.
pub async fn master_workers(state: Arc<AppState>, segment: String, query: String, caller: Caller) -> Response {
    let identity = state.identify(&caller);
    let result = async {
        may_read(&identity)?;
        let format = format(&query)?;
        let name = percent_decode(&segment)
            .ok_or_else(|| ApiError::bad_request("the master's name is not percent-encoded UTF-8"))?;
        let missing = ApiError::new(StatusCode::NOT_FOUND, format!("no master is named {name:?}"));
        let inventory = state.services.inventory.clone();
        let list = state
            .db(async move {
                match MasterKey::parse(&name) {
                    Some(key) => inventory.worker_list(key).await,
                    None => Ok(None),
                }
            })
            .await
            .map_err(|e| ApiError::from_store(&e))?
            .ok_or(missing)?;
        Ok::<_, ApiError>((format, list))
    }
    .await;
    let (format, list) = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(
                master = %segment,
                who = identity.name(),
                peer = %caller.client.map(|ip| ip.to_string()).unwrap_or_default(),
                status = e.status.as_u16(),
                "worker list refused"
            );
            return e.into_json();
        }
    };
    tracing::info!(
        master = %list.master,
        who = identity.name(),
        peer = %caller.client.map(|ip| ip.to_string()).unwrap_or_default(),
        workers = list.workers.len(),
        "worker list"
    );
    if !list.missing_password.is_empty() {
        // They cannot boot either (their tac needs the password): worth an
        // operator's attention whenever a master loads its list.
        tracing::warn!(master = %list.master, slaves = ?list.missing_password, "slaves without a password row");
    }
    match format {
        Format::Json => models::json(StatusCode::OK, &list),
        Format::Python => {
            let mut r = warp::reply::with_status(python_source(&list), StatusCode::OK).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(PYTHON_CONTENT_TYPE));
            r
        }
    }
}

/// Admin and master tokens only: the list holds passwords.
fn may_read(identity: &Identity) -> Result<(), ApiError> {
    match identity {
        _ if identity.reads_worker_lists() => Ok(()),
        Identity::Anonymous => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "worker lists need an Authorization: Bearer <token> header with a token of admin or master scope",
        )),
        Identity::Open(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "worker lists hold passwords: this endpoint needs a token with admin or master scope, \
             and no tokens are configured (see [tokens] in the configuration)",
        )),
        Identity::Token(name, scope) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token {name:?} has the {} scope; worker lists need a token with admin or master scope",
                scope.name()
            ),
        )),
    }
}

/// The `format` of the query; every other key is refused, so that a typo
/// (`?fromat=python`) is not silently answered in JSON.
fn format(query: &str) -> Result<Format, ApiError> {
    let mut format = None;
    let mut unknown = Vec::new();
    for (k, v) in models::query_pairs(query)? {
        if k != "format" {
            unknown.push(format!("{k:?}"));
            continue;
        }
        if format.is_some() {
            return Err(ApiError::bad_request("format: given more than once"));
        }
        format = Some(match v.as_str() {
            "json" => Format::Json,
            "python" => Format::Python,
            _ => return Err(ApiError::bad_request(format!("format: must be {FORMATS}, not {v:?}"))),
        });
    }
    if !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter(s) {}: this endpoint takes only format ({FORMATS})",
            unknown.join(", ")
        )));
    }
    Ok(format.unwrap_or(Format::Json))
}

/// Decodes `%XX` escapes of a path segment (warp hands segments over
/// encoded); `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The list as Python source: a comment, then one assignment per line
/// group, every value a Python literal (`MASTER`, `MASTERID`, `POOL`,
/// `WORKERS` as `(name, password)` tuples, `MISSING_PASSWORD`). No value
/// from the database appears outside a string literal, so each
/// assignment's value can be read with `ast.literal_eval`.
pub fn python_source(list: &WorkerList) -> String {
    let mut out = String::from(
        "# The workers this Buildbot master accepts, generated by slavealloc\n\
         # (GET /api/masters/<name>/workers?format=python). Every value is a\n\
         # Python literal: read each with ast.literal_eval; never exec this file.\n",
    );
    let _ = writeln!(out, "MASTER = {}", python_str(&list.master));
    let _ = writeln!(out, "MASTERID = {}", list.masterid);
    let _ = writeln!(out, "POOL = {}", python_str(&list.pool));
    out.push_str("WORKERS = [\n");
    for w in &list.workers {
        let _ = writeln!(out, "    ({}, {}),", python_str(&w.name), python_str(&w.password));
    }
    out.push_str("]\nMISSING_PASSWORD = [\n");
    for name in &list.missing_password {
        let _ = writeln!(out, "    {},", python_str(name));
    }
    out.push_str("]\n");
    out
}

/// `s` as a single-quoted Python 3 string literal in ASCII: backslash,
/// quote and control characters escaped, everything beyond ASCII as
/// `\xNN`, `\uNNNN` or `\UNNNNNNNN` (what Python's `ascii()` writes), so
/// the source reads the same whatever encoding its reader assumes.
pub fn python_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
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
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_become_ascii_python_literals() {
        assert_eq!(python_str("plain"), "'plain'");
        assert_eq!(python_str(r#"p@ss'word"\"#), r#"'p@ss\'word"\\'"#);
        assert_eq!(python_str("a\nb\r\t\u{0}\u{7f}"), r"'a\nb\r\t\x00\x7f'");
        assert_eq!(python_str("é€😀"), r"'\xe9\u20ac\U0001f600'");
        assert!(python_str("\u{2028}").is_ascii());
    }

    #[test]
    fn only_format_is_accepted() {
        assert_eq!(format(""), Ok(Format::Json));
        assert_eq!(format("format=json"), Ok(Format::Json));
        assert_eq!(format("format=python"), Ok(Format::Python));
        let bad = format("format=xml").unwrap_err();
        assert!(bad.message.contains("json or python"), "{}", bad.message);
        let twice = format("format=json&format=python").unwrap_err();
        assert_eq!(twice.status, StatusCode::BAD_REQUEST);
        let unknown = format("fromat=python&x=1").unwrap_err();
        assert!(
            unknown.message.contains("\"fromat\"") && unknown.message.contains("\"x\""),
            "{}",
            unknown.message
        );
    }

    #[test]
    fn segments_are_percent_decoded() {
        assert_eq!(percent_decode("bm01").as_deref(), Some("bm01"));
        assert_eq!(percent_decode("bm%2001%C3%A9").as_deref(), Some("bm 01é"));
        for bad in ["%", "%4", "%zz", "%+1", "%ff"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }
}
