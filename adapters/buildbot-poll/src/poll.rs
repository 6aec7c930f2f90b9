//! Polling: one master ([`poll_master`]) and a round over many
//! ([`poll_round`]), and the parsers of what Buildbot answers.

use std::error::Error as StdError;
use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use serde::de::IgnoredAny;
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::template::{ExpandError, MasterAddress, UrlTemplate};

/// [`PollOptions::timeout`]'s default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// [`PollOptions::max_body_bytes`]'s default: Buildbot 4.3 pretty-prints
/// about 470 bytes a worker, so this is some 17 000 workers.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;
/// [`PollOptions::concurrency`]'s default.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// [`PollOptions::jitter`]'s default.
pub const DEFAULT_JITTER: Duration = Duration::from_secs(2);

/// Buildbot's `/config` is a few hundred bytes; more is not Buildbot's,
/// and not worth reading for a version string.
const VERSION_MAX_BODY_BYTES: u64 = 256 * 1024;
/// The most of an announced body reserved before it arrives.
const PREALLOCATE_MAX: u64 = 1024 * 1024;
/// Below this, a version request could only time out.
const VERSION_MIN_TIME: Duration = Duration::from_millis(5);
/// How much of an error page is read, and how much of it is kept: enough
/// to tell a proxy's page from Buildbot's `{"error": ...}`.
const ERROR_BODY_PREFIX_BYTES: u64 = 512;
const SHORT_TEXT_CHARS: usize = 120;
/// A version longer than this is not a version.
const VERSION_MAX_CHARS: usize = 64;
pub(crate) const USER_AGENT: &str = concat!("slavealloc-buildbot-poll/", env!("CARGO_PKG_VERSION"));

/// One master to poll: where its workers list is, and how to authenticate.
#[derive(Clone, PartialEq, Eq)]
pub struct PollTarget {
    /// slavealloc's id of the master (`slavealloc_domain::MasterId`),
    /// copied into its [`MasterPoll`].
    pub masterid: i32,
    /// The master's nickname, for logs.
    pub nickname: String,
    /// The URL of its workers list (see [`UrlTemplate`]).
    pub url: String,
    /// A header sent with every request to the master, e.g.
    /// `("Authorization", "Bearer ...")`: name and value. The value is a
    /// secret, so `Debug` never shows it.
    pub auth_header: Option<(String, String)>,
}

impl PollTarget {
    /// A target without authentication.
    pub fn new(masterid: i32, nickname: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            masterid,
            nickname: nickname.into(),
            url: url.into(),
            auth_header: None,
        }
    }

    /// The target of `master`, at `template` expanded for it.
    pub fn for_master(template: &UrlTemplate, master: &MasterAddress<'_>) -> Result<Self, ExpandError> {
        Ok(Self::new(master.masterid, master.nickname, template.expand(master)?))
    }

    /// The same target, sending `name: value` with every request.
    pub fn with_auth_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.auth_header = Some((name.into(), value.into()));
        self
    }

    /// Where the master's version is read: its web UI's `/config`, beside
    /// the data API the URL points into (`.../api/v2/workers` becomes
    /// `.../config`). `None` when the URL does not end in `api/v2/workers`,
    /// as then nothing says where the web UI's root is.
    pub fn version_url(&self) -> Option<String> {
        let mut url = url::Url::parse(&self.url).ok()?;
        let root = url.path().trim_end_matches('/').strip_suffix("/api/v2/workers")?;
        let config = format!("{root}/config");
        url.set_path(&config);
        url.set_query(None);
        url.set_fragment(None);
        Some(url.into())
    }
}

impl fmt::Debug for PollTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The header's value is a secret: only its name is shown.
        let auth = self.auth_header.as_ref().map(|(name, _)| (name, "<redacted>"));
        f.debug_struct("PollTarget")
            .field("masterid", &self.masterid)
            .field("nickname", &self.nickname)
            .field("url", &self.url)
            .field("auth_header", &auth)
            .finish()
    }
}

/// How polls are made; [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollOptions {
    /// The most one master's poll takes, everything included: DNS,
    /// connecting, the answer however slowly it comes, and the version
    /// request. Default 10 s.
    pub timeout: Duration,
    /// The largest workers list read; a larger one is an error, and costs
    /// at most this much. Default 8 MiB.
    pub max_body_bytes: u64,
    /// How many masters a round polls at once (0 counts as 1). Default 8.
    pub concurrency: usize,
    /// A round waits a random delay in `0..jitter` before each master's
    /// request, so that daemons polling on the same schedule do not hit
    /// every master at the same instant. Default 2 s.
    pub jitter: Duration,
    /// Whether to ask each master's `/config` for its Buildbot version
    /// (one more request on the same connection). Default true.
    pub fetch_version: bool,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            concurrency: DEFAULT_CONCURRENCY,
            jitter: DEFAULT_JITTER,
            fetch_version: true,
        }
    }
}

/// What one master's poll gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterPoll {
    /// The [`PollTarget::masterid`] polled.
    pub masterid: i32,
    /// When the request started (after the round's jitter and its wait
    /// for a free slot).
    pub started: SystemTime,
    /// How long the poll took, the version request included.
    pub duration: Duration,
    /// The master's workers, or why there are none to show.
    pub outcome: Result<MasterReport, PollError>,
}

/// A master's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterReport {
    /// Buildbot's version, e.g. `4.3.0`, when the master said.
    pub buildbot_version: Option<String>,
    /// Every worker the master knows, in its order.
    pub workers: Vec<WorkerReport>,
}

/// One worker as its master sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerReport {
    /// The worker's name (slavealloc's slave name).
    pub name: String,
    /// Connected to a master (Buildbot's `connected_to` is not empty). In
    /// a multi-master Buildbot cluster that may be another master of it.
    pub connected: bool,
    /// Paused: takes no new builds. False when Buildbot does not say.
    pub paused: bool,
    /// Shutting down once its builds end. False when Buildbot does not say.
    pub graceful: bool,
}

/// Why one master's poll gave no workers list. Messages are short and
/// never carry the auth header's value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PollError {
    /// Nobody answered: the name did not resolve, the connection was
    /// refused, the TLS handshake failed.
    #[error("cannot reach the master: {reason}")]
    Unreachable {
        /// What the transport said.
        reason: String,
    },
    /// The whole answer did not arrive within [`PollOptions::timeout`].
    #[error("no complete answer within the {limit:?} limit")]
    Timeout {
        /// The limit.
        limit: Duration,
    },
    /// An HTTP status other than 2xx (redirects are not followed, so that
    /// the auth header never goes elsewhere).
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the body (or the redirect's target), with control
        /// characters replaced and at most 120 characters.
        body: String,
    },
    /// The body was larger than [`PollOptions::max_body_bytes`].
    #[error("the answer is larger than the {limit}-byte limit")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// What came back is not HTTP.
    #[error("not an HTTP answer: {reason}")]
    NotHttp {
        /// What the HTTP parser said.
        reason: String,
    },
    /// The connection closed or broke before the answer was complete.
    #[error("the connection broke before the answer was complete: {reason}")]
    Transfer {
        /// What the transport said.
        reason: String,
    },
    /// The body is not JSON.
    #[error("the answer is not JSON: {reason}")]
    NotJson {
        /// The parser's message and the start of the body.
        reason: String,
    },
    /// The body is JSON but not a Buildbot workers list.
    #[error("the answer is not a Buildbot workers list: {reason}")]
    NotWorkersList {
        /// What is missing or of the wrong type.
        reason: String,
    },
    /// The target cannot be requested: its URL or auth header is invalid.
    #[error("cannot send the request: {reason}")]
    BadTarget {
        /// What is wrong.
        reason: String,
    },
    /// The poll itself failed (its blocking task panicked); a bug here,
    /// reported for this master only.
    #[error("the poll failed: {reason}")]
    Internal {
        /// What the task said.
        reason: String,
    },
}

/// Polls one master now (a round adds the jitter): its workers list, then,
/// if [`PollOptions::fetch_version`] and the URL allows, its version.
/// Never fails as a whole: every error is in [`MasterPoll::outcome`], and
/// it returns within about [`PollOptions::timeout`]. Must run on a tokio
/// runtime.
pub async fn poll_master(target: &PollTarget, opts: &PollOptions) -> MasterPoll {
    let started = SystemTime::now();
    let clock = Instant::now();
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let outcome = poll_within(target, opts, deadline).await;
    let duration = clock.elapsed();
    match &outcome {
        Ok(report) => tracing::debug!(
            masterid = target.masterid,
            nickname = %target.nickname,
            workers = report.workers.len(),
            ?duration,
            "polled master"
        ),
        Err(error) => tracing::debug!(
            masterid = target.masterid,
            nickname = %target.nickname,
            %error,
            ?duration,
            "master poll failed"
        ),
    }
    MasterPoll {
        masterid: target.masterid,
        started,
        duration,
        outcome,
    }
}

async fn poll_within(
    target: &PollTarget,
    opts: &PollOptions,
    deadline: tokio::time::Instant,
) -> Result<MasterReport, PollError> {
    // One agent per poll: its pool lets the version request reuse the
    // workers request's connection, and is closed with it, so no idle
    // connection to a master waits for the next round (and goes stale).
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .user_agent(USER_AGENT)
        .max_idle_connections(1)
        .build();
    let limit = opts.timeout;
    let request = Get {
        agent: agent.clone(),
        url: target.url.clone(),
        auth: target.auth_header.clone(),
        timeout: opts.timeout,
        max_body_bytes: opts.max_body_bytes,
    };
    let workers = on_blocking_pool(deadline, limit, move || parse_workers(&request.send()?)).await?;

    let version_url = target.version_url().filter(|_| opts.fetch_version);
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    let buildbot_version = match version_url {
        Some(url) if remaining >= VERSION_MIN_TIME => {
            let request = Get {
                agent,
                url,
                auth: target.auth_header.clone(),
                timeout: remaining,
                max_body_bytes: opts.max_body_bytes.min(VERSION_MAX_BODY_BYTES),
            };
            // The version is a nicety: any failure is just "unknown".
            on_blocking_pool(deadline, limit, move || Ok(parse_version(&request.send()?)))
                .await
                .ok()
                .flatten()
        }
        _ => None,
    };
    Ok(MasterReport {
        buildbot_version,
        workers,
    })
}

/// Runs blocking `work` on tokio's blocking pool until `deadline`. Past
/// it, the caller goes on with a timeout and the thread is left to end by
/// ureq's own deadline (or, for a hung DNS lookup, whenever it does).
pub(crate) async fn on_blocking_pool<T: Send + 'static>(
    deadline: tokio::time::Instant,
    limit: Duration,
    work: impl FnOnce() -> Result<T, PollError> + Send + 'static,
) -> Result<T, PollError> {
    match tokio::time::timeout_at(deadline, tokio::task::spawn_blocking(work)).await {
        Err(_elapsed) => Err(PollError::Timeout { limit }),
        Ok(Err(join)) => Err(PollError::Internal {
            reason: if join.is_panic() {
                "its task panicked".to_owned()
            } else {
                "its task was cancelled".to_owned()
            },
        }),
        Ok(Ok(result)) => result,
    }
}

/// Polls every target, at most [`PollOptions::concurrency`] at once, each
/// after its random jitter, and returns their polls in target order.
///
/// Each target's poll is a task of a `JoinSet`, so dropping the returned
/// future aborts them: no request starts after that (a request already on
/// the blocking pool still ends by its own deadline). Must run on a tokio
/// runtime.
pub async fn poll_round(targets: Vec<PollTarget>, opts: &PollOptions) -> Vec<MasterPoll> {
    let masterids: Vec<i32> = targets.iter().map(|t| t.masterid).collect();
    let slots = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (index, target) in targets.into_iter().enumerate() {
        let opts = opts.clone();
        let slots = Arc::clone(&slots);
        let delay = jitter(opts.jitter);
        tasks.spawn(async move {
            // Jitter before queueing for a slot: a waiting master holds no
            // slot, so the jitter spreads the requests without slowing the
            // round by more than one jitter.
            tokio::time::sleep(delay).await;
            // The semaphore is never closed, so this never fails; if it
            // did, polling unbounded would still be better than not.
            let _slot = slots.acquire_owned().await.ok();
            (index, poll_master(&target, &opts).await)
        });
    }
    let mut polls: Vec<Option<MasterPoll>> = masterids.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        // A task that panicked leaves its slot empty, filled below.
        if let Ok((index, poll)) = joined {
            polls[index] = Some(poll);
        }
    }
    polls
        .into_iter()
        .zip(masterids)
        .map(|(poll, masterid)| {
            poll.unwrap_or_else(|| MasterPoll {
                masterid,
                started: SystemTime::now(),
                duration: Duration::ZERO,
                outcome: Err(PollError::Internal {
                    reason: "its task panicked".to_owned(),
                }),
            })
        })
        .collect()
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        Duration::ZERO
    } else {
        rand::thread_rng().gen_range(Duration::ZERO..max)
    }
}

/// One GET, everything it needs owned, to move onto the blocking pool.
struct Get {
    agent: ureq::Agent,
    url: String,
    auth: Option<(String, String)>,
    timeout: Duration,
    max_body_bytes: u64,
}

impl Get {
    /// The body of a 2xx answer, at most `max_body_bytes` of it read.
    fn send(self) -> Result<Vec<u8>, PollError> {
        let mut request = self
            .agent
            .get(&self.url)
            .timeout(self.timeout)
            .set("Accept", "application/json");
        if let Some((name, value)) = &self.auth {
            check_header(name, value)?;
            request = request.set(name, value);
        }
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => return Err(status_error(response)),
            Err(ureq::Error::Transport(transport)) => return Err(transport_error(&transport, self.timeout)),
        };
        if !(200..300).contains(&response.status()) {
            return Err(status_error(response));
        }
        let limit = self.max_body_bytes;
        let announced = response
            .header("Content-Length")
            .and_then(|len| len.trim().parse::<u64>().ok());
        if announced.is_some_and(|len| len > limit) {
            return Err(PollError::TooLarge { limit });
        }
        // Reserved up to 1 MiB only: a master announcing 8 MiB and sending
        // nothing should not cost 8 MiB for the whole timeout.
        let reserve = announced.unwrap_or(0).min(limit).min(PREALLOCATE_MAX);
        let mut body = Vec::with_capacity(reserve.try_into().unwrap_or(0));
        // One byte past the limit tells "too large" from "exactly the limit".
        response
            .into_reader()
            .take(limit.saturating_add(1))
            .read_to_end(&mut body)
            .map_err(|e| read_error(&e, self.timeout))?;
        if body.len() as u64 > limit {
            return Err(PollError::TooLarge { limit });
        }
        Ok(body)
    }
}

/// Refuses a header ureq would refuse later with a message that reads like
/// the server's fault, or that could split the request. Never quotes the
/// value.
pub(crate) fn check_header(name: &str, value: &str) -> Result<(), PollError> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(PollError::BadTarget {
            reason: format!("the auth header name {name:?} is not an HTTP header name"),
        });
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(PollError::BadTarget {
            reason: format!("the value of the auth header {name} holds a control character"),
        });
    }
    Ok(())
}

pub(crate) fn status_error(response: ureq::Response) -> PollError {
    let status = response.status();
    let location = (300..400)
        .contains(&status)
        .then(|| {
            response
                .header("Location")
                .map(|to| format!("redirects to {}", short_text(to.as_bytes())))
        })
        .flatten();
    let body = location.unwrap_or_else(|| {
        let mut prefix = Vec::new();
        // A failed read keeps what came before it, which is all we want.
        let _ = response
            .into_reader()
            .take(ERROR_BODY_PREFIX_BYTES)
            .read_to_end(&mut prefix);
        short_text(&prefix)
    });
    PollError::Status { status, body }
}

pub(crate) fn transport_error(transport: &ureq::Transport, limit: Duration) -> PollError {
    if timed_out(transport) {
        return PollError::Timeout { limit };
    }
    // Built from the parts rather than Display, which starts with the URL:
    // the caller knows which master this is.
    let mut reason = transport.kind().to_string();
    if let Some(message) = transport.message() {
        reason.push_str(": ");
        reason.push_str(message);
    }
    if let Some(source) = transport.source() {
        reason.push_str(": ");
        reason.push_str(&source.to_string());
    }
    let reason = short_text(reason.as_bytes());
    use ureq::ErrorKind as K;
    match transport.kind() {
        K::Dns | K::ConnectionFailed | K::ProxyConnect | K::ProxyUnauthorized => PollError::Unreachable { reason },
        K::BadStatus | K::BadHeader | K::HTTP | K::TooManyRedirects => PollError::NotHttp { reason },
        K::Io => PollError::Transfer { reason },
        K::InvalidUrl | K::UnknownScheme | K::InsecureRequestHttpsOnly | K::InvalidProxyUrl => {
            PollError::BadTarget { reason }
        }
    }
}

fn read_error(error: &io::Error, limit: Duration) -> PollError {
    if timed_out(error) {
        PollError::Timeout { limit }
    } else {
        PollError::Transfer {
            reason: short_text(error.to_string().as_bytes()),
        }
    }
}

/// Whether a timeout is anywhere in the error's chain. ureq reports its
/// deadline as an `io::Error` of kind `TimedOut`, sometimes wrapped;
/// `io::Error::source` skips the error it wraps, hence `get_ref`.
fn timed_out(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if matches!(io.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) {
                return true;
            }
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
        }
        next = e.source();
    }
    false
}

/// At most 120 characters of `bytes` as text, control characters and runs
/// of white space made one space: safe to log and to show.
fn short_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    let mut chars = 0;
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            space = !out.is_empty();
            continue;
        }
        if chars == SHORT_TEXT_CHARS {
            out.push('…');
            return out;
        }
        if space {
            out.push(' ');
            chars += 1;
            space = false;
        }
        out.push(c);
        chars += 1;
    }
    out
}

/// Reads a Buildbot `/api/v2/workers` answer:
/// `{"workers": [{"name", "connected_to": [...], "paused", "graceful", ...}], "meta": ...}`.
/// Fields other than `name` may be missing or null (older Buildbots have
/// no `paused` and `graceful`): they count as empty or false.
pub fn parse_workers(body: &[u8]) -> Result<Vec<WorkerReport>, PollError> {
    #[derive(Deserialize)]
    struct WorkersList {
        workers: Vec<Worker>,
    }
    #[derive(Deserialize)]
    struct Worker {
        name: String,
        #[serde(default)]
        connected_to: Option<Vec<IgnoredAny>>,
        #[serde(default)]
        paused: Option<bool>,
        #[serde(default)]
        graceful: Option<bool>,
    }
    let list: WorkersList = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => PollError::NotWorkersList {
            reason: short_text(e.to_string().as_bytes()),
        },
        _ => PollError::NotJson {
            reason: short_text(format!("{e}; it starts {:?}", short_text(&body[..body.len().min(40)])).as_bytes()),
        },
    })?;
    Ok(list
        .workers
        .into_iter()
        .map(|w| WorkerReport {
            name: w.name,
            connected: w.connected_to.is_some_and(|c| !c.is_empty()),
            paused: w.paused.unwrap_or(false),
            graceful: w.graceful.unwrap_or(false),
        })
        .collect())
}

/// The Buildbot version in a web UI `/config` answer: the `"Buildbot"`
/// entry of its `versions` list, `[["Python", "3.11.7"], ["Buildbot",
/// "4.3.0"], ...]`. `None` for anything else, or a "version" that does not
/// look like one.
pub fn parse_version(body: &[u8]) -> Option<String> {
    let config: serde_json::Value = serde_json::from_slice(body).ok()?;
    let version = config.get("versions")?.as_array()?.iter().find_map(|entry| {
        let pair = entry.as_array()?;
        if pair.first()?.as_str()? == "Buildbot" {
            pair.get(1)?.as_str()
        } else {
            None
        }
    })?;
    let plausible = !version.is_empty()
        && version.chars().count() <= VERSION_MAX_CHARS
        && version.chars().all(|c| c.is_ascii_graphic());
    plausible.then(|| version.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_line_and_bounded() {
        assert_eq!(short_text(b"  a\r\n\tb\x00c  "), "a b c");
        let long = "x".repeat(500);
        let got = short_text(long.as_bytes());
        assert_eq!(got.chars().count(), SHORT_TEXT_CHARS + 1);
        assert!(got.ends_with('…'));
        assert_eq!(short_text(b"\xff\xfeok"), "\u{fffd}\u{fffd}ok");
    }

    #[test]
    fn version_url_is_beside_the_data_api() {
        let cases = [
            ("http://bm01:8010/api/v2/workers", Some("http://bm01:8010/config")),
            ("http://bm01:8010/api/v2/workers/", Some("http://bm01:8010/config")),
            (
                "https://proxy.example/bm01/api/v2/workers?field=name#x",
                Some("https://proxy.example/bm01/config"),
            ),
            ("https://proxy.example/bm01/workers.json", None),
            ("not a url", None),
        ];
        for (url, want) in cases {
            assert_eq!(PollTarget::new(1, "bm01", url).version_url().as_deref(), want, "{url}");
        }
    }

    #[test]
    fn versions_that_are_not_are_none() {
        assert_eq!(
            parse_version(br#"{"versions": [["Buildbot", "4.3.0"]]}"#).as_deref(),
            Some("4.3.0")
        );
        for body in [
            &br#"{"versions": [["Python", "3.11"]]}"#[..],
            br#"{"versions": [["Buildbot", 4]]}"#,
            br#"{"versions": [["Buildbot", "4.3 <script>"]]}"#,
            br#"{"versions": "4.3.0"}"#,
            br#"{}"#,
            b"<html>",
        ] {
            assert_eq!(parse_version(body), None, "{}", String::from_utf8_lossy(body));
        }
    }

    /// What a hung DNS lookup does to the blocking thread: ureq's deadline
    /// cannot end it, so the tokio deadline must, without waiting for it.
    #[tokio::test]
    async fn a_blocking_call_past_the_deadline_is_a_timeout_at_the_deadline() {
        let limit = Duration::from_millis(100);
        let begun = Instant::now();
        let deadline = tokio::time::Instant::now() + limit;
        let got = on_blocking_pool(deadline, limit, || {
            std::thread::sleep(Duration::from_millis(1500));
            Ok(())
        })
        .await;
        assert_eq!(got, Err(PollError::Timeout { limit }));
        assert!(begun.elapsed() < Duration::from_millis(1000), "{:?}", begun.elapsed());
    }

    #[tokio::test]
    async fn a_panicking_poll_is_an_error_of_its_master() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let got: Result<(), _> = on_blocking_pool(deadline, Duration::from_secs(5), || panic!("a bug")).await;
        assert!(matches!(got, Err(PollError::Internal { .. })), "{got:?}");
    }

    #[test]
    fn bad_auth_headers_are_refused_without_quoting_the_value() {
        assert!(check_header("Authorization", "Bearer a\tb").is_ok());
        let e = check_header("Authorization", "Bearer s3cret\r\nX-Evil: 1").unwrap_err();
        assert!(matches!(e, PollError::BadTarget { .. }));
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(matches!(
            check_header("Bad Name", "v"),
            Err(PollError::BadTarget { .. })
        ));
        assert!(matches!(check_header("", "v"), Err(PollError::BadTarget { .. })));
    }
}
