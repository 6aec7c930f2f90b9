//! The admin command line's port: the operations `slavealloc gettac`,
//! `lock`, `enable`, `list`, ... need from a running allocator, and an
//! in-process implementation of them over [`Allocator`] and [`Inventory`].
//!
//! Main design decision: the command line's logic (which rows to read,
//! what to write, what to tell the operator) is written once against
//! [`AdminApi`]; the HTTP client adapter (`slavealloc-client-http`) carries
//! it to a server, and [`LocalAdmin`] runs it against any store in the same
//! process, so that logic is tested without a server or a socket.

use async_trait::async_trait;
use thiserror::Error;

use crate::access::Writer;
use crate::allocator::Allocator;
use crate::error::{AllocationError, StoreError};
use crate::inventory::{Inventory, SlaveFilter};
use crate::lifecycle::{hold_json, HoldQuery, HoldTarget};
use crate::maintenance::{BulkRequest, HoldRequest, Maintenance};
use crate::name::SlaveName;
use crate::schema::{Row, Table};

/// Why an admin operation failed. Each variant's message is a complete
/// sentence an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdminError {
    /// The allocator gave no tac for this slave; `reason` says which case
    /// (no slave of that name, no enabled master in its pool) when the
    /// server said (HTTP 404 on `/gettac`).
    #[error("no allocation available for {slave}: {reason}")]
    NoAllocation {
        /// The slave asked for.
        slave: String,
        /// What the server said.
        reason: String,
    },
    /// The row to write does not exist (any more).
    #[error("no such row: {0}")]
    NotFound(String),
    /// The server refused the request as invalid: a bad value, a
    /// duplicate, a reference to a missing row. The text is the server's.
    #[error("refused by the server: {0}")]
    Rejected(String),
    /// A write needs a token and the request carried none.
    #[error("this server needs a write token for that: give one with --token or SLAVEALLOC_TOKEN")]
    TokenNeeded,
    /// The request carried a token the server does not know (a typo, or one
    /// removed from its configuration).
    #[error("the server refused the write token given: it is not one of its tokens ({0})")]
    TokenRefused(String),
    /// The token is known but its scope does not allow this write (an
    /// operator token changing a template, say).
    #[error("the write token given may not do that: {0}")]
    Forbidden(String),
    /// The server could not be reached at all.
    #[error("cannot reach the slavealloc server at {url}: {reason}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// The transport's error.
        reason: String,
    },
    /// The server failed (HTTP 5xx); the text is its own message.
    #[error("server error: {0}")]
    Server(String),
    /// The server answered something that is not the API's answer (an
    /// HTML page from a proxy, say).
    #[error("unexpected answer from {url}: {reason}")]
    BadResponse {
        /// The URL asked.
        url: String,
        /// What was wrong with the answer.
        reason: String,
    },
}

/// What the admin command line needs from an allocator. Implemented over
/// HTTP by `slavealloc-client-http` and in process by [`LocalAdmin`].
///
/// Rows are the REST API's rows: plain (every column of the table) from
/// [`AdminApi::get`] and [`AdminApi::find`], denormalized (names of the
/// referenced rows added, see [`Inventory::list`]) from [`AdminApi::list`].
#[async_trait]
pub trait AdminApi: Send + Sync {
    /// The buildbot.tac for `slave`. With `commit` the allocation is
    /// recorded, as when the machine itself asks (`GET /gettac/<name>`);
    /// without, nothing changes (`GET /api/gettac/<name>`).
    ///
    /// # Errors
    /// [`AdminError::NoAllocation`] for an unknown slave or one with no
    /// candidate master; [`AdminError::Unreachable`], [`AdminError::Server`]
    /// and [`AdminError::BadResponse`] for faults.
    async fn gettac(&self, slave: &SlaveName, commit: bool) -> Result<String, AdminError>;

    /// Every row of `table`, denormalized for `slaves` and `masters`;
    /// `filter` applies to `slaves` only.
    ///
    /// # Errors
    /// Faults only.
    async fn list(&self, table: Table, filter: &SlaveFilter) -> Result<Vec<Row>, AdminError>;

    /// One plain row by id; `Ok(None)` when there is none.
    ///
    /// # Errors
    /// Faults only.
    async fn get(&self, table: Table, id: i32) -> Result<Option<Row>, AdminError>;

    /// One plain row by its name column (`nickname` for masters);
    /// `Ok(None)` when there is none.
    ///
    /// # Errors
    /// Faults only.
    async fn find(&self, table: Table, name: &str) -> Result<Option<Row>, AdminError>;

    /// Writes `changes` (updatable columns only) into row `id`.
    ///
    /// # Errors
    /// [`AdminError::NotFound`] when the row is gone,
    /// [`AdminError::Rejected`] for a value the server refuses,
    /// [`AdminError::TokenNeeded`], [`AdminError::TokenRefused`] or
    /// [`AdminError::Forbidden`] without a write token that may; nothing is
    /// written then.
    async fn update(&self, table: Table, id: i32, changes: Row) -> Result<(), AdminError>;

    /// Why `slave` gets the master it gets, recording nothing: the
    /// decision with every master of its pool, its peer count and why it
    /// was or was not chosen (`GET /api/gettac/<slave>?explain=1`).
    ///
    /// # Errors
    /// As for [`AdminApi::gettac`].
    async fn explain(&self, slave: &SlaveName) -> Result<serde_json::Value, AdminError>;

    /// Audit entries, newest first, as `GET /api/audit` takes its query
    /// (`since`, `until`, `actor`, `kind`, `table`, `name`, `limit`,
    /// `cursor`): each entry with the `name` of the row it is about. `Ok(None)`
    /// when `name` names no row of the table.
    ///
    /// # Errors
    /// [`AdminError::Rejected`] for a bad query (or without a daemon: the
    /// default); faults.
    async fn history(&self, query: &[(String, String)]) -> Result<Option<serde_json::Value>, AdminError> {
        let _ = query;
        Err(AdminError::Rejected("history needs the daemon's API (-A)".to_owned()))
    }

    /// Where the slaves of these masters would go if they were drained
    /// (and the masters `add`, `NICKNAME@POOL`, added), and the spread
    /// before and after (`GET /api/whatif?drain=...&add=...`);
    /// nothing is written. The default (an admin without a daemon) refuses.
    ///
    /// # Errors
    /// [`AdminError::Rejected`] without a daemon, or for an unknown master;
    /// faults.
    async fn whatif(&self, drain: &[String], add: &[String]) -> Result<serde_json::Value, AdminError> {
        let _ = (drain, add);
        Err(AdminError::Rejected("what-if needs the daemon's API (-A)".to_owned()))
    }

    /// The drift report of the live fleet (`GET /api/drift`): slaves
    /// connected elsewhere than recorded, in another pool, unknown workers,
    /// the live spread. Only a daemon keeps the live state, so the default
    /// (an admin without one) refuses.
    ///
    /// # Errors
    /// [`AdminError::Rejected`] without live state; faults.
    async fn drift(&self) -> Result<serde_json::Value, AdminError> {
        Err(AdminError::Rejected(
            "the drift report needs the daemon's live state: ask its API (-A)".to_owned(),
        ))
    }

    /// Drains (`drain`) or undrains (`undrain`) a master, disables
    /// (`disable`) or enables (`enable`) a slave, by name, as
    /// `POST /api/<table>/<name>/<action>` with `body` (`{"note", "until",
    /// "graceful"}`): answers `{"success", "hold"}` or `{"success",
    /// "ended"}` ([`crate::lifecycle::hold_json`]). The default refuses.
    ///
    /// # Errors
    /// [`AdminError::NotFound`], [`AdminError::Rejected`]; faults.
    async fn act(
        &self,
        table: Table,
        name: &str,
        action: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, AdminError> {
        let _ = (table, name, action, body);
        Err(AdminError::Rejected("holds need the daemon's API (-A)".to_owned()))
    }

    /// A master's open drain and its progress (`GET
    /// /api/masters/<name>/drain`). The default refuses.
    ///
    /// # Errors
    /// As for [`AdminApi::act`].
    async fn drain_status(&self, master: &str) -> Result<serde_json::Value, AdminError> {
        let _ = master;
        Err(AdminError::Rejected("holds need the daemon's API (-A)".to_owned()))
    }

    /// One write to many slaves (`POST /api/slaves/bulk`,
    /// [`crate::BulkRequest`]); answers the [`crate::BulkReport`]. The
    /// default refuses.
    ///
    /// # Errors
    /// [`AdminError::Rejected`] naming what is wrong; faults.
    async fn bulk(&self, request: serde_json::Value) -> Result<serde_json::Value, AdminError> {
        let _ = request;
        Err(AdminError::Rejected(
            "bulk writes need the daemon's API (-A)".to_owned(),
        ))
    }
}

/// [`AdminApi`] in process, over the services the daemon itself uses.
#[derive(Debug, Clone)]
pub struct LocalAdmin {
    allocator: Allocator,
    inventory: Inventory,
    actor: String,
    maintenance: Option<Maintenance>,
}

impl LocalAdmin {
    /// The admin operations over these services; `actor` is written to the
    /// audit entries of the writes.
    pub fn new(allocator: Allocator, inventory: Inventory, actor: impl Into<String>) -> Self {
        Self {
            allocator,
            inventory,
            actor: actor.into(),
            maintenance: None,
        }
    }

    /// Takes drains, disables with a note and bulk writes too.
    pub fn with_maintenance(mut self, maintenance: Maintenance) -> Self {
        self.maintenance = Some(maintenance);
        self
    }

    fn maintenance(&self) -> Result<&Maintenance, AdminError> {
        self.maintenance
            .as_ref()
            .ok_or_else(|| AdminError::Rejected("this allocator keeps no holds".to_owned()))
    }

    async fn id_by_name(&self, table: Table, name: &str) -> Result<i32, AdminError> {
        let row = self
            .inventory
            .find(table, name)
            .await
            .map_err(from_store)?
            .ok_or_else(|| AdminError::NotFound(format!("no {table} is named {name:?}")))?;
        table
            .id_column()
            .and_then(|c| row.get(c))
            .and_then(crate::schema::Value::as_int)
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| AdminError::Server(format!("a {table} row without its id")))
    }
}

fn json_of(v: impl serde::Serialize) -> Result<serde_json::Value, AdminError> {
    serde_json::to_value(v).map_err(|e| AdminError::Server(e.to_string()))
}

fn from_allocation(slave: &SlaveName, e: AllocationError) -> AdminError {
    match e.no_allocation_reason() {
        Some(reason) => AdminError::NoAllocation {
            slave: slave.to_string(),
            reason,
        },
        None => match e {
            AllocationError::Storage(s) => from_store(s),
            e => AdminError::Server(e.to_string()),
        },
    }
}

fn from_store(e: StoreError) -> AdminError {
    match e {
        StoreError::NotFound => AdminError::NotFound(e.to_string()),
        StoreError::Duplicate(_)
        | StoreError::InvalidReference { .. }
        | StoreError::Referenced(_)
        | StoreError::Input(_) => AdminError::Rejected(e.to_string()),
        StoreError::Forbidden(why) => AdminError::Forbidden(why),
        StoreError::Unavailable(_) | StoreError::Retryable(_) | StoreError::Other(_) => {
            AdminError::Server(e.to_string())
        }
    }
}

#[async_trait]
impl AdminApi for LocalAdmin {
    async fn gettac(&self, slave: &SlaveName, commit: bool) -> Result<String, AdminError> {
        let answer = if commit {
            self.allocator.gettac(slave.as_str()).await
        } else {
            self.allocator.peek(slave.as_str()).await
        };
        answer.map(|a| a.tac).map_err(|e| from_allocation(slave, e))
    }

    async fn explain(&self, slave: &SlaveName) -> Result<serde_json::Value, AdminError> {
        let (_, why) = self
            .allocator
            .explain(slave.as_str(), false)
            .await
            .map_err(|e| from_allocation(slave, e))?;
        serde_json::to_value(why).map_err(|e| AdminError::Server(e.to_string()))
    }

    async fn list(&self, table: Table, filter: &SlaveFilter) -> Result<Vec<Row>, AdminError> {
        self.inventory.list(table, filter).await.map_err(from_store)
    }

    async fn get(&self, table: Table, id: i32) -> Result<Option<Row>, AdminError> {
        self.inventory.get(table, id).await.map_err(from_store)
    }

    async fn find(&self, table: Table, name: &str) -> Result<Option<Row>, AdminError> {
        self.inventory.find(table, name).await.map_err(from_store)
    }

    async fn update(&self, table: Table, id: i32, changes: Row) -> Result<(), AdminError> {
        self.inventory
            .update(table, id, &crate::schema::changes_of(&changes), &self.actor)
            .await
            .map(drop)
            .map_err(from_store)
    }

    async fn act(
        &self,
        table: Table,
        name: &str,
        action: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, AdminError> {
        let maintenance = self.maintenance()?;
        let target = match table {
            Table::Masters => HoldTarget::Master,
            Table::Slaves => HoldTarget::Slave,
            _ => return Err(AdminError::NotFound(format!("{table} are not held"))),
        };
        let id = self.id_by_name(table, name).await?;
        let writer = Writer::admin(&self.actor);
        match action {
            "drain" | "disable" => {
                let request: HoldRequest =
                    serde_json::from_value(body).map_err(|e| AdminError::Rejected(format!("body: {e}")))?;
                let holds = maintenance
                    .hold(target, &[id], &request, &writer)
                    .await
                    .map_err(from_store)?;
                let hold = holds.first().map(|h| hold_json(h, Some(name)));
                Ok(serde_json::json!({"success": true, "hold": hold}))
            }
            "undrain" | "enable" => {
                let ended = maintenance.release(target, &[id], &writer).await.map_err(from_store)?;
                let ended: Vec<_> = ended.iter().map(|h| hold_json(h, Some(name))).collect();
                Ok(serde_json::json!({"success": true, "ended": ended}))
            }
            other => Err(AdminError::NotFound(format!("no action {other:?}"))),
        }
    }

    async fn drain_status(&self, master: &str) -> Result<serde_json::Value, AdminError> {
        let maintenance = self.maintenance()?;
        let id = self.id_by_name(Table::Masters, master).await?;
        let open = HoldQuery {
            target: Some(HoldTarget::Master),
            target_id: Some(id),
            open_only: true,
            limit: 1,
        };
        let holds = maintenance.lifecycle().holds(&open).await.map_err(from_store)?;
        let hold = holds.first().map(|h| hold_json(h, Some(master)));
        Ok(serde_json::json!({"master": master, "hold": hold, "progress": null}))
    }

    async fn bulk(&self, request: serde_json::Value) -> Result<serde_json::Value, AdminError> {
        let maintenance = self.maintenance()?;
        let request: BulkRequest =
            serde_json::from_value(request).map_err(|e| AdminError::Rejected(format!("body: {e}")))?;
        let report = maintenance
            .bulk(&request, &Writer::admin(&self.actor))
            .await
            .map_err(from_store)?;
        json_of(report)
    }
}
