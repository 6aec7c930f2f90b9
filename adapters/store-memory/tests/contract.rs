//! The storage contract suite on the in-memory store.

use async_trait::async_trait;
use slavealloc_store_contract::StoreFactory;
use slavealloc_store_memory::MemoryStore;

/// Fresh in-memory stores; nothing to clean up.
struct Memory;

#[async_trait]
impl StoreFactory for Memory {
    type Store = MemoryStore;

    async fn fresh(&self) -> Option<MemoryStore> {
        Some(MemoryStore::new())
    }

    async fn cleanup(&self) {}
}

slavealloc_store_contract::contract_tests!(Memory);
