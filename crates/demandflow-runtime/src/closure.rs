//! Stages made from a closure, for the one-liners: [`map`], [`filter`],
//! [`filter_map`], [`flat_map`], [`inspect`] and the [`for_each`] consumer.
//!
//! Each function returns the same builder a hand-written stage gets
//! ([`ProducerConsumerBuilder`] or [`ConsumerBuilder`]), so a closure stage is a
//! real stage: it has its own task, is subscribed to and subscribed with the
//! usual [`SubscribeOptions`](crate::SubscribeOptions), takes the usual
//! options (`name`, `buffer_size`, a dispatcher), and keeps the demand rules of
//! SEMANTICS.md §2 — a filter that drops a whole chunk still asks for more.
//!
//! The closure runs inside the stage's task, once per event, in order; it may
//! keep state (`FnMut`). Reach for a struct implementing
//! [`ProducerConsumer`] or [`Consumer`] instead when the stage needs to
//! `.await` (write to a database, call a service), react to subscriptions, or
//! emit from a timer.

use std::marker::PhantomData;

use crate::builder::{ConsumerBuilder, ProducerConsumerBuilder};
use crate::{Consumer, ConsumerContext, Context, ProducerConsumer, SubscriptionId, consumer};

/// A producer-consumer that emits `f(event)` for every event. Built by [`map`].
pub struct Map<F, I> {
    f: F,
    _in: PhantomData<fn(I)>,
}

/// Starts configuring a producer-consumer that emits `f(event)` for every
/// event it receives.
///
/// # Examples
///
/// ```
/// use demandflow_runtime::{from_iter, producer, map, SubscribeOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let numbers = producer(from_iter(1..=3u64)).start()?;
/// let squares = map(|n: u64| n * n).start()?;
/// squares.subscribe_to(&numbers, SubscribeOptions::new()).await?;
///
/// let mut events = squares.producer().stream(SubscribeOptions::new())?;
/// let mut out: Vec<u64> = Vec::new();
/// while let Some(event) = events.next().await {
///     out.push(event);
/// }
/// assert_eq!(out, [1, 4, 9]);
/// # Ok(())
/// # }
/// ```
pub fn map<I, O, F>(f: F) -> ProducerConsumerBuilder<Map<F, I>>
where
    I: Send + 'static,
    O: Send + 'static,
    F: FnMut(I) -> O + Send + 'static,
{
    crate::producer_consumer(Map {
        f,
        _in: PhantomData,
    })
}

impl<I, O, F> ProducerConsumer for Map<F, I>
where
    I: Send + 'static,
    O: Send + 'static,
    F: FnMut(I) -> O + Send + 'static,
{
    type In = I;
    type Out = O;

    async fn handle_events(&mut self, events: Vec<I>, _: SubscriptionId, ctx: &mut Context<O>) {
        ctx.emit_vec(events.into_iter().map(&mut self.f).collect());
    }
}

/// A producer-consumer that passes on the events its predicate keeps. Built by
/// [`filter`].
pub struct Filter<F, T> {
    keep: F,
    _in: PhantomData<fn(T)>,
}

/// Starts configuring a producer-consumer that passes on only the events for
/// which `keep` returns `true`, in order.
///
/// # Examples
///
/// ```
/// use demandflow_runtime::{from_iter, producer, filter, SubscribeOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let numbers = producer(from_iter(1..=10u64)).start()?;
/// let even = filter(|n: &u64| n % 2 == 0).start()?;
/// even.subscribe_to(&numbers, SubscribeOptions::new()).await?;
///
/// let mut events = even.producer().stream(SubscribeOptions::new())?;
/// let mut out: Vec<u64> = Vec::new();
/// while let Some(event) = events.next().await {
///     out.push(event);
/// }
/// assert_eq!(out, [2, 4, 6, 8, 10]);
/// # Ok(())
/// # }
/// ```
pub fn filter<T, F>(keep: F) -> ProducerConsumerBuilder<Filter<F, T>>
where
    T: Send + 'static,
    F: FnMut(&T) -> bool + Send + 'static,
{
    crate::producer_consumer(Filter {
        keep,
        _in: PhantomData,
    })
}

impl<T, F> ProducerConsumer for Filter<F, T>
where
    T: Send + 'static,
    F: FnMut(&T) -> bool + Send + 'static,
{
    type In = T;
    type Out = T;

    async fn handle_events(&mut self, mut events: Vec<T>, _: SubscriptionId, ctx: &mut Context<T>) {
        // In place: the batch's allocation is the one passed on.
        events.retain(|event| (self.keep)(event));
        ctx.emit_vec(events);
    }
}

/// A producer-consumer that emits the `Some` results of its closure. Built by
/// [`filter_map`].
pub struct FilterMap<F, I> {
    f: F,
    _in: PhantomData<fn(I)>,
}

/// Starts configuring a producer-consumer that emits `x` for every event where
/// `f(event)` is `Some(x)` and drops the others.
///
/// # Examples
///
/// ```
/// use demandflow_runtime::{from_iter, producer, filter_map, SubscribeOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lines = producer(from_iter(["1", "two", "3"])).start()?;
/// let parsed = filter_map(|s: &str| s.parse::<u32>().ok()).start()?;
/// parsed.subscribe_to(&lines, SubscribeOptions::new()).await?;
///
/// let mut events = parsed.producer().stream(SubscribeOptions::new())?;
/// let mut out: Vec<u32> = Vec::new();
/// while let Some(event) = events.next().await {
///     out.push(event);
/// }
/// assert_eq!(out, [1, 3]);
/// # Ok(())
/// # }
/// ```
pub fn filter_map<I, O, F>(f: F) -> ProducerConsumerBuilder<FilterMap<F, I>>
where
    I: Send + 'static,
    O: Send + 'static,
    F: FnMut(I) -> Option<O> + Send + 'static,
{
    crate::producer_consumer(FilterMap {
        f,
        _in: PhantomData,
    })
}

impl<I, O, F> ProducerConsumer for FilterMap<F, I>
where
    I: Send + 'static,
    O: Send + 'static,
    F: FnMut(I) -> Option<O> + Send + 'static,
{
    type In = I;
    type Out = O;

    async fn handle_events(&mut self, events: Vec<I>, _: SubscriptionId, ctx: &mut Context<O>) {
        ctx.emit_vec(events.into_iter().filter_map(&mut self.f).collect());
    }
}

/// A producer-consumer that emits every item of what its closure returns.
/// Built by [`flat_map`].
pub struct FlatMap<F, I> {
    f: F,
    _in: PhantomData<fn(I)>,
}

/// Starts configuring a producer-consumer that emits every item of `f(event)`,
/// event after event.
///
/// One event may become many: a producer-consumer's buffer is unbounded by
/// default, so a closure that multiplies events grows that buffer while its
/// consumers are slower; bound it with `buffer_size` if that matters (overflow
/// is then dropped and reported, SEMANTICS.md §3).
///
/// # Examples
///
/// ```
/// use demandflow_runtime::{from_iter, producer, flat_map, SubscribeOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let counts = producer(from_iter([1u32, 0, 2])).start()?;
/// let repeated = flat_map(|n: u32| std::iter::repeat_n(n, n as usize)).start()?;
/// repeated.subscribe_to(&counts, SubscribeOptions::new()).await?;
///
/// let mut events = repeated.producer().stream(SubscribeOptions::new())?;
/// let mut out: Vec<u32> = Vec::new();
/// while let Some(event) = events.next().await {
///     out.push(event);
/// }
/// assert_eq!(out, [1, 2, 2]);
/// # Ok(())
/// # }
/// ```
pub fn flat_map<I, It, F>(f: F) -> ProducerConsumerBuilder<FlatMap<F, I>>
where
    I: Send + 'static,
    It: IntoIterator,
    It::Item: Send + 'static,
    F: FnMut(I) -> It + Send + 'static,
{
    crate::producer_consumer(FlatMap {
        f,
        _in: PhantomData,
    })
}

impl<I, It, F> ProducerConsumer for FlatMap<F, I>
where
    I: Send + 'static,
    It: IntoIterator,
    It::Item: Send + 'static,
    F: FnMut(I) -> It + Send + 'static,
{
    type In = I;
    type Out = It::Item;

    async fn handle_events(
        &mut self,
        events: Vec<I>,
        _: SubscriptionId,
        ctx: &mut Context<It::Item>,
    ) {
        ctx.emit_vec(events.into_iter().flat_map(&mut self.f).collect());
    }
}

/// A producer-consumer that shows every event to its closure and passes it on
/// unchanged. Built by [`inspect`].
pub struct Inspect<F, T> {
    f: F,
    _in: PhantomData<fn(T)>,
}

/// Starts configuring a producer-consumer that calls `f(&event)` for every
/// event and passes the event on unchanged (to count, log or check events
/// between two stages).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use demandflow_runtime::{from_iter, producer, inspect, SubscribeOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let seen = Arc::new(AtomicU64::new(0));
/// let counted = seen.clone();
/// let numbers = producer(from_iter(0..100u64)).start()?;
/// let tap = inspect(move |_: &u64| {
///     counted.fetch_add(1, Ordering::Relaxed);
/// })
/// .start()?;
/// tap.subscribe_to(&numbers, SubscribeOptions::new()).await?;
///
/// let mut events = tap.producer().stream(SubscribeOptions::new())?;
/// let mut out: Vec<u64> = Vec::new();
/// while let Some(event) = events.next().await {
///     out.push(event);
/// }
/// assert_eq!(out.len(), 100);
/// assert_eq!(seen.load(Ordering::Relaxed), 100);
/// # Ok(())
/// # }
/// ```
pub fn inspect<T, F>(f: F) -> ProducerConsumerBuilder<Inspect<F, T>>
where
    T: Send + 'static,
    F: FnMut(&T) + Send + 'static,
{
    crate::producer_consumer(Inspect {
        f,
        _in: PhantomData,
    })
}

impl<T, F> ProducerConsumer for Inspect<F, T>
where
    T: Send + 'static,
    F: FnMut(&T) + Send + 'static,
{
    type In = T;
    type Out = T;

    async fn handle_events(&mut self, events: Vec<T>, _: SubscriptionId, ctx: &mut Context<T>) {
        events.iter().for_each(&mut self.f);
        ctx.emit_vec(events);
    }
}

/// A consumer that calls its closure on every event. Built by [`for_each`].
pub struct ForEach<F, T> {
    f: F,
    _in: PhantomData<fn(T)>,
}

/// Starts configuring a consumer that calls `f(event)` for every event, in
/// order, asking for more as each chunk is done (SEMANTICS.md §2).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use demandflow_runtime::{from_iter, producer, for_each, CancelMode, Reason, SubscribeOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let total = Arc::new(AtomicU64::new(0));
/// let sum = total.clone();
/// let numbers = producer(from_iter(1..=100u64)).start()?;
/// let adder = for_each(move |n: u64| {
///     sum.fetch_add(n, Ordering::Relaxed);
/// })
/// .start()?;
/// adder.subscribe_to(&numbers, SubscribeOptions::new()).await?;
///
/// // The source ends normally and the (permanent) consumer follows it.
/// assert_eq!(adder.wait().await, Reason::Normal);
/// assert_eq!(total.load(Ordering::Relaxed), 5050);
/// # Ok(())
/// # }
/// ```
pub fn for_each<T, F>(f: F) -> ConsumerBuilder<ForEach<F, T>>
where
    T: Send + 'static,
    F: FnMut(T) + Send + 'static,
{
    consumer(ForEach {
        f,
        _in: PhantomData,
    })
}

impl<T, F> Consumer for ForEach<F, T>
where
    T: Send + 'static,
    F: FnMut(T) + Send + 'static,
{
    type Event = T;

    async fn handle_events(&mut self, events: Vec<T>, _: SubscriptionId, _: &mut ConsumerContext) {
        events.into_iter().for_each(&mut self.f);
    }
}
