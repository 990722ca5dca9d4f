//! Batchers: group messages into batches by key, emitted by size, timeout or flush.
//!
//! # Timers and memory
//!
//! A batcher keeps one *deadline queue* and one timer task, however many batch
//! keys are open. Every batch of a batcher has the same timeout, and a batch's
//! timer starts when the batch is created, so deadlines come in creation order:
//! the queue is a FIFO of `(deadline, key, generation)`, pushed when a batch is
//! created and popped at the front when the timer fires. A batch emitted by size
//! or flush leaves its entry behind; the generation tells the timer to skip it.
//! The queue therefore holds at most one entry per batch created within one
//! timeout, and the timer task sleeps until the front deadline only.
//!
//! An open batch costs one hash-map entry (its key, a `Vec` of its messages, a
//! generation and the batch-size accumulator: about 80 bytes plus the messages)
//! and one queue entry (about 40 bytes).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use demandflow_runtime::{
    CancelReason, Context, DemandMode, Info, InfoSender, Peer, ProducerConsumer, Reason,
    SubscriptionId,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::ack::AckSet;
use crate::handler::{Batch, BatchInfo, BatchTrigger};
use crate::message::{BatchKey, Failure, Message, Status};
use crate::metrics::Metrics;
use crate::upstream::Upstream;

/// A function deciding whether a batch is full (see [`BatchSize::Custom`]).
pub type BatchFull<T> = Arc<dyn Fn(&Message<T>, &mut u64) -> bool + Send + Sync>;

/// Decides when a batch is full.
pub enum BatchSize<T> {
    /// Full at this many messages.
    Count(usize),
    /// Full when the function returns `true`. It is called with each message
    /// as it is added and an accumulator that starts at 0 for every batch (for
    /// example to count bytes).
    Custom(BatchFull<T>),
}

impl<T> Clone for BatchSize<T> {
    fn clone(&self) -> Self {
        match self {
            BatchSize::Count(n) => BatchSize::Count(*n),
            BatchSize::Custom(f) => BatchSize::Custom(f.clone()),
        }
    }
}

impl<T> std::fmt::Debug for BatchSize<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchSize::Count(n) => f.debug_tuple("Count").field(n).finish(),
            BatchSize::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// The timer's note to its batcher: the front deadline has passed.
struct Tick;

struct Open<T> {
    messages: Vec<Message<T>>,
    generation: u64,
    acc: u64,
}

impl<T> Open<T> {
    /// Adds `message`; returns the batch's key and trigger when it must be emitted now.
    fn push(
        &mut self,
        message: Message<T>,
        size: &BatchSize<T>,
    ) -> Option<(BatchKey, BatchTrigger)> {
        let full = match size {
            BatchSize::Count(n) => self.messages.len() + 1 >= *n,
            BatchSize::Custom(f) => f(&message, &mut self.acc),
        };
        let trigger = if full {
            Some(BatchTrigger::Size)
        } else if message.wants_flush() {
            Some(BatchTrigger::Flush)
        } else {
            None
        };
        let emit = trigger.map(|trigger| (message.batch_key().clone(), trigger));
        self.messages.push(message);
        emit
    }
}

/// A fast hasher for batch keys (FxHash's multiply-rotate): keys are chosen by
/// the pipeline's own code, and a batcher looks one up for every message.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0_u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }
}

type KeyMap<V> = HashMap<BatchKey, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// One batcher stage.
pub(crate) struct BatcherStage<T> {
    name: Arc<str>,
    topology: Arc<str>,
    size: BatchSize<T>,
    timeout: Duration,
    metrics: Arc<Metrics>,
    open: KeyMap<Open<T>>,
    deadlines: VecDeque<(Instant, BatchKey, u64)>,
    generation: u64,
    timer: Option<watch::Sender<Option<Instant>>>,
    upstream: Upstream,
}

impl<T: Send + 'static> BatcherStage<T> {
    pub(crate) fn new(
        name: Arc<str>,
        topology: Arc<str>,
        size: BatchSize<T>,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        BatcherStage {
            name,
            topology,
            size,
            timeout,
            metrics,
            open: KeyMap::default(),
            deadlines: VecDeque::new(),
            generation: 0,
            timer: None,
            upstream: Upstream::default(),
        }
    }

    /// Adds the first message of `messages`, and the ones after it with the
    /// same key while its batch stays open: one hash lookup per run of a key.
    fn add_run(
        &mut self,
        messages: &mut std::iter::Peekable<std::vec::IntoIter<Message<T>>>,
        ctx: &mut Context<Batch<T>>,
    ) {
        let Some(first) = messages.next() else {
            return;
        };
        if !self.open.contains_key(first.batch_key()) {
            self.open_batch(first.batch_key().clone(), Vec::new());
        }
        let size = &self.size;
        let open = self
            .open
            .get_mut(first.batch_key())
            .expect("inserted above");
        let mut emit = open.push(first, size);
        while emit.is_none()
            && let Some(next) = messages.next_if(|m| m.batch_key() == open.messages[0].batch_key())
        {
            emit = open.push(next, size);
        }
        if let Some((key, trigger)) = emit {
            self.emit(key, trigger, ctx);
        }
    }

    /// Creates the open batch of `key`, holding `messages`, and starts its timer.
    fn open_batch(&mut self, key: BatchKey, messages: Vec<Message<T>>) -> &mut Open<T> {
        self.generation += 1;
        let deadline = Instant::now() + self.timeout;
        if self.deadlines.is_empty()
            && let Some(timer) = &self.timer
        {
            timer.send_replace(Some(deadline));
        }
        self.deadlines
            .push_back((deadline, key.clone(), self.generation));
        self.open.entry(key).or_insert(Open {
            messages,
            generation: self.generation,
            acc: 0,
        })
    }

    /// Adds `events` to batches of at most `n` messages, a run of same-key
    /// messages at a time: each run is moved into its batch in one go, and a
    /// chunk that starts a batch of its own becomes that batch without a copy.
    fn add_counted(&mut self, n: usize, events: Vec<Message<T>>, ctx: &mut Context<Batch<T>>) {
        let n = n.max(1);
        let (len, flush) = run(&events, n);
        if len == events.len() && !self.open.contains_key(events[0].batch_key()) {
            // The whole chunk starts a batch: it becomes the batch.
            let key = events[0].batch_key().clone();
            let full = len == n;
            self.open_batch(key.clone(), events);
            if full {
                self.emit(key, BatchTrigger::Size, ctx);
            } else if flush {
                self.emit(key, BatchTrigger::Flush, ctx);
            }
            return;
        }
        let mut events = events.into_iter();
        while let Some(first) = events.as_slice().first() {
            let key = first.batch_key().clone();
            let open = match self.open.get_mut(&key) {
                Some(open) => open,
                None => self.open_batch(key.clone(), Vec::with_capacity(n.min(4096))),
            };
            let room = n.saturating_sub(open.messages.len()).max(1);
            let (len, flush) = run(events.as_slice(), room);
            open.messages.extend(events.by_ref().take(len));
            if open.messages.len() >= n {
                self.emit(key, BatchTrigger::Size, ctx);
            } else if flush {
                self.emit(key, BatchTrigger::Flush, ctx);
            }
        }
    }

    fn emit(&mut self, key: BatchKey, trigger: BatchTrigger, ctx: &mut Context<Batch<T>>) {
        let Some(open) = self.open.remove(&key) else {
            return;
        };
        self.metrics.batch(trigger);
        tracing::trace!(
            topology = %self.topology,
            batcher = %self.name,
            size = open.messages.len(),
            ?trigger,
            "batch emitted"
        );
        ctx.emit(Batch {
            info: BatchInfo {
                batcher: self.name.clone(),
                batch_key: key,
                size: open.messages.len(),
                trigger,
            },
            messages: open.messages,
            metrics: self.metrics.clone(),
        });
    }

    /// Emits the batches whose deadline has passed and re-arms the timer.
    fn tick(&mut self, ctx: &mut Context<Batch<T>>) {
        let now = Instant::now();
        while let Some((deadline, key, generation)) = self.deadlines.front() {
            let live = self
                .open
                .get(key)
                .is_some_and(|open| open.generation == *generation);
            if live && *deadline > now {
                break;
            }
            let (_, key, _) = self.deadlines.pop_front().expect("front exists");
            if live {
                self.emit(key, BatchTrigger::Timeout, ctx);
            }
        }
        if let Some(timer) = &self.timer {
            timer.send_replace(self.deadlines.front().map(|(d, ..)| *d));
        }
    }

    /// Emits every open batch, oldest first.
    fn flush_all(&mut self, ctx: &mut Context<Batch<T>>) {
        while let Some((_, key, generation)) = self.deadlines.pop_front() {
            if self
                .open
                .get(&key)
                .is_some_and(|o| o.generation == generation)
            {
                self.emit(key, BatchTrigger::Flush, ctx);
            }
        }
        let keys: Vec<BatchKey> = self.open.keys().cloned().collect();
        for key in keys {
            self.emit(key, BatchTrigger::Flush, ctx);
        }
    }
}

/// How many messages at the front of `messages` go into one batch with room
/// for `room` more: those sharing the first one's key, up to `room`, ending
/// early with (and including) a message that asks to flush. The `bool` says
/// whether the run ends with such a message.
fn run<T>(messages: &[Message<T>], room: usize) -> (usize, bool) {
    let Some(first) = messages.first() else {
        return (0, false);
    };
    let key = first.batch_key();
    for (i, message) in messages.iter().take(room).enumerate() {
        if message.batch_key() != key {
            return (i, false);
        }
        if message.wants_flush() {
            return (i + 1, true);
        }
    }
    (messages.len().min(room), false)
}

/// Sleeps until the deadline the batcher last set, then tells it.
async fn run_timer(mut deadline: watch::Receiver<Option<Instant>>, batcher: InfoSender) {
    loop {
        let next = *deadline.borrow_and_update();
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {
                        if batcher.send(Tick).is_err() {
                            return;
                        }
                        // Wait for the batcher to set the next deadline.
                        if deadline.changed().await.is_err() {
                            return;
                        }
                    }
                    changed = deadline.changed() => if changed.is_err() { return },
                }
            }
            None => {
                if deadline.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

impl<T: Send + 'static> ProducerConsumer for BatcherStage<T> {
    type In = Message<T>;
    type Out = Batch<T>;

    async fn init(&mut self, ctx: &mut Context<Batch<T>>) {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(run_timer(rx, ctx.info_sender()));
        self.timer = Some(tx);
    }

    async fn handle_events(
        &mut self,
        events: Vec<Message<T>>,
        _from: SubscriptionId,
        ctx: &mut Context<Batch<T>>,
    ) {
        if events.is_empty() {
            return;
        }
        if let BatchSize::Count(n) = self.size {
            self.add_counted(n, events, ctx);
            return;
        }
        let mut messages = events.into_iter().peekable();
        while messages.peek().is_some() {
            self.add_run(&mut messages, ctx);
        }
    }

    async fn handle_subscribe(
        &mut self,
        peer: Peer,
        _sub: SubscriptionId,
        _ctx: &mut Context<Batch<T>>,
    ) -> DemandMode {
        if peer == Peer::Producer {
            self.upstream.subscribed();
        }
        DemandMode::Automatic
    }

    async fn handle_cancel(
        &mut self,
        peer: Peer,
        _sub: SubscriptionId,
        reason: &CancelReason,
        ctx: &mut Context<Batch<T>>,
    ) {
        if peer == Peer::Producer && self.upstream.cancelled(reason) {
            // Every processor is gone (the sources ended or the topology
            // is draining): nothing more will come, so flush.
            self.flush_all(ctx);
            ctx.stop_after_buffered(Reason::Normal);
        }
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut Context<Batch<T>>) {
        if info.is::<Tick>() {
            self.tick(ctx);
        }
    }

    async fn terminate(&mut self, _reason: &Reason) {
        // Stopped with batches still open: they cannot be finished.
        let mut acks = AckSet::default();
        for (_, open) in self.open.drain() {
            for mut message in open.messages {
                acks.add(&mut message.ack, Status::Failed(Failure::Shutdown));
            }
        }
        self.metrics.ack(&mut acks);
    }
}

impl<T> Drop for Batch<T> {
    fn drop(&mut self) {
        // A batch dropped before a batch handler took its messages (its stage
        // stopped): acknowledge them together as not finished.
        if self.messages.is_empty() {
            return;
        }
        let mut acks = AckSet::default();
        for mut message in self.messages.drain(..) {
            acks.add(&mut message.ack, Status::Failed(Failure::Shutdown));
        }
        self.metrics.ack(&mut acks);
    }
}
