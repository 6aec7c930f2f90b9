//! Retrying a transaction the database refused for a conflict (a deadlock,
//! a lock wait timeout, a Galera certification failure), with a jittered
//! backoff.
//!
//! Conflicts come in bursts: a boot storm through several Galera nodes makes
//! every node's allocations collide for a while. Retrying at once would
//! collide again with the same transactions; a random pause that grows with
//! the store's current run of conflicts spreads the retries out, and falls
//! back to nothing as soon as a transaction commits.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rand::Rng as _;
use slavealloc_domain::StoreError;

/// How many times a write of the inventory, a hold or the live state is
/// tried before its conflict is reported.
pub(crate) const WRITE_ATTEMPTS: u32 = 10;
/// The longest pause before a retry, whatever the run of conflicts.
const MAX_PAUSE: Duration = Duration::from_millis(200);
/// The longest pause after the first conflict of a run; it doubles with
/// each further one up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);

/// The longest pause after `run` conflicts in a row before this one.
fn bound(run: u32) -> Duration {
    FIRST_PAUSE.saturating_mul(1 << run.min(16)).min(MAX_PAUSE)
}

/// The store's current run of conflicts, shared by all its transactions.
#[derive(Debug, Default)]
pub(crate) struct Conflicts {
    run: AtomicU32,
}

impl Conflicts {
    /// Lengthens the run, and waits a random time up to its bound.
    pub(crate) async fn pause(&self) {
        self.run.fetch_add(1, Ordering::Relaxed);
        self.wait_turn().await;
    }

    /// Ends the run: a transaction went through.
    pub(crate) fn calm(&self) {
        self.run.store(0, Ordering::Relaxed);
    }

    /// Counts a conflict into the run when `result` is one. A step that
    /// succeeded inside a transaction ends nothing: only a commit does
    /// ([`Conflicts::committed`]); were a successful BEGIN to end the run,
    /// a batch that loses every certification would retry at the first,
    /// shortest pause every time.
    pub(crate) fn noted<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Retryable(_)) = &result {
            self.run.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Counts a conflicting commit into the run, ends the run when the
    /// commit went through.
    pub(crate) fn committed(&self, result: Result<(), StoreError>) -> Result<(), StoreError> {
        if result.is_ok() {
            self.calm();
        }
        self.noted(result)
    }

    /// While a run of conflicts is on, a pause before the next try: up to
    /// the run's bound, at random, so that the writers that collided do not
    /// collide again.
    pub(crate) async fn wait_turn(&self) {
        let run = self.run.load(Ordering::Relaxed);
        if run > 0 {
            let bound = bound(run - 1);
            let pause = rand::thread_rng().gen_range(Duration::ZERO..=bound);
            tokio::time::sleep(pause).await;
        }
    }

    /// Runs `attempt` until it does not end in a conflict, at most
    /// [`WRITE_ATTEMPTS`] times; the last conflict says how often it was
    /// tried.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut tries = 1;
        loop {
            match attempt().await {
                Err(StoreError::Retryable(_)) if tries < WRITE_ATTEMPTS => {
                    self.pause().await;
                    tries += 1;
                }
                Err(StoreError::Retryable(why)) => {
                    return Err(StoreError::Retryable(format!(
                        "{why} (the write conflicted with others {tries} times in a row)"
                    )))
                }
                other => {
                    if other.is_ok() {
                        self.calm();
                    }
                    return other;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn a_conflict_is_retried_until_it_goes_through() {
        let conflicts = Conflicts::default();
        let calls = AtomicUsize::new(0);
        let got = conflicts
            .retrying(|| async {
                match calls.fetch_add(1, Ordering::Relaxed) {
                    0..=2 => Err(StoreError::Retryable("deadlock".into())),
                    _ => Ok(7),
                }
            })
            .await;
        assert_eq!(got, Ok(7));
        assert_eq!(calls.load(Ordering::Relaxed), 4);
        assert_eq!(conflicts.run.load(Ordering::Relaxed), 0, "a commit ends the run");
    }

    #[tokio::test]
    async fn a_conflict_that_persists_says_how_often_it_was_tried() {
        let conflicts = Conflicts::default();
        let got: Result<(), _> = conflicts
            .retrying(|| async { Err(StoreError::Retryable("deadlock".into())) })
            .await;
        let Err(StoreError::Retryable(why)) = got else {
            panic!("{got:?}")
        };
        assert!(why.contains(&format!("{WRITE_ATTEMPTS} times")), "{why}");
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let conflicts = Conflicts::default();
        let calls = AtomicUsize::new(0);
        let got: Result<(), _> = conflicts
            .retrying(|| async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Duplicate("name".into()))
            })
            .await;
        assert_eq!(got, Err(StoreError::Duplicate("name".into())));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn only_a_commit_ends_a_run_of_conflicts() {
        let conflicts = Conflicts::default();
        for _ in 0..3 {
            conflicts.noted(Ok(())).unwrap();
            let lost = conflicts.noted::<()>(Err(StoreError::Retryable("certification".into())));
            assert!(lost.is_err());
        }
        assert_eq!(
            conflicts.run.load(Ordering::Relaxed),
            3,
            "a BEGIN that went through ends no run"
        );
        conflicts
            .committed(Err(StoreError::Other("disk full".into())))
            .unwrap_err();
        assert_eq!(conflicts.run.load(Ordering::Relaxed), 3, "only conflicts count");
        conflicts.committed(Ok(())).unwrap();
        assert_eq!(conflicts.run.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn pauses_grow_with_the_run_and_stay_bounded() {
        assert_eq!(bound(0), FIRST_PAUSE);
        assert_eq!(bound(1), FIRST_PAUSE * 2);
        assert_eq!(bound(3), FIRST_PAUSE * 8);
        assert_eq!(bound(5), MAX_PAUSE);
        assert_eq!(bound(u32::MAX), MAX_PAUSE);
    }
}
