//! A stage's mailbox queue: unbounded, many senders, one receiver.
//!
//! Every message between stages goes through one of these, so it is built for
//! the stage loop rather than for general use. A sender takes a lock, appends,
//! and wakes the receiver only if it is waiting; the receiver takes *everything*
//! queued under one lock and then hands it out without locking, so a burst of
//! asks or batches costs one lock and at most one wake-up. Receiving counts
//! towards tokio's cooperative budget, like tokio's own channels, so a stage
//! whose mailbox never empties still lets the other tasks of its worker run.
//!
//! The send / take / wake protocol is model-checked with loom: built with
//! `--cfg loom`, the queue's lock and `Arc` become loom's, and the model in
//! `queue/loom.rs` explores the interleavings of concurrent senders, a waiting
//! receiver, closing and dropping. Run it with
//! `RUSTFLAGS="--cfg loom" cargo test -p demandflow-runtime --release --lib queue::loom`.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Context, Poll, Waker, ready};

use sync::{Arc, Mutex};

/// The queue's lock and shared pointer: parking_lot's and std's in every
/// normal build, loom's under `--cfg loom` so the model can schedule them.
#[cfg(not(loom))]
mod sync {
    pub(super) use parking_lot::Mutex;
    pub(super) use std::sync::Arc;
}

#[cfg(loom)]
mod sync {
    pub(super) use loom::sync::Arc;

    /// loom's mutex with parking_lot's signature: `lock` returns the guard.
    pub(super) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(super) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(super) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0
                .lock()
                .expect("no thread panics while holding the queue's lock")
        }
    }
}

struct State<T> {
    queue: VecDeque<T>,
    /// The receiver's waker while it waits for an empty queue to fill.
    waker: Option<Waker>,
    closed: bool,
}

/// A new queue's two ends.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(State {
        queue: VecDeque::new(),
        waker: None,
        closed: false,
    }));
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver {
            shared,
            local: VecDeque::new(),
        },
    )
}

/// The sending end; cloning it adds a sender.
pub(crate) struct Sender<T> {
    shared: Arc<Mutex<State<T>>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Sender<T> {
    /// Appends `value`; hands it back when the receiver has closed or gone.
    pub(crate) fn send(&self, value: T) -> Result<(), T> {
        let waker = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(value);
            }
            state.queue.push_back(value);
            state.waker.take()
        };
        // Woken outside the lock, so the receiver never waits for it.
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

/// The receiving end.
pub(crate) struct Receiver<T> {
    shared: Arc<Mutex<State<T>>>,
    /// What the last lock took, handed out in order before locking again.
    local: VecDeque<T>,
}

impl<T> Receiver<T> {
    /// The next message, waiting for one if the queue is empty.
    pub(crate) async fn recv(&mut self) -> T {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        if let Some(value) = self.local.pop_front() {
            coop.made_progress();
            return Poll::Ready(value);
        }
        let mut state = self.shared.lock();
        if !state.queue.is_empty() {
            std::mem::swap(&mut state.queue, &mut self.local);
            drop(state);
            coop.made_progress();
            return Poll::Ready(
                self.local
                    .pop_front()
                    .expect("swapped in a non-empty queue"),
            );
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next message if one was taken with the last lock, without locking.
    pub(crate) fn try_local(&mut self) -> Option<T> {
        self.local.pop_front()
    }

    /// The next message if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        if let Some(value) = self.local.pop_front() {
            return Some(value);
        }
        let mut state = self.shared.lock();
        if state.queue.is_empty() {
            return None;
        }
        std::mem::swap(&mut state.queue, &mut self.local);
        drop(state);
        self.local.pop_front()
    }

    /// Refuses every later send; what is queued stays for [`Receiver::try_recv`].
    pub(crate) fn close(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.waker.take()
        };
        drop(waker);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Dropped outside the lock: messages may own senders of this very queue.
        let (queue, waker) = {
            let mut state = self.shared.lock();
            state.closed = true;
            (std::mem::take(&mut state.queue), state.waker.take())
        };
        drop(queue);
        drop(waker);
    }
}

// The model; the tests below use real threads and a tokio runtime, which loom's
// primitives do not allow.
#[cfg(all(test, loom))]
mod loom;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_in_order_across_locks() {
        let (tx, mut rx) = channel();
        for i in 0..3 {
            tx.send(i).unwrap();
        }
        assert_eq!(rx.recv().await, 0);
        // Sent while the first three are in the receiver's local queue.
        tx.send(3).unwrap();
        assert_eq!(rx.recv().await, 1);
        assert_eq!(rx.recv().await, 2);
        assert_eq!(rx.recv().await, 3);
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send_from_another_task() {
        let (tx, mut rx) = channel();
        let sender = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send("hello").unwrap();
        });
        assert_eq!(rx.recv().await, "hello");
        sender.await.unwrap();
    }

    #[test]
    fn after_close_sends_fail_and_queued_messages_remain() {
        let (tx, mut rx) = channel();
        tx.send(1).unwrap();
        rx.close();
        assert_eq!(tx.send(2), Err(2));
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn dropping_the_receiver_refuses_sends_and_frees_what_was_queued() {
        let (tx, rx) = channel();
        let value = Arc::new(());
        tx.send(value.clone()).unwrap();
        drop(rx);
        assert_eq!(Arc::strong_count(&value), 1);
        assert!(tx.send(value).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiver_that_waits_between_messages_misses_no_wake_up() {
        // Sender and receiver race on every message: each send may find the
        // receiver busy, about to wait, or waiting.
        let (tx, mut rx) = channel();
        let (ack_tx, mut ack_rx) = channel();
        let sender = tokio::spawn(async move {
            for i in 0..20_000_u32 {
                tx.send(i).unwrap();
                if i % 3 == 0 {
                    assert_eq!(ack_rx.recv().await, i);
                }
            }
        });
        for i in 0..20_000_u32 {
            assert_eq!(rx.recv().await, i);
            if i % 3 == 0 {
                ack_tx.send(i).unwrap();
            }
        }
        sender.await.unwrap();
    }

    #[test]
    fn many_threads_lose_nothing() {
        let (tx, mut rx) = channel();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        tx.send((t, i)).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let mut next = [0; 4];
        while let Some((t, i)) = rx.try_recv() {
            assert_eq!(i, next[t], "per-sender order");
            next[t] += 1;
        }
        assert_eq!(next, [10_000; 4]);
    }
}
