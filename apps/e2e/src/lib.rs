//! # slavealloc-e2e
//!
//! The harness of slavealloc's end-to-end tests: it runs the real thing —
//! the `slavealloc` and `runslave` binaries, Buildbot masters and
//! `buildbot-worker` from PyPI in a virtualenv — and stops every process it
//! started, even when a test fails.
//!
//! The main design decision: every process is owned by a guard value whose
//! `Drop` stops it ([`process::ChildGuard`] for children,
//! [`buildbot::WorkerGuard`] for a worker that daemonized itself,
//! [`runslave::Supervised`] for `runslave --supervise` and the worker it
//! runs in the foreground), so a failing assertion anywhere unwinds into a
//! clean machine. Waiting is always polling with a deadline
//! ([`process::wait_until`]); no test sleeps for a fixed time or asserts on
//! one.
//!
//! Nothing here is used outside `cargo test`; the crate is a library only so
//! that every file in `tests/` shares it.

pub mod buildbot;
pub mod daemon;
pub mod fleet;
pub mod nginx;
pub mod process;
pub mod runslave;
pub mod venv;
pub mod workspace;

/// Every harness operation fails with a message that says what it was doing
/// and, where one exists, the tail of the log that explains it.
pub type Result<T> = std::result::Result<T, String>;
