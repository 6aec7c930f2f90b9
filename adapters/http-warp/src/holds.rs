//! Drains, disables and bulk work in the API:
//!
//! - `POST /api/masters/<key>/drain` `{"note", "until", "graceful"}` and
//!   `POST /api/masters/<key>/undrain`; for slaves `disable` and `enable`
//!   (`drain` and `undrain` are the same there);
//! - `GET /api/masters/<key>/drain`: the master's open hold and its
//!   progress (how many of its workers are still connected);
//! - `GET /api/holds?target=master|slave&open=1&limit=N`;
//! - `POST /api/slaves/bulk` ([`slavealloc_domain::BulkRequest`]).
//!
//! Every write needs a token, as PUT does; the key is an id or, with
//! `?byname=1`, a name.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value as Json};
use slavealloc_domain::audit::format_at;
use slavealloc_domain::lifecycle::{hold_json, HoldQuery, HoldTarget};
use slavealloc_domain::{BulkRequest, HoldRequest, Maintenance, StoreError, Table, Value};
use warp::http::StatusCode;
use warp::reply::Response;

use crate::handlers::row_key;
use crate::handlers::Caller;
use crate::models::{self, ApiError, Body, MAX_BODY_BYTES};
use crate::AppState;

/// The path segments of [`Action`]s.
pub const ACTIONS: [&str; 4] = ["drain", "undrain", "disable", "enable"];

/// What a POST under a master or slave asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Drain a master, disable a slave.
    Hold,
    /// Undrain a master, enable a slave.
    Release,
}

impl Action {
    /// The action a path segment names for `table`.
    pub fn parse(table: Table, segment: &str) -> Option<Self> {
        match (table, segment) {
            (Table::Masters | Table::Slaves, "drain") => Some(Action::Hold),
            (Table::Masters | Table::Slaves, "undrain") => Some(Action::Release),
            (Table::Slaves, "disable") => Some(Action::Hold),
            (Table::Slaves, "enable") => Some(Action::Release),
            _ => None,
        }
    }
}

fn target_of(table: Table) -> Option<HoldTarget> {
    match table {
        Table::Masters => Some(HoldTarget::Master),
        Table::Slaves => Some(HoldTarget::Slave),
        _ => None,
    }
}

fn maintenance(state: &AppState) -> Result<Maintenance, ApiError> {
    state
        .services
        .maintenance
        .clone()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "this daemon keeps no holds"))
}

fn time(t: SystemTime) -> Json {
    Json::String(format_at(t))
}

/// Reads an optional JSON body as `T` (an empty body is `T::default()`).
async fn read_json<T: serde::de::DeserializeOwned + Default>(body: Body) -> Result<T, ApiError> {
    let bytes = body.read(MAX_BODY_BYTES).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

/// The name of each row of `table`, by id.
async fn names(state: &AppState, table: Table) -> Result<std::collections::HashMap<i32, String>, StoreError> {
    let inventory = state.services.inventory.clone();
    let rows = state.db(async move { inventory.store().list(table).await }).await?;
    let (Some(id), Some(name)) = (table.id_column(), table.name_column()) else {
        return Ok(Default::default());
    };
    Ok(rows
        .iter()
        .filter_map(|r| {
            let i = i32::try_from(r.get(id)?.as_int()?).ok()?;
            Some((i, r.get(name)?.as_text()?.to_owned()))
        })
        .collect())
}

/// `POST /api/<masters|slaves>/<key>/<action>`.
pub async fn act(
    state: Arc<AppState>,
    table: Table,
    key: String,
    action: String,
    query: String,
    caller: Caller,
    body: Body,
) -> Response {
    let (Some(target), Some(action)) = (target_of(table), Action::parse(table, &action)) else {
        return ApiError::new(StatusCode::NOT_FOUND, "no such action").into_json();
    };
    let result = async {
        let writer = state.authorize(&caller)?;
        let maintenance = maintenance(&state)?;
        let id = row_key(&state, table, &key, &query).await?;
        let store = |e: StoreError| ApiError::from_store(&e);
        let answer = match action {
            Action::Hold => {
                let request: HoldRequest = read_json(body).await?;
                let holds = state
                    .db(async move { maintenance.hold(target, &[id], &request, &writer).await })
                    .await
                    .map_err(store)?;
                let names = names(&state, table).await.map_err(store)?;
                let on_it = match target {
                    HoldTarget::Master => slaves_on(&state, id).await.map_err(store)?,
                    HoldTarget::Slave => Vec::new(),
                };
                json!({
                    "success": true,
                    "hold": holds.first().map(|h| hold_json(h, names.get(&h.target_id).map(String::as_str))),
                    "slaves": on_it,
                })
            }
            Action::Release => {
                let ended = state
                    .db(async move { maintenance.release(target, &[id], &writer).await })
                    .await
                    .map_err(store)?;
                let names = names(&state, table).await.map_err(store)?;
                let ended: Vec<Json> = ended
                    .iter()
                    .map(|h| hold_json(h, names.get(&h.target_id).map(String::as_str)))
                    .collect();
                json!({"success": true, "ended": ended})
            }
        };
        Ok::<_, ApiError>(answer)
    }
    .await;
    match result {
        Ok(answer) => models::json(StatusCode::OK, &answer),
        Err(e) => e.into_json(),
    }
}

/// The slaves whose current master is `masterid`, by name.
async fn slaves_on(state: &AppState, masterid: i32) -> Result<Vec<String>, StoreError> {
    let inventory = state.services.inventory.clone();
    let rows = state
        .db(async move { inventory.store().list(Table::Slaves).await })
        .await?;
    Ok(rows
        .iter()
        .filter(|r| r.get("current_masterid").and_then(Value::as_int) == Some(masterid.into()))
        .filter_map(|r| r.get("name").and_then(Value::as_text).map(str::to_owned))
        .collect())
}

/// `GET /api/masters/<key>/drain`: the open hold (or `null`) and, when the
/// daemon keeps the live fleet, the workers still connected to it.
pub async fn drain_status(state: Arc<AppState>, key: String, query: String) -> Response {
    let result = async {
        let maintenance = maintenance(&state)?;
        let id = row_key(&state, Table::Masters, &key, &query).await?;
        let store = |e: StoreError| ApiError::from_store(&e);
        let open = HoldQuery {
            target: Some(HoldTarget::Master),
            target_id: Some(id),
            open_only: true,
            limit: 1,
        };
        let holds = state
            .db(async move { maintenance.lifecycle().holds(&open).await })
            .await
            .map_err(store)?;
        let names = names(&state, Table::Masters).await.map_err(store)?;
        let progress = match state.services.live.clone() {
            None => Json::Null,
            Some(live) => {
                let slave_names = names_of_slaves(&state).await.map_err(store)?;
                let facts = state
                    .db(async move { live.store.live_state().await })
                    .await
                    .map_err(store)?;
                let mut connected: Vec<&str> = facts
                    .presence
                    .iter()
                    .filter(|p| p.connected_masterid == Some(id))
                    .filter_map(|p| slave_names.get(&p.slaveid).map(String::as_str))
                    .collect();
                connected.sort_unstable();
                let status = facts.masters.iter().find(|m| m.masterid == id);
                json!({
                    "connected": connected.len(),
                    "workers": connected,
                    "last_poll": status.and_then(|s| s.last_poll).map(time),
                    "reachable": status.map(|s| s.reachable),
                })
            }
        };
        Ok::<_, ApiError>(json!({
            "master": names.get(&id),
            "hold": holds.first().map(|h| hold_json(h, names.get(&id).map(String::as_str))),
            "progress": progress,
        }))
    }
    .await;
    match result {
        Ok(answer) => models::json(StatusCode::OK, &answer),
        Err(e) => e.into_json(),
    }
}

async fn names_of_slaves(state: &AppState) -> Result<std::collections::HashMap<i32, String>, StoreError> {
    names(state, Table::Slaves).await
}

/// The query of `GET /api/holds`.
fn hold_query(pairs: &[(String, String)]) -> Result<HoldQuery, ApiError> {
    let mut q = HoldQuery {
        limit: 200,
        ..HoldQuery::default()
    };
    for (k, v) in pairs {
        match k.as_str() {
            "_" => {}
            "target" => {
                q.target =
                    Some(HoldTarget::parse(v).ok_or_else(|| ApiError::bad_request("target: must be master or slave"))?);
            }
            "open" => q.open_only = models::flag(k, v)?,
            "limit" => {
                q.limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| ApiError::bad_request("limit: must be 1 to 1000"))?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: only target, open, limit"
                )))
            }
        }
    }
    Ok(q)
}

/// `GET /api/holds`: holds, newest first, with their rows' names.
pub async fn list(state: Arc<AppState>, query: String) -> Response {
    let result = async {
        let maintenance = maintenance(&state)?;
        let q = hold_query(&models::query_pairs(&query)?)?;
        let store = |e: StoreError| ApiError::from_store(&e);
        let holds = state
            .db(async move { maintenance.lifecycle().holds(&q).await })
            .await
            .map_err(store)?;
        let masters = names(&state, Table::Masters).await.map_err(store)?;
        let slaves = names_of_slaves(&state).await.map_err(store)?;
        Ok::<_, ApiError>(
            holds
                .iter()
                .map(|h| {
                    let names = match h.target {
                        HoldTarget::Master => &masters,
                        HoldTarget::Slave => &slaves,
                    };
                    hold_json(h, names.get(&h.target_id).map(String::as_str))
                })
                .collect::<Vec<_>>(),
        )
    }
    .await;
    match result {
        Ok(answer) => models::json(StatusCode::OK, &answer),
        Err(e) => e.into_json(),
    }
}

/// `POST /api/slaves/bulk`.
pub async fn bulk(state: Arc<AppState>, caller: Caller, body: Body) -> Response {
    let result = async {
        let writer = state.authorize(&caller)?;
        let maintenance = maintenance(&state)?;
        let bytes = body.read(MAX_BODY_BYTES).await?;
        let request: BulkRequest =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
        state
            .db(async move { maintenance.bulk(&request, &writer).await })
            .await
            .map_err(|e| ApiError::from_store(&e))
    }
    .await;
    match result {
        Ok(report) => models::json(StatusCode::OK, &report),
        Err(e) => e.into_json(),
    }
}
