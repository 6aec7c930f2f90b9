//! # slavealloc-buildbot-poll
//!
//! Asks Buildbot masters which workers they have: connected, paused,
//! shutting down gracefully. The daemon calls [`poll_round`] every poll
//! interval with one [`PollTarget`] per master that has a web port, and
//! gets one [`MasterPoll`] per master back, in the same order.
//!
//! Main design decision: every failure belongs to one master. A master
//! that refuses, hangs, trickles, answers an error page, garbage or ten
//! megabytes gives its own [`PollError`], within its own time limit
//! ([`PollOptions::timeout`], which holds however slowly the bytes come),
//! and never delays the round past that limit, panics or stalls it.
//!
//! The requests are blocking ureq calls on tokio's blocking pool, as in
//! `slavealloc-client-http`: the same small HTTP/TLS stack (rustls) as the
//! rest of the workspace, and a handful of requests a minute need nothing
//! more. ureq's own deadline bounds each request; a tokio timeout around
//! it bounds what ureq cannot (a hung DNS lookup), so the round goes on
//! without waiting for such a thread.
//!
//! The Buildbot version comes from the web UI's `/config` document (its
//! `versions` list, e.g. `["Buildbot", "4.3.0"]`), one more request on the
//! same connection, within the same time limit; a master that does not
//! serve it just has no version.
//!
//! **Architecture invariant:** this crate knows nothing of slavealloc's
//! storage or domain: a master is an id, a nickname and a URL.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod control;
mod poll;
mod template;

pub use control::{stop_worker, worker_control_url};
pub use poll::{
    parse_version, parse_workers, poll_master, poll_round, MasterPoll, MasterReport, PollError, PollOptions,
    PollTarget, WorkerReport, DEFAULT_CONCURRENCY, DEFAULT_JITTER, DEFAULT_MAX_BODY_BYTES, DEFAULT_TIMEOUT,
};
pub use template::{ExpandError, MasterAddress, TemplateError, UrlTemplate, DEFAULT_URL_TEMPLATE};
