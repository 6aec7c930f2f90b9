-- Drains and disables with a reason and an end (slavealloc_domain::lifecycle).
-- The original's `enabled` column stays the switch; this keeps who held a
-- master or slave, why, since and until when, and how the hold ended.
-- Times are milliseconds since the Unix epoch (UTC). No foreign key to the
-- original's tables (see 0003_live_fleet.sql).
CREATE TABLE holds (
    id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    target VARCHAR(8) NOT NULL,
    target_id INT NOT NULL,
    note TEXT NOT NULL,
    actor TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    until_ms BIGINT NULL,
    graceful BOOLEAN NOT NULL,
    ended_ms BIGINT NULL,
    ended_by TEXT NULL,
    end_reason VARCHAR(16) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A row's open hold, and the holds whose end is due.
CREATE INDEX holds_target ON holds (target, target_id, ended_ms);
CREATE INDEX holds_open_until ON holds (ended_ms, until_ms);
