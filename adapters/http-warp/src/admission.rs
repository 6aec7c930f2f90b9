//! Admission of `/gettac` requests to the group-commit queue: in a boot
//! storm bigger than the database can take, the daemon paces the fleet
//! instead of letting requests pile up until they time out.
//!
//! Each daemon has one allocation queue in front of its database
//! connection pool (the [`crate::batcher`]), so admission is per pool: a
//! request is admitted when the wait the queue already holds, at the rate
//! the database has been deciding, is within [`AdmissionLimits::max_wait`]
//! and fewer than [`AdmissionLimits::max_queued`] are waiting. It is
//! decided before the database is touched, since a slave's own pool of
//! masters is only known after a read.
//!
//! A refused request is answered 503 with a `Retry-After` that schedules
//! it: refusals get consecutive slots at the measured rate after the
//! queue's own wait, plus up to a second of jitter, so that the refused
//! part of a storm comes back spread over time, at about the rate the
//! database decides, rather than all at once. `runslave` honours it.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rand::Rng as _;

/// Default for [`AdmissionLimits::max_wait`]: an admitted request is
/// decided well within the default database deadline (1.5 s).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(1000);

/// Default for [`AdmissionLimits::max_queued`]: a few thousand waiting
/// requests hold little memory and one daemon decides them in seconds.
pub const DEFAULT_MAX_QUEUED: usize = 4096;

/// The longest `Retry-After` given, in seconds: `runslave`'s own longest
/// pause between attempts.
pub const MAX_RETRY_AFTER_S: u64 = 60;

/// The decision rate assumed before the first batch is measured, per
/// second: low, so that a storm at start is admitted only as far as a slow
/// database would take it.
const INITIAL_RATE: f64 = 500.0;

/// Weight of the newest batch in the measured rate.
const RATE_WEIGHT: f64 = 0.2;

/// How much waiting the queue may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// The longest a newly admitted request is expected to wait for its
    /// decision; beyond it requests are refused with `Retry-After`.
    pub max_wait: Duration,
    /// The most requests admitted and not yet answered.
    pub max_queued: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            max_wait: DEFAULT_MAX_WAIT,
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }
}

/// A refused request: come back after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// Seconds for `Retry-After` (1 to [`MAX_RETRY_AFTER_S`]).
    pub retry_after_s: u64,
    /// Requests waiting when it was refused, for the answer's text.
    pub queued: usize,
}

/// A place in the queue: held from admission to the answer, released when
/// dropped (also when the client goes away first).
#[derive(Debug)]
pub struct Ticket {
    queued: Gauge,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.queued.dec();
    }
}

/// The admission state of one daemon's allocation queue. Cheap to clone:
/// clones share it. Its state is the metrics themselves: the queue's
/// length is the `queued` gauge, the measured rate the `rate` gauge.
#[derive(Debug, Clone)]
pub struct Admission {
    limits: AdmissionLimits,
    /// The slot the next refused request is given.
    next_slot: Arc<Mutex<Instant>>,
    metrics: AdmissionMetrics,
}

/// What `/metrics` shows of admission.
#[derive(Debug, Clone, Default)]
pub(crate) struct AdmissionMetrics {
    pub(crate) admitted: Counter,
    pub(crate) refused: Counter,
    /// Requests admitted and not yet answered.
    pub(crate) queued: Gauge,
    /// Decisions per second, as admission expects them.
    pub(crate) rate: Gauge<f64, AtomicU64>,
}

impl Admission {
    /// An empty queue with these limits.
    pub fn new(limits: AdmissionLimits) -> Self {
        let metrics = AdmissionMetrics::default();
        metrics.rate.set(INITIAL_RATE);
        Self {
            limits,
            next_slot: Arc::new(Mutex::new(Instant::now())),
            metrics,
        }
    }

    /// Admits one request, or says when to come back.
    ///
    /// # Errors
    /// [`Busy`] when the queue holds more than the limits allow.
    pub fn admit(&self) -> Result<Ticket, Busy> {
        // The gauge's increment returns the length before it: the place
        // this request takes.
        let queued = usize::try_from(self.metrics.queued.inc()).unwrap_or(0);
        let rate = self.rate();
        let wait = Duration::from_secs_f64(queued as f64 / rate);
        if queued >= self.limits.max_queued || wait > self.limits.max_wait {
            self.metrics.queued.dec();
            self.metrics.refused.inc();
            return Err(Busy {
                retry_after_s: self.schedule(wait, rate),
                queued,
            });
        }
        self.metrics.admitted.inc();
        Ok(Ticket {
            queued: self.metrics.queued.clone(),
        })
    }

    /// Records a batch of `decided` requests that took `took`: the rate
    /// admission expects.
    pub fn observe(&self, decided: usize, took: Duration) {
        if decided == 0 {
            return;
        }
        let sample = decided as f64 / took.as_secs_f64().max(1e-6);
        let new = self.rate() * (1.0 - RATE_WEIGHT) + sample * RATE_WEIGHT;
        self.metrics.rate.set(new);
    }

    /// Requests admitted and not yet answered.
    pub fn queued(&self) -> usize {
        usize::try_from(self.metrics.queued.get()).unwrap_or(0)
    }

    fn rate(&self) -> f64 {
        self.metrics.rate.get().max(1.0)
    }

    /// The seconds until this refused request's slot: after the queue's
    /// wait, one slot per refusal at `rate`, plus up to a second of jitter.
    fn schedule(&self, wait: Duration, rate: f64) -> u64 {
        let now = Instant::now();
        let slot = {
            let mut next = self.next_slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let slot = (*next).max(now + wait);
            *next = slot + Duration::from_secs_f64(1.0 / rate);
            slot
        };
        let jitter = rand::thread_rng().gen_range(0.0..1.0);
        let seconds = (slot - now).as_secs_f64() + jitter;
        (seconds.ceil() as u64).clamp(1, MAX_RETRY_AFTER_S)
    }

    pub(crate) fn metrics(&self) -> &AdmissionMetrics {
        &self.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_wait_ms: u64, max_queued: usize) -> AdmissionLimits {
        AdmissionLimits {
            max_wait: Duration::from_millis(max_wait_ms),
            max_queued,
        }
    }

    #[test]
    fn admits_up_to_the_wait_the_rate_allows() {
        // 500 decisions/s and 1 s of wait: 500 admitted, then refused.
        let a = Admission::new(limits(1000, 10_000));
        let tickets: Vec<Ticket> = (0..501).map_while(|_| a.admit().ok()).collect();
        assert_eq!(tickets.len(), 501, "a wait of exactly 1 s is admitted");
        let busy = a.admit().unwrap_err();
        assert_eq!(busy.queued, 501);
        assert!((1..=MAX_RETRY_AFTER_S).contains(&busy.retry_after_s), "{busy:?}");
        assert_eq!(a.metrics.admitted.get(), 501);
        assert_eq!(a.metrics.refused.get(), 1);
        drop(tickets);
        assert_eq!(a.queued(), 0);
        assert_eq!(a.metrics.queued.get(), 0);
        assert!(a.admit().is_ok(), "answered requests make room");
    }

    #[test]
    fn the_queue_limit_holds_whatever_the_rate() {
        let a = Admission::new(limits(60_000, 3));
        a.observe(1_000_000, Duration::from_secs(1));
        let tickets: Vec<Ticket> = (0..3).map(|_| a.admit().unwrap()).collect();
        assert!(a.admit().is_err());
        drop(tickets);
    }

    #[test]
    fn a_faster_database_admits_more() {
        let a = Admission::new(limits(100, 100_000));
        for _ in 0..50 {
            a.observe(256, Duration::from_millis(20));
        }
        // ~12,800/s: 100 ms of wait is ~1,280 requests.
        let tickets: Vec<Ticket> = (0..1200).map_while(|_| a.admit().ok()).collect();
        assert_eq!(tickets.len(), 1200);
    }

    #[test]
    fn refusals_are_spread_at_the_rate_not_sent_back_together() {
        // 100 decisions/s, nothing admitted: each refusal gets the next
        // 10 ms slot, so 1,000 refusals span about 10 s of Retry-After.
        let a = Admission::new(limits(0, 0));
        for _ in 0..100 {
            a.observe(1, Duration::from_millis(10));
        }
        let afters: Vec<u64> = (0..1000).map(|_| a.admit().unwrap_err().retry_after_s).collect();
        let (min, max) = (afters.iter().min().unwrap(), afters.iter().max().unwrap());
        assert!(*min <= 2, "the first come back soon: {min}");
        assert!((10..=12).contains(max), "the last after ~10 s: {max}");
        let first_second = afters.iter().filter(|s| **s <= 1).count();
        assert!(first_second < 250, "not all at once: {first_second} of 1000 within 1 s");
    }

    #[test]
    fn retry_after_is_bounded() {
        let a = Admission::new(limits(0, 0));
        a.observe(1, Duration::from_secs(10));
        for _ in 0..100 {
            let s = a.admit().unwrap_err().retry_after_s;
            assert!((1..=MAX_RETRY_AFTER_S).contains(&s), "{s}");
        }
    }
}
