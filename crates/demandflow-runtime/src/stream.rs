//! Consuming any producer as a `futures` [`Stream`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};

use demandflow_core::{
    AutoDemand, CancelReason, Reason, StageId, SubscribeOptions, SubscribeRefused, SubscriptionId,
    split_chunks,
};
use futures_core::Stream;
use tokio::sync::mpsc;

use crate::group::HandleGuard;
use crate::port::{ConsumerPort, ProducerPort};
use crate::{ProducerRef, SubscribeError};

enum StreamMsg<T> {
    Events(Vec<T>),
    Ended(CancelReason),
    Refused(SubscribeRefused),
}

struct StreamPort<T> {
    id: StageId,
    tx: mpsc::UnboundedSender<StreamMsg<T>>,
    /// Set when the stream is dropped: the reader stopped on purpose (`take(n)`),
    /// so events still on their way are discarded by choice, not lost.
    dropped: Arc<AtomicBool>,
}

impl<T: Send + 'static> ConsumerPort<T> for StreamPort<T> {
    fn id(&self) -> StageId {
        self.id
    }

    fn events(&self, _: SubscriptionId, events: Vec<T>) -> Result<(), Vec<T>> {
        match self.tx.send(StreamMsg::Events(events)) {
            Ok(()) => Ok(()),
            // Delivered to a reader that chose to stop reading.
            Err(_) if self.dropped.load(Ordering::Acquire) => Ok(()),
            Err(e) => Err(match e.0 {
                StreamMsg::Events(events) => events,
                _ => Vec::new(),
            }),
        }
    }

    fn cancelled(&self, _: SubscriptionId, reason: CancelReason) {
        let _ = self.tx.send(StreamMsg::Ended(reason));
    }

    fn subscribed(&self, _: SubscriptionId, result: Result<(), SubscribeRefused>) {
        if let Err(refused) = result {
            let _ = self.tx.send(StreamMsg::Refused(refused));
        }
    }
}

/// The events of a producer as a [`Stream`], with the producer's back-pressure.
///
/// Created by [`ProducerRef::stream`]. It asks exactly as an automatic consumer
/// does (SEMANTICS.md §2): `max_demand` at first, then again after each chunk has
/// been taken from the stream. The stream ends when the producer stops or cancels
/// the subscription; [`exit_reason`](EventStream::exit_reason) says why. Dropping
/// the stream cancels the subscription; events still on their way to it then
/// count as delivered and are discarded quietly, since the reader chose to stop
/// (`take(n)` is not a loss). While the stream exists, it keeps the
/// producer's pipeline alive like a handle.
pub struct EventStream<T: 'static> {
    rx: mpsc::UnboundedReceiver<StreamMsg<T>>,
    producer: Arc<dyn ProducerPort<T>>,
    sub: SubscriptionId,
    demand: AutoDemand,
    chunks: VecDeque<Vec<T>>,
    current: std::vec::IntoIter<T>,
    owed: u64,
    ended: Option<Reason>,
    dropped: Arc<AtomicBool>,
    _guard: Arc<HandleGuard>,
}

impl<T: Send + 'static> ProducerRef<T> {
    /// Subscribes a [`Stream`] to this producer.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::Config`] for invalid options and
    /// [`SubscribeError::ProducerNotRunning`] when the producer has stopped. A
    /// refusal by the dispatcher ends the stream at once, with the reason in
    /// [`EventStream::exit_reason`].
    pub fn stream(&self, options: SubscribeOptions<T>) -> Result<EventStream<T>, SubscribeError> {
        let (max, min) = options.demand_bounds()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let dropped = Arc::new(AtomicBool::new(false));
        let port = Arc::new(StreamPort {
            id: StageId::next(),
            tx,
            dropped: dropped.clone(),
        });
        let sub = SubscriptionId::next();
        if !self.port.subscribe(sub, port, options) {
            return Err(SubscribeError::ProducerNotRunning);
        }
        let mut demand = AutoDemand::new(max, min);
        self.port.ask(sub, demand.subscribe());
        Ok(EventStream {
            rx,
            producer: self.port.clone(),
            sub,
            demand,
            chunks: VecDeque::new(),
            current: Vec::new().into_iter(),
            owed: 0,
            ended: None,
            dropped,
            _guard: self.guard.clone(),
        })
    }
}

impl<T: Send + 'static> EventStream<T> {
    /// The next event, or `None` once the stream has ended (no stream
    /// combinator crate needed).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is only taken when the future completes.
    pub async fn next(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl<T: 'static> EventStream<T> {
    /// The subscription behind the stream.
    pub fn subscription(&self) -> SubscriptionId {
        self.sub
    }

    /// Why the stream ended, once it has.
    pub fn exit_reason(&self) -> Option<&Reason> {
        self.ended.as_ref()
    }
}

impl<T: 'static> Unpin for EventStream<T> {}

impl<T: Send + 'static> Stream for EventStream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        loop {
            if let Some(event) = this.current.next() {
                return Poll::Ready(Some(event));
            }
            if this.owed > 0 {
                // The previous chunk has been taken: ask as a consumer would once
                // its handler returned.
                this.producer.ask(this.sub, std::mem::take(&mut this.owed));
            }
            if let Some(chunk) = this.chunks.pop_front() {
                this.owed = this.demand.consume(chunk.len() as u64);
                this.current = chunk.into_iter();
                continue;
            }
            if this.ended.is_some() {
                return Poll::Ready(None);
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(StreamMsg::Events(events))) => {
                    let len = this.demand.chunk_len();
                    this.chunks.extend(split_chunks(events, len));
                }
                Poll::Ready(Some(StreamMsg::Ended(reason))) => {
                    this.ended = Some(reason.reason().clone());
                }
                Poll::Ready(Some(StreamMsg::Refused(refused))) => {
                    this.ended = Some(Reason::error(refused.to_string()));
                }
                Poll::Ready(None) => this.ended = Some(Reason::Shutdown),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T: 'static> Drop for EventStream<T> {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::Release);
        if self.ended.is_none() {
            self.producer
                .cancel(self.sub, CancelReason::Cancel(Reason::Normal), false);
        }
    }
}

impl<T: 'static> std::fmt::Debug for EventStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("sub", &self.sub)
            .field("ended", &self.ended)
            .finish()
    }
}
