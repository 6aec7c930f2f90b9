//! Shapes of what the API reads and answers: query strings, request
//! bodies, and the JSON error body `{"success": false, "error": "..."}`.

use std::pin::Pin;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use slavealloc_domain::audit::parse_at;
use slavealloc_domain::schema::Changes;
use slavealloc_domain::{AuditQuery, SlaveFilter, StoreError, Table};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

/// The largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Audit entries returned when `limit` is not given.
pub const DEFAULT_AUDIT_LIMIT: u32 = 100;
/// The most audit entries one request returns.
pub const MAX_AUDIT_LIMIT: u32 = 1000;

/// A request body, read only once the caller is authorized.
pub struct Body(pub(crate) Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>);

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Body")
    }
}

impl Body {
    /// Wraps warp's body stream.
    pub(crate) fn new<S, B>(stream: S) -> Self
    where
        S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
        B: Buf + Send,
    {
        Self(Box::pin(
            stream.map(|chunk| chunk.map(|mut b| b.copy_to_bytes(b.remaining()))),
        ))
    }

    /// Reads the whole body, refusing more than `limit` bytes.
    ///
    /// # Errors
    /// 413 past the limit, 400 when the body cannot be read.
    pub(crate) async fn read(mut self, limit: usize) -> Result<Bytes, ApiError> {
        let mut buf = BytesMut::new();
        while let Some(chunk) = self.0.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
            if buf.len() + chunk.len() > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is larger than {limit} bytes"),
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// Reads the body as one JSON object.
    ///
    /// # Errors
    /// 413 past [`MAX_BODY_BYTES`]; 400 for malformed JSON or a value that
    /// is not an object.
    /// The body as a client's [`Changes`]: a JSON object, decoded here so
    /// that the domain never sees JSON.
    pub(crate) async fn changes(self) -> Result<Changes, ApiError> {
        let bytes = self.read(MAX_BODY_BYTES).await?;
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(object @ serde_json::Value::Object(_)) => {
                serde_json::from_value(object).map_err(|e| ApiError::bad_request(format!("body: {e}")))
            }
            Ok(_) => Err(ApiError::bad_request("body: must be a JSON object")),
            Err(e) => Err(ApiError::bad_request(format!("body: malformed JSON: {e}"))),
        }
    }
}

/// An answer other than success, rendered as
/// `{"success": false, "error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What to tell the client.
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    success: bool,
    error: &'a str,
}

impl ApiError {
    /// Any status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: a write without a valid token while tokens are configured.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "writes need an Authorization: Bearer <token> header with a configured token",
        )
    }

    /// The status a store error means, and what the client is told. The
    /// cause of a 500 is logged here; the client gets a short reason.
    pub fn from_store(e: &StoreError) -> Self {
        match e {
            StoreError::Input(_) | StoreError::InvalidReference { .. } => Self::bad_request(e.to_string()),
            StoreError::Duplicate(_) | StoreError::Referenced(_) => Self::new(StatusCode::CONFLICT, e.to_string()),
            StoreError::NotFound => Self::new(StatusCode::NOT_FOUND, "no such row"),
            StoreError::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, e.to_string()),
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "database unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            // Every write was retried already: the database is busy with
            // conflicting writes (a storm through several cluster nodes),
            // which a later attempt gets through.
            StoreError::Retryable(_) => {
                tracing::warn!(error = %e, "transaction conflict persisted after retries");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database kept refusing this write for conflicting with concurrent ones; try again",
                )
            }
            StoreError::Other(_) => {
                tracing::error!(error = %e, "storage error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal storage error (see the daemon's log)",
                )
            }
        }
    }

    /// The JSON answer.
    pub fn into_json(self) -> Response {
        let body = ErrorBody {
            success: false,
            error: &self.message,
        };
        let mut r = json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert("www-authenticate", warp::http::HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert("retry-after", warp::http::HeaderValue::from_static("1"));
        }
        r
    }
}

/// A JSON answer with this status.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

/// `key=value` pairs of a raw query string, percent-decoded, in order.
///
/// # Errors
/// 400 for a query string that is not `application/x-www-form-urlencoded`.
pub fn query_pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(raw).map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))
}

/// A query flag: `1`/`true` or `0`/`false`/empty.
pub(crate) fn flag(key: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "1" | "true" | "True" => Ok(true),
        "" | "0" | "false" | "False" => Ok(false),
        _ => Err(ApiError::bad_request(format!("{key}: must be 1 or 0"))),
    }
}

/// Whether `?byname=1` asks for a lookup by name.
///
/// # Errors
/// 400 for a value other than a flag.
pub fn by_name(pairs: &[(String, String)]) -> Result<bool, ApiError> {
    pairs
        .iter()
        .filter(|(k, _)| k == "byname")
        .try_fold(false, |_, (k, v)| flag(k, v))
}

/// The filters of `GET /api/slaves`: repeatable `environment`, `purpose`,
/// `pool` (names), `enabled` and `include_decomm`. Other keys are ignored,
/// as the original ignored them.
///
/// # Errors
/// 400 for a flag that is not 1 or 0.
pub fn slave_filter(pairs: &[(String, String)]) -> Result<SlaveFilter, ApiError> {
    let mut f = SlaveFilter::default();
    for (k, v) in pairs {
        match k.as_str() {
            "environment" => f.environment.push(v.clone()),
            "purpose" => f.purpose.push(v.clone()),
            "pool" => f.pool.push(v.clone()),
            "enabled" => f.enabled = Some(flag(k, v)?),
            "include_decomm" => f.include_decomm = flag(k, v)?,
            _ => {}
        }
    }
    Ok(f)
}

/// The filters `GET /api/slaves` takes.
const SLAVE_FILTERS: [&str; 9] = [
    "environment",
    "purpose",
    "pool",
    "enabled",
    "include_decomm",
    "master",
    "connected_master",
    "connected",
    "stale",
];

/// Refuses a list's query key that filters nothing, naming it, rather than
/// answering the whole table as if it had filtered. jQuery's `_`
/// cache-buster passes everywhere, and so does `include_decomm` (a client
/// may send it to every table; only slaves have decommissioned rows).
///
/// # Errors
/// 400 naming the first unknown key and the ones `table` takes.
pub fn known_list_keys(table: Table, pairs: &[(String, String)]) -> Result<(), ApiError> {
    let known: &[&str] = if table == Table::Slaves { &SLAVE_FILTERS } else { &[] };
    let passes = |k: &str| k == "_" || k == "include_decomm" || known.contains(&k);
    match pairs.iter().find(|(k, _)| !passes(k)) {
        None => Ok(()),
        Some((k, _)) if known.is_empty() => Err(ApiError::bad_request(format!(
            "unknown query parameter {k:?}: /api/{table} takes no filters"
        ))),
        Some((k, _)) => Err(ApiError::bad_request(format!(
            "unknown query parameter {k:?}: /api/{table} filters on {}",
            known.join(", ")
        ))),
    }
}

/// The masters to drain (nicknames) and to add (nickname, pool name).
pub type WhatIfPlan = (Vec<String>, Vec<(String, String)>);

/// `GET /api/whatif?drain=NICK...&add=NICK@POOL...`: the masters to
/// drain, and the masters to add (nickname and pool name).
///
/// # Errors
/// 400 without any, for an `add` not of the form `nick@pool`, or for
/// another key.
pub fn whatif_plan(pairs: &[(String, String)]) -> Result<WhatIfPlan, ApiError> {
    let (mut drains, mut adds) = (Vec::new(), Vec::new());
    for (k, v) in pairs {
        match k.as_str() {
            "drain" => drains.push(v.clone()),
            "add" => match v.split_once('@') {
                Some((nick, pool)) if !nick.trim().is_empty() && !pool.trim().is_empty() => {
                    adds.push((nick.trim().to_owned(), pool.trim().to_owned()));
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "add: {v:?} is not NICKNAME@POOL (bm99@tests-linux)"
                    )))
                }
            },
            "_" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: only drain and add"
                )))
            }
        }
    }
    if drains.is_empty() && adds.is_empty() {
        return Err(ApiError::bad_request(
            "drain: name at least one master to drain (drain=bm01) or to add (add=bm99@tests-linux)",
        ));
    }
    Ok((drains, adds))
}

/// `GET /api/gettac/<slave>?explain=1`: whether to explain. Other keys
/// are refused, naming them (jQuery's `_` cache-buster excepted).
///
/// # Errors
/// 400 for another key or a value that is not a flag.
pub fn explain_flag(pairs: &[(String, String)]) -> Result<bool, ApiError> {
    let mut explain = false;
    for (k, v) in pairs {
        match k.as_str() {
            "explain" => explain = flag(k, v)?,
            "_" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: only explain"
                )))
            }
        }
    }
    Ok(explain)
}

/// `GET /api/audit?table=&id=&limit=`.
///
/// # Errors
/// 400 for an unknown table, an id that is not an integer, or a limit
/// outside 1..=[`MAX_AUDIT_LIMIT`].
pub fn audit_query(pairs: &[(String, String)]) -> Result<AuditQuery, ApiError> {
    audit_params(pairs, std::time::SystemTime::now()).map(|p| p.query)
}

/// `GET /api/audit`'s parameters: the query, and the name of the row it
/// asks about (`name=`, resolved to an id by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditParams {
    /// The query.
    pub query: AuditQuery,
    /// `name=`: the row of `table` (slaves when none) with that name.
    pub name: Option<String>,
}

/// A time in a query: `2026-12-01T07:00:00Z`, or an age before `now`
/// (`90m`, `1d`).
fn query_time(key: &str, v: &str, now: std::time::SystemTime) -> Result<std::time::SystemTime, ApiError> {
    if let Ok(age) = slavealloc_domain::live::parse_age(v) {
        return Ok(now.checked_sub(age).unwrap_or(std::time::UNIX_EPOCH));
    }
    parse_at(v).map_err(|e| ApiError::bad_request(format!("{key}: {e}, or an age like 1d")))
}

/// `GET /api/audit?since=&until=&actor=&kind=&table=&id=&name=&limit=&cursor=`.
///
/// # Errors
/// 400 for an unknown key or table, a bad time, id, kind, cursor, or a
/// limit outside 1..=[`MAX_AUDIT_LIMIT`].
pub fn audit_params(pairs: &[(String, String)], now: std::time::SystemTime) -> Result<AuditParams, ApiError> {
    let mut q = AuditQuery {
        limit: DEFAULT_AUDIT_LIMIT,
        ..AuditQuery::default()
    };
    let mut name = None;
    for (k, v) in pairs {
        match k.as_str() {
            "table" if v.is_empty() => q.table = None,
            "table" => {
                let t: Table = v.parse().map_err(|e| ApiError::bad_request(format!("table: {e}")))?;
                q.table = Some(t);
            }
            "since" if v.is_empty() => q.since = None,
            "since" => q.since = Some(query_time(k, v, now)?),
            "until" if v.is_empty() => q.until = None,
            "until" => q.until = Some(query_time(k, v, now)?),
            "actor" if v.is_empty() => q.actor = None,
            "actor" => q.actor = Some(v.clone()),
            "kind" if v.is_empty() => q.kind = None,
            "kind" => {
                q.kind = Some(
                    slavealloc_domain::audit::AuditKind::parse(v)
                        .ok_or_else(|| ApiError::bad_request("kind: must be allocation, edit or lifecycle"))?,
                )
            }
            "cursor" if v.is_empty() => q.before = None,
            "cursor" => {
                q.before = Some(
                    v.parse()
                        .map_err(|_| ApiError::bad_request("cursor: must be the id an earlier page ended at"))?,
                )
            }
            "name" if v.is_empty() => name = None,
            "name" => name = Some(v.clone()),
            "id" if v.is_empty() => q.row_id = None,
            "id" => q.row_id = Some(v.parse().map_err(|_| ApiError::bad_request("id: must be an integer"))?),
            "limit" => {
                q.limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_AUDIT_LIMIT).contains(l))
                    .ok_or_else(|| ApiError::bad_request(format!("limit: must be from 1 to {MAX_AUDIT_LIMIT}")))?;
            }
            "_" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: /api/audit takes since, until, actor, kind, table, id, name, limit and cursor"
                )))
            }
        }
    }
    Ok(AuditParams { query: q, name })
}

/// A row id from the path.
///
/// # Errors
/// 400 when it is not a 32-bit integer.
pub fn row_id(raw: &str) -> Result<i32, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "id: {raw:?} is not an integer (use ?byname=1 to look up by name)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        query_pairs(q).unwrap()
    }

    #[test]
    fn slave_filters_repeat_and_flags_are_checked() {
        let f = slave_filter(&pairs(
            "pool=a&pool=b%20c&environment=prod&enabled=0&include_decomm=1&x=y",
        ))
        .unwrap();
        assert_eq!(f.pool, ["a", "b c"]);
        assert_eq!(f.environment, ["prod"]);
        assert_eq!(f.enabled, Some(false));
        assert!(f.include_decomm);
        assert_eq!(slave_filter(&pairs("enabled=maybe")).unwrap_err().status, 400);
    }

    #[test]
    fn audit_queries_are_bounded() {
        let q = audit_query(&pairs("table=slaves&id=7&limit=5&since=2026-11-30T07:00:00Z")).unwrap();
        assert_eq!((q.table, q.row_id, q.limit), (Some(Table::Slaves), Some(7), 5));
        assert_eq!(
            q.since,
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_022_000))
        );
        assert_eq!(audit_query(&[]).unwrap().limit, DEFAULT_AUDIT_LIMIT);
        for bad in [
            "table=users",
            "id=x",
            "limit=0",
            "limit=1001",
            "limit=-1",
            "since=yesterday",
        ] {
            assert_eq!(audit_query(&pairs(bad)).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn byname_and_ids() {
        assert!(by_name(&pairs("byname=1")).unwrap());
        assert!(!by_name(&pairs("")).unwrap());
        assert!(by_name(&pairs("byname=2")).is_err());
        assert_eq!(row_id("12").unwrap(), 12);
        assert!(row_id("x").is_err());
        assert!(row_id("99999999999").is_err());
    }
}
