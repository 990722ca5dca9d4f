//! A loom model of the mailbox queue's send / take / wake protocol.
//!
//! Each test is a small scenario whose threads loom runs in every order it can
//! tell apart, up to a preemption bound, with the queue's lock and `Arc`
//! switched to loom's (see `sync` in the parent module). A receiver that waits
//! through [`block_on`] parks until its waker is called, so a lost wake-up shows
//! up as a deadlock that fails the test, not as a hang.
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p demandflow-runtime --release --lib queue::loom`;
//! `LOOM_MAX_PREEMPTIONS=n` widens (or narrows) the search.

use std::task::{Context, Poll, Wake, Waker};

use ::loom::future::block_on;
use ::loom::model::Builder;
use ::loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use ::loom::thread;

use super::{Arc, Sender, channel};

/// Explores `scenario` with a bounded number of preemptions per execution.
///
/// Three preemptions cover every interleaving these scenarios can produce
/// that matters to the protocol (each thread takes the lock at most a few
/// times) while keeping the whole model to seconds.
fn model(scenario: impl Fn() + Sync + Send + 'static) {
    let mut builder = Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(scenario);
}

#[test]
fn senders_on_several_threads_lose_nothing_duplicate_nothing_and_keep_their_order() {
    model(|| {
        let (tx, mut rx) = channel();
        let senders: Vec<_> = (0..2_usize)
            .map(|sender| {
                let tx = tx.clone();
                thread::spawn(move || {
                    for seq in 0..2_u32 {
                        tx.send((sender, seq)).unwrap();
                    }
                })
            })
            .collect();
        // Dropping senders does not close the queue: what they sent stays.
        drop(tx);

        let mut next = [0_u32; 2];
        for _ in 0..4 {
            // Parks until woken whenever the queue is empty.
            let (sender, seq) = block_on(rx.recv());
            assert_eq!(seq, next[sender], "sender {sender}'s values out of order");
            next[sender] += 1;
        }
        assert_eq!(rx.try_recv(), None, "a value was delivered twice");
        for sender in senders {
            sender.join().unwrap();
        }
    });
}

#[test]
fn a_receiver_that_polls_again_with_a_new_waker_is_woken_through_it() {
    model(|| latest_waker_is_woken(false));
}

#[test]
fn a_receiver_that_polls_again_with_the_same_waker_is_woken_through_it() {
    model(|| latest_waker_is_woken(true));
}

/// The receiver polls twice while a sender sends one value; if both polls
/// found the queue empty, the send must wake the waker of the second poll.
fn latest_waker_is_woken(same_waker: bool) {
    let (tx, mut rx) = channel::<u32>();
    let sender = thread::spawn(move || tx.send(7).unwrap());

    let first = Recorder::new();
    let second = if same_waker {
        first.clone()
    } else {
        Recorder::new()
    };
    let mut received = match rx.poll_recv(&mut Context::from_waker(&first.waker())) {
        Poll::Ready(value) => Some(value),
        Poll::Pending => match rx.poll_recv(&mut Context::from_waker(&second.waker())) {
            Poll::Ready(value) => Some(value),
            Poll::Pending => None,
        },
    };
    sender.join().unwrap();

    if received.is_none() {
        assert_eq!(second.wakes(), 1, "the waiting receiver was not woken");
        received = match rx.poll_recv(&mut Context::from_waker(&second.waker())) {
            Poll::Ready(value) => Some(value),
            Poll::Pending => None,
        };
    }
    assert_eq!(received, Some(7));
    let wakes = if same_waker {
        first.wakes()
    } else {
        first.wakes() + second.wakes()
    };
    assert!(wakes <= 1, "one send woke the receiver {wakes} times");
}

#[test]
fn a_send_racing_close_is_either_queued_or_handed_back() {
    model(|| {
        let (tx, mut rx) = channel();
        tx.send(1).unwrap();
        let racing = {
            let tx = tx.clone();
            thread::spawn(move || tx.send(2))
        };
        rx.close();
        assert_eq!(tx.send(3), Err(3), "a send after close was accepted");

        let raced = racing.join().unwrap();
        // Messages queued before the close stay for `try_recv`.
        assert_eq!(rx.try_recv(), Some(1));
        match raced {
            Ok(()) => assert_eq!(rx.try_recv(), Some(2)),
            Err(value) => assert_eq!(value, 2),
        }
        assert_eq!(rx.try_recv(), None);
    });
}

#[test]
fn dropping_the_receiver_frees_every_message_once_and_refuses_later_sends() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = channel();
        // Messages that own a sender of their own queue and send on it when
        // dropped: a cycle the receiver's drop must break, and a send that
        // would deadlock if messages were dropped under the lock.
        let self_sending = || {
            let sent = tx.send(Message::new(&drops, Some(tx.clone())));
            assert!(sent.is_ok(), "the queue refused a send while open");
        };
        self_sending();
        self_sending();
        // Takes both under one lock; the second stays in the receiver's hands.
        let first = rx.try_recv().expect("two messages were queued");
        // This one stays in the shared queue.
        self_sending();

        let racing = {
            let tx = tx.clone();
            let drops = drops.clone();
            thread::spawn(move || {
                if let Err(refused) = tx.send(Message::new(&drops, None)) {
                    drop(refused);
                }
            })
        };
        drop(rx);
        drop(first);
        racing.join().unwrap();
        assert!(
            tx.send(Message::new(&drops, None)).is_err(),
            "a send after the receiver dropped was accepted"
        );

        // The three self-sending messages, the one each of them sent while
        // dropped, the racing one and the refused one: each dropped once,
        // whether the racing send was queued or handed back.
        assert_eq!(drops.load(SeqCst), 8);
    });
}

/// A message that counts its drops and may send one more message when dropped.
struct Message {
    drops: Arc<AtomicUsize>,
    send_on_drop: Option<Sender<Message>>,
}

impl Message {
    fn new(drops: &Arc<AtomicUsize>, send_on_drop: Option<Sender<Message>>) -> Self {
        Message {
            drops: drops.clone(),
            send_on_drop,
        }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        self.drops.fetch_add(1, SeqCst);
        if let Some(tx) = self.send_on_drop.take() {
            // Handed back (and dropped here) once the receiver is gone.
            let _ = tx.send(Message::new(&self.drops, None));
        }
    }
}

/// A waker that counts how often it was woken.
#[derive(Clone)]
struct Recorder(std::sync::Arc<WakeCount>);

struct WakeCount(AtomicUsize);

impl Wake for WakeCount {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

impl Recorder {
    fn new() -> Self {
        Recorder(std::sync::Arc::new(WakeCount(AtomicUsize::new(0))))
    }

    fn waker(&self) -> Waker {
        Waker::from(self.0.clone())
    }

    fn wakes(&self) -> usize {
        self.0.0.load(SeqCst)
    }
}
