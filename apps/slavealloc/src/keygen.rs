//! `slavealloc keygen`: makes the ed25519 key pair that signs tacs
//! (`[tac] signing_key`) and that `runslave --pubkey` verifies them with.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};

/// Options of `slavealloc keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Write the private key to PREFIX (mode 0600) and the public key to
    /// PREFIX.pub.
    #[arg(long, value_name = "PREFIX", default_value = "slavealloc-tac-key")]
    pub out: PathBuf,
    /// Replace existing files (each is replaced whole or not at all).
    #[arg(long)]
    pub force: bool,
}

/// Writes a new key pair and says where.
pub fn run(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let private_path = args.out.clone();
    let mut public_path = args.out.clone().into_os_string();
    public_path.push(".pub");
    let public_path = PathBuf::from(public_path);
    if !args.force {
        for path in [&private_path, &public_path] {
            if path.exists() {
                bail!("{} exists: give --force to replace it", path.display());
            }
        }
    }
    let (private, public) = slavealloc_tac_signing::generate_key_pair().context("while making the key pair")?;
    write(&private_path, &private, 0o600)?;
    write(&public_path, &public, 0o644)?;
    eprintln!(
        "slavealloc: wrote the private key {} (for [tac] signing_key) and the public key {} (for runslave --pubkey)",
        private_path.display(),
        public_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes through a temporary file beside `path` (created 0600 by the
/// tempfile crate, so the private key is never readable by others, not even
/// for a moment) and renames it over; with `--force` that replaces the old
/// file whole, without it a file that appeared meanwhile is kept.
fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let context = || format!("while writing {}", path.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".slavealloc-keygen.")
        .tempfile_in(dir)
        .with_context(context)?;
    tmp.write_all(text.as_bytes()).with_context(context)?;
    tmp.as_file().sync_all().with_context(context)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(context)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    if path.exists() {
        tmp.persist(path).map_err(|e| e.error).with_context(context)?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| e.error).with_context(context)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_private_0600_and_never_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tac");
        let args = |force| KeygenArgs {
            out: out.clone(),
            force,
        };
        run(&args(false)).unwrap();
        let private = std::fs::read_to_string(&out).unwrap();
        let public = std::fs::read_to_string(dir.path().join("tac.pub")).unwrap();
        let signer = slavealloc_tac_signing::TacSigner::from_pem(&private).unwrap();
        let verifier = slavealloc_tac_signing::TacVerifier::from_pem(&public).unwrap();
        let tac = signer.sign("x\n", "s", std::time::SystemTime::now()).unwrap();
        assert!(verifier.verify(&tac, "s").is_ok(), "the two files are one pair");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&out), 0o600);
            assert_eq!(mode(&dir.path().join("tac.pub")), 0o644);
        }
        let err = run(&args(false)).unwrap_err();
        assert!(format!("{err:#}").contains("--force"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), private, "kept");
        run(&args(true)).unwrap();
        assert_ne!(std::fs::read_to_string(&out).unwrap(), private, "replaced with --force");
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["tac", "tac.pub"], "no temporary file is left");
    }
}
