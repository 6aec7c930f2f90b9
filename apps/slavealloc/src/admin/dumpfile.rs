//! Dump files: this rebuild's versioned JSON, and the original's pickles.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use slavealloc_domain::dump::{DUMP_FORMAT, DUMP_VERSION};
use slavealloc_domain::Dump;

use super::pickle;

/// Reads a dump, telling the format from the first bytes: JSON (`{`) from
/// `dbdump`, or a pickle from the original's `dbdump`.
///
/// # Errors
/// An unreadable file, or one that is neither, or a dump of another format
/// or version; the message names the file.
pub fn read(path: &Path) -> anyhow::Result<Dump> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{} is not a usable dump", path.display()))
}

/// [`read`] on bytes.
///
/// # Errors
/// As for [`read`], without the file name.
pub fn parse(bytes: &[u8]) -> anyhow::Result<Dump> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(0);
    if bytes.get(start) == Some(&b'{') {
        let value: serde_json::Value = serde_json::from_slice(bytes).context("invalid JSON")?;
        let format = value.get("format").and_then(serde_json::Value::as_str);
        let version = value.get("version").and_then(serde_json::Value::as_u64);
        if format != Some(DUMP_FORMAT) {
            bail!("its \"format\" is {format:?}, not {DUMP_FORMAT:?}");
        }
        if version != Some(DUMP_VERSION.into()) {
            let version = version.map_or_else(|| "missing".to_owned(), |v| v.to_string());
            bail!("dump version {version}; this slavealloc reads version {DUMP_VERSION}");
        }
        return serde_json::from_value(value).context("not a slavealloc dump");
    }
    if pickle::looks_like_pickle(bytes) {
        return pickle::read(bytes).context("reading it as a pickle from the original slavealloc");
    }
    bail!("neither a JSON dump from dbdump nor a pickle from the original's dbdump")
}

/// The dump as written: pretty JSON, keys in order, a final newline, so
/// that two dumps of the same data are byte-identical.
///
/// # Errors
/// Never in practice (serde_json on string keys).
pub fn to_bytes(dump: &Dump) -> anyhow::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(dump)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes `bytes` to a new file at `path` whole or not at all: a temporary
/// file beside it, fsynced, then renamed. With `create_new`, an existing
/// `path` is an error rather than replaced.
///
/// A dump holds the slave passwords in the clear: the file is readable by
/// its owner only (0600), or, replacing a file, at most what that file
/// allowed (never wider).
///
/// # Errors
/// Any I/O error, naming the file.
pub fn write_atomically(path: &Path, bytes: &[u8], create_new: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if create_new && path.exists() {
        bail!("{} already exists", path.display());
    }
    let mode = fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o600);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = File::options().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // Best effort: the temporary file is ours and useless now.
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_dump() {
        let cases: &[(&[u8], &str)] = &[
            (b"{\"format\": \"other\", \"version\": 1, \"tables\": {}}", "format"),
            (
                b"{\"format\": \"slavealloc-dump\", \"version\": 2, \"tables\": {}}",
                "version 2",
            ),
            (b"{\"format\": \"slavealloc-dump\",", "invalid JSON"),
            // A table this build does not know (a newer build's, or a typo).
            (
                b"{\"format\": \"slavealloc-dump\", \"version\": 1, \"tables\": {\"users\": []}}",
                "users",
            ),
            (b"name,basedir\n", "neither"),
            (b"(dp0\nS'slaves'\np1\n(lp2\n", "pickle"),
        ];
        for (bytes, want) in cases {
            let err = format!("{:#}", parse(bytes).unwrap_err());
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }

    #[test]
    fn the_originals_pickles_load_with_py2_strings_longs_and_int_booleans() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/pickle");
        let expected: Dump = serde_json::from_str(&fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        for file in ["original-proto0.pkl", "original-proto2.pkl"] {
            let mut dump = read(&dir.join(file)).unwrap();
            // The original had no audit log; a loaded database has an empty one.
            dump.tables.insert(slavealloc_domain::Table::AuditLog, Vec::new());
            assert_eq!(dump, expected, "{file}");
        }
    }

    #[test]
    fn a_pickle_that_breaks_the_schema_is_refused_with_its_place() {
        // {'slaves': [{'slaveid': 1, 'name': 'a.b'}]}, protocol 0
        let bytes = b"(dp0\nS'slaves'\np1\n(lp2\n(dp3\nS'slaveid'\np4\nI1\nsS'name'\np5\nS'a.b'\np6\nsas.";
        let err = format!("{:#}", parse(bytes).unwrap_err());
        assert!(err.contains("table slaves, row 1"), "{err}");
        // {'users': []}
        let err = format!("{:#}", parse(b"(dp0\nS'users'\np1\n(lp2\ns.").unwrap_err());
        assert!(err.contains("no such table: users"), "{err}");
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn dumps_are_private_and_a_replaced_file_is_never_widened() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.json");
        write_atomically(&new, b"{}", true).unwrap();
        assert_eq!(mode(&new), 0o600);
        for (before, after) in [(0o644, 0o600), (0o400, 0o400), (0o640, 0o600)] {
            let existing = dir.path().join(format!("existing-{before:o}.json"));
            fs::write(&existing, b"old").unwrap();
            fs::set_permissions(&existing, fs::Permissions::from_mode(before)).unwrap();
            write_atomically(&existing, b"{}", false).unwrap();
            assert_eq!(mode(&existing), after, "replacing a {before:o} file");
            assert_eq!(fs::read(&existing).unwrap(), b"{}");
        }
    }

    #[test]
    fn a_dump_round_trips_byte_for_byte() {
        let bytes = to_bytes(&Dump::default()).unwrap();
        assert_eq!(to_bytes(&parse(&bytes).unwrap()).unwrap(), bytes);
    }
}
