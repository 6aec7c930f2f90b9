//! # slavealloc-store-contract
//!
//! The behaviour every storage adapter owes the domain, written once as a
//! suite of test cases ([`cases`]) and run against each store: the
//! in-memory one, SQLite, MariaDB and PostgreSQL.
//!
//! Main design decision: a store is handed to the suite through a
//! [`StoreFactory`] that makes a fresh, empty store per case and cleans up
//! after it, and [`contract_tests!`] expands into one `#[tokio::test]` per
//! case, so that a failure names the case and the backend:
//!
//! ```ignore
//! struct Memory;
//!
//! #[async_trait::async_trait]
//! impl slavealloc_store_contract::StoreFactory for Memory {
//!     type Store = MemoryStore;
//!     async fn fresh(&self) -> Option<MemoryStore> { Some(MemoryStore::new()) }
//!     async fn cleanup(&self) {}
//! }
//!
//! slavealloc_store_contract::contract_tests!(Memory);
//! ```
//!
//! Allocation cases go through the domain's `Allocator` with
//! [`PlainRenderer`], a renderer that only lists its inputs, so that they
//! test the store and the rule, not a template engine.
#![deny(missing_docs)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use slavealloc_domain::{
    AllocationStore, Allocator, BalanceCount, DumpStore, FixedHost, InventoryStore, LifecycleStore, LiveStore,
};

pub mod cases;
pub mod fleet;

/// Everything a store must implement to be tested here.
pub trait Store: AllocationStore + InventoryStore + DumpStore + LiveStore + LifecycleStore + 'static {}

impl<T: AllocationStore + InventoryStore + DumpStore + LiveStore + LifecycleStore + 'static> Store for T {}

/// Makes fresh stores for one test case and removes them afterwards.
#[async_trait]
pub trait StoreFactory: Send + Sync + 'static {
    /// The store under test.
    type Store: Store;

    /// A new, empty store with its schema. `None` skips the case: only
    /// when the backend's server is unreachable outside CI (in CI the
    /// factory must panic instead).
    async fn fresh(&self) -> Option<Self::Store>;

    /// Removes every store this factory made (drops the databases). Runs
    /// after the case, whether it passed or panicked.
    async fn cleanup(&self);
}

/// What a case gets: the store under test and a way to make another.
#[derive(Debug)]
pub struct Harness<F: StoreFactory> {
    factory: Arc<F>,
    store: Arc<F::Store>,
}

/// When every allocation of the suite happens.
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

impl<F: StoreFactory> Harness<F> {
    /// The store under test.
    pub fn store(&self) -> &Arc<F::Store> {
        &self.store
    }

    /// Another fresh, empty store of the same kind.
    ///
    /// # Panics
    /// When the factory cannot make one, although it made the first.
    pub async fn another_store(&self) -> Arc<F::Store> {
        match self.factory.fresh().await {
            Some(store) => Arc::new(store),
            None => panic!("the factory made one store but cannot make a second"),
        }
    }

    /// An allocator on the store under test, with [`PlainRenderer`] and a
    /// fixed clock and host.
    pub fn allocator(&self) -> Allocator {
        allocator(Arc::clone(&self.store) as Arc<dyn AllocationStore>)
    }
}

/// An allocator on `store`, with [`PlainRenderer`] and a fixed clock and
/// host (`slavealloc.example.com`).
pub fn allocator(store: Arc<dyn AllocationStore>) -> Allocator {
    Allocator::new(
        store,
        Arc::new(PlainRenderer),
        Arc::new(FixedHost {
            now: now(),
            fqdn: "slavealloc.example.com".to_owned(),
        }),
    )
}

/// [`allocator`] with its clock at `now`, counting peers as `count` says:
/// for the cases that let time pass.
pub fn allocator_at(store: Arc<dyn AllocationStore>, now: SystemTime, count: BalanceCount) -> Allocator {
    Allocator::new(
        store,
        Arc::new(PlainRenderer),
        Arc::new(FixedHost {
            now,
            fqdn: "slavealloc.example.com".to_owned(),
        }),
    )
    .with_balance(count)
}

/// Runs one case on a fresh store from `factory`, then cleans up — also
/// when the case panics, whose panic is then passed on.
pub async fn run<F, C, Fut>(factory: F, case: C)
where
    F: StoreFactory,
    C: FnOnce(Harness<F>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let factory = Arc::new(factory);
    let Some(store) = factory.fresh().await else {
        return;
    };
    let harness = Harness {
        factory: Arc::clone(&factory),
        store: Arc::new(store),
    };
    let outcome = tokio::spawn(case(harness)).await;
    factory.cleanup().await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("the case did not finish: {e}"),
        }
    }
}

pub use slavealloc_domain::testing::PlainRenderer;

/// Expands into one `#[tokio::test]` per contract case, each running the
/// case on fresh stores made by the [`StoreFactory`] that `$factory`
/// evaluates to (evaluated once per case). The calling crate needs `tokio`
/// as a dev-dependency.
#[macro_export]
macro_rules! contract_tests {
    ($factory:expr) => {
        $crate::contract_tests!(@cases $factory;
            inserted_rows_come_back_whole,
            updates_write_what_changed_and_return_the_row,
            deletes_remove_the_row,
            duplicate_names_are_refused,
            bad_references_are_refused_naming_the_column,
            rows_that_do_not_fit_the_schema_are_refused_by_every_store,
            referenced_rows_cannot_be_deleted,
            every_write_is_audited,
            the_audit_log_is_read_by_time,
            values_round_trip_exactly,
            balances_within_pool_and_silo,
            ties_go_to_the_lowest_masterid,
            disabled_masters_are_not_candidates,
            the_requester_is_not_its_own_peer,
            a_locked_master_wins_even_when_disabled,
            a_disabled_slave_loses_its_master,
            unknown_names_allocate_nothing,
            a_distro_password_beats_the_wildcard,
            a_custom_template_is_used,
            peek_records_nothing,
            gettac_audits_the_change,
            batches_decide_like_sequential_requests,
            an_uncommitted_unit_changes_nothing,
            a_slave_moved_twice_in_one_record_ends_at_the_last,
            the_snapshot_holds_what_the_rule_needs,
            concurrent_gettacs_stay_balanced,
            export_then_replace_all_reproduces_the_store,
            replace_all_discards_what_was_there,
            a_failed_replace_all_changes_nothing,
            append_keeps_ids_and_refuses_bad_rows,
            row_count_counts_every_table,
            boots_are_recorded_with_their_address,
            polls_record_presence_status_and_unknown_workers,
            live_counts_forget_allocations_that_never_connected,
            the_lease_has_one_holder_at_a_time,
            explain_agrees_with_the_allocation_that_follows,
            the_audit_log_is_queried_by_actor_kind_window_and_cursor,
            old_allocations_are_pruned_in_batches_and_edits_kept,
            a_drain_ends_by_itself_exactly_once,
            disables_with_a_note_are_all_or_nothing_and_released_by_enable,
            bulk_updates_are_one_transaction,
        );
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::run($factory, $crate::cases::$case).await;
            }
        )+
    };
}
