//! One struct per table of the original schema (docs/compatibility.md §1), with the
//! same table and column names, so that a row of an existing slavealloc
//! database maps onto a struct field by field.
//!
//! Ids are `i32` because every id column of the original is a 32-bit
//! `INTEGER`/`INT`.

use serde::{Deserialize, Serialize};

/// `slaves.slaveid`.
pub type SlaveId = i32;
/// `masters.masterid`.
pub type MasterId = i32;
/// `pools.poolid`.
pub type PoolId = i32;
/// `distros.distroid`.
pub type DistroId = i32;
/// `tac_templates.tplid`.
pub type TemplateId = i32;

/// `tac_templates`: a named buildbot.tac template a slave can opt into
/// through `slaves.custom_tplid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TacTemplate {
    /// Primary key.
    pub tplid: TemplateId,
    /// Unique name.
    pub name: String,
    /// Template text: original Python `%(name)r` placeholders or minijinja.
    pub template: String,
}

/// `slave_passwords`: the password a slave of `poolid` presents to its
/// master. A `None` distro is a wildcard for every distro of the pool; a
/// distro-specific row beats it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlavePassword {
    /// The pool the password belongs to.
    pub poolid: PoolId,
    /// The distro it is specific to, or `None` for every distro.
    pub distroid: Option<DistroId>,
    /// The password, in clear text as in the original.
    pub password: String,
}

/// `slaves`: one build or test machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slave {
    /// Primary key.
    pub slaveid: SlaveId,
    /// Unqualified host name, lower case, unique.
    pub name: String,
    /// Silo attribute.
    pub distroid: DistroId,
    /// Silo attribute.
    pub bitsid: i32,
    /// Not part of the allocation silo (the original ignored it too).
    pub speedid: i32,
    /// Silo attribute.
    pub purposeid: i32,
    /// Silo attribute.
    pub dcid: i32,
    /// Silo attribute.
    pub trustid: i32,
    /// Silo attribute.
    pub envid: i32,
    /// The pool whose masters this slave may be given.
    pub poolid: PoolId,
    /// The worker's base directory.
    pub basedir: String,
    /// Pins the slave to this master, whatever its state.
    pub locked_masterid: Option<MasterId>,
    /// A per-slave template overriding the default one.
    pub custom_tplid: Option<TemplateId>,
    /// A disabled slave gets a tac that refuses to start.
    pub enabled: bool,
    /// Free text: bug numbers, who disabled it and why.
    pub notes: Option<String>,
    /// State: the master of the last allocation.
    pub current_masterid: Option<MasterId>,
}

impl Slave {
    /// The allocation silo: the attributes a slave must share with another
    /// to count as its peer. Speed is deliberately not part of it.
    pub fn silo(&self) -> Silo {
        Silo {
            distroid: self.distroid,
            bitsid: self.bitsid,
            purposeid: self.purposeid,
            dcid: self.dcid,
            trustid: self.trustid,
            envid: self.envid,
        }
    }
}

/// The attributes that make two slaves of one pool peers for balancing:
/// distro, bitlength, purpose, datacenter, trust level and environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Silo {
    /// `slaves.distroid`.
    pub distroid: DistroId,
    /// `slaves.bitsid`.
    pub bitsid: i32,
    /// `slaves.purposeid`.
    pub purposeid: i32,
    /// `slaves.dcid`.
    pub dcid: i32,
    /// `slaves.trustid`.
    pub trustid: i32,
    /// `slaves.envid`.
    pub envid: i32,
}

/// `masters`: one Buildbot master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Master {
    /// Primary key.
    pub masterid: MasterId,
    /// Unique short name.
    pub nickname: String,
    /// Host name workers connect to.
    pub fqdn: String,
    /// Web UI port; 0 means none.
    pub http_port: i32,
    /// The port workers connect to.
    pub pb_port: i32,
    /// Datacenter.
    pub dcid: i32,
    /// The pool it serves.
    pub poolid: PoolId,
    /// Only enabled masters are candidates for balancing.
    pub enabled: bool,
    /// Free text.
    pub notes: Option<String>,
}
