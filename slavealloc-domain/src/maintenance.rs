//! The day-to-day maintenance a release engineer does, each one call: drain
//! a master or disable slaves with a note and an end ([`Maintenance::hold`]),
//! bring them back ([`Maintenance::release`]), and change many slaves at
//! once ([`Maintenance::bulk`]), all checked before anything is written and
//! written in one transaction.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::access::{self, Operation, Writer};
use crate::error::StoreError;
use crate::inventory::{Inventory, SlaveFilter};
use crate::lifecycle::{parse_until, Hold, HoldTarget, LifecycleStore, NewHold};
use crate::ports::{Actor, Host};
use crate::schema::{Changes, Given, InputError, Row, Table, Value};

/// The most slaves one bulk write may change: a mistyped filter should not
/// rewrite the fleet in one click. Larger changes are split by pool.
pub const MAX_BULK: usize = 1000;

/// A hold as a client asks for it: the end still text (`2h`, a time).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// Why.
    #[serde(default)]
    pub note: String,
    /// When it ends by itself: an age from now or a time.
    #[serde(default)]
    pub until: Option<String>,
    /// A master only: shut its workers down gracefully through Buildbot.
    #[serde(default)]
    pub graceful: bool,
}

/// Which slaves a bulk write is for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum BulkSelect {
    /// These names (each must name a slave).
    Names(Vec<String>),
    /// Every slave the filter keeps, as the slave list filters.
    Filter(BulkFilter),
}

/// The slave list's filters, by name, plus the current master.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    /// Environment names (any of).
    #[serde(default)]
    pub environment: Vec<String>,
    /// Purpose names (any of).
    #[serde(default)]
    pub purpose: Vec<String>,
    /// Pool names (any of).
    #[serde(default)]
    pub pool: Vec<String>,
    /// Current master nicknames (any of).
    #[serde(default)]
    pub master: Vec<String>,
    /// Only enabled (`true`) or disabled (`false`) slaves.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Decommissioned slaves too.
    #[serde(default)]
    pub include_decomm: bool,
}

impl BulkFilter {
    fn is_empty(&self) -> bool {
        self.environment.is_empty()
            && self.purpose.is_empty()
            && self.pool.is_empty()
            && self.master.is_empty()
            && self.enabled.is_none()
    }
}

/// `POST /api/slaves/bulk`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// Which slaves.
    pub select: BulkSelect,
    /// What to set, as a PUT body (name keys such as `"pool": "p2"` taken).
    pub set: Changes,
    /// Why: kept in each audit entry; with `enabled: false`, the hold's note.
    #[serde(default)]
    pub note: Option<String>,
    /// With `enabled: false` and a note: when the slaves come back.
    #[serde(default)]
    pub until: Option<String>,
    /// Answer what would change and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// One slave a bulk write changed (or would change).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BulkChange {
    /// The slave.
    pub name: String,
    /// Its changed columns before.
    pub old: Row,
    /// Its changed columns after.
    pub new: Row,
}

/// What a bulk write matched and changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BulkReport {
    /// Always true: a failure is an error instead.
    pub success: bool,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Every slave selected, by name.
    pub matched: Vec<String>,
    /// Those whose row changed (or would).
    pub changed: Vec<BulkChange>,
    /// Holds made (a disable with a note) or ended (an enable).
    pub holds: usize,
}

/// Drains, disables and bulk writes over the inventory and the holds.
#[derive(Clone)]
pub struct Maintenance {
    inventory: Inventory,
    lifecycle: Arc<dyn LifecycleStore>,
    host: Arc<dyn Host>,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance").finish_non_exhaustive()
    }
}

fn input(column: &str, problem: impl Into<String>) -> StoreError {
    InputError::new(column, problem).into()
}

fn id_of(table: Table, row: &Row) -> Result<i32, StoreError> {
    table
        .id_column()
        .and_then(|c| row.get(c))
        .and_then(Value::as_int)
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| StoreError::Other(format!("a {table} row without its id")))
}

fn name_of(table: Table, row: &Row) -> String {
    table
        .name_column()
        .and_then(|c| row.get(c))
        .and_then(Value::as_text)
        .unwrap_or_default()
        .to_owned()
}

/// The columns that differ between `old` and `new`, each side.
fn diff(old: &Row, new: &Row) -> (Row, Row) {
    let keys = old.keys().chain(new.keys()).filter(|k| old.get(*k) != new.get(*k));
    let keys: Vec<&String> = keys.collect();
    let pick = |r: &Row| -> Row {
        keys.iter()
            .map(|k| ((*k).clone(), r.get(*k).cloned().unwrap_or(Value::Null)))
            .collect()
    };
    (pick(old), pick(new))
}

impl Maintenance {
    /// Maintenance over `inventory` and `lifecycle` (usually one store).
    pub fn new(inventory: Inventory, lifecycle: Arc<dyn LifecycleStore>, host: Arc<dyn Host>) -> Self {
        Self {
            inventory,
            lifecycle,
            host,
        }
    }

    /// The holds port, for reads.
    pub fn lifecycle(&self) -> &Arc<dyn LifecycleStore> {
        &self.lifecycle
    }

    fn actor(&self, writer: &Writer) -> Actor {
        Actor {
            name: writer.name.clone(),
            at: self.host.now(),
        }
    }

    fn check_enabled_write(target: HoldTarget, writer: &Writer) -> Result<(), StoreError> {
        access::check(target.table(), Operation::Update(&["enabled"]), writer.permission)
    }

    /// The request checked into a hold.
    ///
    /// # Errors
    /// [`StoreError::Input`] naming `note`, `until` or `graceful`.
    pub fn new_hold(&self, target: HoldTarget, request: &HoldRequest) -> Result<NewHold, StoreError> {
        let now = self.host.now();
        let until = match request.until.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(parse_until(text, now).map_err(|e| input("until", e))?),
        };
        let hold = NewHold {
            note: request.note.trim().to_owned(),
            until,
            graceful: request.graceful,
            also: Row::new(),
        };
        hold.check(target, now).map_err(|e| {
            let (column, problem) = e.split_once(": ").unwrap_or(("note", e.as_str()));
            input(column, problem)
        })?;
        Ok(hold)
    }

    /// Drains masters or disables slaves (by id) with a note and an end.
    ///
    /// # Errors
    /// As for [`Maintenance::new_hold`]; [`StoreError::Forbidden`] for a
    /// writer who may not switch `enabled`; [`StoreError::NotFound`].
    pub async fn hold(
        &self,
        target: HoldTarget,
        ids: &[i32],
        request: &HoldRequest,
        writer: &Writer,
    ) -> Result<Vec<Hold>, StoreError> {
        Self::check_enabled_write(target, writer)?;
        let hold = self.new_hold(target, request)?;
        self.lifecycle.hold(target, ids, &hold, self.actor(writer)).await
    }

    /// Undrains masters or enables slaves (by id), ending their holds.
    ///
    /// # Errors
    /// As for [`Maintenance::hold`].
    pub async fn release(&self, target: HoldTarget, ids: &[i32], writer: &Writer) -> Result<Vec<Hold>, StoreError> {
        Self::check_enabled_write(target, writer)?;
        self.lifecycle
            .release(target, ids, &Row::new(), self.actor(writer))
            .await
    }

    /// The slaves a selection names, in name order.
    async fn select(&self, select: &BulkSelect) -> Result<Vec<Row>, StoreError> {
        let rows = match select {
            BulkSelect::Names(names) => {
                if names.is_empty() {
                    return Err(input("select", "names: give at least one slave"));
                }
                let mut rows = Vec::with_capacity(names.len());
                let mut missing = Vec::new();
                for name in names {
                    match self.inventory.find(Table::Slaves, name.trim()).await? {
                        Some(row) => rows.push(row),
                        None => missing.push(name.clone()),
                    }
                }
                if !missing.is_empty() {
                    return Err(input("select", format!("no slave is named {}", missing.join(", "))));
                }
                rows
            }
            BulkSelect::Filter(f) => {
                if f.is_empty() {
                    return Err(input(
                        "select",
                        "filter: name at least one of environment, purpose, pool, master, enabled (an empty filter is the whole fleet)",
                    ));
                }
                let filter = SlaveFilter {
                    environment: f.environment.clone(),
                    purpose: f.purpose.clone(),
                    pool: f.pool.clone(),
                    enabled: f.enabled,
                    include_decomm: f.include_decomm,
                };
                let mut rows = self.inventory.list(Table::Slaves, &filter).await?;
                if !f.master.is_empty() {
                    rows.retain(|r| {
                        r.get("current_master")
                            .and_then(Value::as_text)
                            .is_some_and(|m| f.master.iter().any(|w| w == m))
                    });
                }
                rows
            }
        };
        let mut rows = rows;
        rows.sort_by_key(|r| name_of(Table::Slaves, r));
        rows.dedup_by_key(|r| name_of(Table::Slaves, r));
        Ok(rows)
    }

    /// Applies one change to many slaves: all or nothing, at most
    /// [`MAX_BULK`], answering what matched and what changed. `enabled:
    /// false` with a note disables with a hold (and `until`); `enabled:
    /// true` ends their holds; anything else is one multi-row update whose
    /// audit entries keep the note.
    ///
    /// # Errors
    /// [`StoreError::Input`] naming what is wrong (`select`, `set`, a
    /// column, `until`); [`StoreError::Forbidden`]; nothing written.
    pub async fn bulk(&self, request: &BulkRequest, writer: &Writer) -> Result<BulkReport, StoreError> {
        let table = Table::Slaves;
        if request.set.is_empty() {
            return Err(input("set", "nothing to set"));
        }
        if let Some(name) = table.name_column().filter(|n| request.set.contains_key(*n)) {
            return Err(input(name, "cannot be set for many slaves at once"));
        }
        let note = request.note.as_deref().map(str::trim).filter(|n| !n.is_empty());
        let rows = self.select(&request.select).await?;
        if rows.len() > MAX_BULK {
            return Err(input(
                "select",
                format!(
                    "matches {} slaves; at most {MAX_BULK} at once (narrow it, e.g. by pool)",
                    rows.len()
                ),
            ));
        }
        let ids: Vec<i32> = rows.iter().map(|r| id_of(table, r)).collect::<Result<_, _>>()?;
        let matched: Vec<String> = rows.iter().map(|r| name_of(table, r)).collect();
        let enabled = match request.set.get("enabled") {
            None => None,
            Some(Given::Bool(b)) => Some(*b),
            Some(_) => return Err(input("enabled", "must be true or false")),
        };
        let lifecycle = match enabled {
            Some(false) => note.is_some(),
            Some(true) => true,
            None => false,
        };
        if request.until.as_deref().is_some_and(|u| !u.trim().is_empty()) && !(lifecycle && enabled == Some(false)) {
            return Err(input(
                "until",
                "only a disable with a note (enabled: false, note) has an end",
            ));
        }
        if lifecycle {
            let mut rest = request.set.clone();
            rest.remove("enabled");
            let also = if rest.is_empty() {
                Row::new()
            } else {
                self.inventory.checked_changes(table, &rest, writer).await?
            };
            return self
                .bulk_lifecycle(&rows, (ids, matched), enabled == Some(true), also, request, writer)
                .await;
        }
        let changes = self.inventory.checked_changes(table, &request.set, writer).await?;
        let written = self
            .inventory
            .store()
            .update_many(
                table,
                &ids,
                changes,
                note.map(str::to_owned),
                request.dry_run,
                self.actor(writer),
            )
            .await?;
        let changed = written
            .iter()
            .filter(|(old, new)| old != new)
            .map(|(old, new)| {
                let (old_c, new_c) = diff(old, new);
                BulkChange {
                    name: name_of(table, new),
                    old: old_c,
                    new: new_c,
                }
            })
            .collect();
        Ok(BulkReport {
            success: true,
            dry_run: request.dry_run,
            matched,
            changed,
            holds: 0,
        })
    }

    async fn bulk_lifecycle(
        &self,
        rows: &[Row],
        (ids, matched): (Vec<i32>, Vec<String>),
        enable: bool,
        also: Row,
        request: &BulkRequest,
        writer: &Writer,
    ) -> Result<BulkReport, StoreError> {
        let target = HoldTarget::Slave;
        Self::check_enabled_write(target, writer)?;
        let changes = crate::lifecycle::enabled_change(enable, &also);
        let changed = rows
            .iter()
            .filter_map(|r| {
                let mut new = r.clone();
                new.extend(changes.clone());
                let (old_c, new_c) = diff(r, &new);
                (!new_c.is_empty()).then(|| BulkChange {
                    name: name_of(Table::Slaves, r),
                    old: old_c,
                    new: new_c,
                })
            })
            .collect();
        let hold_request = HoldRequest {
            note: request.note.clone().unwrap_or_default(),
            until: request.until.clone(),
            graceful: false,
        };
        let hold = if enable {
            None
        } else {
            let mut hold = self.new_hold(target, &hold_request)?;
            hold.also = also.clone();
            Some(hold)
        };
        let holds = match (request.dry_run, hold) {
            (true, Some(_)) => ids.len(),
            (true, None) => {
                let open = self
                    .lifecycle
                    .holds(&crate::lifecycle::HoldQuery {
                        target: Some(target),
                        open_only: true,
                        ..Default::default()
                    })
                    .await?;
                open.iter().filter(|h| ids.contains(&h.target_id)).count()
            }
            (false, Some(hold)) => self
                .lifecycle
                .hold(target, &ids, &hold, self.actor(writer))
                .await?
                .len(),
            (false, None) => self
                .lifecycle
                .release(target, &ids, &also, self.actor(writer))
                .await?
                .len(),
        };
        Ok(BulkReport {
            success: true,
            dry_run: request.dry_run,
            matched,
            changed,
            holds,
        })
    }
}
