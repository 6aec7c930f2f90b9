//! The poller: every `interval`, the one daemon holding the `poller` lease
//! reads each master's Buildbot data API and records what it says.
//!
//! The database is the only coordinator: the lease is a row there
//! (`LiveStore::take_lease`). Its holder renews it at each round for one
//! and a half intervals; the others try every half interval, so when the
//! holder dies another takes over within two intervals. A daemon that
//! stops gives the lease up at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;
use slavealloc_buildbot_poll::{poll_round, stop_worker, MasterAddress, PollOptions, PollTarget, UrlTemplate};
use slavealloc_domain::lifecycle::{graceful_asks, Hold, HoldQuery, HoldTarget, LifecycleStore};
use slavealloc_domain::live::{parse_age, BalanceCount, PollAnswer, PollRecord, PolledWorker, DEFAULT_LEASE};
use slavealloc_domain::schema::{Table, Value};
use slavealloc_domain::{Host, InventoryStore, LiveStore};
use slavealloc_http_warp::{PollerMetrics, Readiness};
use tokio::sync::watch;

/// The lease's name in the `leases` table.
pub const LEASE: &str = "poller";

/// Default poll interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// `[poll]`: reading the masters' Buildbot data API.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// Poll at all (default true).
    pub enabled: Option<bool>,
    /// How often, like `30s`.
    pub interval: Option<String>,
    /// The most one master's poll may take, like `10s`.
    pub timeout: Option<String>,
    /// How many masters are polled at once.
    pub concurrency: Option<usize>,
    /// Each master's poll starts after a random delay below this.
    pub jitter: Option<String>,
    /// The URL of a master's workers list, from `{fqdn}`, `{http_port}`,
    /// `{nickname}` and `{masterid}`.
    pub url_template: Option<String>,
    /// A header sent with every poll (`Authorization`, say) ...
    pub auth_header: Option<String>,
    /// ... whose value is this file's content (mode 0600: it is a secret).
    pub auth_value_file: Option<PathBuf>,
    /// Per master nickname: its own URL, or `enabled = false`.
    #[serde(default)]
    pub masters: BTreeMap<String, MasterPollConfig>,
}

/// `[poll.masters.<nickname>]`.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MasterPollConfig {
    /// The master's workers-list URL instead of the template's.
    pub url: Option<String>,
    /// Poll this master (default true).
    pub enabled: Option<bool>,
}

/// `[balance]`: how the allocator counts peers.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BalanceConfig {
    /// `"recorded"` (the original's rule, the default) or `"live"`.
    pub count: Option<String>,
    /// How long an allocation counts without the machine connecting, like
    /// `15m` (with `count = "live"`).
    pub lease: Option<String>,
}

impl BalanceConfig {
    /// The count it says.
    ///
    /// # Errors
    /// An unknown count or a bad lease.
    pub fn resolve(&self) -> anyhow::Result<BalanceCount> {
        let lease = self
            .lease
            .as_deref()
            .map(parse_age)
            .transpose()
            .map_err(anyhow::Error::msg)
            .context("[balance] lease")?
            .unwrap_or(DEFAULT_LEASE);
        match self.count.as_deref() {
            None | Some("recorded") => Ok(BalanceCount::Recorded),
            Some("live") => Ok(BalanceCount::Live { lease }),
            Some(other) => bail!("[balance] count: {other:?} is neither \"recorded\" nor \"live\""),
        }
    }
}

/// `[poll]` resolved.
#[derive(Debug, Clone)]
pub struct PollSettings {
    /// Poll at all.
    pub enabled: bool,
    /// Between rounds.
    pub interval: Duration,
    /// Timeout, body cap, concurrency, jitter.
    pub options: PollOptions,
    /// The default URL of a master.
    pub template: UrlTemplate,
    /// URLs by nickname, instead of the template's.
    pub urls: HashMap<String, String>,
    /// Masters not polled, by nickname.
    pub skipped: Vec<String>,
    /// The header sent with every poll.
    pub auth: Option<(String, String)>,
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: DEFAULT_INTERVAL,
            options: PollOptions::default(),
            template: UrlTemplate::default(),
            urls: HashMap::new(),
            skipped: Vec::new(),
            auth: None,
        }
    }
}

fn age(what: &str, text: Option<&str>, default: Duration) -> anyhow::Result<Duration> {
    // "No jitter" is a setting; parse_age refuses zero ages.
    if text.is_some_and(|t| t.trim_start_matches('0').is_empty() || ["0s", "0ms"].contains(&t)) {
        return Ok(Duration::ZERO);
    }
    text.map(parse_age)
        .transpose()
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("[poll] {what}"))
        .map(|d| d.unwrap_or(default))
}

impl PollConfig {
    /// The settings it says, over the defaults.
    ///
    /// # Errors
    /// A bad age, template or URL; an auth header without its value file,
    /// or a value file others may read.
    pub fn resolve(&self) -> anyhow::Result<PollSettings> {
        let defaults = PollSettings::default();
        let options = PollOptions {
            timeout: age("timeout", self.timeout.as_deref(), defaults.options.timeout)?,
            jitter: age("jitter", self.jitter.as_deref(), defaults.options.jitter)?,
            concurrency: self.concurrency.unwrap_or(defaults.options.concurrency).max(1),
            ..defaults.options
        };
        let template = match &self.url_template {
            Some(t) => UrlTemplate::parse(t).context("[poll] url_template")?,
            None => defaults.template,
        };
        let mut urls = HashMap::new();
        let mut skipped = Vec::new();
        for (nickname, m) in &self.masters {
            if m.enabled == Some(false) {
                skipped.push(nickname.clone());
            }
            if let Some(url) = &m.url {
                let parsed = url::Url::parse(url).with_context(|| format!("[poll.masters.{nickname}] url"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    bail!("[poll.masters.{nickname}] url: {url:?} is not http or https");
                }
                urls.insert(nickname.clone(), url.clone());
            }
        }
        let auth = match (&self.auth_header, &self.auth_value_file) {
            (None, None) => None,
            (Some(name), Some(file)) => Some((name.clone(), read_secret(file)?)),
            _ => bail!("[poll] auth_header and auth_value_file go together"),
        };
        Ok(PollSettings {
            enabled: self.enabled.unwrap_or(true),
            interval: age("interval", self.interval.as_deref(), defaults.interval)?,
            options,
            template,
            urls,
            skipped,
            auth,
        })
    }
}

/// A secret's file content, trimmed, refusing a file group or others may
/// read.
fn read_secret(path: &std::path::Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("while reading {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "{} holds a secret and is readable by group or others (mode {mode:04o}): chmod 600 it",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(path).with_context(|| format!("while reading {}", path.display()))?;
    Ok(text.trim().to_owned())
}

/// What one daemon's poller needs.
pub struct Poller {
    /// Settings.
    pub settings: PollSettings,
    /// Where the masters are listed.
    pub inventory: Arc<dyn InventoryStore>,
    /// Where what they say is kept, and the lease.
    pub live: Arc<dyn LiveStore>,
    /// The clock.
    pub host: Arc<dyn Host>,
    /// This daemon, as the lease's holder.
    pub holder: String,
    /// Until the database is ready nothing is polled.
    pub readiness: Readiness,
    /// What `/metrics` shows of it.
    pub metrics: PollerMetrics,
    /// The holds, for graceful drains; `None` drains nothing.
    pub lifecycle: Option<Arc<dyn LifecycleStore>>,
    /// Workers of a graceful drain shutting down at once, per master.
    pub graceful_pace: usize,
}

/// Per master, the workers a graceful drain has asked to shut down and
/// that were still connected at the last poll.
type Asked = HashMap<i32, HashSet<String>>;

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("holder", &self.holder)
            .field("interval", &self.settings.interval)
            .finish_non_exhaustive()
    }
}

/// A name for this daemon that no other daemon has: host, process and a
/// random part (two daemons in one process, in the tests).
pub fn holder_name(fqdn: &str) -> String {
    format!("{fqdn}:{}:{:08x}", std::process::id(), rand::random::<u32>())
}

impl Poller {
    /// Polls while holding the lease, until `stop` says so; then gives the
    /// lease up.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let interval = self.settings.interval;
        let ttl = interval + interval / 2;
        let mut reachable: HashMap<i32, bool> = HashMap::new();
        let mut asked = Asked::new();
        let mut holding = false;
        loop {
            let started = Instant::now();
            if self.readiness.check().is_ok() {
                match self.live.take_lease(LEASE, &self.holder, self.host.now(), ttl).await {
                    Ok(lease) => {
                        let ours = lease.holder == self.holder;
                        if ours != holding {
                            tracing::info!(holder = %lease.holder, "the poller's lease is {}", if ours { "ours" } else { "another daemon's" });
                        }
                        holding = ours;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot take or renew the poller's lease");
                        holding = false;
                    }
                }
                self.metrics.set_holding(holding);
                if holding {
                    // A stop does not wait for slow masters: dropping the
                    // round ends its polls.
                    tokio::select! {
                        () = self.round(&mut reachable, &mut asked) => {}
                        _ = stop.changed() => {}
                    }
                    if *stop.borrow() {
                        break;
                    }
                }
            }
            let pause = if holding { interval } else { interval / 2 };
            let next = pause.saturating_sub(started.elapsed());
            tokio::select! {
                () = tokio::time::sleep(next) => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        self.metrics.set_holding(false);
        if holding {
            if let Err(e) = self.live.release_lease(LEASE, &self.holder).await {
                tracing::warn!(error = %e, "cannot give the poller's lease up; it lapses by itself");
            }
        }
    }

    /// The masters to poll now, as targets.
    async fn targets(&self) -> anyhow::Result<Vec<PollTarget>> {
        let masters = self.inventory.list(Table::Masters).await?;
        let mut targets = Vec::new();
        for m in &masters {
            let int = |c: &str| m.get(c).and_then(Value::as_int).and_then(|v| i32::try_from(v).ok());
            let text = |c: &str| m.get(c).and_then(Value::as_text).unwrap_or_default();
            let (Some(masterid), Some(http_port)) = (int("masterid"), int("http_port")) else {
                continue;
            };
            let nickname = text("nickname");
            if self.settings.skipped.iter().any(|s| s == nickname) {
                continue;
            }
            let target = match self.settings.urls.get(nickname) {
                Some(url) => PollTarget::new(masterid, nickname, url.clone()),
                // A master without a web port has no data API to read.
                None if http_port <= 0 => continue,
                None => {
                    let address = MasterAddress {
                        masterid,
                        nickname,
                        fqdn: text("fqdn"),
                        http_port,
                    };
                    match PollTarget::for_master(&self.settings.template, &address) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::warn!(master = %nickname, error = %e, "cannot poll this master");
                            continue;
                        }
                    }
                }
            };
            targets.push(match &self.settings.auth {
                Some((name, value)) => target.with_auth_header(name.clone(), value.clone()),
                None => target,
            });
        }
        Ok(targets)
    }

    /// One round: every master polled, every answer recorded, then the
    /// next workers of graceful drains asked to shut down.
    async fn round(&self, reachable: &mut HashMap<i32, bool>, asked: &mut Asked) {
        let targets = match self.targets().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the masters to poll");
                return;
            }
        };
        let names: HashMap<i32, String> = targets.iter().map(|t| (t.masterid, t.nickname.clone())).collect();
        let started = Instant::now();
        let polls = poll_round(targets.clone(), &self.settings.options).await;
        let connected: HashMap<i32, Vec<String>> = polls
            .iter()
            .filter_map(|p| {
                let report = p.outcome.as_ref().ok()?;
                let names = report.workers.iter().filter(|w| w.connected).map(|w| w.name.clone());
                Some((p.masterid, names.collect()))
            })
            .collect();
        let (mut ok, mut failed) = (0, 0);
        for poll in polls {
            let nickname = names.get(&poll.masterid).map_or("?", String::as_str);
            let up = poll.outcome.is_ok();
            if reachable.insert(poll.masterid, up) != Some(up) {
                match &poll.outcome {
                    Ok(_) => tracing::info!(master = %nickname, "master answers its polls"),
                    Err(e) => tracing::warn!(master = %nickname, error = %e, "master does not answer its polls"),
                }
            }
            if up {
                ok += 1;
            } else {
                failed += 1;
            }
            let record = PollRecord {
                masterid: poll.masterid,
                at: poll.started,
                duration: poll.duration,
                outcome: poll
                    .outcome
                    .map(|report| PollAnswer {
                        buildbot_version: report.buildbot_version,
                        workers: report
                            .workers
                            .into_iter()
                            .map(|w| PolledWorker {
                                name: w.name,
                                connected: w.connected,
                                paused: w.paused,
                                graceful: w.graceful,
                            })
                            .collect(),
                    })
                    .map_err(|e| e.to_string()),
            };
            if let Err(e) = self.live.record_poll(&record).await {
                tracing::warn!(master = %nickname, error = %e, "cannot record a poll");
            }
        }
        self.metrics.round(ok, failed, started.elapsed().as_secs_f64());
        tracing::debug!(ok, failed, ms = started.elapsed().as_millis() as u64, "poll round");
        self.graceful_round(&targets, &connected, asked).await;
    }

    /// Asks the masters under a graceful drain to shut their next workers
    /// down (Buildbot's graceful `stop`: after the current build), at most
    /// [`Poller::graceful_pace`] at once per master. Only what this round
    /// saw counts: a master that did not answer is asked nothing.
    async fn graceful_round(&self, targets: &[PollTarget], connected: &HashMap<i32, Vec<String>>, asked: &mut Asked) {
        let Some(lifecycle) = &self.lifecycle else { return };
        let open = HoldQuery {
            target: Some(HoldTarget::Master),
            open_only: true,
            ..HoldQuery::default()
        };
        let holds = match lifecycle.holds(&open).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the drains");
                return;
            }
        };
        let draining: HashMap<i32, &Hold> = holds.iter().filter(|h| h.graceful).map(|h| (h.target_id, h)).collect();
        asked.retain(|m, _| draining.contains_key(m));
        for (masterid, hold) in draining {
            let (Some(target), Some(now)) = (
                targets.iter().find(|t| t.masterid == masterid),
                connected.get(&masterid),
            ) else {
                continue;
            };
            let mine = asked.entry(masterid).or_default();
            // Gone from the master: it shut down; asked again if it comes back.
            mine.retain(|w| now.contains(w));
            let next: Vec<String> = graceful_asks(now, mine, self.graceful_pace)
                .into_iter()
                .map(str::to_owned)
                .collect();
            let reason = format!("slavealloc: drained by {}: {}", hold.actor, hold.note);
            for worker in next {
                match stop_worker(target, &worker, &reason, self.settings.options.timeout).await {
                    Ok(()) => {
                        tracing::info!(master = %target.nickname, %worker, "asked to shut down gracefully");
                        mine.insert(worker);
                    }
                    Err(e) => {
                        tracing::warn!(master = %target.nickname, %worker, error = %e, "cannot ask a worker to shut down")
                    }
                }
            }
        }
    }
}
