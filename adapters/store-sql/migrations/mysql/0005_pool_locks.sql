-- A row per pool that every allocation transaction on a Galera node writes
-- (bumps) before it reads the pool's loads, where a lone server locks the row of
-- `pools` with SELECT ... FOR UPDATE. On a Galera cluster a lock taken by
-- a read stays on its own node, but a write replicates: two allocations of
-- one pool committed through different nodes write the same row, so Galera's
-- certification lets one commit and aborts the other (a deadlock error, which
-- is retried), and no two allocations decide from the same counts.
-- The original's `pools` table is not touched.
CREATE TABLE pool_locks (
    poolid INT NOT NULL PRIMARY KEY,
    bumps BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB;
