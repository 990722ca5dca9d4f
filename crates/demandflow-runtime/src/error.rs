//! The runtime's errors: a stage that could not start, a subscription that
//! failed, a stage that is no longer running, and a push handle's send that
//! hands its event back.

use std::fmt;

use demandflow_core::{ConfigError, SubscribeRefused};

/// Why something could not be started: a stage, a keyed scheduler, or a
/// supervisor (inside its `BuildError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// An option of the builder is invalid; the [`ConfigError`] says which.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// `start` was called outside a tokio runtime.
    #[error("must be started from within a tokio runtime")]
    NoRuntime,
    /// A link of a fused chain could not be subscribed (see
    /// [`fuse`](crate::fuse)).
    #[error("a link of the fused chain could not be subscribed")]
    Subscribe(#[source] SubscribeError),
}

/// Why a subscription could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The subscription options are invalid; the [`ConfigError`] says which.
    #[error("invalid subscription options")]
    Config(#[from] ConfigError),
    /// The producer refused the subscription; its dispatcher's
    /// [`SubscribeRefused`] says why.
    #[error("subscription refused")]
    Refused(#[source] SubscribeRefused),
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

/// A send found its receiver closed; the value is handed back.
///
/// Returned by [`Pusher::send`](crate::Pusher::send) when the push producer has
/// stopped, and by the keyed scheduler's sends when it is closed.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("sending on a closed channel")]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

/// Why a `try_send` did not send; the value is handed back.
///
/// Returned by [`Pusher::try_send`](crate::Pusher::try_send) and by the keyed
/// scheduler's `try_send`.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError<T> {
    /// There is no room without waiting: as many events as the capacity
    /// allows are queued.
    #[error("no room to send without waiting")]
    Full(T),
    /// The receiver is closed (the push producer stopped, the keyed scheduler
    /// was closed).
    #[error("sending on a closed channel")]
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
