-- slavealloc schema for SQLite: the original's tables,
-- never altered (docs/compatibility.md); this rebuild's own tables are made by
-- the versioned migrations in migrations/sqlite/..
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
