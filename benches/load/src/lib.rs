//! What the load benchmarks share: the checks of every run
//! ([`checks`]) and the release daemon under test ([`daemon`]).

pub mod checks;
pub mod daemon;
