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
//! place. Few dependencies (clap, ureq with rustls, gethostname, tempfile,
//! the tac signature format), no async runtime.
//!
//! Second decision: **a machine runs only what its allocator made for it**.
//! With `--pubkey` a tac (new or cached) must carry a signature of that key
//! for this slave name (see `slavealloc-tac-signing`); over HTTPS the
//! server's certificate is checked against the webpki roots and `--ca`;
//! redirects are followed by hand, never to another host nor from https to
//! http; and a refused answer never replaces the cached tac.
//!
//! With `--supervise` (see [`supervise`]) runslave stays: it runs the worker
//! in the foreground and, each time it exits, asks for a new tac (the
//! allocator may now name another master) and starts it again, until a
//! SIGTERM or SIGINT, which it forwards to the worker.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::thread::sleep;
use std::time::Duration;

mod supervise;

use clap::Parser;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use slavealloc_tac_signing::TacVerifier;
use url::Url;

/// The first line of every tac the allocator generates; a body that does not
/// begin with it is not a tac (an error page, a truncated answer, something
/// with code before the header).
const HEADER_LINE: &str = "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n";
/// The most redirects followed for one download.
const MAX_REDIRECTS: u32 = 5;
/// Exit status: no tac, new or cached, can be used; or the worker cannot run.
const EXIT_NO_TAC: u8 = 1;
/// Exit status with `--require-https`: no tac over verified HTTPS from the
/// allocator's host.
const EXIT_INSECURE: u8 = 3;
/// Exit status with `--require-signature`: the answer was not a tac signed by
/// `--pubkey` for this slave.
const EXIT_UNSIGNED: u8 = 4;
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
    after_help = "Exit status:\n  \
                  the worker command's, when it was started;\n  \
                  0  with --no-start, when a buildbot.tac (new or cached) is in place;\n  \
                  1  no usable buildbot.tac: no new one and no cached one (or, with --pubkey, the cached one \
                  is not signed for this slave); or the worker command cannot be run;\n  \
                  2  a usage error (also an unreadable --pubkey or --ca file);\n  \
                  3  --require-https: the allocator URL is not https, the TLS certificate is not trusted, or a \
                  redirect went to another host or to http (the cached tac is not used);\n  \
                  4  --require-signature: the answer is not a tac signed by --pubkey for this slave (unsigned, \
                  altered, or another slave's; the cached tac is not used).\n\
                  With --supervise the worker's status is not runslave's (it is started again): 0 once SIGTERM \
                  or SIGINT, forwarded to the worker, has stopped it (it is not started again); 1, 3 or 4 as \
                  above when no tac can be used before a (re)start, or the worker cannot be run (1).\n\
                  A refused answer never replaces the cached buildbot.tac."
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
    /// white space. With --supervise: `<cmd> start --nodaemon <basedir>`, but
    /// a command that is just `buildslave` (or a path to it) becomes the
    /// `twistd` beside it, run in the base directory as `twistd --nodaemon
    /// --no_save --pidfile= --logfile=twistd.log -y buildbot.tac`.
    /// [default: what the tac imports: `buildslave` for a tac of
    /// `buildslave.bot`, else `buildbot-worker`]
    #[arg(short = 'c', long = "buildslave-cmd")]
    buildslave_cmd: Option<String>,

    /// Say what is being done.
    #[arg(short = 'v', long)]
    verbose: bool,

    /// Fetch and write the tac, but do not start the worker.
    #[arg(long)]
    no_start: bool,

    /// Run the worker in the foreground and, whenever it exits (a master
    /// being drained shuts its workers down), fetch a new tac and start it
    /// again, forever; DO_NOT_START and a disabled slave hold the restart.
    /// SIGTERM or SIGINT is forwarded to the worker, and runslave exits 0
    /// once it has stopped. For a service manager: see
    /// apps/slavealloc/deploy/systemd/runslave.service.
    #[arg(long, conflicts_with = "no_start")]
    supervise: bool,

    /// With --supervise: a worker that ran less than this many seconds is
    /// started again only after a pause (1 s, doubling up to a minute, while
    /// runs stay short); after a longer run it is started again at once.
    #[arg(long, default_value_t = 60.0, value_parser = seconds, value_name = "SECONDS")]
    min_run: f64,

    /// With --supervise: the first pause after a short run, in seconds (hidden: for tests).
    #[arg(long, default_value_t = 1.0, value_parser = seconds, hide = true)]
    restart_delay: f64,

    /// With --supervise: the longest pause between two starts, in seconds (hidden: for tests).
    #[arg(long, default_value_t = 60.0, value_parser = seconds, hide = true)]
    max_restart_delay: f64,

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

    /// When the allocator answers busy (503 or 429 with Retry-After),
    /// runslave waits as long as it says (at most a minute each time, plus
    /// up to a second of its own) without using up --retries, for at most
    /// this many seconds in all; then such answers count as failures.
    #[arg(long, default_value_t = 600.0, value_parser = seconds)]
    max_paced_wait: f64,

    /// The longest single Retry-After honoured, in seconds (hidden: for tests).
    #[arg(long, default_value_t = 60.0, value_parser = seconds, hide = true)]
    max_retry_after: f64,

    /// Run only tacs signed by this ed25519 public key (PEM, from `slavealloc
    /// keygen`) for this slave: a new tac that is not is refused, and the
    /// cached one is checked before it is used.
    #[arg(long, value_name = "FILE")]
    pubkey: Option<PathBuf>,

    /// Also trust the certificate authorities in this PEM file for HTTPS
    /// (besides the webpki roots).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,

    /// Exit 3 instead of using the cached tac when the tac cannot be had over
    /// verified HTTPS from the allocator's host.
    #[arg(long)]
    require_https: bool,

    /// Exit 4 instead of using the cached tac when the allocator's answer is
    /// not signed by --pubkey for this slave.
    #[arg(long, requires = "pubkey")]
    require_signature: bool,

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

/// Why runslave stops without starting the worker: a message and an exit
/// status.
struct Stop {
    msg: String,
    code: u8,
}

impl From<String> for Stop {
    fn from(msg: String) -> Self {
        Stop { msg, code: EXIT_NO_TAC }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let log = Log { verbose: args.verbose };
    match run(&args, &log) {
        Ok(code) => code,
        Err(stop) => {
            eprintln!("runslave: {}", stop.msg);
            ExitCode::from(stop.code)
        }
    }
}

/// What the download needs besides the URL.
struct Client {
    agent: ureq::Agent,
    verifier: Option<TacVerifier>,
    slavename: String,
}

fn run(args: &Args, log: &Log) -> Result<ExitCode, Stop> {
    let (client, url) = prepare(args)?;
    if args.supervise {
        return supervise::run(args, log, &client, &url);
    }
    // Plain sleeps: without --supervise a signal ends runslave as it always did.
    let pause = Sleep;
    wait_while_held(&args.basedir, duration(args.poll_interval), log, &pause);
    let tac_path = args.basedir.join(TAC);
    obtain_tac(&url, &client, args, log, &pause)?;
    let disabled = describe_tac(&tac_path, &client.slavename, log, true);
    if args.no_start {
        return Ok(ExitCode::SUCCESS);
    }
    if disabled {
        // Starting it would only print the same line and, with buildbot-worker
        // 4.x, then wait 10 s for a twistd.log that never comes and exit 1.
        println!("{DISABLED_MESSAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    start(&command_for(args, &tac_path), &args.basedir, log)
}

/// Checks the slave name and the URL, reads `--pubkey` and `--ca`, and makes
/// the HTTP client: everything that is the same for every fetch.
fn prepare(args: &Args) -> Result<(Client, Url), Stop> {
    let usage = |msg: String| Stop { msg, code: 2 };
    let slavename = match &args.slavename {
        Some(n) => n.to_ascii_lowercase(),
        None => short_hostname()?,
    };
    if slavename.is_empty() || slavename.contains('.') || slavename.contains('/') {
        return Err(format!("{slavename:?} is not a slave name: give the unqualified hostname").into());
    }
    let verifier = match &args.pubkey {
        Some(path) => Some(TacVerifier::from_pem_file(path).map_err(|e| usage(format!("--pubkey: {e}")))?),
        None => None,
    };
    let tls = tls_config(args.ca.as_deref()).map_err(usage)?;
    let url = args.allocator_url.replace("SLAVE", &slavename);
    let parsed = Url::parse(&url).map_err(|e| usage(format!("{url:?} is not a URL: {e}")))?;
    if args.require_https && parsed.scheme() != "https" {
        return Err(Stop {
            msg: format!("--require-https: {url} is not an https:// URL"),
            code: EXIT_INSECURE,
        });
    }
    let client = Client {
        agent: ureq::AgentBuilder::new()
            .timeout_connect(duration(args.timeout))
            .timeout(duration(args.timeout))
            // Followed by hand, so each hop is checked (see fetch).
            .redirects(0)
            .tls_config(tls)
            .build(),
        verifier,
        slavename,
    };
    Ok((client, parsed))
}

/// What [`obtain_tac`] ended with, when it did not stop runslave.
#[derive(Debug, PartialEq, Eq)]
enum Obtained {
    /// `buildbot.tac` is in place: new, or the cached one.
    Tac,
    /// A signal asked runslave to stop while it waited to try again.
    Stopped,
}

/// Puts a usable `buildbot.tac` in the base directory: a new one from the
/// allocator (with retries), else the cached one. `Err` when there is
/// neither, or a `--require-*` flag refuses the cached one.
fn obtain_tac(url: &Url, client: &Client, args: &Args, log: &Log, pause: &dyn Pause) -> Result<Obtained, Stop> {
    let tac_path = args.basedir.join(TAC);
    let failure = match fetch_with_retries(url, client, args, log, pause) {
        Ok(tac) => match write_atomically(&tac_path, &tac) {
            Ok(()) => None,
            Err(reason) => Some(Failure::new(Kind::Unavailable, false, reason)),
        },
        Err(f) => Some(f),
    };
    match failure {
        None => log.info(&format!("wrote {}", tac_path.display())),
        Some(f) if f.kind == Kind::Stopped => return Ok(Obtained::Stopped),
        Some(f) if f.kind == Kind::Insecure && args.require_https => {
            return Err(Stop {
                msg: format!("--require-https: {}; the cached buildbot.tac is not used", f.reason),
                code: EXIT_INSECURE,
            });
        }
        Some(f) if f.kind == Kind::Unsigned && args.require_signature => {
            return Err(Stop {
                msg: format!("--require-signature: {}; the cached buildbot.tac is not used", f.reason),
                code: EXIT_UNSIGNED,
            });
        }
        Some(f) => use_cached(&tac_path, client, &f.reason)?,
    }
    Ok(Obtained::Tac)
}

/// Says what the tac in place is for: with `say_disabled`, plainly that the
/// slave is disabled; with `-v`, which master it names. Returns whether it
/// is the disabled tac.
fn describe_tac(tac_path: &Path, slavename: &str, log: &Log, say_disabled: bool) -> bool {
    if is_disabled_tac(tac_path) {
        // Plainly, whatever -v says: a machine that never takes builds because
        // it is disabled is the question operators ask first.
        if say_disabled {
            eprintln!(
                "runslave: {slavename} is disabled in slavealloc; its tac starts no worker (slavealloc enable \
                 {slavename} to bring it back)"
            );
        }
        return true;
    }
    let tac = std::fs::read_to_string(tac_path).unwrap_or_default();
    match master_of(&tac) {
        Some(master) => log.info(&format!("{slavename} is to connect to master {master}")),
        None => log.info("the tac does not say its master in the usual form (a custom template?)"),
    }
    false
}

/// The worker command: `--buildslave-cmd`, else the one the tac is for.
fn command_for(args: &Args, tac_path: &Path) -> String {
    match &args.buildslave_cmd {
        Some(cmd) => cmd.clone(),
        None => worker_command(&std::fs::read_to_string(tac_path).unwrap_or_default()).to_owned(),
    }
}

/// The command that runs the worker a tac is for: the original's tacs (and
/// our `buildslave` template) import `buildslave.bot`, which only the old
/// `buildslave` command starts; Buildbot 0.9+ tacs import `buildbot_worker`.
fn worker_command(tac: &str) -> &'static str {
    let imports = |module: &str| {
        tac.lines().map(str::trim_start).any(|l| {
            l.strip_prefix("from ")
                .or_else(|| l.strip_prefix("import "))
                .is_some_and(|rest| rest.starts_with(module))
        })
    };
    if imports("buildslave") && !imports("buildbot_worker") {
        "buildslave"
    } else {
        "buildbot-worker"
    }
}

/// Accepts the cached tac after a failed download, if there is one and (with
/// `--pubkey`) it is signed for this slave; never changes it.
fn use_cached(tac_path: &Path, client: &Client, why: &str) -> Result<(), Stop> {
    let cached = match std::fs::read_to_string(tac_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("no buildbot.tac: {why}; and there is no cached {}", tac_path.display()).into())
        }
        Err(e) => return Err(format!("no buildbot.tac: {why}; and the cached {}: {e}", tac_path.display()).into()),
    };
    if let Some(verifier) = &client.verifier {
        if let Err(e) = verifier.verify(&cached, &client.slavename) {
            return Err(format!(
                "no buildbot.tac: {why}; and the cached {} is refused: {e}",
                tac_path.display()
            )
            .into());
        }
    }
    eprintln!(
        "runslave: could not get a new buildbot.tac ({why}); using the cached {}",
        tac_path.display()
    );
    Ok(())
}

/// The TLS client configuration: the webpki roots plus the certificates of
/// `--ca`.
fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca {
        let bad = |e: &dyn std::fmt::Display| format!("--ca {}: {e}", path.display());
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if certs.is_empty() {
            return Err(bad(&"no PEM certificate in it"));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(&e))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What the allocator's tac for a disabled slave prints.
const DISABLED_MESSAGE: &str = "SLAVE DISABLED; NOT STARTING";

/// The master a tac sends its worker to, `host:port`, from its
/// `buildmaster_host = '...'` and `port = N` lines (both templates, and the
/// original's, write them so).
fn master_of(tac: &str) -> Option<String> {
    let value = |key: &str| {
        tac.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches(|c| c == '\'' || c == '"').to_owned())
        })
    };
    let host = value("buildmaster_host")?;
    Some(match value("port") {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

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

/// How runslave waits between two looks at DO_NOT_START and between two
/// download attempts: a plain sleep, or (with `--supervise`) a sleep that
/// SIGTERM or SIGINT cuts short.
trait Pause {
    /// Waits `how_long`; false when runslave is to stop instead of going on.
    fn pause(&self, how_long: Duration) -> bool;
}

/// [`Pause`] by `std::thread::sleep`: nothing cuts it short.
struct Sleep;

impl Pause for Sleep {
    fn pause(&self, how_long: Duration) -> bool {
        sleep(how_long);
        true
    }
}

/// Blocks while `<basedir>/DO_NOT_START` exists, as the original did: an
/// operator holds a machine back by creating it. False when `pause` says
/// to stop.
fn wait_while_held(basedir: &Path, interval: Duration, log: &Log, pause: &dyn Pause) -> bool {
    let flag = basedir.join(DO_NOT_START);
    if !flag.exists() {
        return true;
    }
    // Said even without -v: a machine that seems hung at boot should say why.
    eprintln!("runslave: waiting until {} is removed", flag.display());
    while flag.exists() {
        if !pause.pause(interval) {
            return false;
        }
        log.info(&format!("{} still exists", flag.display()));
    }
    log.info(&format!("{} is gone; going on", flag.display()));
    true
}

/// What kind of failure: decides whether a `--require-*` flag stops runslave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// No tac now (down, 404, an error page, a timeout): the cache is for this.
    Unavailable,
    /// Not from the allocator's host over verified HTTPS: an untrusted
    /// certificate, a redirect to another host or from https to http.
    Insecure,
    /// A tac not signed by `--pubkey` for this slave.
    Unsigned,
    /// No failure of the allocator's: SIGTERM or SIGINT came while waiting
    /// to try again (with `--supervise`).
    Stopped,
}

/// Why one download did not bring a tac, and whether trying again may help.
struct Failure {
    reason: String,
    retry: bool,
    kind: Kind,
    /// The allocator is busy and said when to come back (`Retry-After`).
    retry_after: Option<Duration>,
}

impl Failure {
    fn new(kind: Kind, retry: bool, reason: String) -> Self {
        Failure {
            reason,
            retry,
            kind,
            retry_after: None,
        }
    }
}

/// `Retry-After` in seconds (the allocator never sends the HTTP-date
/// form; a date, or nonsense, is treated as no header).
fn retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Up to a second, different on every machine and every call, so that
/// machines told the same `Retry-After` do not come back in step: the
/// clock's nanoseconds are random enough for that (no extra crate).
fn own_jitter() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    Duration::from_nanos(u64::from(nanos % 1_000_000_000))
}

fn fetch_with_retries(
    url: &Url,
    client: &Client,
    args: &Args,
    log: &Log,
    pause: &dyn Pause,
) -> Result<String, Failure> {
    let mut delay = duration(args.retry_delay);
    let attempts = args.retries.saturating_add(1);
    let mut paced_left = duration(args.max_paced_wait);
    let mut attempt = 1;
    while attempt <= attempts {
        log.info(&format!("fetching {url} (attempt {attempt} of {attempts})"));
        match fetch(client, url, log) {
            Ok(tac) => return Ok(tac),
            // Busy, and told when to come back: a place in the allocator's
            // schedule, not a failure, as long as the paced budget lasts.
            Err(Failure {
                retry_after: Some(after),
                reason,
                ..
            }) if paced_left > Duration::ZERO => {
                let wait = (after.min(duration(args.max_retry_after)) + own_jitter()).min(paced_left);
                eprintln!(
                    "runslave: {reason}; the allocator asks to come back in {}s: trying again in {:.1}s",
                    after.as_secs(),
                    wait.as_secs_f64()
                );
                if !pause.pause(wait) {
                    return Err(Failure::new(
                        Kind::Stopped,
                        false,
                        format!("{url}: stopped by a signal"),
                    ));
                }
                paced_left = paced_left.saturating_sub(wait);
                continue;
            }
            Err(f) if f.retry && attempt < attempts => {
                eprintln!("runslave: {}; trying again in {:.1}s", f.reason, delay.as_secs_f64());
                if !pause.pause(delay) {
                    return Err(Failure::new(
                        Kind::Stopped,
                        false,
                        format!("{url}: stopped by a signal"),
                    ));
                }
                delay = (delay * 2).min(MAX_BACKOFF);
            }
            Err(f) => return Err(f),
        }
        attempt += 1;
    }
    Err(Failure::new(
        Kind::Unavailable,
        false,
        format!("{url}: no attempt was made"),
    ))
}

/// One download, following at most [`MAX_REDIRECTS`] redirects on the same
/// host and never from https to http; the answer must begin with the
/// generated header and, with `--pubkey`, be signed for this slave.
fn fetch(client: &Client, start: &Url, log: &Log) -> Result<String, Failure> {
    let mut url = start.clone();
    let mut hops = 0;
    let resp = loop {
        let resp = match client.agent.get(url.as_str()).call() {
            Ok(resp) => resp,
            // 404 is the allocator's "no allocation available": asking again
            // will not change it.
            Err(ureq::Error::Status(code, resp)) => {
                let paced = (code == 503 || code == 429)
                    .then(|| retry_after(resp.header("retry-after")))
                    .flatten();
                let body = resp.into_string().unwrap_or_default();
                let retry = code >= 500 || code == 429;
                let mut failure = Failure::new(
                    Kind::Unavailable,
                    retry,
                    format!("{url} answered HTTP {code}: {}", first_line(&body)),
                );
                failure.retry_after = paced;
                return Err(failure);
            }
            Err(ureq::Error::Transport(t)) if is_tls_error(&t) => {
                return Err(Failure::new(Kind::Insecure, false, format!("{url}: {t}")))
            }
            Err(ureq::Error::Transport(t)) => return Err(Failure::new(Kind::Unavailable, true, format!("{url}: {t}"))),
        };
        if !(300..400).contains(&resp.status()) {
            break resp;
        }
        let next = next_hop(&url, start, resp.header("location"))?;
        hops += 1;
        if hops > MAX_REDIRECTS {
            return Err(Failure::new(
                Kind::Unavailable,
                false,
                format!("{start}: more than {MAX_REDIRECTS} redirects"),
            ));
        }
        log.info(&format!("{url} redirects to {next}"));
        url = next;
    };
    let body = resp
        .into_string()
        .map_err(|e| Failure::new(Kind::Unavailable, true, format!("{url}: reading the answer: {e}")))?;
    if !body.starts_with(HEADER_LINE) {
        return Err(Failure::new(
            Kind::Unavailable,
            true,
            format!("{url} did not answer a generated buildbot.tac: {}", first_line(&body)),
        ));
    }
    if let Some(verifier) = &client.verifier {
        verifier
            .verify(&body, &client.slavename)
            .map_err(|e| Failure::new(Kind::Unsigned, false, format!("{url}: refused: {e}")))?;
    }
    Ok(body)
}

/// Where a redirect from `url` leads, if it may be followed: same host as
/// the allocator URL, and not from https to http.
fn next_hop(url: &Url, start: &Url, location: Option<&str>) -> Result<Url, Failure> {
    let insecure = |reason: String| Failure::new(Kind::Insecure, false, reason);
    let location = location.ok_or_else(|| {
        Failure::new(
            Kind::Unavailable,
            true,
            format!("{url} answered a redirect without a Location"),
        )
    })?;
    let next = url
        .join(location)
        .map_err(|e| insecure(format!("{url} redirects to {location:?}, not a URL: {e}")))?;
    if next.scheme() != "https" && next.scheme() != "http" {
        return Err(insecure(format!(
            "{url} redirects to {next}: refused (not http or https)"
        )));
    }
    if next.host_str() != start.host_str() {
        return Err(insecure(format!("{url} redirects to {next}: refused (another host)")));
    }
    if url.scheme() == "https" && next.scheme() == "http" {
        return Err(insecure(format!("{url} redirects to {next}: refused (https to http)")));
    }
    Ok(next)
}

/// Whether a transport error is TLS refusing the server (an untrusted or
/// wrong certificate): waiting will not help, and it is a security event.
fn is_tls_error(t: &ureq::Transport) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(t);
    while let Some(e) = source {
        if e.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                return true;
            }
        }
        source = e.source();
    }
    false
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
///
/// The temporary file has a unique random name (tempfile), so one left by a
/// crash never blocks a later write, and mode 0600: the tac holds the
/// worker's password.
fn write_atomically(path: &Path, content: &str) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let written = (|| {
        // Dropped unpersisted (any error below), it is removed.
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!("{TAC}.tmp."))
            .tempfile_in(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        tmp.write_all(content.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        sync_dir(dir)
    })();
    written.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

fn start(cmd: &str, basedir: &Path, log: &Log) -> Result<ExitCode, Stop> {
    let mut words = cmd.split_whitespace();
    let program = words.next().ok_or_else(|| "the worker command is empty".to_owned())?;
    let mut command = Command::new(program);
    command.args(words).arg("start").arg(basedir);
    log.info(&format!("running {cmd} start {}", basedir.display()));
    let status = command
        .status()
        .map_err(|e| Stop::from(format!("cannot run {program:?}: {e}")))?;
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
    use std::fs;

    /// Bug: runslave started `buildbot-worker` for the default (and the
    /// demo's) tac, which imports `buildslave`.
    #[test]
    fn the_worker_command_follows_what_the_tac_imports() {
        use super::worker_command;
        assert_eq!(worker_command("from buildslave.bot import BuildSlave\n"), "buildslave");
        assert_eq!(worker_command("import buildslave.bot\n"), "buildslave");
        assert_eq!(
            worker_command("from buildbot_worker.bot import Worker\n"),
            "buildbot-worker"
        );
        assert_eq!(
            worker_command("# buildslave in a comment\nimport sys\n"),
            "buildbot-worker"
        );
        assert_eq!(worker_command(""), "buildbot-worker");
    }

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
    fn retry_after_takes_seconds_and_ignores_dates_and_nonsense() {
        assert_eq!(retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(Some("-3")), None);
        assert_eq!(retry_after(None), None);
        assert!(own_jitter() < Duration::from_secs(1));
    }

    #[test]
    fn seconds_refuse_nonsense() {
        assert!(seconds("-1").is_err());
        assert!(seconds("NaN").is_err());
        assert_eq!(seconds("0.5"), Ok(0.5));
    }
}
