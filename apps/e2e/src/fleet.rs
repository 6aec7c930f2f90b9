//! The sample fleet as the end-to-end tests load it: read, edited as JSON
//! (masters pointed at real Buildbot masters, base directories under the
//! test's scratch directory), and loaded into a SQLite database with the
//! real `slavealloc dbinit`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::process::run_bounded;
use crate::workspace::{binaries, repo_dir};
use crate::Result;

/// `dbinit` loads the sample fleet in well under a second; the bound only
/// ends one that hangs.
const DBINIT_LIMIT: Duration = Duration::from_secs(120);

/// fixtures/sample-fleet.json, as JSON.
pub fn sample_fleet() -> Result<Value> {
    let path = repo_dir().join("fixtures/sample-fleet.json");
    let text = fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

/// The slave row named `name` of a dump's tables.
pub fn slave_row_mut<'a>(tables: &'a mut Value, name: &str) -> Result<&'a mut Value> {
    tables["slaves"]
        .as_array_mut()
        .and_then(|rows| rows.iter_mut().find(|s| s["name"] == name))
        .ok_or_else(|| format!("{name} is not in the fleet"))
}

/// The password a slave's tac carries: its pool's row for its distro, else
/// the pool's wildcard row.
pub fn password_of(dump: &Value, name: &str) -> Result<String> {
    let tables = &dump["tables"];
    let slave = tables["slaves"]
        .as_array()
        .and_then(|rows| rows.iter().find(|s| s["name"] == name))
        .ok_or_else(|| format!("{name} is not in the fleet"))?;
    let rows = tables["slave_passwords"].as_array().cloned().unwrap_or_default();
    let of_pool = |distro: &Value| {
        rows.iter()
            .find(|r| r["poolid"] == slave["poolid"] && r["distroid"] == *distro)
            .and_then(|r| r["password"].as_str().map(str::to_owned))
    };
    of_pool(&slave["distroid"])
        .or_else(|| of_pool(&Value::Null))
        .ok_or_else(|| format!("{name}'s pool has no password row"))
}

/// Writes `dump` to `dir/fleet.json`, loads it with `slavealloc dbinit`
/// into `dir/slavealloc.db`, and answers that database's URL.
pub fn dbinit(dir: &Path, dump: &Value) -> Result<String> {
    let db = format!("sqlite://{}", dir.join("slavealloc.db").display());
    dbinit_into(dir, dump, &db)?;
    Ok(db)
}

/// Writes `dump` to `dir/fleet.json` and loads it with `slavealloc
/// dbinit` into the database at `db` (its schema created).
pub fn dbinit_into(dir: &Path, dump: &Value, db: &str) -> Result<()> {
    let file = dir.join("fleet.json");
    let text = serde_json::to_string_pretty(dump).map_err(|e| e.to_string())?;
    fs::write(&file, text).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let done = run_bounded(
        "slavealloc dbinit",
        Command::new(&binaries()?.slavealloc)
            .args(["dbinit", "--db", db])
            .arg(&file),
        &dir.join("dbinit.log"),
        DBINIT_LIMIT,
    )?;
    if !done.status.success() {
        return Err(format!("dbinit failed: {}", done.output));
    }
    Ok(())
}

/// Points the dump at real Buildbot masters: each of `masters` (its
/// slavealloc id, the running master) gets `127.0.0.1` and the master's PB
/// and web ports, every other master web port 0 (so never polled); the
/// slaves named get their base directory under `workers`.
pub fn point_at(dump: &mut Value, masters: &[(i64, &crate::buildbot::Master)], slaves: &[&str], workers: &Path) {
    let tables = &mut dump["tables"];
    for m in tables["masters"].as_array_mut().into_iter().flatten() {
        match masters.iter().find(|(id, _)| m["masterid"] == *id) {
            Some((_, real)) => {
                m["fqdn"] = Value::from("127.0.0.1");
                m["pb_port"] = Value::from(real.pb_port());
                m["http_port"] = Value::from(real.www_port());
            }
            None => m["http_port"] = Value::from(0),
        }
    }
    for s in tables["slaves"].as_array_mut().into_iter().flatten() {
        let Some(name) = s["name"].as_str().map(str::to_owned) else {
            continue;
        };
        if slaves.contains(&name.as_str()) {
            s["basedir"] = Value::from(workers.join(&name).display().to_string());
        }
    }
}
