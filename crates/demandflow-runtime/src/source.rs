//! Ready-made producers: from an iterator, from a `Stream`, and fed from outside.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};

use demandflow_core::{CancelReason, Reason, SubscriptionId};
use futures_core::Stream;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::PollSemaphore;

use crate::{Context, Info, InfoSender, NotRunning, Producer, SendError, TrySendError};

/// A producer emitting the items of an iterator, then ending normally.
///
/// Created by [`from_iter`]. Items are pulled only on demand. When the iterator
/// runs out, the producer stops with [`Reason::Normal`] once the last events have
/// been dispatched.
#[derive(Debug)]
pub struct IterSource<I> {
    iter: Option<I>,
    consumers: ConsumerCount,
}

/// A producer of the items of `iter` (GenStage's `from_enumerable`).
///
/// # Examples
///
/// ```
/// use demandflow_runtime::{from_iter, producer, SubscribeOptions};
/// use futures_core::Stream;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let numbers = producer(from_iter(1..=7)).start().unwrap();
/// let mut stream = numbers.stream(SubscribeOptions::new().max_demand(3)).unwrap();
/// let mut seen = Vec::new();
/// while let Some(n) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx)).await {
///     seen.push(n);
/// }
/// assert_eq!(seen, vec![1, 2, 3, 4, 5, 6, 7]);
/// # }
/// ```
pub fn from_iter<I: IntoIterator>(iter: I) -> IterSource<I::IntoIter> {
    IterSource {
        iter: Some(iter.into_iter()),
        consumers: ConsumerCount::default(),
    }
}

impl<I> IterSource<I> {
    /// Stops the producer (normally) when its last consumer cancels, instead of
    /// waiting for new consumers.
    #[must_use]
    pub fn stop_on_last_cancel(mut self, stop: bool) -> Self {
        self.consumers.stop_on_last_cancel = stop;
        self
    }
}

impl<I> Producer for IterSource<I>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
{
    type Event = I::Item;

    async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<I::Item>) {
        let Some(iter) = self.iter.as_mut() else {
            return;
        };
        let want = usize::try_from(demand).unwrap_or(usize::MAX);
        let before = ctx.out.len();
        ctx.out.reserve(want.min(4096));
        ctx.out.extend(iter.by_ref().take(want));
        // Ran short, or the iterator says it is empty (exact for ranges and
        // collections): end now rather than at the next ask.
        if ctx.out.len() - before < want || iter.size_hint().1 == Some(0) {
            self.iter = None;
            ctx.stop_after_buffered(Reason::Normal);
        }
    }

    async fn handle_subscribe(&mut self, _: SubscriptionId, _: &mut Context<I::Item>) {
        self.consumers.subscribed();
    }

    async fn handle_cancel(
        &mut self,
        _: SubscriptionId,
        _: &CancelReason,
        ctx: &mut Context<I::Item>,
    ) {
        self.consumers.cancelled(ctx);
    }
}

struct PumpShared {
    demand: AtomicU64,
    notify: Notify,
}

enum Pumped<T> {
    Items(Vec<T>),
    End,
}

/// How many consumers a source has, and whether it stops (normally) when the
/// last one cancels: shared by [`IterSource`] and [`StreamSource`].
#[derive(Debug, Default)]
struct ConsumerCount {
    stop_on_last_cancel: bool,
    consumers: usize,
}

impl ConsumerCount {
    fn subscribed(&mut self) {
        self.consumers += 1;
    }

    fn cancelled<E>(&mut self, ctx: &mut Context<E>) {
        self.consumers = self.consumers.saturating_sub(1);
        if self.stop_on_last_cancel && self.consumers == 0 {
            ctx.stop(Reason::Normal);
        }
    }
}

/// A producer emitting the items of a [`Stream`], then ending normally.
///
/// Created by [`from_stream`]. A helper task polls the stream, never for more
/// items than consumers have asked for, and hands them to the producer.
pub struct StreamSource<S: Stream> {
    stream: Option<S>,
    shared: Arc<PumpShared>,
    pump: Option<JoinHandle<()>>,
    consumers: ConsumerCount,
}

/// A producer of the items of `stream`.
pub fn from_stream<S: Stream>(stream: S) -> StreamSource<S> {
    StreamSource {
        stream: Some(stream),
        shared: Arc::new(PumpShared {
            demand: AtomicU64::new(0),
            notify: Notify::new(),
        }),
        pump: None,
        consumers: ConsumerCount::default(),
    }
}

impl<S: Stream> StreamSource<S> {
    /// Stops the producer (normally) when its last consumer cancels.
    #[must_use]
    pub fn stop_on_last_cancel(mut self, stop: bool) -> Self {
        self.consumers.stop_on_last_cancel = stop;
        self
    }
}

impl<S: Stream> Drop for StreamSource<S> {
    fn drop(&mut self) {
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
    }
}

async fn pump<S>(stream: S, shared: Arc<PumpShared>, to: InfoSender)
where
    S: Stream + Send + 'static,
    S::Item: Send + 'static,
{
    let mut stream = Box::pin(stream);
    loop {
        let want = loop {
            let notified = shared.notify.notified();
            let want = shared.demand.load(Ordering::Acquire);
            if want > 0 {
                break want;
            }
            notified.await;
        };
        let mut ended = false;
        let items = std::future::poll_fn(|cx: &mut TaskContext<'_>| {
            let mut items = Vec::new();
            while (items.len() as u64) < want {
                match stream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(item)) => items.push(item),
                    Poll::Ready(None) => {
                        ended = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if items.is_empty() && !ended {
                Poll::Pending
            } else {
                Poll::Ready(items)
            }
        })
        .await;
        shared
            .demand
            .fetch_sub(items.len() as u64, Ordering::AcqRel);
        if !items.is_empty() && to.send(Pumped::Items(items)).is_err() {
            return;
        }
        if ended {
            let _ = to.send(Pumped::<S::Item>::End);
            return;
        }
    }
}

impl<S> Producer for StreamSource<S>
where
    S: Stream + Send + 'static,
    S::Item: Send + 'static,
{
    type Event = S::Item;

    async fn init(&mut self, ctx: &mut Context<S::Item>) {
        if let Some(stream) = self.stream.take() {
            let task = pump(stream, self.shared.clone(), ctx.info_sender());
            self.pump = Some(tokio::spawn(task));
        }
    }

    async fn handle_demand(&mut self, demand: u64, _: &mut Context<S::Item>) {
        self.shared.demand.fetch_add(demand, Ordering::AcqRel);
        self.shared.notify.notify_one();
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut Context<S::Item>) {
        match info.downcast::<Pumped<S::Item>>() {
            Ok(Pumped::Items(items)) => ctx.emit_vec(items),
            Ok(Pumped::End) => ctx.stop_after_buffered(Reason::Normal),
            Err(other) => tracing::debug!(?other, "stream source ignores info"),
        }
    }

    async fn handle_subscribe(&mut self, _: SubscriptionId, _: &mut Context<S::Item>) {
        self.consumers.subscribed();
    }

    async fn handle_cancel(
        &mut self,
        _: SubscriptionId,
        _: &CancelReason,
        ctx: &mut Context<S::Item>,
    ) {
        self.consumers.cancelled(ctx);
    }

    async fn terminate(&mut self, _: &Reason) {
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
    }
}

struct PushShared<T> {
    queue: Mutex<VecDeque<T>>,
    permits: Arc<Semaphore>,
    stage: Mutex<Option<InfoSender>>,
    wake_pending: AtomicBool,
    senders: AtomicUsize,
}

impl<T: Send + 'static> PushShared<T> {
    fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel)
            && let Some(stage) = self.stage.lock().as_ref()
        {
            let _ = stage.send(PushWake);
        }
    }

    fn push(&self, item: T) {
        self.queue.lock().push_back(item);
        self.wake();
    }
}

struct PushWake;

/// A producer fed from outside through [`Pusher`]s, with back-pressure.
///
/// Created by [`push`]. At most `capacity` pushed events wait for demand; a
/// [`Pusher::send`] beyond that waits until consumers ask. When every `Pusher`
/// has been dropped, the producer emits what is left and stops normally.
pub struct PushSource<T> {
    shared: Arc<PushShared<T>>,
    demand: u64,
    finished: bool,
    draining: bool,
}

/// Sends events into a running [`PushSource`] from any task, with back-pressure.
///
/// It is also a [`futures_sink::Sink`], so it plugs into stream combinators.
pub struct Pusher<T> {
    shared: Arc<PushShared<T>>,
    poll: PollSemaphore,
    reserved: bool,
}

/// A producer fed from outside, and the first handle to feed it.
///
/// `capacity` bounds the events waiting for demand, so memory stays
/// bounded however fast the outside pushes.
///
/// # Examples
///
/// ```
/// use std::num::NonZeroUsize;
/// use demandflow_runtime::{producer, push, SubscribeOptions};
/// use futures_core::Stream;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (source, pusher) = push::<u32>(NonZeroUsize::new(2).unwrap());
/// let events = producer(source).start().unwrap();
/// let mut stream = events.stream(SubscribeOptions::new().max_demand(10)).unwrap();
/// tokio::spawn(async move {
///     for n in 0..5 {
///         pusher.send(n).await.unwrap(); // waits while 2 events are unclaimed
///     }
///     // dropping the last pusher ends the producer normally
/// });
/// let mut seen = Vec::new();
/// while let Some(n) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx)).await {
///     seen.push(n);
/// }
/// assert_eq!(seen, vec![0, 1, 2, 3, 4]);
/// # }
/// ```
pub fn push<T: Send + 'static>(capacity: NonZeroUsize) -> (PushSource<T>, Pusher<T>) {
    let permits = Arc::new(Semaphore::new(capacity.get()));
    let shared = Arc::new(PushShared {
        queue: Mutex::new(VecDeque::new()),
        permits: permits.clone(),
        stage: Mutex::new(None),
        wake_pending: AtomicBool::new(false),
        senders: AtomicUsize::new(1),
    });
    (
        PushSource {
            shared: shared.clone(),
            demand: 0,
            finished: false,
            draining: false,
        },
        Pusher {
            shared,
            poll: PollSemaphore::new(permits),
            reserved: false,
        },
    )
}

impl<T: Send + 'static> PushSource<T> {
    fn drain(&mut self, ctx: &mut Context<T>) {
        let mut queue = self.shared.queue.lock();
        let n = usize::try_from(self.demand)
            .unwrap_or(usize::MAX)
            .min(queue.len());
        if n > 0 {
            ctx.out.extend(queue.drain(..n));
            self.demand -= n as u64;
            self.shared.permits.add_permits(n);
        }
        let closed = self.draining || self.shared.senders.load(Ordering::Acquire) == 0;
        if queue.is_empty() && closed && !self.finished {
            self.finished = true;
            let reason = if self.draining {
                Reason::Shutdown
            } else {
                Reason::Normal
            };
            ctx.stop_after_buffered(reason);
        }
    }
}

impl<T: Send + 'static> Producer for PushSource<T> {
    type Event = T;

    async fn init(&mut self, ctx: &mut Context<T>) {
        *self.shared.stage.lock() = Some(ctx.info_sender());
        self.shared.wake_pending.store(false, Ordering::Release);
        self.drain(ctx);
    }

    async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<T>) {
        self.demand = self.demand.saturating_add(demand);
        self.drain(ctx);
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut Context<T>) {
        if info.is::<PushWake>() {
            self.shared.wake_pending.store(false, Ordering::Release);
            self.drain(ctx);
        }
    }

    /// Refuses new pushes at once; what was already pushed is still delivered.
    async fn handle_drain(&mut self, ctx: &mut Context<T>) {
        self.shared.permits.close();
        self.draining = true;
        self.drain(ctx);
    }

    async fn terminate(&mut self, _: &Reason) {
        self.shared.permits.close();
        *self.shared.stage.lock() = None;
    }
}

impl<T> Drop for PushSource<T> {
    /// Closes the pushers whether or not the source ever ran (starting its stage
    /// may have failed): a send then hands its event back instead of waiting for
    /// a stage that will never take it.
    fn drop(&mut self) {
        self.shared.permits.close();
        *self.shared.stage.lock() = None;
    }
}

impl<T: Send + 'static> Pusher<T> {
    /// Sends `event`, waiting while `capacity` events are already waiting for demand.
    ///
    /// # Errors
    ///
    /// Hands `event` back when the producer has stopped, or never ran (its
    /// stage failed to start).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, `event` was not sent.
    pub async fn send(&self, event: T) -> Result<(), SendError<T>> {
        match self.shared.permits.acquire().await {
            Ok(permit) => {
                permit.forget();
                self.shared.push(event);
                Ok(())
            }
            Err(_) => Err(SendError(event)),
        }
    }

    /// Sends `event` if there is room, without waiting.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when `capacity` events are waiting, and
    /// [`TrySendError::Closed`] when the producer has stopped; both hand `event` back.
    pub fn try_send(&self, event: T) -> Result<(), TrySendError<T>> {
        match self.shared.permits.try_acquire() {
            Ok(permit) => {
                permit.forget();
                self.shared.push(event);
                Ok(())
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => Err(TrySendError::Full(event)),
            Err(tokio::sync::TryAcquireError::Closed) => Err(TrySendError::Closed(event)),
        }
    }

    /// `true` once the producer has stopped, or when its source was dropped
    /// without ever running.
    pub fn is_closed(&self) -> bool {
        self.shared.permits.is_closed()
    }
}

impl<T> Clone for Pusher<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::AcqRel);
        Pusher {
            shared: self.shared.clone(),
            poll: self.poll.clone(),
            reserved: false,
        }
    }
}

impl<T> Drop for Pusher<T> {
    fn drop(&mut self) {
        if self.reserved {
            self.shared.permits.add_permits(1);
        }
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last pusher: let the source finish.
            self.shared.wake_pending.store(true, Ordering::Release);
            if let Some(stage) = self.shared.stage.lock().as_ref() {
                let _ = stage.0.info(Info::new(PushWake), None);
            }
        }
    }
}

impl<T> std::fmt::Debug for Pusher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("closed", &self.shared.permits.is_closed())
            .finish()
    }
}

impl<T: Send + 'static> futures_sink::Sink<T> for Pusher<T> {
    type Error = NotRunning;

    fn poll_ready(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<(), NotRunning>> {
        if self.reserved {
            return Poll::Ready(Ok(()));
        }
        match self.poll.poll_acquire(cx) {
            Poll::Ready(Some(permit)) => {
                permit.forget();
                self.reserved = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(None) => Poll::Ready(Err(NotRunning)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn start_send(mut self: Pin<&mut Self>, event: T) -> Result<(), NotRunning> {
        if !self.reserved {
            // poll_ready was not called first: take a permit if one is free.
            match self.shared.permits.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(_) => return Err(NotRunning),
            }
        }
        self.reserved = false;
        self.shared.push(event);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), NotRunning>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), NotRunning>> {
        Poll::Ready(Ok(()))
    }
}
