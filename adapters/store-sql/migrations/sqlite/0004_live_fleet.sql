-- The live fleet (slavealloc_domain::live): what machines and Buildbot
-- masters say, beside what slavealloc handed out. Times are milliseconds
-- since the Unix epoch (UTC). No foreign keys to the original's tables, so
-- that the original daemon and an operator's SQL can delete slaves and
-- masters as they always did; readers ignore rows of deleted ones.

-- Each slave's last /gettac: when, from where, which master it got.
CREATE TABLE slave_boots (
    slaveid INT NOT NULL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    from_addr VARCHAR(64) NULL,
    masterid INT NULL
);

-- What the masters' polls said of each slave.
CREATE TABLE slave_presence (
    slaveid INT NOT NULL PRIMARY KEY,
    connected_masterid INT NULL,
    connected_since_ms BIGINT NULL,
    last_seen_masterid INT NULL,
    last_seen_ms BIGINT NULL,
    paused BOOLEAN NOT NULL,
    graceful BOOLEAN NOT NULL
);

-- A poll reads the presence of the workers connected to its master.
CREATE INDEX slave_presence_connected ON slave_presence (connected_masterid);

-- What the last polls of each master found.
CREATE TABLE master_status (
    masterid INT NOT NULL PRIMARY KEY,
    reachable BOOLEAN NOT NULL,
    last_poll_ms BIGINT NULL,
    last_success_ms BIGINT NULL,
    unreachable_since_ms BIGINT NULL,
    error TEXT NULL,
    buildbot_version VARCHAR(128) NULL,
    connected INT NOT NULL,
    poll_ms BIGINT NOT NULL
);

-- Workers a master reports that slavealloc has no slave for.
CREATE TABLE unknown_workers (
    masterid INT NOT NULL,
    name VARCHAR(255) NOT NULL,
    connected BOOLEAN NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (masterid, name)
);

-- Jobs only one daemon of those sharing the database may do (polling the
-- masters): who holds each, until when.
CREATE TABLE leases (
    name VARCHAR(64) NOT NULL PRIMARY KEY,
    holder VARCHAR(255) NOT NULL,
    expires_ms BIGINT NOT NULL
);
