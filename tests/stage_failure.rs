//! Bad input, panics, and dropping handles (SEMANTICS.md §1, §8).

mod support;

use demandflow::{
    CancelMode, ConfigError, Consumer, ConsumerContext, Context, Producer, Reason, StartError,
    SubscribeError, SubscribeOptions, SubscriptionId, consumer, producer,
};
use support::{Counter, Recorder, batches, eventually};

#[tokio::test]
async fn invalid_demand_options_are_errors_not_panics() {
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let (rec, _) = Recorder::<u64>::new();
    let c = consumer(rec).start().unwrap();
    let err = c
        .subscribe_to(&p, SubscribeOptions::new().max_demand(0))
        .await
        .unwrap_err();
    assert_eq!(err, SubscribeError::Config(ConfigError::MaxDemandZero));
    let err = c
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10).min_demand(10))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "invalid subscription options");
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "min_demand (10) must be less than max_demand (10)"
    );
    assert!(c.is_running() && p.is_running());
}

#[test]
fn starting_a_stage_outside_a_runtime_is_an_error() {
    let (counter, _) = Counter::new();
    assert_eq!(
        producer(counter).start().unwrap_err(),
        StartError::NoRuntime
    );
}

#[tokio::test]
async fn subscribing_to_a_stopped_producer_fails() {
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    p.stop(Reason::Normal).await.unwrap();
    let (rec, _) = Recorder::<u64>::new();
    let c = consumer(rec).start().unwrap();
    let err = c
        .subscribe_to(&p, SubscribeOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err, SubscribeError::ProducerNotRunning);
    assert!(c.is_running());
}

struct PanicsOnEvent(u64);

impl Consumer for PanicsOnEvent {
    type Event = u64;

    async fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: SubscriptionId,
        _: &mut ConsumerContext,
    ) {
        if events.contains(&self.0) {
            panic!("bad event {}", self.0);
        }
    }
}

#[tokio::test]
async fn a_panicking_consumer_stops_with_a_panic_reason_and_the_producer_lives() {
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let bad = consumer(PanicsOnEvent(3)).start().unwrap();
    bad.subscribe_to(&p, SubscribeOptions::new().max_demand(2))
        .await
        .unwrap();
    assert_eq!(bad.wait().await, Reason::Panic("bad event 3".into()));
    // The producer keeps running and serves a new consumer.
    let (rec, log) = Recorder::new();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(2))
        .await
        .unwrap();
    eventually(|| !batches(&log).is_empty()).await;
    assert!(p.is_running());
}

struct PanicsOnDemand;

impl Producer for PanicsOnDemand {
    type Event = u64;

    async fn handle_demand(&mut self, _: u64, _: &mut Context<u64>) {
        panic!("no more");
    }
}

#[tokio::test]
async fn a_panicking_producer_stops_permanent_consumers_only() {
    let p = producer(PanicsOnDemand).start().unwrap();
    let (r1, _) = Recorder::<u64>::manual();
    let (r2, _) = Recorder::<u64>::manual();
    let permanent = consumer(r1).start().unwrap();
    let temporary = consumer(r2).start().unwrap();
    let sub = permanent
        .subscribe_to(&p, SubscribeOptions::new())
        .await
        .unwrap();
    temporary
        .subscribe_to(&p, SubscribeOptions::new().cancel(CancelMode::Temporary))
        .await
        .unwrap();
    permanent.ask(sub, 1).unwrap();
    let panic = Reason::Panic("no more".into());
    assert_eq!(p.wait().await, panic);
    assert_eq!(permanent.wait().await, panic);
    let _ = temporary.stats().await;
    assert!(temporary.is_running());
}

#[tokio::test]
async fn dropping_every_handle_detaches_the_pipeline_which_ends_without_leaking_tasks() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let c = consumer(StopsAfter(0, 1000)).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(10))
        .await
        .unwrap();
    let (pm, cm) = (p.monitor(), c.monitor());
    assert_eq!(metrics.num_alive_tasks(), 2);
    drop(p);
    // One handle is left: the pipeline keeps running.
    let _ = c.stats().await.unwrap();
    assert!(pm.exit_reason().is_none());
    drop(c);
    // Detached, the pipeline runs until its work ends: the consumer stops after
    // 1000 events, and the producer, left without consumers, stops too.
    assert_eq!(cm.wait().await, Reason::error("enough"));
    assert_eq!(pm.wait().await, Reason::Shutdown);
    eventually(|| metrics.num_alive_tasks() == 0).await;
}

#[tokio::test]
async fn a_stage_whose_handle_is_dropped_before_subscribing_stops() {
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let m = p.monitor();
    drop(p);
    assert_eq!(m.wait().await, Reason::Shutdown);
}

#[tokio::test]
async fn a_stopped_stage_rejects_handle_calls_clearly() {
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    p.stop(Reason::Normal).await.unwrap();
    assert!(p.send_info(1_u8).is_err());
    assert!(p.stats().await.is_err());
    assert_eq!(p.stop(Reason::Normal).await, Err(demandflow::NotRunning));
    assert_eq!(p.exit_reason(), Some(Reason::Normal));
}

struct StopsAfter(u64, u64);

impl Consumer for StopsAfter {
    type Event = u64;

    async fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: SubscriptionId,
        ctx: &mut ConsumerContext,
    ) {
        self.0 += events.len() as u64;
        if self.0 >= self.1 {
            ctx.stop(Reason::error("enough"));
        }
    }
}

#[tokio::test]
async fn a_consumer_can_stop_itself_from_a_callback() {
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let c = consumer(StopsAfter(0, 10)).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(4))
        .await
        .unwrap();
    assert_eq!(c.wait().await, Reason::error("enough"));
    assert!(p.is_running());
}

#[tokio::test]
async fn a_stage_cannot_subscribe_to_itself() {
    let pc = demandflow::producer_consumer(support::Doubler)
        .start()
        .unwrap();
    let err = pc
        .subscribe_to(&pc, SubscribeOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err, SubscribeError::SelfSubscription);
    assert_eq!(err.to_string(), "a stage cannot subscribe to itself");
    let err = pc
        .subscribe_to_nowait(&pc.producer(), SubscribeOptions::new())
        .unwrap_err();
    assert_eq!(err, SubscribeError::SelfSubscription);
    let stats = pc.stats().await.unwrap();
    assert!(stats.subscriptions.is_empty());
    assert!(pc.is_running());
}
