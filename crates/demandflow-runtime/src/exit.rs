//! A stage's exit reason: published once by the stage's task, read and awaited
//! by its handles and monitors.
//!
//! Every stage has one, idle ones included, so it is kept small. A
//! `tokio::sync::watch` channel did the same job, but its shared state (368
//! bytes, eight `Notify`s for many receivers of a value that changes many
//! times) was the largest allocation of an idle stage after its task. An exit
//! is set once; one `Notify` wakes whoever waits for it.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use demandflow_core::Reason;
use tokio::sync::Notify;

#[derive(Default)]
struct Shared {
    reason: OnceLock<Reason>,
    /// The task ended without publishing a reason: its runtime shut down and
    /// dropped it.
    gone: AtomicBool,
    changed: Notify,
}

/// The stage task's side: publishes the reason, or on drop that the task is gone.
pub(crate) struct ExitSender(Arc<Shared>);

/// The handles' side.
#[derive(Clone)]
pub(crate) struct ExitWatch(Arc<Shared>);

/// A new exit, not published yet.
pub(crate) fn exit_channel() -> (ExitSender, ExitWatch) {
    let shared = Arc::new(Shared::default());
    (ExitSender(shared.clone()), ExitWatch(shared))
}

impl ExitSender {
    /// Publishes `reason` (the first one published stays) and wakes the waiters.
    pub(crate) fn send(&self, reason: Reason) {
        let _ = self.0.reason.set(reason);
        self.0.changed.notify_waiters();
    }
}

impl Drop for ExitSender {
    fn drop(&mut self) {
        self.0.gone.store(true, Ordering::Release);
        self.0.changed.notify_waiters();
    }
}

impl ExitWatch {
    /// The reason, once published.
    pub(crate) fn reason(&self) -> Option<Reason> {
        self.0.reason.get().cloned()
    }

    /// `true` once a reason is published.
    pub(crate) fn is_set(&self) -> bool {
        self.0.reason.get().is_some()
    }

    /// Waits for the reason; [`Reason::Shutdown`] when the task ended without
    /// one (its runtime shut down). Cancel safe.
    pub(crate) async fn wait(&self) -> Reason {
        loop {
            // Registered before looking, so a publication between the look and
            // the wait still wakes it.
            let mut changed = pin!(self.0.changed.notified());
            changed.as_mut().enable();
            if let Some(reason) = self.0.reason.get() {
                return reason.clone();
            }
            if self.0.gone.load(Ordering::Acquire) {
                return Reason::Shutdown;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_hears_the_reason_published_after_it_started_waiting() {
        let (tx, rx) = exit_channel();
        assert_eq!(rx.reason(), None);
        let waiter = tokio::spawn({
            let rx = rx.clone();
            async move { rx.wait().await }
        });
        tokio::task::yield_now().await;
        tx.send(Reason::Normal);
        tx.send(Reason::Shutdown);
        assert_eq!(waiter.await.unwrap(), Reason::Normal);
        assert_eq!(rx.reason(), Some(Reason::Normal));
        assert!(rx.is_set());
        // Published, then dropped: the reason stays.
        drop(tx);
        assert_eq!(rx.wait().await, Reason::Normal);
    }

    #[tokio::test]
    async fn a_sender_dropped_without_a_reason_ends_the_wait_with_shutdown() {
        let (tx, rx) = exit_channel();
        let waiter = tokio::spawn({
            let rx = rx.clone();
            async move { rx.wait().await }
        });
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiter.await.unwrap(), Reason::Shutdown);
        assert_eq!(rx.reason(), None);
        assert!(!rx.is_set());
    }
}
