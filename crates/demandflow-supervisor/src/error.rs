//! Errors of the supervisors' builders and handles.

use std::fmt;

use crate::StartChildError;

/// Why a supervisor could not be built or started.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A [`Supervisor`](crate::Supervisor)'s child could not be started (its
    /// factory returned an error or panicked), or two children share a name.
    Child(StartChildError),
    /// Workers cannot be [`Restart::Permanent`](crate::Restart::Permanent):
    /// one that finished its event would be started again forever.
    PermanentWorkers,
    /// `max_seconds` was zero: no restart could ever be counted against the
    /// limit (refused by every supervisor).
    ZeroMaxSeconds,
    /// `start` was called outside a tokio runtime.
    NoRuntime,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Child(error) => fmt::Display::fmt(error, f),
            BuildError::PermanentWorkers => {
                f.write_str("consumer supervisor workers cannot be permanent")
            }
            BuildError::ZeroMaxSeconds => f.write_str("max_seconds must be greater than zero"),
            BuildError::NoRuntime => {
                f.write_str("supervisors must be started from within a tokio runtime")
            }
        }
    }
}

// `Child` shows its error in `Display`, so it reports no separate source.
impl std::error::Error for BuildError {}

impl From<StartChildError> for BuildError {
    fn from(error: StartChildError) -> Self {
        BuildError::Child(error)
    }
}
