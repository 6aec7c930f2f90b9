//! Test support for crates that use the domain: one fake renderer, so
//! that tests across the workspace read the same tac text. Not behind the
//! `mocks` feature (which gives the mockall mocks of every port): the
//! contract-suite crate needs it in its normal dependencies, and a domain
//! feature that only some members enable gives the domain, and every crate
//! above it, a second build (newcomer bug 7).

use std::time::{Duration, SystemTime};

use crate::entities::MasterId;
use crate::error::RenderError;
use crate::live::{PollAnswer, PollRecord, PolledWorker};
use crate::ports::{TacBody, TacRenderer, TacRequest};

/// A [`TacRenderer`] that writes the header and then its inputs, one per
/// line: enough for the suite to see which master, password and template
/// an allocation chose.
///
/// ```text
/// # AUTOMATICALLY GENERATED - DO NOT MODIFY
/// # generated: <unix seconds> on <host>
///
/// master=<host>:<port>
/// slave=<name>
/// basedir=<dir>
/// passwd=<password>
/// template=<custom template name, or default>
/// ```
///
/// and `DISABLED <name>` as the body of a disabled slave's tac.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainRenderer;

impl TacRenderer for PlainRenderer {
    fn render(&self, request: &TacRequest) -> Result<String, RenderError> {
        let generated = request
            .header
            .generated
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let header = format!(
            "# AUTOMATICALLY GENERATED - DO NOT MODIFY\n# generated: {generated} on {}\n\n",
            request.header.host
        );
        let body = match &request.body {
            TacBody::Disabled { slavename } => format!("DISABLED {slavename}\n"),
            TacBody::Enabled { template, values } => format!(
                "master={}:{}\nslave={}\nbasedir={}\npasswd={}\ntemplate={}\n",
                values.buildmaster_host,
                values.port,
                values.slavename,
                values.basedir,
                values.passwd,
                template.as_ref().map_or("default", |t| t.name.as_str()),
            ),
        };
        Ok(header + &body)
    }
}

/// An answered poll of master `masterid` at `at` (Buildbot 4.3.0) listing
/// `workers` as `(name, connected)`, none paused or draining: what tests
/// record to simulate the poller.
pub fn answered_poll(masterid: MasterId, at: SystemTime, workers: &[(&str, bool)]) -> PollRecord {
    PollRecord {
        masterid,
        at,
        duration: Duration::from_millis(5),
        outcome: Ok(PollAnswer {
            buildbot_version: Some("4.3.0".to_owned()),
            workers: workers
                .iter()
                .map(|(name, connected)| PolledWorker {
                    name: (*name).to_owned(),
                    connected: *connected,
                    paused: false,
                    graceful: false,
                })
                .collect(),
        }),
    }
}
