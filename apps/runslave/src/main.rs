//! `runslave`: what every build machine runs at boot (the successor of
//! runslave.py). It waits while `DO_NOT_START` exists in the worker's base
//! directory, asks the allocator for this machine's `buildbot.tac`, keeps it
//! only if it is a generated one, writes it atomically, falls back to the
//! cached copy when the allocator cannot give one, and starts the worker.
//!
//! Main design decision: never leave a machine with a broken
//! `buildbot.tac`. A new tac replaces the old one only by a rename of a
//! fully written, fsynced file; a download that failed, timed out or brought
//! something else (an HTML error page from a proxy) leaves the old one in
//! place. Few dependencies (clap, ureq, gethostname), no async runtime.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::thread::sleep;
use std::time::Duration;

use clap::Parser;

/// The first line of every tac the allocator generates; anything without it
/// is not a tac (an error page, a truncated answer).
const MARKER: &str = "AUTOMATICALLY GENERATED - DO NOT MODIFY";
/// The file whose presence holds the worker back.
const DO_NOT_START: &str = "DO_NOT_START";
const TAC: &str = "buildbot.tac";
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[cfg(windows)]
const DEFAULT_BASEDIR: &str = "C:\\slave";
#[cfg(not(windows))]
const DEFAULT_BASEDIR: &str = "/builds/slave";

/// Fetch this machine's buildbot.tac from the slave allocator and start the
/// Buildbot worker.
#[derive(Debug, Parser)]
#[command(
    name = "runslave",
    version,
    about,
    // A wrapper script may add an option the boot script already gives: the last one wins.
    args_override_self = true,
    after_help = "Exit status: the worker command's when it was started; 0 with --no-start when a \
                  buildbot.tac (new or cached) is in place; 1 when there is neither a new nor a cached \
                  buildbot.tac, or the worker command cannot be run; 2 for a usage error."
)]
struct Args {
    /// The allocator's tac URL; `SLAVE` in it is replaced by the slave name.
    #[arg(
        short = 'a',
        long,
        env = "RUNSLAVE_ALLOCATOR_URL",
        default_value = "http://slavealloc.build.mozilla.org/gettac/SLAVE"
    )]
    allocator_url: String,

    /// The slave name [default: this host's short name, lower-cased].
    #[arg(short = 'n', long)]
    slavename: Option<String>,

    /// The worker's base directory: where buildbot.tac and DO_NOT_START live.
    #[arg(short = 'd', long, default_value = DEFAULT_BASEDIR)]
    basedir: PathBuf,

    /// The worker command; it is run as `<cmd> start <basedir>`. Split on
    /// white space.
    #[arg(short = 'c', long = "buildslave-cmd", default_value = "buildbot-worker")]
    buildslave_cmd: String,

    /// Say what is being done.
    #[arg(short = 'v', long)]
    verbose: bool,

    /// Fetch and write the tac, but do not start the worker.
    #[arg(long)]
    no_start: bool,

    /// Seconds allowed for each attempt to download the tac, connection
    /// included.
    #[arg(long, default_value_t = 30.0, value_parser = seconds)]
    timeout: f64,

    /// How many times a failed download is tried again before falling back
    /// to the cached buildbot.tac.
    #[arg(long, default_value_t = 4)]
    retries: u32,

    /// Seconds before the first retry; each later one waits twice as long
    /// (at most a minute).
    #[arg(long, default_value_t = 5.0, value_parser = seconds)]
    retry_delay: f64,

    /// Seconds between two checks for DO_NOT_START (hidden: for tests).
    #[arg(long, env = "RUNSLAVE_POLL_INTERVAL", default_value_t = 10.0, value_parser = seconds, hide = true)]
    poll_interval: f64,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 86400")),
    }
}

fn duration(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

/// Progress messages on stderr, only with `-v`.
struct Log {
    verbose: bool,
}

impl Log {
    fn info(&self, msg: &str) {
        if self.verbose {
            eprintln!("runslave: {msg}");
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let log = Log { verbose: args.verbose };
    match run(&args, &log) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("runslave: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, log: &Log) -> Result<ExitCode, String> {
    let slavename = match &args.slavename {
        Some(n) => n.to_ascii_lowercase(),
        None => short_hostname()?,
    };
    if slavename.is_empty() || slavename.contains('.') || slavename.contains('/') {
        return Err(format!(
            "{slavename:?} is not a slave name: give the unqualified hostname"
        ));
    }
    wait_while_held(&args.basedir, duration(args.poll_interval), log);

    let url = args.allocator_url.replace("SLAVE", &slavename);
    let tac_path = args.basedir.join(TAC);
    match fetch_with_retries(&url, args, log).and_then(|tac| write_atomically(&tac_path, &tac)) {
        Ok(()) => log.info(&format!("wrote {}", tac_path.display())),
        Err(why) if tac_path.is_file() => {
            eprintln!(
                "runslave: could not get a new buildbot.tac ({why}); using the cached {}",
                tac_path.display()
            );
        }
        Err(why) => {
            return Err(format!(
                "no buildbot.tac: {why}; and there is no cached {}",
                tac_path.display()
            ))
        }
    }
    if args.no_start {
        return Ok(ExitCode::SUCCESS);
    }
    if is_disabled_tac(&tac_path) {
        // Starting it would only print the same line and, with buildbot-worker
        // 4.x, then wait 10 s for a twistd.log that never comes and exit 1.
        println!("{DISABLED_MESSAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    start(&args.buildslave_cmd, &args.basedir, log)
}

/// What the allocator's tac for a disabled slave prints.
const DISABLED_MESSAGE: &str = "SLAVE DISABLED; NOT STARTING";

/// Whether the tac is the allocator's "disabled" program rather than a
/// worker configuration.
fn is_disabled_tac(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|tac| {
        tac.lines()
            .any(|l| l.trim() == format!("print(\"{DISABLED_MESSAGE}\")"))
    })
}

/// This host's name up to the first dot, lower-cased (some Windows hosts
/// report upper case).
fn short_hostname() -> Result<String, String> {
    let full: OsString = gethostname::gethostname();
    let full = full
        .into_string()
        .map_err(|raw| format!("the host name {raw:?} is not UTF-8; give --slavename"))?;
    let short = full.split('.').next().unwrap_or_default().to_ascii_lowercase();
    if short.is_empty() {
        return Err("this host has no name; give --slavename".into());
    }
    Ok(short)
}

/// Blocks while `<basedir>/DO_NOT_START` exists, as the original did: an
/// operator holds a machine back by creating it.
fn wait_while_held(basedir: &Path, interval: Duration, log: &Log) {
    let flag = basedir.join(DO_NOT_START);
    if !flag.exists() {
        return;
    }
    // Said even without -v: a machine that seems hung at boot should say why.
    eprintln!("runslave: waiting until {} is removed", flag.display());
    while flag.exists() {
        sleep(interval);
        log.info(&format!("{} still exists", flag.display()));
    }
    log.info(&format!("{} is gone; going on", flag.display()));
}

/// Why one download did not bring a tac, and whether trying again may help.
struct Failure {
    reason: String,
    retry: bool,
}

fn fetch_with_retries(url: &str, args: &Args, log: &Log) -> Result<String, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(duration(args.timeout))
        .timeout(duration(args.timeout))
        .build();
    let mut delay = duration(args.retry_delay);
    let attempts = args.retries.saturating_add(1);
    for attempt in 1..=attempts {
        log.info(&format!("fetching {url} (attempt {attempt} of {attempts})"));
        match fetch(&agent, url) {
            Ok(tac) => return Ok(tac),
            Err(f) if f.retry && attempt < attempts => {
                eprintln!("runslave: {}; trying again in {:.1}s", f.reason, delay.as_secs_f64());
                sleep(delay);
                delay = (delay * 2).min(MAX_BACKOFF);
            }
            Err(f) => return Err(f.reason),
        }
    }
    Err(format!("{url}: no attempt was made"))
}

fn fetch(agent: &ureq::Agent, url: &str) -> Result<String, Failure> {
    let fail = |reason: String, retry: bool| Failure { reason, retry };
    let resp = match agent.get(url).call() {
        Ok(resp) => resp,
        // 404 is the allocator's "no allocation available": asking again
        // will not change it.
        Err(ureq::Error::Status(code, resp)) => {
            let body = resp.into_string().unwrap_or_default();
            let retry = code >= 500 || code == 429;
            return Err(fail(
                format!("{url} answered HTTP {code}: {}", first_line(&body)),
                retry,
            ));
        }
        Err(ureq::Error::Transport(t)) => return Err(fail(format!("{url}: {t}"), true)),
    };
    let body = resp
        .into_string()
        .map_err(|e| fail(format!("{url}: reading the answer: {e}"), true))?;
    if !body.contains(MARKER) {
        return Err(fail(
            format!("{url} did not answer a generated buildbot.tac: {}", first_line(&body)),
            true,
        ));
    }
    Ok(body)
}

fn first_line(text: &str) -> String {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("(empty)");
    let mut short: String = line.chars().take(100).collect();
    if short.len() < line.len() {
        short.push_str("...");
    }
    short
}

/// Replaces `path` with `content` so that a reader, or a crash at any
/// moment, sees either the old file or the new one whole: write a temporary
/// file beside it, fsync, rename over, fsync the directory.
fn write_atomically(path: &Path, content: &str) -> Result<(), String> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(format!("{TAC}.tmp.{}", std::process::id()));
    let written = (|| {
        let mut f = File::options().write(true).create_new(true).open(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    written.map_err(|e| {
        // Best effort: the temporary file is ours and useless now.
        let _ = fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

fn start(cmd: &str, basedir: &Path, log: &Log) -> Result<ExitCode, String> {
    let mut words = cmd.split_whitespace();
    let program = words.next().ok_or("the worker command is empty")?;
    let mut command = Command::new(program);
    command.args(words).arg("start").arg(basedir);
    log.info(&format!("running {cmd} start {}", basedir.display()));
    let status = command.status().map_err(|e| format!("cannot run {program:?}: {e}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => {
            eprintln!("runslave: {cmd} start {} exited with status {code}", basedir.display());
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        None => {
            eprintln!("runslave: {cmd} start {} was killed by a signal", basedir.display());
            ExitCode::FAILURE
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TAC);
        fs::write(&path, "old").unwrap();
        write_atomically(&path, "new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [OsString::from(TAC)]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join(TAC);
        assert!(write_atomically(&path, "new").unwrap_err().contains("cannot write"));
    }

    #[test]
    fn seconds_refuse_nonsense() {
        assert!(seconds("-1").is_err());
        assert!(seconds("NaN").is_err());
        assert_eq!(seconds("0.5"), Ok(0.5));
    }
}
