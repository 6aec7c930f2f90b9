-- Who changed which row, when, from what to what: written in the same
-- transaction as the change. IF NOT EXISTS because databases made before
-- migrations existed already have it (made by the schema script at start).
CREATE TABLE IF NOT EXISTS audit_log (
    id INT NOT NULL AUTO_INCREMENT,
    at VARCHAR(128) NOT NULL,
    actor TEXT NOT NULL,
    table_name VARCHAR(128) NOT NULL,
    row_id INT NOT NULL,
    old_values TEXT NULL,
    new_values TEXT NULL,
    PRIMARY KEY (id),
    KEY audit_log_row (table_name, row_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
