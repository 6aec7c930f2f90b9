//! # slavealloc-client-http
//!
//! [`AdminApi`] over the allocator's REST API: what `slavealloc lock`,
//! `enable`, `list`, ... use to talk to a running daemon.
//!
//! Main design decision: a blocking HTTP client (ureq) run on tokio's
//! blocking pool rather than an async one. The command line makes a
//! handful of requests one after another, so an async client would buy
//! nothing but a larger dependency tree; and the same small client is what
//! `runslave` uses on every build machine.
//!
//! The daemon's contract this adapter relies on: JSON rows from
//! `GET /api/<table>[/<id>]` and `GET /api/<table>/<name>?byname=1` (`{}`
//! with 404 when absent), `PUT /api/<table>/<id>` with a JSON object,
//! `GET /api/gettac/<name>` answering `{"success": true, "tac": "..."}`,
//! `GET /gettac/<name>` answering the tac as text, errors as
//! `{"success": false, "error": "..."}`, and `Authorization: Bearer` for
//! writes when tokens are configured.

use std::time::Duration;

use async_trait::async_trait;
use slavealloc_domain::inventory::SlaveFilter;
use slavealloc_domain::schema::{Row, Table};
use slavealloc_domain::{AdminApi, AdminError, SlaveName};

/// How long to wait for a connection to the server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for each read or write on the connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The REST API of one allocator.
#[derive(Clone)]
pub struct HttpAdmin {
    api: String,
    root: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for HttpAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in a debug print.
        f.debug_struct("HttpAdmin")
            .field("api", &self.api)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl HttpAdmin {
    /// A client of the API at `api` (e.g. `http://slavealloc:8010/api`).
    /// The allocating `/gettac/<name>` is looked for next to it: at `api`
    /// without its trailing `/api`. `token` is sent as a bearer token.
    pub fn new(api: &str, token: Option<String>) -> Self {
        let api = api.trim_end_matches('/').to_owned();
        let root = api.strip_suffix("/api").unwrap_or(&api).to_owned();
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(IO_TIMEOUT)
            .timeout_write(IO_TIMEOUT)
            .build();
        Self {
            api,
            root,
            token: token.filter(|t| !t.is_empty()),
            agent,
        }
    }

    fn table_url(&self, table: Table) -> String {
        format!("{}/{}", self.api, table.name())
    }

    /// Sends one request and returns the status and body of any HTTP
    /// answer, and the reason header a "no allocation" carries;
    /// transport failures become [`AdminError::Unreachable`].
    fn send(&self, method: &str, url: &str, body: Option<String>) -> Result<Answer, AdminError> {
        let mut req = self.agent.request(method, url).set("Accept", "application/json");
        if let Some(token) = &self.token {
            req = req.set("Authorization", &format!("Bearer {token}"));
        }
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(&b),
            None => req.call(),
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(ureq::Error::Status(_, resp)) => resp,
            Err(ureq::Error::Transport(t)) => {
                return Err(AdminError::Unreachable {
                    url: url.to_owned(),
                    reason: t.to_string(),
                })
            }
        };
        let status = resp.status();
        let reason = resp.header(REASON_HEADER).map(str::to_owned);
        let text = resp.into_string().map_err(|e| AdminError::Unreachable {
            url: url.to_owned(),
            reason: format!("reading the answer: {e}"),
        })?;
        Ok(Answer { status, text, reason })
    }

    /// Sends a request that answers JSON; maps error statuses to
    /// [`AdminError`]s, with `Ok(None)` for a 404 when `absent_ok`.
    fn json(
        &self,
        method: &str,
        url: &str,
        body: Option<String>,
        absent_ok: bool,
    ) -> Result<Option<serde_json::Value>, AdminError> {
        let Answer { status, text, .. } = self.send(method, url, body)?;
        let is_json = serde_json::from_str::<serde_json::Value>(&text).is_ok();
        match status {
            200..=299 => parse_json(url, &text).map(Some),
            // The API's 404s are JSON; any other means the URL is not the
            // API (a wrong -A, a proxy's page), not that the row is absent.
            404 if !is_json => Err(AdminError::BadResponse {
                url: url.to_owned(),
                reason: format!("HTTP 404, not the slavealloc API: {}", first_line(&text)),
            }),
            404 if absent_ok => Ok(None),
            _ => Err(status_error(status, &text, self.token.is_some())),
        }
    }

    fn gettac_blocking(&self, slave: &SlaveName, commit: bool) -> Result<String, AdminError> {
        let no_allocation = |text: &str, reason: Option<String>| AdminError::NoAllocation {
            slave: slave.to_string(),
            reason: reason
                .or_else(|| server_message(text))
                .unwrap_or_else(|| "the server gave no reason".into()),
        };
        if commit {
            let url = format!("{}/gettac/{}", self.root, slave);
            let Answer { status, text, reason } = self.send("GET", &url, None)?;
            return match status {
                200 if text.starts_with("# AUTOMATICALLY GENERATED") => Ok(text),
                200 => Err(AdminError::BadResponse {
                    url,
                    reason: format!("not a generated buildbot.tac: {}", first_line(&text)),
                }),
                404 => Err(no_allocation(&text, reason)),
                _ => Err(status_error(status, &text, self.token.is_some())),
            };
        }
        let url = format!("{}/gettac/{}", self.api, slave);
        let Answer { status, text, reason } = self.send("GET", &url, None)?;
        match status {
            200 => {
                let v = parse_json(&url, &text)?;
                v.get("tac")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| AdminError::BadResponse {
                        url,
                        reason: "the answer has no \"tac\" string".into(),
                    })
            }
            404 => Err(no_allocation(&text, reason)),
            _ => Err(status_error(status, &text, self.token.is_some())),
        }
    }

    fn explain_blocking(&self, slave: &SlaveName) -> Result<serde_json::Value, AdminError> {
        let url = format!("{}/gettac/{}?explain=1", self.api, slave);
        let Answer { status, text, reason } = self.send("GET", &url, None)?;
        match status {
            200 => parse_json(&url, &text)?
                .get("explain")
                .cloned()
                .ok_or_else(|| AdminError::BadResponse {
                    url,
                    reason: "the answer has no \"explain\" object (a daemon older than `why`?)".into(),
                }),
            404 => Err(AdminError::NoAllocation {
                slave: slave.to_string(),
                reason: reason
                    .or_else(|| server_message(&text))
                    .unwrap_or_else(|| "the server gave no reason".into()),
            }),
            _ => Err(status_error(status, &text, self.token.is_some())),
        }
    }

    fn list_blocking(&self, table: Table, filter: &SlaveFilter) -> Result<Vec<Row>, AdminError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if table == Table::Slaves {
            let lists = [
                ("environment", &filter.environment),
                ("purpose", &filter.purpose),
                ("pool", &filter.pool),
            ];
            for (key, values) in lists {
                query.extend(values.iter().map(|v| (key, v.clone())));
            }
            if let Some(e) = filter.enabled {
                query.push(("enabled", e.to_string()));
            }
            // Without it the server leaves decommissioned slaves out, and
            // `drain` over HTTP missed those still on the master.
            if filter.include_decomm {
                query.push(("include_decomm", "true".to_owned()));
            }
        }
        let mut url = self.table_url(table);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.push_str(&encode(v));
        }
        let value = flatten_rows(self.json("GET", &url, None, false)?.unwrap_or_default());
        serde_json::from_value(value).map_err(|e| AdminError::BadResponse {
            url,
            reason: format!("not a list of rows: {e}"),
        })
    }

    fn row_blocking(&self, url: String) -> Result<Option<Row>, AdminError> {
        let Some(value) = self.json("GET", &url, None, true)? else {
            return Ok(None);
        };
        // The original answered `{}` for a missing row; keep reading it so.
        if value.as_object().is_some_and(serde_json::Map::is_empty) {
            return Ok(None);
        }
        serde_json::from_value(flatten(value))
            .map(Some)
            .map_err(|e| AdminError::BadResponse {
                url,
                reason: format!("not a row: {e}"),
            })
    }

    fn update_blocking(&self, table: Table, id: i32, changes: &Row) -> Result<(), AdminError> {
        let url = format!("{}/{id}", self.table_url(table));
        let body = serde_json::to_string(changes).map_err(|e| AdminError::Rejected(e.to_string()))?;
        let Answer { status, text, .. } = self.send("PUT", &url, Some(body))?;
        match status {
            200..=299 => match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) if v.get("success") == Some(&serde_json::Value::Bool(false)) => Err(AdminError::Rejected(
                    server_message(&text).unwrap_or_else(|| "operation failed on server".into()),
                )),
                Ok(_) => Ok(()),
                Err(e) => Err(AdminError::BadResponse {
                    url,
                    reason: format!("not JSON ({e}): {}", first_line(&text)),
                }),
            },
            404 => Err(AdminError::NotFound(
                server_message(&text).unwrap_or_else(|| format!("{table} {id}")),
            )),
            _ => Err(status_error(status, &text, self.token.is_some())),
        }
    }
}

/// The header in which `/gettac`'s 404 says why there is no allocation
/// (its body stays the original's bare "no allocation available").
const REASON_HEADER: &str = "x-slavealloc-reason";

/// What one request answered.
struct Answer {
    status: u16,
    text: String,
    /// [`REASON_HEADER`], when present.
    reason: Option<String>,
}

/// Runs a blocking request on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AdminError> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(AdminError::Server(format!("the request was lost: {e}"))))
}

#[async_trait]
impl AdminApi for HttpAdmin {
    async fn gettac(&self, slave: &SlaveName, commit: bool) -> Result<String, AdminError> {
        let (this, slave) = (self.clone(), slave.clone());
        blocking(move || this.gettac_blocking(&slave, commit)).await
    }

    async fn explain(&self, slave: &SlaveName) -> Result<serde_json::Value, AdminError> {
        let (this, slave) = (self.clone(), slave.clone());
        blocking(move || this.explain_blocking(&slave)).await
    }

    async fn list(&self, table: Table, filter: &SlaveFilter) -> Result<Vec<Row>, AdminError> {
        let (this, filter) = (self.clone(), filter.clone());
        blocking(move || this.list_blocking(table, &filter)).await
    }

    async fn get(&self, table: Table, id: i32) -> Result<Option<Row>, AdminError> {
        let this = self.clone();
        let url = format!("{}/{id}", self.table_url(table));
        blocking(move || this.row_blocking(url)).await
    }

    async fn find(&self, table: Table, name: &str) -> Result<Option<Row>, AdminError> {
        let this = self.clone();
        let url = format!("{}/{}?byname=1", self.table_url(table), encode(name));
        blocking(move || this.row_blocking(url)).await
    }

    async fn update(&self, table: Table, id: i32, changes: Row) -> Result<(), AdminError> {
        let this = self.clone();
        blocking(move || this.update_blocking(table, id, &changes)).await
    }

    async fn history(&self, query: &[(String, String)]) -> Result<Option<serde_json::Value>, AdminError> {
        let this = self.clone();
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        blocking(move || {
            let url = format!("{}/audit?{}", this.api, query.join("&"));
            this.json("GET", &url, None, true)
        })
        .await
    }

    async fn whatif(&self, drain: &[String], add: &[String]) -> Result<serde_json::Value, AdminError> {
        let this = self.clone();
        let query: Vec<String> = drain
            .iter()
            .map(|d| format!("drain={}", encode(d)))
            .chain(add.iter().map(|a| format!("add={}", encode(a))))
            .collect();
        blocking(move || {
            let url = format!("{}/whatif?{}", this.api, query.join("&"));
            this.json("GET", &url, None, true)?
                .ok_or_else(|| AdminError::Rejected(format!("no such master among {}", query.join(", "))))
        })
        .await
    }

    async fn act(
        &self,
        table: Table,
        name: &str,
        action: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, AdminError> {
        let this = self.clone();
        let url = format!("{}/{}/{action}?byname=1", self.table_url(table), encode(name));
        blocking(move || {
            this.json("POST", &url, Some(body.to_string()), false)
                .map(Option::unwrap_or_default)
        })
        .await
    }

    async fn drain_status(&self, master: &str) -> Result<serde_json::Value, AdminError> {
        let this = self.clone();
        let url = format!("{}/{}/drain?byname=1", self.table_url(Table::Masters), encode(master));
        blocking(move || this.json("GET", &url, None, false).map(Option::unwrap_or_default)).await
    }

    async fn bulk(&self, request: serde_json::Value) -> Result<serde_json::Value, AdminError> {
        let this = self.clone();
        blocking(move || {
            let url = format!("{}/slaves/bulk", this.api);
            this.json("POST", &url, Some(request.to_string()), false)
                .map(Option::unwrap_or_default)
        })
        .await
    }

    async fn drift(&self) -> Result<serde_json::Value, AdminError> {
        let this = self.clone();
        blocking(move || {
            let url = format!("{}/drift", this.api);
            this.json("GET", &url, None, false).map(Option::unwrap_or_default)
        })
        .await
    }
}

/// A row's nested objects (the `live` facts) as dotted keys of plain
/// values (`live.state`), so that a row stays a flat [`Row`].
fn flatten(row: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(columns) = row else {
        return row;
    };
    let mut flat = serde_json::Map::new();
    for (key, value) in columns {
        match value {
            serde_json::Value::Object(inner) => {
                for (k, v) in inner {
                    let v = match v {
                        serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                            serde_json::Value::String(v.to_string())
                        }
                        v => v,
                    };
                    flat.insert(format!("{key}.{k}"), v);
                }
            }
            v => {
                flat.insert(key, v);
            }
        }
    }
    serde_json::Value::Object(flat)
}

fn flatten_rows(rows: serde_json::Value) -> serde_json::Value {
    match rows {
        serde_json::Value::Array(rows) => serde_json::Value::Array(rows.into_iter().map(flatten).collect()),
        other => other,
    }
}

fn parse_json(url: &str, text: &str) -> Result<serde_json::Value, AdminError> {
    serde_json::from_str(text).map_err(|e| AdminError::BadResponse {
        url: url.to_owned(),
        reason: format!("not JSON ({e}): {}", first_line(text)),
    })
}

/// The `error` of a `{"success": false, "error": "..."}` body.
fn server_message(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.get("error")?.as_str().map(str::to_owned)
}

/// An error status as an [`AdminError`], with the server's own message
/// when it gave one.
fn status_error(status: u16, text: &str, sent_token: bool) -> AdminError {
    let message = server_message(text).unwrap_or_else(|| {
        let line = first_line(text);
        if line.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {line}")
        }
    });
    match status {
        401 if sent_token => AdminError::TokenRefused(message),
        401 => AdminError::TokenNeeded,
        403 => AdminError::Forbidden(message),
        404 => AdminError::NotFound(message),
        400..=499 => AdminError::Rejected(message),
        _ => AdminError::Server(message),
    }
}

/// The first line of a body, shortened, for error messages.
fn first_line(text: &str) -> String {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
    let mut short: String = line.chars().take(120).collect();
    if short.len() < line.len() {
        short.push_str("...");
    }
    short
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a
/// path segment or a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gettac_is_found_next_to_the_api() {
        let c = HttpAdmin::new("http://alloc:8010/api/", None);
        assert_eq!(
            (c.api.as_str(), c.root.as_str()),
            ("http://alloc:8010/api", "http://alloc:8010")
        );
    }

    #[test]
    fn errors_carry_the_servers_message() {
        let e = status_error(
            409,
            r#"{"success": false, "error": "duplicate: masters.nickname"}"#,
            false,
        );
        assert_eq!(e, AdminError::Rejected("duplicate: masters.nickname".into()));
        // Bug: a wrong token and a missing one got the same message.
        assert_eq!(status_error(401, "{}", false), AdminError::TokenNeeded);
        assert!(matches!(status_error(401, "{}", true), AdminError::TokenRefused(_)));
        assert!(matches!(status_error(403, "{}", true), AdminError::Forbidden(_)));
        let e = status_error(502, "<html><body>Bad Gateway</body></html>", false);
        assert_eq!(
            e,
            AdminError::Server("HTTP 502: <html><body>Bad Gateway</body></html>".into())
        );
    }

    #[test]
    fn names_are_encoded() {
        assert_eq!(encode("bm 01/x?"), "bm%2001%2Fx%3F");
        assert_eq!(encode("tst-linux64_01.a"), "tst-linux64_01.a");
    }
}
