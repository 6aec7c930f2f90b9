//! `GET /api/<table>` as a stream: rows are read from the store a page at
//! a time by key ([`InventoryStore::list_page`]), written straight into
//! JSON and sent in chunks as the client takes them, so that an answer of
//! a 100,000-slave fleet never exists whole in the daemon — neither as
//! rows, nor as `serde_json::Value`s, nor as bytes — and a slow reader
//! holds one page, not the list (issue 14's memory goal).
//!
//! The answer is the one the whole list gave, byte for byte: the same rows
//! in key order, names filled in as [`slavealloc_domain::Inventory::list`]
//! fills them, the same filters, `live` in its sorted place. What a stream
//! cannot promise is one snapshot: a row written while the list is being
//! sent appears as it was when its page was read (every row at most once,
//! as the pages follow the key).
//!
//! A failure before the first byte is an ordinary error answer; one after
//! it aborts the connection, so that a client never takes a cut list for a
//! whole one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value as Json;
use slavealloc_domain::live::LiveState;
use slavealloc_domain::{InventoryStore, Row, RowShape, SlaveFilter, Table, Value};
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;

use crate::live::{Judge, LiveFilter, LiveServices};
use crate::models::ApiError;
use crate::AppState;

/// Rows per page read from the store: small enough that 32 readers at
/// once hold a few MiB, large enough that a 100,000-row list is a couple
/// of hundred short queries.
pub(crate) const PAGE_ROWS: usize = 500;

/// Bytes of JSON gathered before they are handed to the connection.
const CHUNK_BYTES: usize = 64 * 1024;

/// What a listing asks for, once its query has been checked.
pub(crate) struct Listing {
    pub(crate) table: Table,
    pub(crate) filter: SlaveFilter,
    pub(crate) live: Option<LiveServices>,
    pub(crate) live_filter: LiveFilter,
}

/// The live facts a listing judges its rows by, read once when it starts.
struct Facts {
    masters: Vec<Row>,
    state: LiveState,
    now: SystemTime,
    fresh_for: Duration,
}

/// The listing's answer: 200 with a streamed JSON array, or the error of
/// its first read.
pub(crate) async fn list(state: Arc<AppState>, listing: Listing) -> Response {
    let store = Arc::clone(state.services.inventory.store());
    let (table, live) = (listing.table, listing.live.clone());
    let first = {
        let store = Arc::clone(&store);
        let inventory = state.services.inventory.clone();
        let filter = listing.filter.clone();
        state
            .db(async move {
                let shape = inventory.row_shape(table, &filter).await?;
                let facts = match live {
                    Some(live) => Some(Facts {
                        masters: store.list(Table::Masters).await?,
                        state: live.store.live_state().await?,
                        now: live.host.now(),
                        fresh_for: live.fresh_for,
                    }),
                    None => None,
                };
                let page = store.list_page(table, None, PAGE_ROWS).await?;
                Ok((shape, facts, page))
            })
            .await
    };
    let (shape, facts, page) = match first {
        Ok(f) => f,
        Err(e) => return ApiError::from_store(&e).into_json(),
    };
    let (sender, body) = hyper::Body::channel();
    tokio::spawn(send(state, store, listing, shape, facts, page, sender));
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Writes the rows of `page` and of the pages after it into `sender`;
/// returns early when the client goes away.
async fn send(
    state: Arc<AppState>,
    store: Arc<dyn InventoryStore>,
    listing: Listing,
    shape: RowShape,
    facts: Option<Facts>,
    mut page: Vec<Row>,
    mut sender: hyper::body::Sender,
) {
    let table = listing.table;
    let judge = facts
        .as_ref()
        .map(|f| Judge::new(&f.state, &f.masters, f.now, f.fresh_for));
    let mut out = Vec::with_capacity(CHUNK_BYTES + 4096);
    out.push(b'[');
    let mut first = true;
    loop {
        // A short page is the last; so is the one page of a keyless table.
        let after = match table.id_column() {
            Some(id) if page.len() >= PAGE_ROWS => page.last().and_then(|r| r.get(id)).and_then(Value::as_int),
            _ => None,
        };
        for row in page {
            let Some(row) = shape.apply(row) else { continue };
            let live = match (&judge, table) {
                (Some(j), Table::Slaves) if !j.keeps(&listing.live_filter, &row) => continue,
                (Some(j), Table::Slaves) => Some(j.slave(&row)),
                (Some(j), Table::Masters) => Some(j.master(&row)),
                _ => None,
            };
            if !first {
                out.push(b',');
            }
            let written = match live {
                Some(live) => serde_json::to_writer(&mut out, &WithLive::new(&row, live)),
                None => serde_json::to_writer(&mut out, &row),
            };
            if let Err(e) = written {
                tracing::error!(table = %table, error = %e, "listing: a row did not serialize");
                sender.abort();
                return;
            }
            first = false;
            if out.len() >= CHUNK_BYTES {
                let chunk = std::mem::replace(&mut out, Vec::with_capacity(CHUNK_BYTES + 4096));
                if sender.send_data(Bytes::from(chunk)).await.is_err() {
                    return;
                }
            }
        }
        let Some(after) = after else { break };
        let store = Arc::clone(&store);
        page = match state
            .db(async move { store.list_page(table, Some(after), PAGE_ROWS).await })
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(table = %table, after, error = %e, "listing cut short: a page could not be read");
                sender.abort();
                return;
            }
        };
    }
    out.push(b']');
    let _ = sender.send_data(Bytes::from(out)).await;
}

/// A row with its `live` object, serialized as the JSON object
/// [`crate::live::with_live`] builds: serde_json's objects keep their keys
/// sorted, so `live` goes where it sorts (and replaces a column of that
/// name, as an insert into the object would).
struct WithLive<'a> {
    row: &'a Row,
    live: Json,
}

impl<'a> WithLive<'a> {
    fn new(row: &'a Row, live: Json) -> Self {
        Self { row, live }
    }
}

const LIVE: &str = "live";

impl Serialize for WithLive<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = self.row.len() + usize::from(!self.row.contains_key(LIVE));
        let mut map = s.serialize_map(Some(len))?;
        let mut live = Some(&self.live);
        for (k, v) in self.row {
            if k.as_str() >= LIVE {
                if let Some(l) = live.take() {
                    map.serialize_entry(LIVE, l)?;
                }
                if k == LIVE {
                    continue;
                }
            }
            map.serialize_entry(k, v)?;
        }
        if let Some(l) = live {
            map.serialize_entry(LIVE, l)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn row(pairs: &[(&str, Value)]) -> Row {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    /// The streamed object must be the one `with_live` built, for a `live`
    /// that sorts first, in the middle, last, and over a column of its name.
    #[test]
    fn with_live_writes_what_the_json_object_gave() {
        let live = serde_json::json!({"state": "never", "connected_master": null, "a": [1, 2]});
        let rows = [
            row(&[("name", Value::Text("s1".into())), ("zz", Value::Int(3))]),
            row(&[("a", Value::Null), ("b", Value::Bool(true))]),
            row(&[
                ("aa", Value::Int(-1)),
                ("live", Value::Int(1)),
                ("m", Value::Text("x\"y".into())),
            ]),
            Row::new(),
        ];
        for r in rows {
            let whole = crate::live::with_live(vec![r.clone()], |_| live.clone());
            let expected = serde_json::to_string(&whole[0]).unwrap();
            let streamed = serde_json::to_string(&WithLive::new(&r, live.clone())).unwrap();
            assert_eq!(streamed, expected);
        }
    }
}
