//! Errors of the supervisors' builders and handles.

use std::fmt;

/// Why a consumer or partition supervisor could not be built or started.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// Workers cannot be [`Restart::Permanent`](crate::Restart::Permanent):
    /// one that finished its event would be started again forever.
    PermanentWorkers,
    /// `max_seconds` was zero: no restart could ever be counted against the limit.
    ZeroMaxSeconds,
    /// A partition supervisor needs at least one partition.
    ZeroPartitions,
    /// `start` was called outside a tokio runtime.
    NoRuntime,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::PermanentWorkers => {
                f.write_str("consumer supervisor workers cannot be permanent")
            }
            BuildError::ZeroMaxSeconds => f.write_str("max_seconds must be greater than zero"),
            BuildError::ZeroPartitions => {
                f.write_str("a partition supervisor needs at least one partition")
            }
            BuildError::NoRuntime => {
                f.write_str("supervisors must be started from within a tokio runtime")
            }
        }
    }
}

impl std::error::Error for BuildError {}
