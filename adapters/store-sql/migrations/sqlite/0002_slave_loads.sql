-- Added by this rebuild: how many slaves of each pool and silo have each
-- master as current_masterid. Counting them from `slaves` reads every slave
-- of the pool (the original slave_silo index has speedid in the middle and
-- no poolid); this table makes the count of a silo a few point reads.
-- Triggers keep it exact whoever writes `slaves` (this daemon, the CLI, the
-- original Python daemon, an operator's sqlite3 shell); they are made, and
-- the table recounted from `slaves`, on every start (sql/sqlite/loads.sql),
-- so it cannot drift for long. IF NOT EXISTS: databases made before
-- migrations have it.
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
