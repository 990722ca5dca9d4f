//! Typed calls and messages: a call is answered in its place behind the events
//! emitted before it, times out without stopping the stage, and fails on a
//! stopped stage (SEMANTICS.md §3, "Info ordering").

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use demandflow::{
    CallError, ConsumerContext, Context, HandleCall, Producer, Reason, Request, SubscribeOptions,
    consumer, producer,
};
use support::{Recorder, batches, eventually};

/// Long enough never to fire in a test that expects a reply.
const NO_TIMEOUT: Duration = Duration::from_secs(3600);

/// Emits only what it is told to, and counts what it emitted.
struct Source {
    emitted: u64,
}

impl Producer for Source {
    type Event = u64;

    async fn handle_demand(&mut self, _: u64, _: &mut Context<u64>) {}
}

/// A typed message: emit these events.
struct Emit(Vec<u64>);

impl Request for Emit {
    type Reply = ();
}

/// How many events has the stage emitted?
struct Emitted;

impl Request for Emitted {
    type Reply = u64;
}

/// A request no stage registers.
struct Unknown;

impl Request for Unknown {
    type Reply = ();
}

impl HandleCall<Emit, u64> for Source {
    async fn handle_call(&mut self, Emit(events): Emit, ctx: &mut Context<u64>) {
        self.emitted += events.len() as u64;
        ctx.emit_vec(events);
    }
}

impl HandleCall<Emitted, u64> for Source {
    async fn handle_call(&mut self, _: Emitted, _: &mut Context<u64>) -> u64 {
        self.emitted
    }
}

fn source() -> demandflow::ProducerRef<u64> {
    producer(Source { emitted: 0 })
        .answers::<Emit>()
        .answers::<Emitted>()
        .start()
        .unwrap()
}

/// Polls `future` once: its output if it is ready.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *future).poll(cx) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        })
    })
    .await
}

#[tokio::test]
async fn a_call_is_answered_after_the_events_emitted_before_it_were_dispatched() {
    let p = source();
    p.cast(Emit(vec![1, 2, 3])).unwrap();
    // Sent now (first poll), answered only once 1, 2, 3 have gone out.
    let mut call = Box::pin(p.call(Emitted, NO_TIMEOUT));
    assert_eq!(poll_once(&mut call).await, None);
    // Emitted after the call: not counted in its reply.
    p.cast(Emit(vec![4])).unwrap();
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 3);
    assert_eq!(poll_once(&mut call).await, None);

    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    c.ask(sub, 2).unwrap();
    eventually(|| batches(&log).len() == 1).await;
    p.stats().await.unwrap();
    // 3 is still buffered before the call.
    assert_eq!(poll_once(&mut call).await, None);

    c.ask(sub, 2).unwrap();
    assert_eq!(call.await, Ok(3));
    // The events before the call reached the consumer's mailbox before the
    // reply was sent: once the consumer has handled its mailbox up to now,
    // they are there; the event emitted after the call follows.
    c.stats().await.unwrap();
    assert_eq!(batches(&log)[..2], [vec![1, 2], vec![3]]);
    eventually(|| batches(&log).len() == 3).await;
    assert_eq!(batches(&log), vec![vec![1, 2], vec![3], vec![4]]);
    assert_eq!(p.call(Emitted, NO_TIMEOUT).await, Ok(4));
}

#[tokio::test(start_paused = true)]
async fn a_call_that_times_out_returns_an_error_and_the_stage_keeps_running() {
    let p = source();
    p.cast(Emit(vec![7, 8])).unwrap();
    // Queued behind two events nobody takes: no reply within a second.
    let before = tokio::time::Instant::now();
    assert_eq!(
        p.call(Emitted, Duration::from_secs(1)).await,
        Err(CallError::Timeout)
    );
    assert_eq!(before.elapsed(), Duration::from_secs(1));
    assert!(p.is_running());

    let (rec, log) = Recorder::new();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    eventually(|| batches(&log).concat() == vec![7, 8]).await;
    // The timed-out request was still handled in its turn; the stage answers
    // the next call at once.
    assert_eq!(p.call(Emitted, Duration::from_secs(1)).await, Ok(2));
    p.cast(Emit(vec![9])).unwrap();
    assert_eq!(p.call(Emitted, Duration::from_secs(1)).await, Ok(3));
    eventually(|| batches(&log).concat() == vec![7, 8, 9]).await;
    assert!(p.is_running());
}

#[tokio::test]
async fn a_call_to_a_stopped_stage_fails_with_stopped() {
    let p = source();
    p.stop(Reason::Shutdown).await.unwrap();
    assert_eq!(p.call(Emitted, NO_TIMEOUT).await, Err(CallError::Stopped));
    assert!(p.cast(Emit(vec![1])).is_err());
}

#[tokio::test]
async fn a_call_waiting_behind_events_fails_with_stopped_when_the_stage_stops() {
    let p = source();
    p.cast(Emit(vec![1, 2])).unwrap();
    let mut call = Box::pin(p.call(Emitted, NO_TIMEOUT));
    assert_eq!(poll_once(&mut call).await, None);
    p.stop(Reason::Error("stopped by the test".into()))
        .await
        .unwrap();
    assert_eq!(call.await, Err(CallError::Stopped));
}

#[tokio::test]
async fn a_request_the_stage_did_not_register_is_refused() {
    let p = source();
    assert_eq!(p.call(Unknown, NO_TIMEOUT).await, Err(CallError::Unhandled));
    // A cast of it is dropped (with a warning); the stage keeps running.
    p.cast(Unknown).unwrap();
    assert_eq!(p.call(Emitted, NO_TIMEOUT).await, Ok(0));
    // Registering is per stage: the same type unregistered elsewhere is refused.
    let bare = producer(Source { emitted: 0 }).start().unwrap();
    assert_eq!(
        bare.call(Emitted, NO_TIMEOUT).await,
        Err(CallError::Unhandled)
    );
}

/// How many events has the consumer received?
struct Received;

impl Request for Received {
    type Reply = usize;
}

/// Counts what it receives, in manual demand.
struct Tally {
    received: usize,
}

impl demandflow::Consumer for Tally {
    type Event = u64;

    async fn handle_subscribe(
        &mut self,
        sub: demandflow::SubscriptionId,
        ctx: &mut ConsumerContext,
    ) -> demandflow::DemandMode {
        ctx.ask(sub, 5);
        demandflow::DemandMode::Manual
    }

    async fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: demandflow::SubscriptionId,
        _: &mut ConsumerContext,
    ) {
        self.received += events.len();
    }
}

impl HandleCall<Received, Infallible> for Tally {
    async fn handle_call(&mut self, _: Received, _: &mut ConsumerContext) -> usize {
        self.received
    }
}

#[tokio::test]
async fn a_consumer_answers_between_batches() {
    let p = source();
    let c = consumer(Tally { received: 0 })
        .answers::<Received>()
        .start()
        .unwrap();
    c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    assert_eq!(c.call(Received, NO_TIMEOUT).await, Ok(0));
    p.cast(Emit((0..8).collect())).unwrap();
    // Handling the cast dispatched 5 events (the demand) and buffered 3; the
    // count is answered after that, at once (it is not ordered behind events).
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 3);
    // The 5 reached the consumer's mailbox before this call: it answers after
    // handling them.
    assert_eq!(c.call(Received, NO_TIMEOUT).await, Ok(5));
}

/// Passes events on and counts them.
struct Relay {
    relayed: u64,
}

impl demandflow::ProducerConsumer for Relay {
    type In = u64;
    type Out = u64;

    async fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: demandflow::SubscriptionId,
        ctx: &mut Context<u64>,
    ) {
        self.relayed += events.len() as u64;
        ctx.emit_vec(events);
    }
}

/// How many events has the relay passed on?
struct Relayed;

impl Request for Relayed {
    type Reply = u64;
}

impl HandleCall<Relayed, u64> for Relay {
    async fn handle_call(&mut self, _: Relayed, _: &mut Context<u64>) -> u64 {
        self.relayed
    }
}

#[tokio::test]
async fn a_producer_consumer_answers_after_its_buffered_events_were_dispatched() {
    let p = source();
    let relay = demandflow::producer_consumer(Relay { relayed: 0 })
        .answers::<Relayed>()
        .start()
        .unwrap();
    relay
        .subscribe_to(&p, SubscribeOptions::new())
        .await
        .unwrap();
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c
        .subscribe_to(&relay, SubscribeOptions::new())
        .await
        .unwrap();
    c.ask(sub, 2).unwrap();
    p.cast(Emit(vec![1, 2, 3, 4])).unwrap();
    eventually(|| batches(&log).len() == 1).await;
    assert_eq!(relay.estimate_buffered_count().await.unwrap(), 2);
    let mut call = Box::pin(relay.call(Relayed, NO_TIMEOUT));
    assert_eq!(poll_once(&mut call).await, None);
    relay.stats().await.unwrap();
    assert_eq!(poll_once(&mut call).await, None);
    c.ask(sub, 2).unwrap();
    assert_eq!(call.await, Ok(4));
    c.stats().await.unwrap();
    assert_eq!(batches(&log), vec![vec![1, 2], vec![3, 4]]);
}

/// Casts itself a message every second from a timer task, three times.
struct Ticker;

impl Producer for Ticker {
    type Event = u64;

    async fn init(&mut self, ctx: &mut Context<u64>) {
        let me = ctx.info_sender();
        tokio::spawn(async move {
            for tick in 0..3 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if me.cast(Emit(vec![tick])).is_err() {
                    return;
                }
            }
        });
    }

    async fn handle_demand(&mut self, _: u64, _: &mut Context<u64>) {}
}

impl HandleCall<Emit, u64> for Ticker {
    async fn handle_call(&mut self, Emit(events): Emit, ctx: &mut Context<u64>) {
        ctx.emit_vec(events);
    }
}

#[tokio::test(start_paused = true)]
async fn a_stage_s_timer_casts_typed_messages_to_it() {
    let p = producer(Ticker).answers::<Emit>().start().unwrap();
    let (rec, log) = Recorder::new();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    // The clock is paused: it moves only when every task waits, so each tick
    // has been emitted and delivered before the next one fires.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.stats().await.unwrap();
    assert_eq!(batches(&log), vec![vec![0]]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.stats().await.unwrap();
    assert_eq!(batches(&log), vec![vec![0], vec![1], vec![2]]);
}
