//! A consumer stage that feeds a keyed scheduler, asking only as room frees up.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use demandflow_core::{AutoDemand, CancelReason, DEFAULT_MAX_DEMAND, Reason, SubscriptionId};
use demandflow_runtime::{Consumer, ConsumerContext, DemandMode, Info};

use super::index::KeyIndex;
use super::scheduler::{Keyed, KeyedHandler, Listener, SpaceFreed};

/// A consumer stage that sends every event it receives to a [`Keyed`]
/// scheduler, under the key `key_of` gives it. Create one with
/// [`Keyed::consumer`] and start it with the runtime's `consumer(…).start()`.
///
/// With **manual** demand (the default) the stage asks its producers only for
/// as many events as the fullest partition has room for, minus what it has
/// asked and not yet received. Each subscription's own bounds hold as they do
/// for an automatic consumer (SEMANTICS.md §2): at most `max_demand` events are
/// asked and not yet received on it, and it is asked again once that pending
/// count has fallen to `min_demand` or below (or to nothing, when room was
/// short), as workers take events. So events never wait in the stage, the
/// scheduler's queues stay within their capacity, and the producers feel the
/// back-pressure as missing demand.
///
/// With **automatic** demand the runtime asks as usual (SEMANTICS.md §2), and
/// the stage waits, before it returns from a batch, until the scheduler has
/// room: back-pressure by waiting, still bounded.
///
/// The stage ends like any consumer (its cancel mode); the scheduler keeps
/// handling what was sent to it.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use demandflow_runtime::{SubscribeOptions, consumer, from_iter, producer};
/// use demandflow_keyed::{KeyedBatch, KeyedBuilder, KeyedHandler};
///
/// struct Count(AtomicU64);
///
/// impl KeyedHandler for Count {
///     type Key = u64;
///     type Event = u64;
///
///     async fn handle(&self, batch: &mut KeyedBatch<u64, u64>) {
///         self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let keyed = KeyedBuilder::dense(Count(AtomicU64::new(0))).start().unwrap();
/// let numbers = producer(from_iter(0..10_000_u64)).start().unwrap();
/// let feed = consumer(keyed.consumer(|n: &u64| n % 100)).start().unwrap();
/// feed.subscribe_to(&numbers, SubscribeOptions::new()).await.unwrap();
/// feed.wait().await; // the source ran out: the stage stopped normally
/// keyed.shutdown().await;
/// assert_eq!(keyed.handler().0.load(Ordering::Relaxed), 10_000);
/// # }
/// ```
pub struct KeyedConsumer<X: KeyIndex, H: KeyedHandler, F> {
    keyed: Keyed<X, H>,
    key_of: F,
    mode: DemandMode,
    /// Manual subscriptions, with their bounds and what is asked on each and
    /// not yet received.
    subs: Vec<ManualSub>,
    /// Rotates which subscription is asked first.
    next: usize,
    pending: Arc<AtomicBool>,
}

/// A manual subscription of a [`KeyedConsumer`]: its bounds, and the events
/// asked on it and not yet received.
#[derive(Debug)]
struct ManualSub {
    id: SubscriptionId,
    demand: AutoDemand,
}

impl<X: KeyIndex, H: KeyedHandler, F> fmt::Debug for KeyedConsumer<X, H, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedConsumer")
            .field("mode", &self.mode)
            .field("subscriptions", &self.subs)
            .finish()
    }
}

impl<X, H> Keyed<X, H>
where
    X: KeyIndex,
    H: KeyedHandler<Key = X::Key>,
{
    /// A consumer stage that sends what it receives to this scheduler, keyed by
    /// `key_of` (see [`KeyedConsumer`]).
    pub fn consumer<F>(&self, key_of: F) -> KeyedConsumer<X, H, F>
    where
        F: Fn(&H::Event) -> X::Key + Send + Sync + 'static,
    {
        KeyedConsumer {
            keyed: self.clone(),
            key_of,
            mode: DemandMode::Manual,
            subs: Vec::new(),
            next: 0,
            pending: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl<X, H, F> KeyedConsumer<X, H, F>
where
    X: KeyIndex,
    H: KeyedHandler<Key = X::Key>,
    F: Fn(&H::Event) -> X::Key + Send + Sync + 'static,
{
    /// How the stage asks: [`DemandMode::Manual`] (the default: only as room
    /// frees up) or [`DemandMode::Automatic`] (as the subscription options say,
    /// waiting for room before returning from a batch).
    pub fn demand_mode(mut self, mode: DemandMode) -> Self {
        self.mode = mode;
        self
    }

    /// Asks each manual subscription for what the scheduler has room for.
    fn refill(&mut self, ctx: &mut ConsumerContext) {
        if self.subs.is_empty() {
            return;
        }
        let room = self.keyed.min_room() as u64;
        let outstanding: u64 = self.subs.iter().map(|s| s.demand.pending()).sum();
        let mut budget = room.saturating_sub(outstanding);
        let count = self.subs.len();
        for i in 0..count {
            if budget == 0 {
                break;
            }
            let sub = &mut self.subs[(self.next + i) % count];
            // Within the subscription's bounds, as the core counts them for
            // every consumer: back up to `max` once pending is down to `min`,
            // and no dribbles when room is short.
            let ask = sub.demand.ask_within(budget);
            if ask > 0 {
                ctx.ask(sub.id, ask);
                budget -= ask;
            }
        }
        self.next = (self.next + 1) % count;
    }
}

impl<X, H, F> Consumer for KeyedConsumer<X, H, F>
where
    X: KeyIndex,
    H: KeyedHandler<Key = X::Key>,
    F: Fn(&H::Event) -> X::Key + Send + Sync + 'static,
{
    type Event = H::Event;

    async fn init(&mut self, ctx: &mut ConsumerContext) {
        self.keyed.add_listener(Listener {
            stage: ctx.info_sender(),
            pending: self.pending.clone(),
        });
    }

    async fn handle_subscribe(
        &mut self,
        sub: SubscriptionId,
        ctx: &mut ConsumerContext,
    ) -> DemandMode {
        if self.mode == DemandMode::Manual {
            // The runtime validated the options before calling us, so the
            // bounds are there; the defaults are only a fallback.
            let (max, min) = ctx
                .demand_bounds(sub)
                .unwrap_or((DEFAULT_MAX_DEMAND, DEFAULT_MAX_DEMAND / 2));
            self.subs.push(ManualSub {
                id: sub,
                demand: AutoDemand::new(max, min),
            });
            self.refill(ctx);
        }
        self.mode
    }

    async fn handle_events(
        &mut self,
        events: Vec<H::Event>,
        from: SubscriptionId,
        ctx: &mut ConsumerContext,
    ) {
        let n = events.len() as u64;
        if let Some(sub) = self.subs.iter_mut().find(|s| s.id == from) {
            sub.demand.receive(n);
        }
        let key_of = &self.key_of;
        let sent = self
            .keyed
            .send_all(events.into_iter().map(|e| (key_of(&e), e)))
            .await;
        if let Err(e) = sent {
            tracing::warn!(
                lost = n - e.0 as u64,
                "keyed scheduler closed: events not sent; the stage stops"
            );
            ctx.stop(Reason::error("keyed scheduler closed"));
            return;
        }
        self.refill(ctx);
    }

    async fn handle_info(&mut self, info: Info, ctx: &mut ConsumerContext) {
        if info.is::<SpaceFreed>() {
            self.pending.store(false, Ordering::Release);
            self.refill(ctx);
        } else {
            tracing::debug!(?info, "keyed consumer ignores info");
        }
    }

    async fn handle_cancel(
        &mut self,
        sub: SubscriptionId,
        _: &CancelReason,
        _: &mut ConsumerContext,
    ) {
        self.subs.retain(|s| s.id != sub);
    }

    async fn terminate(&mut self, _: &Reason) {
        self.keyed.remove_listener(&self.pending);
    }
}
