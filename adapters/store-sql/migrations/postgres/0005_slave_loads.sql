-- Added by this rebuild: how many slaves of each pool and silo have each
-- master as current_masterid, so that an allocation reads its silo's
-- counts in a few point reads instead of counting the pool's slaves (the
-- original's slave_silo index has speedid in the middle and no poolid, so
-- the count read every slave of the pool and grew with the fleet).
--
-- No triggers keep it: a MySQL database shared with the original daemon
-- may not grant the TRIGGER privilege. The allocation itself updates the
-- counts inside its transaction, under its pools' lock; the daemon's own
-- inventory writes recount the table from `slaves`; and every daemon
-- recounts it at start and every `[database] reconcile_interval_s`
-- (default 60 s), pool by pool under the same lock, which puts right what
-- another writer (the original daemon, an operator's SQL) changed.
CREATE TABLE slave_loads (
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
);
