-- slavealloc schema for MariaDB/MySQL: the original's tables,
-- never altered (docs/compatibility.md); this rebuild's own tables are made by
-- the versioned migrations in migrations/mysql/. As
-- SQLAlchemy created it (InnoDB, INT AUTO_INCREMENT ids, VARCHAR(128), TEXT,
-- BOOL). utf8mb4_bin makes names compare exactly, as on SQLite and
-- PostgreSQL; the queries do not depend on it, so a database created by
-- the original with another collation works unchanged.
-- Idempotent: indexes are declared inside CREATE TABLE IF NOT EXISTS.

CREATE TABLE IF NOT EXISTS distros (
    distroid INT NOT NULL AUTO_INCREMENT,
    name VARCHAR(128) NOT NULL,
    PRIMARY KEY (distroid),
    UNIQUE KEY name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS datacenters (
    dcid INT NOT NULL AUTO_INCREMENT,
    name VARCHAR(128) NOT NULL,
    PRIMARY KEY (dcid),
    UNIQUE KEY name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS bitlengths (
    bitsid INT NOT NULL AUTO_INCREMENT,
    name VARCHAR(128) NOT NULL,
    PRIMARY KEY (bitsid),
    UNIQUE KEY name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS speeds (
    speedid INT NOT NULL AUTO_INCREMENT,
    name VARCHAR(128) NOT NULL,
    PRIMARY KEY (speedid),
    UNIQUE KEY name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS purposes (
    purposeid INT NOT NULL AUTO_INCREMENT,
    name VARCHAR(128) NOT NULL,
    PRIMARY KEY (purposeid),
    UNIQUE KEY name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS trustlevels (
    trustid INT NOT NULL AUTO_INCREMENT,
    name VARCHAR(128) NOT NULL,
    PRIMARY KEY (trustid),
    UNIQUE KEY name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS environments (
    envid INT NOT NULL AUTO_INCREMENT,
    name VARCHAR(128) NOT NULL,
    PRIMARY KEY (envid),
    UNIQUE KEY name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS pools (
    poolid INT NOT NULL AUTO_INCREMENT,
    name VARCHAR(128) NOT NULL,
    PRIMARY KEY (poolid),
    UNIQUE KEY name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS tac_templates (
    tplid INT NOT NULL AUTO_INCREMENT,
    name VARCHAR(128) NOT NULL,
    template TEXT NOT NULL,
    PRIMARY KEY (tplid),
    UNIQUE KEY name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS masters (
    masterid INT NOT NULL AUTO_INCREMENT,
    nickname VARCHAR(128) NOT NULL,
    fqdn TEXT NOT NULL,
    http_port INT NOT NULL,
    pb_port INT NOT NULL,
    dcid INT NOT NULL,
    poolid INT NOT NULL,
    enabled BOOL NOT NULL DEFAULT TRUE,
    notes TEXT NULL,
    PRIMARY KEY (masterid),
    UNIQUE KEY nickname (nickname),
    FOREIGN KEY (dcid) REFERENCES datacenters (dcid),
    FOREIGN KEY (poolid) REFERENCES pools (poolid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS slaves (
    slaveid INT NOT NULL AUTO_INCREMENT,
    name VARCHAR(128) NOT NULL,
    distroid INT NOT NULL,
    bitsid INT NOT NULL,
    speedid INT NOT NULL,
    purposeid INT NOT NULL,
    dcid INT NOT NULL,
    trustid INT NOT NULL,
    envid INT NOT NULL,
    poolid INT NOT NULL,
    basedir TEXT NOT NULL,
    locked_masterid INT NULL,
    custom_tplid INT NULL,
    enabled BOOL NOT NULL DEFAULT TRUE,
    notes TEXT NULL,
    current_masterid INT NULL,
    PRIMARY KEY (slaveid),
    UNIQUE KEY name (name),
    KEY slave_silo (distroid, bitsid, speedid, purposeid, dcid, trustid, envid),
    KEY slave_poolid (poolid),
    FOREIGN KEY (distroid) REFERENCES distros (distroid),
    FOREIGN KEY (bitsid) REFERENCES bitlengths (bitsid),
    FOREIGN KEY (speedid) REFERENCES speeds (speedid),
    FOREIGN KEY (purposeid) REFERENCES purposes (purposeid),
    FOREIGN KEY (dcid) REFERENCES datacenters (dcid),
    FOREIGN KEY (trustid) REFERENCES trustlevels (trustid),
    FOREIGN KEY (envid) REFERENCES environments (envid),
    FOREIGN KEY (poolid) REFERENCES pools (poolid),
    FOREIGN KEY (locked_masterid) REFERENCES masters (masterid),
    FOREIGN KEY (custom_tplid) REFERENCES tac_templates (tplid),
    FOREIGN KEY (current_masterid) REFERENCES masters (masterid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS slave_passwords (
    poolid INT NOT NULL,
    distroid INT NULL,
    password TEXT NOT NULL,
    FOREIGN KEY (poolid) REFERENCES pools (poolid),
    FOREIGN KEY (distroid) REFERENCES distros (distroid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
