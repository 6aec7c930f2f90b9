//! Asking a master to shut a worker down gracefully: the data API's worker
//! control (`POST .../api/v2/workers/<name>`, JSON-RPC method `stop`),
//! which Buildbot carries out after the worker's current build. A worker
//! under `runslave --supervise` then fetches a new tac and lands on
//! another master of its pool: a graceful drain that touches no machine.

use std::time::Duration;

use serde_json::json;

use crate::poll::{check_header, on_blocking_pool, status_error, transport_error, PollError, PollTarget, USER_AGENT};

/// Where `worker` is controlled on the master of `target`: the workers
/// list URL (`.../api/v2/workers`) with the name as one more path segment.
/// `None` when the target's URL is not a workers list.
pub fn worker_control_url(target: &PollTarget, worker: &str) -> Option<String> {
    let mut url = url::Url::parse(&target.url).ok()?;
    if !url.path().trim_end_matches('/').ends_with("/api/v2/workers") {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut().ok()?.pop_if_empty().push(worker);
    Some(url.into())
}

/// Asks the master to shut `worker` down once its current build is done
/// (Buildbot's `stop`; `kill` would interrupt it), with `reason` shown in
/// the master's log. Returns within about `timeout`.
///
/// # Errors
/// [`PollError::BadTarget`] for a URL that is not a workers list; the
/// transport's and the master's errors (a JSON-RPC error as
/// [`PollError::Status`]).
pub async fn stop_worker(target: &PollTarget, worker: &str, reason: &str, timeout: Duration) -> Result<(), PollError> {
    let url = worker_control_url(target, worker).ok_or_else(|| PollError::BadTarget {
        reason: format!("{} is not a workers list (…/api/v2/workers)", target.url),
    })?;
    let body = json!({"jsonrpc": "2.0", "method": "stop", "params": {"reason": reason}, "id": 1}).to_string();
    let auth = target.auth_header.clone();
    let deadline = tokio::time::Instant::now() + timeout;
    on_blocking_pool(deadline, timeout, move || {
        let agent = ureq::AgentBuilder::new().redirects(0).user_agent(USER_AGENT).build();
        let mut request = agent
            .post(&url)
            .timeout(timeout)
            .set("Content-Type", "application/json")
            .set("Accept", "application/json");
        if let Some((name, value)) = &auth {
            check_header(name, value)?;
            request = request.set(name, value);
        }
        let response = match request.send_string(&body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => return Err(status_error(r)),
            Err(ureq::Error::Transport(t)) => return Err(transport_error(&t, timeout)),
        };
        let status = response.status();
        let text = response.into_string().unwrap_or_default();
        // JSON-RPC reports a refused call in the body.
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) if v.get("error").is_some_and(|e| !e.is_null()) => Err(PollError::Status {
                status,
                body: v["error"]["message"]
                    .as_str()
                    .unwrap_or("error")
                    .chars()
                    .take(120)
                    .collect(),
            }),
            _ => Ok(()),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_url_is_the_worker_under_the_workers_list() {
        let t = PollTarget::new(1, "bm01", "http://bm01:8010/api/v2/workers?field=name");
        assert_eq!(
            worker_control_url(&t, "t-w1064 ix/1").as_deref(),
            Some("http://bm01:8010/api/v2/workers/t-w1064%20ix%2F1")
        );
        let t = PollTarget::new(1, "bm01", "http://bm01:8010/buildbot/api/v2/workers/");
        assert_eq!(
            worker_control_url(&t, "w1").as_deref(),
            Some("http://bm01:8010/buildbot/api/v2/workers/w1")
        );
        assert_eq!(
            worker_control_url(&PollTarget::new(1, "x", "http://bm01/status"), "w1"),
            None
        );
    }
}
