-- Run on every start, after the migrations: the triggers that keep
-- slave_loads (migration 0002) exact, made again if someone dropped one,
-- and a recount from slaves, which puts right whatever was written while a
-- trigger was missing.

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
