//! Request handlers: each turns a matched request into its whole answer,
//! status code included, and never rejects.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value as Json};
use slavealloc_domain::{Allocation, AllocationError, SlaveName, StoreError, Table, Value, Writer};
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

use crate::auth::{Identity, Scope};
use crate::live::{with_live, Judge, LiveFilter};
use crate::metrics;
use crate::models::{self, ApiError, Body};
use crate::AppState;

/// The body of a `/gettac` answer for an unknown slave or one without a
/// master, exactly as the original wrote it (runslave.py matches on it).
pub const NO_ALLOCATION: &str = "no allocation available";

/// Who is asking: the `Authorization` header and the client's address.
#[derive(Clone)]
pub struct Caller {
    pub(crate) authorization: Option<String>,
    pub(crate) client: Option<IpAddr>,
}

impl std::fmt::Debug for Caller {
    // The header may hold a token: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Runs one store call under the readiness gate and the deadline. The
    /// call runs in its own task, so a request that gives up waiting never
    /// cancels a transaction halfway: it completes or rolls back on its own.
    pub(crate) async fn db<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        self.readiness.check().map_err(StoreError::Unavailable)?;
        let deadline = self.db_deadline.get();
        let result = match tokio::time::timeout(deadline, tokio::spawn(call)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(StoreError::Other(format!("database task failed: {e}"))),
            Err(_) => Err(unanswered(deadline)),
        };
        self.metrics
            .database_up(!matches!(result, Err(StoreError::Unavailable(_))));
        result
    }

    pub(crate) fn identify(&self, caller: &Caller) -> Identity {
        self.tokens.identity(caller.authorization.as_deref(), caller.client)
    }

    /// The writer a request is: 401 without a valid token when tokens are
    /// on, 403 for a token that may not write at all.
    pub(crate) fn authorize(&self, caller: &Caller) -> Result<Writer, ApiError> {
        match self.identify(caller) {
            Identity::Anonymous => Err(ApiError::unauthorized()),
            identity => identity.writer().ok_or_else(|| {
                let only = match identity {
                    Identity::Token(_, Scope::Master) => "read worker lists",
                    _ => "read passwords",
                };
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("token {:?} may only {only}, not write", identity.name()),
                )
            }),
        }
    }
}

fn unanswered(deadline: std::time::Duration) -> StoreError {
    StoreError::Unavailable(format!("no answer within {} ms", deadline.as_millis()))
}

fn text(status: StatusCode, body: String) -> Response {
    let mut r = warp::reply::with_status(body, status).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// The header in which a 404 from `/gettac` says why (see
/// [`AllocationError::no_allocation_reason`]).
pub const REASON_HEADER: &str = "x-slavealloc-reason";

/// `/gettac`'s 404: the original's bare body, which machines and scripts
/// know, and the reason in [`REASON_HEADER`] for the admin command line.
fn no_allocation(e: &AllocationError) -> Response {
    let mut r = text(StatusCode::NOT_FOUND, NO_ALLOCATION.to_owned());
    if let Some(v) = e
        .no_allocation_reason()
        .and_then(|why| HeaderValue::from_str(&why).ok())
    {
        r.headers_mut()
            .insert(header::HeaderName::from_static(REASON_HEADER), v);
    }
    r
}

/// `GET /gettac/<slave>`: allocate, commit (in the next group commit), and
/// answer the tac as text/plain; 404 `no allocation available`; 503 while
/// the database is unreachable; 500 `error processing request: ...`.
pub async fn gettac(state: Arc<AppState>, raw: String, client: Option<IpAddr>) -> Response {
    let started = Instant::now();
    let name = match SlaveName::parse(&raw) {
        Ok(name) => name,
        Err(e) => return no_allocation(&AllocationError::InvalidName(e)),
    };
    let ticket = match state.batcher.admit() {
        Ok(ticket) => ticket,
        Err(busy) => return busy_answer(&busy),
    };
    // The same gate as every other database call: readiness, the
    // deadline, and a task of its own. The ticket goes with the task: a
    // request that gave up at its deadline still waits in the queue until
    // its batch is decided, and is counted there until then.
    let st = Arc::clone(&state);
    let outcome = state
        .db(async move {
            let answer = st.batcher.allocate(name, client).await;
            drop(ticket);
            storage_outside(answer)
        })
        .await;
    match refusal(outcome, &raw) {
        Ok(a) => {
            log_allocation(&state, &a, client, started);
            // A signed tac's signature also goes in a header (SECURITY.md).
            let signature = slavealloc_tac_signing::signature_value(&a.tac).and_then(|v| HeaderValue::from_str(v).ok());
            let mut r = text(StatusCode::OK, a.tac);
            if let Some(v) = signature {
                r.headers_mut()
                    .insert(header::HeaderName::from_static(slavealloc_tac_signing::HEADER), v);
            }
            r
        }
        Err(Refusal::NoAllocation(e)) => no_allocation(&e),
        Err(Refusal::Failed(e)) if e.status == StatusCode::INTERNAL_SERVER_ERROR => {
            text(e.status, format!("error processing request: {}", e.message))
        }
        Err(Refusal::Failed(e)) if e.status == StatusCode::SERVICE_UNAVAILABLE => {
            let mut r = text(e.status, e.message);
            r.headers_mut().insert(header::RETRY_AFTER, unavailable_retry_after());
            r
        }
        Err(Refusal::Failed(e)) => text(e.status, e.message),
    }
}

/// `/gettac`'s 503 when the allocation queue is full: come back at the
/// slot [`crate::admission`] gave.
fn busy_answer(busy: &crate::admission::Busy) -> Response {
    tracing::debug!(
        queued = busy.queued,
        retry_after_s = busy.retry_after_s,
        "gettac refused: queue full"
    );
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "busy: {} requests are waiting for the database; retry after {} s\n",
            busy.queued, busy.retry_after_s
        ),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(busy.retry_after_s));
    r
}

/// `Retry-After` for a `/gettac` the database did not answer: 1 to 3 s at
/// random, so that the machines it failed together do not come back
/// together.
fn unavailable_retry_after() -> HeaderValue {
    use rand::Rng as _;
    HeaderValue::from(rand::thread_rng().gen_range(1u64..=3))
}

/// An allocation's answer with storage failures taken out, so that the
/// database gate ([`AppState::db`]) sees them; the rest stay inside.
fn storage_outside(
    answer: Result<Allocation, AllocationError>,
) -> Result<Result<Allocation, AllocationError>, StoreError> {
    match answer {
        Err(AllocationError::Storage(e)) => Err(e),
        other => Ok(other),
    }
}

/// Why an allocation gave no tac, as the HTTP layer answers it.
enum Refusal {
    /// The ordinary "no allocation available" (404).
    NoAllocation(AllocationError),
    /// A fault, with its status and what the client is told.
    Failed(ApiError),
}

/// The one place an allocation's failure becomes an HTTP answer, and is
/// logged, once: no allocation is an info line; storage faults are logged
/// by [`ApiError::from_store`]; the rule's and the template's errors (a
/// missing password, a broken template) say what to fix.
fn refusal(
    outcome: Result<Result<Allocation, AllocationError>, StoreError>,
    slave: &str,
) -> Result<Allocation, Refusal> {
    match outcome {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e)) if e.is_no_allocation() => {
            tracing::info!(slave = %slave, error = %e, "no allocation");
            Err(Refusal::NoAllocation(e))
        }
        Ok(Err(e)) => {
            tracing::error!(slave = %slave, error = %e, "allocation failed");
            Err(Refusal::Failed(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            )))
        }
        Err(e) => Err(Refusal::Failed(ApiError::from_store(&e))),
    }
}

fn log_allocation(state: &AppState, a: &Allocation, client: Option<IpAddr>, started: Instant) {
    let d = &a.decision;
    let master = d.master.as_ref().map_or("-", |m| m.nickname.as_str());
    let peer = client.map(|ip| ip.to_string()).unwrap_or_default();
    tracing::info!(
        slave = %d.slave.name,
        master = %master,
        pool = d.slave.poolid,
        reason = %d.reason.as_str(),
        peer = %peer,
        "allocation"
    );
    state.metrics.allocation(
        d.slave.poolid,
        master,
        d.reason.as_str(),
        started.elapsed().as_secs_f64(),
    );
}

/// `GET /api/gettac/<slave>`: the same decision, nothing committed; the
/// password shown as `***` unless the caller's token may see secrets.
pub async fn peek(state: Arc<AppState>, raw: String, caller: Caller, query: String) -> Response {
    let explain = match models::query_pairs(&query).and_then(|p| models::explain_flag(&p)) {
        Ok(e) => e,
        Err(e) => return e.into_json(),
    };
    let identity = state.identify(&caller);
    let secrets = identity.sees_secrets();
    tracing::info!(
        slave = %raw,
        peer = %caller.client.map(|ip| ip.to_string()).unwrap_or_default(),
        who = identity.name(),
        secrets,
        explain,
        "peek"
    );
    let allocator = state.services.allocator.clone();
    let slave = raw.clone();
    let outcome = state
        .db(async move {
            let answer = if explain {
                allocator.explain(&raw, secrets).await.map(|(a, why)| (a, Some(why)))
            } else if secrets {
                allocator.peek(&raw).await.map(|a| (a, None))
            } else {
                allocator.preview(&raw).await.map(|a| (a, None))
            };
            match answer {
                Err(AllocationError::Storage(e)) => Err(e),
                other => Ok(other),
            }
        })
        .await;
    let (tac_outcome, why) = match outcome {
        Ok(Ok((a, why))) => (Ok(Ok(a)), why),
        Ok(Err(e)) => (Ok(Err(e)), None),
        Err(e) => (Err(e), None),
    };
    match refusal(tac_outcome, &slave) {
        Ok(a) => {
            let mut body = json!({"success": true, "tac": a.tac});
            if let Some(why) = why {
                body["explain"] = serde_json::to_value(why).unwrap_or_default();
            }
            models::json(StatusCode::OK, &body)
        }
        Err(Refusal::NoAllocation(e)) => models::json(
            StatusCode::NOT_FOUND,
            &json!({"success": false, "error": e.no_allocation_reason()}),
        ),
        Err(Refusal::Failed(e)) => e.into_json(),
    }
}

/// `GET /api/<table>`: every row, streamed; slaves and masters
/// denormalized, slaves filtered.
pub async fn list(state: Arc<AppState>, table: Table, query: String) -> Response {
    let parsed = models::query_pairs(&query).and_then(|p| {
        models::known_list_keys(table, &p)?;
        Ok((models::slave_filter(&p)?, LiveFilter::parse(&p)?))
    });
    let (filter, live_filter) = match parsed {
        Ok(f) => f,
        Err(e) => return e.into_json(),
    };
    let live = match (&state.services.live, table) {
        (Some(live), Table::Slaves | Table::Masters) => Some(live.clone()),
        (None, Table::Slaves) if !live_filter.is_empty() => {
            return ApiError::bad_request(
                "this daemon keeps no live state: master, connected, connected_master and stale are not available",
            )
            .into_json()
        }
        _ => None,
    };
    // Streamed a page at a time (crate::stream): a 100,000-slave list is
    // never built whole.
    let listing = crate::stream::Listing {
        table,
        filter,
        live,
        live_filter,
    };
    crate::stream::list(state, listing).await
}

/// Slave or master rows as JSON, each with its `live` object judged now;
/// slaves kept only when they pass `filter`.
async fn judged(
    live: &crate::live::LiveServices,
    inventory: &slavealloc_domain::Inventory,
    table: Table,
    rows: Vec<slavealloc_domain::Row>,
    filter: &LiveFilter,
) -> Result<Vec<Json>, StoreError> {
    let masters = inventory.list(Table::Masters, &Default::default()).await?;
    let facts = live.store.live_state().await?;
    let judge = Judge::new(&facts, &masters, live.host.now(), live.fresh_for);
    Ok(if table == Table::Slaves {
        let rows = rows.into_iter().filter(|r| judge.keeps(filter, r)).collect();
        with_live(rows, |r| judge.slave(r))
    } else {
        with_live(rows, |r| judge.master(r))
    })
}

/// `GET /api/whatif?drain=NICK[&drain=NICK...]`: where the drained
/// masters' slaves would go and the spread before and after, computed in
/// memory from one reading with the allocation rule; nothing is written.
pub async fn whatif(state: Arc<AppState>, query: String) -> Response {
    let (drains, adds) = match models::query_pairs(&query).and_then(|p| models::whatif_plan(&p)) {
        Ok(d) => d,
        Err(e) => return e.into_json(),
    };
    let inventory = state.services.inventory.clone();
    let answer = state
        .db(async move {
            let everything = slavealloc_domain::SlaveFilter {
                include_decomm: true,
                ..Default::default()
            };
            fn typed<T: serde::de::DeserializeOwned>(rows: Vec<slavealloc_domain::Row>) -> Result<Vec<T>, StoreError> {
                rows.iter()
                    .map(|r| slavealloc_domain::schema::from_row(r).map_err(|e| StoreError::Other(e.to_string())))
                    .collect()
            }
            let masters = typed(inventory.list(Table::Masters, &everything).await?)?;
            let slaves = typed(inventory.list(Table::Slaves, &everything).await?)?;
            let passwords = typed(inventory.list(Table::SlavePasswords, &everything).await?)?;
            let templates = typed(inventory.list(Table::TacTemplates, &everything).await?)?;
            let pools = inventory.list(Table::Pools, &everything).await?;
            let mut added = Vec::with_capacity(adds.len());
            for (nickname, pool) in adds {
                let poolid = pools
                    .iter()
                    .find(|p| p.get("name").and_then(|v| v.as_text()) == Some(pool.as_str()))
                    .and_then(|p| p.get("poolid").and_then(|v| v.as_int()))
                    .and_then(|id| i32::try_from(id).ok());
                let Some(poolid) = poolid else {
                    return Ok(Err(slavealloc_domain::whatif::WhatIfError::UnknownPool(pool)));
                };
                added.push(slavealloc_domain::whatif::NewMaster { nickname, poolid });
            }
            Ok(slavealloc_domain::whatif::plan(
                &masters, &slaves, &passwords, &templates, &drains, &added,
            ))
        })
        .await;
    match answer {
        Ok(Ok(report)) => models::json(StatusCode::OK, &report),
        Ok(Err(e)) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()).into_json(),
        Err(e) => ApiError::from_store(&e).into_json(),
    }
}

/// `GET /api/drift`: where the live fleet differs from what was recorded.
pub async fn drift(state: Arc<AppState>) -> Response {
    let Some(live) = state.services.live.clone() else {
        return ApiError::new(StatusCode::NOT_FOUND, "this daemon keeps no live state").into_json();
    };
    let inventory = state.services.inventory.clone();
    let report = state
        .db(async move {
            let slaves = inventory.list(Table::Slaves, &Default::default()).await?;
            let masters = inventory.list(Table::Masters, &Default::default()).await?;
            let facts = live.store.live_state().await?;
            Ok(slavealloc_domain::live::drift(&slaves, &masters, &facts))
        })
        .await;
    match report {
        Ok(report) => models::json(StatusCode::OK, &report),
        Err(e) => ApiError::from_store(&e).into_json(),
    }
}

/// `GET /api/<table>/<id>` or `GET /api/<table>/<name>?byname=1`: one
/// plain row, or `{}` with 404.
pub async fn get_row(state: Arc<AppState>, table: Table, key: String, query: String) -> Response {
    let by_name = match models::query_pairs(&query).and_then(|p| models::by_name(&p)) {
        Ok(b) => b,
        Err(e) => return e.into_json(),
    };
    let inventory = state.services.inventory.clone();
    let found = if by_name {
        state.db(async move { inventory.find(table, &key).await }).await
    } else {
        let id = match models::row_id(&key) {
            Ok(id) => id,
            Err(e) => return e.into_json(),
        };
        state.db(async move { inventory.get(table, id).await }).await
    };
    let found = match (found, &state.services.live, table) {
        (Ok(Some(row)), Some(live), Table::Slaves | Table::Masters) => {
            let (live, inventory) = (live.clone(), state.services.inventory.clone());
            state
                .db(async move {
                    let one = judged(&live, &inventory, table, vec![row], &LiveFilter::default()).await?;
                    Ok(one.into_iter().next())
                })
                .await
        }
        (found, _, _) => found.map(|row| row.map(|r| serde_json::to_value(r).unwrap_or_default())),
    };
    match found {
        Ok(Some(row)) => models::json(StatusCode::OK, &row),
        Ok(None) => models::json(StatusCode::NOT_FOUND, &json!({})),
        Err(e) => ApiError::from_store(&e).into_json(),
    }
}

/// The id a row path names: `<id>`, or `<name>` with `?byname=1` (404
/// when no row has that name).
pub(crate) async fn row_key(state: &AppState, table: Table, key: &str, query: &str) -> Result<i32, ApiError> {
    if !models::by_name(&models::query_pairs(query)?)? {
        return models::row_id(key);
    }
    let inventory = state.services.inventory.clone();
    let name = key.to_owned();
    let row = state
        .db(async move { inventory.find(table, &name).await })
        .await
        .map_err(|e| ApiError::from_store(&e))?;
    let id = row
        .as_ref()
        .and_then(|r| table.id_column().and_then(|c| r.get(c)))
        .and_then(|v| v.as_int());
    match id.map(i32::try_from) {
        Some(Ok(id)) => Ok(id),
        _ => Err(ApiError::from_store(&StoreError::NotFound)),
    }
}

/// `PUT /api/<table>/<id>` (or `<name>?byname=1`): writes the updatable
/// keys the body carries, ignores the rest, answers exactly
/// `{"success": true}`.
pub async fn put_row(
    state: Arc<AppState>,
    table: Table,
    key: String,
    query: String,
    caller: Caller,
    body: Body,
) -> Response {
    let result = async {
        let writer = state.authorize(&caller)?;
        let id = row_key(&state, table, &key, &query).await?;
        let body = body.changes().await?;
        let inventory = state.services.inventory.clone();
        state
            .db(async move { inventory.update_reported(table, id, &body, &writer).await })
            .await
            .map_err(|e| ApiError::from_store(&e))
    }
    .await;
    match result {
        // The original UI reads only `success`.
        Ok((_, report)) => models::json(
            StatusCode::OK,
            &json!({"success": true, "changed": report.changed, "ignored": report.ignored}),
        ),
        Err(e) => e.into_json(),
    }
}

/// `POST /api/<table>`: creates a row; 201 with the row, id included.
pub async fn create_row(state: Arc<AppState>, table: Table, caller: Caller, body: Body) -> Response {
    let result = async {
        let writer = state.authorize(&caller)?;
        let body = body.changes().await?;
        let inventory = state.services.inventory.clone();
        state
            .db(async move { inventory.create_as(table, &body, &writer).await })
            .await
            .map_err(|e| ApiError::from_store(&e))
    }
    .await;
    match result {
        Ok(row) => {
            let mut r = models::json(StatusCode::CREATED, &row);
            let id = table.id_column().and_then(|c| row.get(c)).and_then(|v| v.as_int());
            let location = id.map(|id| format!("{}/api/{}/{id}", state.base, table.name()));
            if let Some(v) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(e) => e.into_json(),
    }
}

/// `DELETE /api/<table>/<id>` (or `<name>?byname=1`): 409 while other
/// rows refer to it.
pub async fn delete_row(state: Arc<AppState>, table: Table, key: String, query: String, caller: Caller) -> Response {
    let result = async {
        let writer = state.authorize(&caller)?;
        let id = row_key(&state, table, &key, &query).await?;
        let inventory = state.services.inventory.clone();
        state
            .db(async move { inventory.delete_as(table, id, &writer).await })
            .await
            .map_err(|e| ApiError::from_store(&e))
    }
    .await;
    match result {
        Ok(()) => models::json(StatusCode::OK, &json!({"success": true})),
        Err(e) => e.into_json(),
    }
}

/// `GET /api/audit?table=&id=&limit=`: audit entries, newest first.
pub async fn audit(state: Arc<AppState>, query: String) -> Response {
    let now = std::time::SystemTime::now();
    let params = match models::query_pairs(&query).and_then(|p| models::audit_params(&p, now)) {
        Ok(p) => p,
        Err(e) => return e.into_json(),
    };
    let inventory = state.services.inventory.clone();
    let answer = state
        .db(async move {
            let mut q = params.query;
            if let Some(name) = &params.name {
                let table = *q.table.get_or_insert(Table::Slaves);
                let id = inventory
                    .find(table, name)
                    .await?
                    .and_then(|r| table.id_column().and_then(|c| r.get(c)).and_then(Value::as_int));
                match id {
                    Some(id) => q.row_id = Some(id),
                    None => return Ok(None),
                }
            }
            let entries = inventory.store().audit(q).await?;
            let names = audit_names(&inventory, &entries).await?;
            Ok(Some((entries, names)))
        })
        .await;
    match answer {
        Ok(None) => ApiError::new(StatusCode::NOT_FOUND, "no row of that table has that name").into_json(),
        Ok(Some((entries, names))) => {
            let next = entries.last().map(|e| e.id);
            let rows: Vec<Json> = entries
                .iter()
                .map(|e| {
                    let mut v = serde_json::to_value(e).unwrap_or_default();
                    let name = names.get(&(e.entry.table_name.clone(), e.entry.row_id)).cloned();
                    v["name"] = name.map_or(Json::Null, Json::String);
                    v
                })
                .collect();
            let mut r = models::json(StatusCode::OK, &rows);
            if let Some(v) = next.and_then(|n| HeaderValue::from_str(&n.to_string()).ok()) {
                r.headers_mut()
                    .insert(header::HeaderName::from_static(NEXT_CURSOR_HEADER), v);
            }
            r
        }
        Err(e) => ApiError::from_store(&e).into_json(),
    }
}

/// The header in which `/api/audit` gives the cursor of its next page (the
/// last entry's id): pass it back as `cursor=`.
pub const NEXT_CURSOR_HEADER: &str = "x-slavealloc-next-cursor";

/// The name of each (table, row id) the entries refer to: its row's name
/// now, or, for a row deleted since, the name its last entry kept.
async fn audit_names(
    inventory: &slavealloc_domain::Inventory,
    entries: &[slavealloc_domain::AuditEntry],
) -> Result<std::collections::HashMap<(String, i64), String>, StoreError> {
    let mut names = std::collections::HashMap::new();
    let tables: std::collections::BTreeSet<&str> = entries.iter().map(|e| e.entry.table_name.as_str()).collect();
    for t in tables {
        let Ok(table) = t.parse::<Table>() else { continue };
        let (Some(id_col), Some(name_col)) = (table.id_column(), table.name_column()) else {
            continue;
        };
        let everything = slavealloc_domain::SlaveFilter {
            include_decomm: true,
            ..Default::default()
        };
        for row in inventory.list(table, &everything).await? {
            if let (Some(id), Some(name)) = (
                row.get(id_col).and_then(Value::as_int),
                row.get(name_col).and_then(Value::as_text),
            ) {
                names.insert((t.to_owned(), id), name.to_owned());
            }
        }
        for e in entries.iter().filter(|e| e.entry.table_name == t) {
            let kept = [&e.entry.old_values, &e.entry.new_values]
                .into_iter()
                .flatten()
                .find_map(|r| r.get(name_col).and_then(Value::as_text));
            if let Some(kept) = kept {
                names
                    .entry((t.to_owned(), e.entry.row_id))
                    .or_insert_with(|| kept.to_owned());
            }
        }
    }
    Ok(names)
}

/// `GET /healthz`: a database round trip; 200 `ok`, or 503 with the reason.
pub async fn healthz(state: Arc<AppState>) -> Response {
    let store = Arc::clone(state.services.inventory.store());
    match state.db(async move { store.ping().await }).await {
        Ok(()) => text(StatusCode::OK, "ok\n".to_owned()),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

/// `GET /metrics`: Prometheus exposition (OpenMetrics text).
pub async fn metrics(state: Arc<AppState>) -> Response {
    refresh_live_gauges(&state).await;
    let mut r = state.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

/// How long a slave may go unseen before the metrics count it stale.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// Reads the live state into the live gauges; when the database does not
/// answer, the gauges keep their last values (and `database_up` says why).
async fn refresh_live_gauges(state: &Arc<AppState>) {
    let Some(live) = state.services.live.clone() else {
        return;
    };
    let inventory = state.services.inventory.clone();
    let read = state
        .db(async move {
            let masters = inventory.list(Table::Masters, &Default::default()).await?;
            let slaves = inventory.list(Table::Slaves, &Default::default()).await?;
            let facts = live.store.live_state().await?;
            Ok((masters, slaves, facts, live.host.now()))
        })
        .await;
    let Ok((masters, slaves, facts, now)) = read else {
        return;
    };
    let index = facts.index();
    let int =
        |r: &slavealloc_domain::Row, c: &str| r.get(c).and_then(|v| v.as_int()).and_then(|v| i32::try_from(v).ok());
    let text = |r: &slavealloc_domain::Row, c: &str| r.get(c).and_then(|v| v.as_text()).unwrap_or_default().to_owned();
    let gauges: Vec<metrics::MasterGauge> = masters
        .iter()
        .map(|m| {
            let status = int(m, "masterid").and_then(|id| index.masters.get(&id));
            metrics::MasterGauge {
                master: text(m, "nickname"),
                pool: text(m, "pool"),
                polled: status.is_some(),
                reachable: status.is_some_and(|s| s.reachable),
                connected: status.map_or(0, |s| s.connected),
                poll_seconds: status.map_or(0.0, |s| s.poll_millis as f64 / 1000.0),
            }
        })
        .collect();
    let stale = slaves
        .iter()
        .filter(|s| s.get("enabled") == Some(&slavealloc_domain::Value::Bool(true)))
        .filter(|s| {
            let seen = int(s, "slaveid").and_then(|id| index.presence.get(&id)).and_then(|p| {
                if p.connected_masterid.is_some() {
                    Some(now)
                } else {
                    p.last_seen
                }
            });
            slavealloc_domain::live::is_stale(seen, now, STALE_AFTER)
        })
        .count();
    state.metrics.set_live(&gauges, stale as u64);
}

/// `GET /`: to the UI when one is mounted, else to the API's index.
pub async fn root(state: Arc<AppState>) -> Response {
    let target = if state.ui_mounted { "ui/" } else { "api/" };
    let location = format!("{}/{target}", state.base);
    let mut r = warp::reply::with_status("", StatusCode::FOUND).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `GET /api/`: the HTML page documenting every route.
pub async fn api_index(state: Arc<AppState>) -> Response {
    warp::reply::html(state.api_index.clone()).into_response()
}

/// `GET /api/openapi.json`.
pub async fn openapi(state: Arc<AppState>) -> Response {
    let mut r = state.openapi.clone().into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The OpenAPI document, as shipped in this crate.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The OpenAPI document with its server URL set to the base path.
pub(crate) fn openapi_json(base: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(OPENAPI) else {
        return OPENAPI.to_owned();
    };
    doc["servers"] = json!([{ "url": if base.is_empty() { "/" } else { base } }]);
    for table in Table::EXPOSED {
        doc["components"]["schemas"][table.name()] = table_schema(table);
    }
    doc.to_string()
}

/// A table's rows as JSON Schema, from the domain's schema: every column
/// with its type, whether it may be null and whether a PUT writes it, and
/// the names a listing adds for references.
fn table_schema(table: Table) -> serde_json::Value {
    use slavealloc_domain::schema::Kind;
    let mut properties = serde_json::Map::new();
    for c in table.columns() {
        let kind = match c.kind {
            Kind::Bool => "boolean",
            Kind::Id | Kind::Int | Kind::Port | Kind::Ref(_) => "integer",
            Kind::Name | Kind::SlaveName | Kind::Text => "string",
        };
        let mut p = json!({ "type": kind, "title": c.title, "nullable": c.nullable, "readOnly": !c.updatable });
        if let Kind::Ref(t) = c.kind {
            p["description"] = json!(match c.when_null {
                Some(meaning) => format!("the id of a row of {t}; null: {meaning}"),
                None => format!("the id of a row of {t}"),
            });
        }
        if c.kind == Kind::Port {
            p["minimum"] = json!(0);
            p["maximum"] = json!(65535);
        }
        properties.insert(c.name.to_owned(), p);
        if let Some(label) = c.label {
            properties.insert(
                label.to_owned(),
                json!({ "type": "string", "nullable": c.nullable, "readOnly": true,
                        "description": format!("the name of {}, in listings", c.name) }),
            );
        }
    }
    json!({ "type": "object", "title": table.name(), "properties": properties })
}

const API_INDEX: &str = include_str!("api-index.html");

/// The API index page with links under the base path.
pub(crate) fn api_index_html(base: &str) -> String {
    let tables: String = Table::EXPOSED
        .iter()
        .map(|t| format!("<li><a href=\"{base}/api/{t}\"><code>{t}</code></a></li>\n"))
        .collect();
    API_INDEX.replace("{{BASE}}", base).replace("{{TABLES}}", &tables)
}
