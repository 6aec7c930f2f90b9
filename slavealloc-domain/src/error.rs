//! Error contracts of the ports and of the allocator.

use thiserror::Error;

use crate::entities::{DistroId, MasterId, PoolId};
use crate::name::{NameError, SlaveName};
use crate::schema::InputError;

/// What a storage adapter reports. Adapters translate their driver's errors
/// into these; the variant decides what a client is told (see each).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The database cannot be reached or gave no connection in time
    /// (HTTP 503). Nothing was written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A deadlock or serialization failure: the whole unit of work was rolled
    /// back and may simply be run again.
    #[error("transaction conflict: {0}")]
    Retryable(String),
    /// A unique key would be violated, e.g. a duplicate name (HTTP 409).
    #[error("duplicate: {0}")]
    Duplicate(String),
    /// A reference column names a row that does not exist (HTTP 400).
    #[error("{column}: there is no {table} row with id {id}")]
    InvalidReference {
        /// The referring column.
        column: String,
        /// The referenced table.
        table: String,
        /// The missing id.
        id: i64,
    },
    /// A delete of a row that others still refer to (HTTP 409).
    #[error("still in use: {0}")]
    Referenced(String),
    /// The row to update or delete does not exist (HTTP 404).
    #[error("no such row")]
    NotFound,
    /// A value the column does not accept (HTTP 400).
    #[error(transparent)]
    Input(#[from] InputError),
    /// The writer may not make this write (HTTP 403; see
    /// [`access`](crate::access)). Nothing was written.
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// Anything else: a bug or a broken database (HTTP 500; the cause is
    /// logged, the client gets a short reason).
    #[error("storage error: {0}")]
    Other(String),
}

/// Why a tac could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RenderError {
    /// The template names a value the allocator does not provide.
    #[error("template {template:?} uses unknown placeholder {placeholder:?}")]
    UnknownPlaceholder {
        /// The template's name.
        template: String,
        /// The placeholder as written.
        placeholder: String,
    },
    /// The template cannot be parsed or evaluated.
    #[error("template {template:?} is invalid: {message}")]
    Invalid {
        /// The template's name.
        template: String,
        /// What the engine said.
        message: String,
    },
}

/// Why an allocation gave no tac.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AllocationError {
    /// The requested name cannot be a slave name (answered like an unknown
    /// slave: "no allocation available").
    #[error("invalid slave name: {0}")]
    InvalidName(#[from] NameError),
    /// No slave has this name.
    #[error("unknown slave {0}")]
    UnknownSlave(SlaveName),
    /// The slave is enabled, not locked, and its pool has no enabled master.
    #[error("no enabled master in pool {poolid} for slave {slave}")]
    NoMaster {
        /// The slave.
        slave: SlaveName,
        /// Its pool.
        poolid: PoolId,
    },
    /// Neither a distro-specific nor a wildcard password row exists for the
    /// slave's pool.
    #[error(
        "no password for slave {slave}: slave_passwords has no row for pool {poolid} with distro {distroid} or NULL"
    )]
    NoPassword {
        /// The slave.
        slave: SlaveName,
        /// Its pool.
        poolid: PoolId,
        /// Its distro.
        distroid: DistroId,
    },
    /// `locked_masterid` names a master that does not exist.
    #[error("slave {slave} is locked to master {masterid}, which does not exist")]
    MissingLockedMaster {
        /// The slave.
        slave: SlaveName,
        /// The dangling id.
        masterid: MasterId,
    },
    /// `custom_tplid` names a template that does not exist.
    #[error("slave {slave} uses template {tplid}, which does not exist")]
    MissingTemplate {
        /// The slave.
        slave: SlaveName,
        /// The dangling id.
        tplid: i32,
    },
    /// The tac could not be rendered.
    #[error(transparent)]
    Template(#[from] RenderError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl AllocationError {
    /// Whether this is the ordinary "no allocation available" answer (HTTP
    /// 404) rather than a fault (HTTP 500/503).
    pub fn is_no_allocation(&self) -> bool {
        self.no_allocation_reason().is_some()
    }

    /// For "no allocation available", which case it is, in words an
    /// operator can act on; `None` for a fault. The answer to a machine
    /// stays the original's bare "no allocation available".
    pub fn no_allocation_reason(&self) -> Option<String> {
        match self {
            // Not the error's own text, which quotes the request: the reason
            // goes back to the client in a header, and echoes nothing.
            AllocationError::InvalidName(_) => {
                Some("not a slave name: an unqualified host name of letters, digits, '_' and '-'".to_owned())
            }
            AllocationError::UnknownSlave(_) => Some("no slave has this name".to_owned()),
            AllocationError::NoMaster { poolid, .. } => {
                Some(format!("its pool (poolid {poolid}) has no enabled master"))
            }
            _ => None,
        }
    }
}
