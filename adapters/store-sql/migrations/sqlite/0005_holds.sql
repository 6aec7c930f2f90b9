-- Drains and disables with a reason and an end (slavealloc_domain::lifecycle).
-- The original's `enabled` column stays the switch; this keeps who held a
-- master or slave, why, since and until when, and how the hold ended.
-- Times are milliseconds since the Unix epoch (UTC). No foreign key to the
-- original's tables (see 0004_live_fleet.sql). Idempotent, as every SQLite
-- migration here is.
CREATE TABLE IF NOT EXISTS holds (
    id INTEGER NOT NULL PRIMARY KEY,
    target VARCHAR(8) NOT NULL,
    target_id INTEGER NOT NULL,
    note TEXT NOT NULL,
    actor TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    until_ms BIGINT NULL,
    graceful BOOLEAN NOT NULL,
    ended_ms BIGINT NULL,
    ended_by TEXT NULL,
    end_reason VARCHAR(16) NULL
);

-- A row's open hold, and the holds whose end is due.
CREATE INDEX IF NOT EXISTS holds_target ON holds (target, target_id, ended_ms);
CREATE INDEX IF NOT EXISTS holds_open_until ON holds (ended_ms, until_ms);
