//! # slavealloc-benches
//!
//! Criterion benches of the allocation decision (`benches/*.rs`, run with
//! `cargo bench -p slavealloc-benches`; measured figures in `README.md`),
//! and the setup they share.
//!
//! The setup lives in this library rather than in the bench files so that
//! its tests check what the benches time: the same decision, for the same
//! slaves, as the real [`Allocator`](slavealloc_domain::Allocator) makes.

use slavealloc_domain::rule::Planner;
use slavealloc_domain::schema::{Table, Value};
use slavealloc_domain::{AllocationError, AllocationStore, Decision, Dump, Intent, SlaveName, StoreError};
use slavealloc_fixtures::{generate_fleet, FleetSpec};
use slavealloc_store_memory::MemoryStore;

/// A generated fleet loaded into a memory store, and its slaves' names.
#[derive(Debug, Clone)]
pub struct MemoryFleet {
    /// The store holding the fleet.
    pub store: MemoryStore,
    /// Every slave's name, in slaveid order: benches rotate over them.
    pub names: Vec<SlaveName>,
}

impl MemoryFleet {
    /// The default [`FleetSpec`] with `slaves` slaves, loaded.
    ///
    /// # Errors
    /// When the store refuses the generated dump (a generator bug).
    pub fn generate(slaves: usize) -> Result<Self, StoreError> {
        let dump = generate_fleet(&FleetSpec::with_slaves(slaves));
        Ok(Self {
            store: MemoryStore::from_dump(&dump)?,
            names: slave_names(&dump),
        })
    }

    /// The name to ask for on the `i`-th iteration: every slave in turn.
    pub fn name(&self, i: usize) -> &SlaveName {
        &self.names[i % self.names.len()]
    }
}

/// Every slave name of a dump, in slaveid order (names the schema would
/// refuse are left out).
pub fn slave_names(dump: &Dump) -> Vec<SlaveName> {
    dump.rows(Table::Slaves)
        .iter()
        .filter_map(|r| r.get("name").and_then(Value::as_text))
        .filter_map(|n| SlaveName::parse(n).ok())
        .collect()
}

/// One allocation decision, as the allocator makes it but without
/// rendering or recording: a read-only unit of work, the snapshot for one
/// name, the rule. The unit is dropped (its lock released) before returning.
///
/// # Errors
/// The store's errors, and the rule's (unknown slave, no master, ...).
pub async fn decide(store: &dyn AllocationStore, name: &SlaveName) -> Result<Decision, AllocationError> {
    let mut unit = store.begin(Intent::Peek).await?;
    let snapshot = unit.snapshot(std::slice::from_ref(name)).await?;
    Planner::new(&snapshot).decide(0, name)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use slavealloc_domain::{Allocator, FixedHost, Reason};
    use slavealloc_tac_minijinja::MinijinjaRenderer;

    use super::*;

    #[tokio::test]
    async fn the_timed_decision_is_the_allocators_decision() {
        let fleet = MemoryFleet::generate(500).unwrap();
        assert_eq!(fleet.names.len(), 500);
        let host = FixedHost {
            now: SystemTime::UNIX_EPOCH,
            fqdn: "bench.example.com".into(),
        };
        let allocator = Allocator::new(
            Arc::new(fleet.store.clone()),
            Arc::new(MinijinjaRenderer::default()),
            Arc::new(host),
        );
        let mut reasons = std::collections::HashSet::new();
        for i in 0..fleet.names.len() {
            let name = fleet.name(i);
            let timed = decide(&fleet.store, name).await.unwrap();
            let full = allocator.peek(name.as_str()).await.unwrap();
            assert_eq!(timed, full.decision, "{name}");
            reasons.insert(timed.reason);
        }
        // The rotation covers every kind of answer the rule gives.
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons.contains(&Reason::Balanced));
        // A peek leaves the lock free for the next unit.
        assert!(decide(&fleet.store, fleet.name(0)).await.is_ok());
    }

    #[tokio::test]
    async fn an_unknown_name_is_an_error_not_a_panic() {
        let fleet = MemoryFleet::generate(10).unwrap();
        let ghost = SlaveName::parse("ghost").unwrap();
        assert_eq!(
            decide(&fleet.store, &ghost).await,
            Err(AllocationError::UnknownSlave(ghost.clone()))
        );
    }
}
