//! Errors of the supervisors' builders: what could not start, and why.
//!
//! A supervisor fails to start for the reasons a stage does (an invalid option,
//! no tokio runtime), which are the runtime's [`StartError`], or because one of
//! its children could not start ([`StartChildError`]).

use std::error::Error;
use std::sync::Arc;

use demandflow_runtime::StartError;

/// Why a supervisor could not be built or started.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The supervisor itself could not start: an option is invalid
    /// ([`StartError::Config`]: `max_seconds` was zero, or consumer supervisor
    /// workers were made [`Restart::Permanent`](crate::Restart::Permanent)), or
    /// `start` was called outside a tokio runtime ([`StartError::NoRuntime`]).
    #[error(transparent)]
    Start(#[from] StartError),
    /// A [`Supervisor`](crate::Supervisor)'s child could not be started.
    #[error(transparent)]
    Child(#[from] StartChildError),
}

/// A [`Supervisor`](crate::Supervisor)'s child could not be started; inside
/// [`BuildError::Child`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StartChildError {
    /// Another child added before it has the same name.
    #[error("child {child:?} has the name of another child")]
    DuplicateName {
        /// The child's name.
        child: String,
    },
    /// Its factory returned an error, which is the source.
    #[error("child {child:?} failed to start")]
    Failed {
        /// The child's name.
        child: String,
        /// What its factory returned.
        source: Arc<dyn Error + Send + Sync>,
    },
    /// Its factory panicked.
    #[error("child {child:?} failed to start: its factory panicked: {message}")]
    Panicked {
        /// The child's name.
        child: String,
        /// The panic message.
        message: String,
    },
}

impl StartChildError {
    /// The name of the child that could not start.
    pub fn child(&self) -> &str {
        match self {
            StartChildError::DuplicateName { child }
            | StartChildError::Failed { child, .. }
            | StartChildError::Panicked { child, .. } => child,
        }
    }
}

/// `error` and its sources, joined with `": "`: the text of an exit reason,
/// which carries no source of its own.
pub(crate) fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An invalid option is a [`StartError::Config`], as for a stage.
impl From<demandflow_core::ConfigError> for BuildError {
    fn from(error: demandflow_core::ConfigError) -> Self {
        BuildError::Start(StartError::Config(error))
    }
}
