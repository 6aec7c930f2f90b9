-- Who changed which row, when, from what to what: written in the same
-- transaction as the change. IF NOT EXISTS because databases made before
-- migrations existed already have it (made by the schema script at start).
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER NOT NULL PRIMARY KEY,
    at VARCHAR(128) NOT NULL,
    actor TEXT NOT NULL,
    table_name VARCHAR(128) NOT NULL,
    row_id INTEGER NOT NULL,
    old_values TEXT,
    new_values TEXT
);

CREATE INDEX IF NOT EXISTS audit_log_row ON audit_log (table_name, row_id);
