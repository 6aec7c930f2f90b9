-- slavealloc schema for SQLite: ORIGINAL.md §1 plus audit_log.
-- Idempotent: run on every start. INTEGER PRIMARY KEY columns are rowid
-- aliases, so new ids follow the largest one.

CREATE TABLE IF NOT EXISTS distros (
    distroid INTEGER NOT NULL PRIMARY KEY,
    name VARCHAR(128) NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS datacenters (
    dcid INTEGER NOT NULL PRIMARY KEY,
    name VARCHAR(128) NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS bitlengths (
    bitsid INTEGER NOT NULL PRIMARY KEY,
    name VARCHAR(128) NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS speeds (
    speedid INTEGER NOT NULL PRIMARY KEY,
    name VARCHAR(128) NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS purposes (
    purposeid INTEGER NOT NULL PRIMARY KEY,
    name VARCHAR(128) NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS trustlevels (
    trustid INTEGER NOT NULL PRIMARY KEY,
    name VARCHAR(128) NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS environments (
    envid INTEGER NOT NULL PRIMARY KEY,
    name VARCHAR(128) NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS pools (
    poolid INTEGER NOT NULL PRIMARY KEY,
    name VARCHAR(128) NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS tac_templates (
    tplid INTEGER NOT NULL PRIMARY KEY,
    name VARCHAR(128) NOT NULL UNIQUE,
    template TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS masters (
    masterid INTEGER NOT NULL PRIMARY KEY,
    nickname VARCHAR(128) NOT NULL UNIQUE,
    fqdn TEXT NOT NULL,
    http_port INTEGER NOT NULL,
    pb_port INTEGER NOT NULL,
    dcid INTEGER NOT NULL REFERENCES datacenters (dcid),
    poolid INTEGER NOT NULL REFERENCES pools (poolid),
    enabled BOOLEAN NOT NULL DEFAULT 1,
    notes TEXT
);

CREATE TABLE IF NOT EXISTS slaves (
    slaveid INTEGER NOT NULL PRIMARY KEY,
    name VARCHAR(128) NOT NULL UNIQUE,
    distroid INTEGER NOT NULL REFERENCES distros (distroid),
    bitsid INTEGER NOT NULL REFERENCES bitlengths (bitsid),
    speedid INTEGER NOT NULL REFERENCES speeds (speedid),
    purposeid INTEGER NOT NULL REFERENCES purposes (purposeid),
    dcid INTEGER NOT NULL REFERENCES datacenters (dcid),
    trustid INTEGER NOT NULL REFERENCES trustlevels (trustid),
    envid INTEGER NOT NULL REFERENCES environments (envid),
    poolid INTEGER NOT NULL REFERENCES pools (poolid),
    basedir TEXT NOT NULL,
    locked_masterid INTEGER REFERENCES masters (masterid),
    custom_tplid INTEGER REFERENCES tac_templates (tplid),
    enabled BOOLEAN NOT NULL DEFAULT 1,
    notes TEXT,
    current_masterid INTEGER REFERENCES masters (masterid)
);

CREATE INDEX IF NOT EXISTS slave_silo ON slaves (distroid, bitsid, speedid, purposeid, dcid, trustid, envid);
CREATE INDEX IF NOT EXISTS slave_poolid ON slaves (poolid);

CREATE TABLE IF NOT EXISTS slave_passwords (
    poolid INTEGER NOT NULL REFERENCES pools (poolid),
    distroid INTEGER REFERENCES distros (distroid),
    password TEXT NOT NULL
);

-- Added by this rebuild; the original tables are unchanged.
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

-- Added by this rebuild: how many slaves of each pool and silo have each
-- master as current_masterid. Counting them from `slaves` reads every slave
-- of the pool (the original slave_silo index has speedid in the middle and
-- no poolid); this table makes the count of a silo a few point reads.
-- Triggers keep it exact whoever writes `slaves` (this daemon, the CLI, the
-- original Python daemon, an operator's sqlite3 shell), and it is rebuilt
-- from `slaves` below on every start, so it cannot drift for long.
CREATE TABLE IF NOT EXISTS slave_loads (
    poolid INTEGER NOT NULL,
    distroid INTEGER NOT NULL,
    bitsid INTEGER NOT NULL,
    purposeid INTEGER NOT NULL,
    dcid INTEGER NOT NULL,
    trustid INTEGER NOT NULL,
    envid INTEGER NOT NULL,
    masterid INTEGER NOT NULL,
    slaves INTEGER NOT NULL,
    PRIMARY KEY (poolid, distroid, bitsid, purposeid, dcid, trustid, envid, masterid)
) WITHOUT ROWID;

CREATE TRIGGER IF NOT EXISTS slave_loads_insert AFTER INSERT ON slaves
WHEN NEW.current_masterid IS NOT NULL
BEGIN
    INSERT INTO slave_loads
    VALUES (NEW.poolid, NEW.distroid, NEW.bitsid, NEW.purposeid, NEW.dcid, NEW.trustid, NEW.envid,
            NEW.current_masterid, 1)
    ON CONFLICT DO UPDATE SET slaves = slaves + 1;
END;

CREATE TRIGGER IF NOT EXISTS slave_loads_delete AFTER DELETE ON slaves
WHEN OLD.current_masterid IS NOT NULL
BEGIN
    UPDATE slave_loads SET slaves = slaves - 1
    WHERE poolid = OLD.poolid AND distroid = OLD.distroid AND bitsid = OLD.bitsid
      AND purposeid = OLD.purposeid AND dcid = OLD.dcid AND trustid = OLD.trustid
      AND envid = OLD.envid AND masterid = OLD.current_masterid;
END;

CREATE TRIGGER IF NOT EXISTS slave_loads_update
AFTER UPDATE OF poolid, distroid, bitsid, purposeid, dcid, trustid, envid, current_masterid ON slaves
BEGIN
    UPDATE slave_loads SET slaves = slaves - 1
    WHERE OLD.current_masterid IS NOT NULL
      AND poolid = OLD.poolid AND distroid = OLD.distroid AND bitsid = OLD.bitsid
      AND purposeid = OLD.purposeid AND dcid = OLD.dcid AND trustid = OLD.trustid
      AND envid = OLD.envid AND masterid = OLD.current_masterid;
    INSERT INTO slave_loads
    SELECT NEW.poolid, NEW.distroid, NEW.bitsid, NEW.purposeid, NEW.dcid, NEW.trustid, NEW.envid,
           NEW.current_masterid, 1
    WHERE NEW.current_masterid IS NOT NULL
    ON CONFLICT DO UPDATE SET slaves = slaves + 1;
END;

DELETE FROM slave_loads;
INSERT INTO slave_loads
SELECT poolid, distroid, bitsid, purposeid, dcid, trustid, envid, current_masterid, COUNT(*)
FROM slaves
WHERE current_masterid IS NOT NULL
GROUP BY poolid, distroid, bitsid, purposeid, dcid, trustid, envid, current_masterid;
