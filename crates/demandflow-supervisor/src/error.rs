//! Errors of the supervisors' builders and handles.

use std::fmt;

/// Why a supervisor's builder refused its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// Workers cannot be [`Restart::Permanent`](crate::Restart::Permanent):
    /// one that finished its event would be started again forever.
    PermanentWorkers,
    /// `max_seconds` was zero: no restart could ever be counted against the limit.
    ZeroMaxSeconds,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::PermanentWorkers => {
                f.write_str("consumer supervisor workers cannot be permanent")
            }
            BuildError::ZeroMaxSeconds => f.write_str("max_seconds must be greater than zero"),
        }
    }
}

impl std::error::Error for BuildError {}
