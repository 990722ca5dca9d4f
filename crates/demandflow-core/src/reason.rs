//! Why things end: [`Reason`] for a stage's exit, [`CancelReason`] for a
//! subscription's. Cancel modes (SEMANTICS.md §6) decide from these whether a
//! consumer stops with its producer.

use std::fmt;
use std::sync::Arc;

/// Why a stage stopped or a subscription was cancelled.
///
/// [`Reason::Normal`] and [`Reason::Shutdown`] are *normal* endings; every other
/// reason is abnormal. The distinction drives the cancel modes (see
/// [`CancelMode`](crate::CancelMode)).
#[derive(Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The stage finished its work (a finite source ran out, `stop(Normal)`).
    Normal,
    /// The stage was asked to shut down (by its owner or a supervisor), or it
    /// stopped because, with every handle to its pipeline dropped, it had no more
    /// work to do.
    Shutdown,
    /// A user callback panicked; the payload's message if it had one.
    Panic(Arc<str>),
    /// Any other failure, described for humans.
    Error(Arc<str>),
}

impl Reason {
    /// An abnormal reason carrying `message`.
    pub fn error(message: impl Into<Arc<str>>) -> Self {
        Reason::Error(message.into())
    }

    /// `true` for [`Reason::Normal`] and [`Reason::Shutdown`].
    pub fn is_normal(&self) -> bool {
        matches!(self, Reason::Normal | Reason::Shutdown)
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Normal => f.write_str("normal"),
            Reason::Shutdown => f.write_str("shutdown"),
            Reason::Panic(msg) => write!(f, "panicked: {msg}"),
            Reason::Error(msg) => write!(f, "error: {msg}"),
        }
    }
}

/// How a subscription ended, as told to the consumer's cancel handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// The subscription was cancelled (by either side) while the producer kept running.
    Cancel(Reason),
    /// The producer stopped; the subscription ended with it.
    Down(Reason),
}

impl CancelReason {
    /// The reason inside, whichever way the subscription ended.
    pub fn reason(&self) -> &Reason {
        match self {
            CancelReason::Cancel(r) | CancelReason::Down(r) => r,
        }
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelReason::Cancel(r) => write!(f, "cancelled ({r})"),
            CancelReason::Down(r) => write!(f, "producer down ({r})"),
        }
    }
}
