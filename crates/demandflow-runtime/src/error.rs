//! The runtime's errors: a stage that could not start, a subscription that
//! failed, a stage that is no longer running, and a push handle's send that
//! hands its event back.

use std::fmt;

use demandflow_core::{ConfigError, SubscribeRefused};

/// Why a stage could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// An option of the builder is invalid.
    #[error("invalid stage configuration: {0}")]
    Config(#[from] ConfigError),
    /// `start` was called outside a tokio runtime.
    #[error("stages must be started from within a tokio runtime")]
    NoRuntime,
}

/// Why a subscription could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The subscription options are invalid.
    #[error("invalid subscription options: {0}")]
    Config(#[from] ConfigError),
    /// The producer refused the subscription (its dispatcher said why).
    #[error("subscription refused: {0}")]
    Refused(SubscribeRefused),
    /// The producer is not running.
    #[error("producer is not running")]
    ProducerNotRunning,
    /// The consumer is not running.
    #[error("consumer is not running")]
    ConsumerNotRunning,
    /// A producer-consumer was asked to subscribe to itself, which would build a
    /// feedback loop.
    #[error("a stage cannot subscribe to itself")]
    SelfSubscription,
}

/// The stage a handle points to has stopped.
#[derive(Clone, Copy, PartialEq, Eq, Default, thiserror::Error)]
#[error("stage is not running")]
pub struct NotRunning;

impl fmt::Debug for NotRunning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NotRunning")
    }
}

/// The producer behind a push handle has stopped; the value is handed back.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("sending on a stopped producer")]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

/// Why [`Pusher::try_send`](crate::Pusher::try_send) did not send; the value is handed back.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError<T> {
    /// As many events as the push capacity allows are waiting for demand.
    #[error("push queue is full")]
    Full(T),
    /// The producer has stopped.
    #[error("sending on a stopped producer")]
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v) | TrySendError::Closed(v) => v,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}
