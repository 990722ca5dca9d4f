//! Producer buffering, accumulate mode and info ordering (SEMANTICS.md §3).

mod support;

use std::sync::Arc;

use demandflow::{
    BufferKeep, Context, DemandFlow, Info, Producer, SubscribeOptions, consumer, producer,
};
use parking_lot::Mutex;
use support::{Counter, Recorder, batches, eventually, manual_partition_consumer};

/// Emits the `Vec<u64>` it gets as info; records `&str` infos and drop reports.
struct Probe {
    log: Arc<Mutex<Vec<String>>>,
}

impl Producer for Probe {
    type Event = u64;

    async fn handle_demand(&mut self, _: u64, _: &mut Context<u64>) {}

    async fn handle_info(&mut self, info: Info, ctx: &mut Context<u64>) {
        match info.downcast::<Vec<u64>>() {
            Ok(events) => ctx.emit_vec(events),
            Err(info) => {
                if let Some(s) = info.downcast_ref::<&str>() {
                    self.log.lock().push((*s).to_owned());
                }
            }
        }
    }

    fn handle_dropped(&mut self, dropped: usize) {
        self.log.lock().push(format!("dropped {dropped}"));
    }
}

fn probe() -> (Probe, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    (Probe { log: log.clone() }, log)
}

#[tokio::test]
async fn events_without_demand_are_buffered_and_counted() {
    let (p, _) = probe();
    let p = producer(p).start().unwrap();
    p.send_info(vec![1_u64, 2, 3]).unwrap();
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 3);
    let (rec, log) = Recorder::new();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new().max_demand(10))
        .await
        .unwrap();
    eventually(|| batches(&log).concat() == vec![1, 2, 3]).await;
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 0);
}

#[tokio::test]
async fn keep_last_drops_the_oldest_events_and_reports_them() {
    let (p, plog) = probe();
    let p = producer(p)
        .buffer_size(3)
        .buffer_keep(BufferKeep::Last)
        .start()
        .unwrap();
    p.send_info((1..=5).collect::<Vec<u64>>()).unwrap();
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 3);
    assert_eq!(*plog.lock(), vec!["dropped 2".to_owned()]);
    assert_eq!(p.stats().await.unwrap().events_dropped, 2);
    let (rec, log) = Recorder::new();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    eventually(|| batches(&log).concat() == vec![3, 4, 5]).await;
}

#[tokio::test]
async fn keep_first_drops_the_incoming_events_and_reports_them() {
    let (p, plog) = probe();
    let p = producer(p)
        .buffer_size(3)
        .buffer_keep(BufferKeep::First)
        .start()
        .unwrap();
    p.send_info((1..=5).collect::<Vec<u64>>()).unwrap();
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 3);
    assert_eq!(*plog.lock(), vec!["dropped 2".to_owned()]);
    let (rec, log) = Recorder::new();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    eventually(|| batches(&log).concat() == vec![1, 2, 3]).await;
}

#[tokio::test]
async fn handle_demand_only_sees_what_the_buffer_could_not_supply() {
    let (counter, demands) = Counter::new();
    let p = producer(counter).start().unwrap();
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    c.ask(sub, 5).unwrap();
    eventually(|| batches(&log).len() == 1).await;
    assert_eq!(*demands.lock(), vec![5]);
    // The buffer is empty, so every ask reaches the counter unchanged.
    c.ask(sub, 2).unwrap();
    eventually(|| batches(&log).len() == 2).await;
    assert_eq!(*demands.lock(), vec![5, 2]);
}

#[tokio::test]
async fn buffered_events_serve_demand_before_handle_demand() {
    let (p, _) = probe();
    let p = producer(p).start().unwrap();
    p.send_info(vec![10_u64, 11, 12]).unwrap();
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    c.ask(sub, 2).unwrap();
    eventually(|| batches(&log).len() == 1).await;
    assert_eq!(batches(&log), vec![vec![10, 11]]);
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 1);
}

#[tokio::test]
async fn accumulated_demands_are_replayed_one_by_one() {
    let (counter, demands) = Counter::new();
    let p = producer(counter)
        .demand_flow(DemandFlow::Accumulate)
        .start()
        .unwrap();
    let (r1, log1) = Recorder::manual();
    let (r2, log2) = Recorder::manual();
    let c1 = consumer(r1).start().unwrap();
    let c2 = consumer(r2).start().unwrap();
    let s1 = c1.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    let s2 = c2.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    c1.ask(s1, 2).unwrap();
    c2.ask(s2, 2).unwrap();
    // Round trips through both consumers and the producer: the asks have arrived.
    c1.stats().await.unwrap();
    c2.stats().await.unwrap();
    p.stats().await.unwrap();
    assert!(demands.lock().is_empty());
    assert!(batches(&log1).is_empty() && batches(&log2).is_empty());
    p.set_demand_flow(DemandFlow::Forward).unwrap();
    eventually(|| batches(&log1).len() == 1 && batches(&log2).len() == 1).await;
    assert_eq!(*demands.lock(), vec![2, 2]);
    assert_eq!(batches(&log1), vec![vec![0, 1]]);
    assert_eq!(batches(&log2), vec![vec![2, 3]]);
}

#[tokio::test]
async fn events_emitted_while_accumulating_wait_for_forward() {
    let (p, _) = probe();
    let p = producer(p)
        .demand_flow(DemandFlow::Accumulate)
        .start()
        .unwrap();
    let (rec, log) = Recorder::new();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    p.send_info(vec![1_u64, 2]).unwrap();
    p.stats().await.unwrap();
    c.stats().await.unwrap();
    assert!(batches(&log).is_empty());
    p.set_demand_flow(DemandFlow::Forward).unwrap();
    eventually(|| batches(&log).concat() == vec![1, 2]).await;
}

#[tokio::test]
async fn info_is_handled_only_after_the_events_buffered_before_it() {
    let (p, plog) = probe();
    let p = producer(p).start().unwrap();
    p.send_info(vec![1_u64, 2, 3]).unwrap();
    p.sync_info("after three").await.unwrap();
    p.stats().await.unwrap();
    assert!(plog.lock().is_empty());
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    c.ask(sub, 2).unwrap();
    eventually(|| batches(&log).len() == 1).await;
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 1);
    assert!(plog.lock().is_empty());
    c.ask(sub, 1).unwrap();
    eventually(|| plog.lock().len() == 1).await;
    assert_eq!(batches(&log), vec![vec![1, 2], vec![3]]);
    assert_eq!(*plog.lock(), vec!["after three".to_owned()]);
}

#[tokio::test]
async fn info_on_an_empty_buffer_is_handled_at_once() {
    let (p, plog) = probe();
    let p = producer(p).start().unwrap();
    p.sync_info("now").await.unwrap();
    p.stats().await.unwrap();
    assert_eq!(*plog.lock(), vec!["now".to_owned()]);
}

#[tokio::test]
async fn info_on_a_consumer_is_handled_at_once() {
    let (rec, log) = Recorder::<u64>::new();
    let c = consumer(rec).start().unwrap();
    c.sync_info("hello").await.unwrap();
    c.stats().await.unwrap();
    assert_eq!(*log.lock(), vec![support::Seen::Info("hello".into())]);
}

#[tokio::test]
async fn stats_report_pending_demand_per_subscription() {
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let (rec, _log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    let stats = p.stats().await.unwrap();
    assert_eq!(stats.subscriptions.len(), 1);
    assert_eq!(stats.subscriptions[0].sub, sub);
    assert_eq!(stats.subscriptions[0].pending_demand, Some(0));
    c.ask(sub, 4).unwrap();
    let c_stats = c.stats().await.unwrap();
    assert_eq!(c_stats.subscriptions[0].sub, sub);
    let p_stats = p.stats().await.unwrap();
    assert_eq!(p_stats.events_out, 4);
}

#[tokio::test]
async fn a_finite_source_started_accumulating_delivers_everything_before_it_ends() {
    let p = producer(demandflow::from_iter(0..1000_u64))
        .demand_flow(DemandFlow::Accumulate)
        .start()
        .unwrap();
    let mut consumers = Vec::new();
    let mut logs = Vec::new();
    for _ in 0..4 {
        let (rec, log) = Recorder::new();
        let c = consumer(rec).start().unwrap();
        c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
        consumers.push(c);
        logs.push(log);
    }
    p.set_demand_flow(DemandFlow::Forward).unwrap();
    for c in &consumers {
        assert_eq!(c.wait().await, demandflow::Reason::Normal);
    }
    let mut all: Vec<u64> = logs.iter().flat_map(|l| batches(l).concat()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<u64>>());
}

#[tokio::test(start_paused = true)]
async fn an_empty_source_started_accumulating_ends_its_consumers_once_it_forwards() {
    for through_map in [false, true] {
        let p = producer(demandflow::from_iter(0..0_u64))
            .demand_flow(DemandFlow::Accumulate)
            .start()
            .unwrap();
        let (rec, log) = Recorder::new();
        let c = consumer(rec).start().unwrap();
        if through_map {
            let pc = demandflow::map(|n: u64| n + 1).start().unwrap();
            pc.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
            c.subscribe_to(&pc, SubscribeOptions::new()).await.unwrap();
        } else {
            c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
        }
        p.set_demand_flow(DemandFlow::Forward).unwrap();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(60), c.wait()).await;
        assert_eq!(
            ended,
            Ok(demandflow::Reason::Normal),
            "through a map: {through_map}"
        );
        assert_eq!(p.wait().await, demandflow::Reason::Normal);
        assert!(batches(&log).is_empty());
    }
}

/// Stops after its buffered events at every `"stop"` info.
struct StopOnInfo;

impl Producer for StopOnInfo {
    type Event = u64;

    async fn handle_demand(&mut self, _: u64, _: &mut Context<u64>) {}

    async fn handle_info(&mut self, info: Info, ctx: &mut Context<u64>) {
        if info.downcast_ref::<&str>() == Some(&"stop") {
            ctx.stop_after_buffered(demandflow::Reason::Normal);
        }
    }
}

#[test]
fn two_stops_recorded_while_accumulating_stop_the_producer_once_it_forwards() {
    // Regression: replaying the first stop queued it behind the second again, and
    // the two swapped places forever, with the stage's task never yielding. A
    // second worker keeps the timeout alive if that comes back.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let stopped = runtime.block_on(async {
        let p = producer(StopOnInfo)
            .demand_flow(DemandFlow::Accumulate)
            .start()
            .unwrap();
        let monitor = p.monitor();
        p.send_info("stop").unwrap();
        p.send_info("stop").unwrap();
        p.stats().await.unwrap();
        p.set_demand_flow(DemandFlow::Forward).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), monitor.wait()).await
    });
    // Without waiting for a worker that may be stuck in the stage.
    runtime.shutdown_background();
    assert_eq!(stopped, Ok(demandflow::Reason::Normal));
}

/// Sends `50 × 100` events, 0..5000 in order, as 50 batches of 100.
fn send_fifty_hundreds(p: &demandflow::ProducerRef<u64>) {
    for batch in 0..50_u64 {
        p.send_info((batch * 100..(batch + 1) * 100).collect::<Vec<u64>>())
            .unwrap();
    }
}

fn dropped_reported(log: &Mutex<Vec<String>>) -> usize {
    log.lock()
        .iter()
        .filter_map(|s| s.strip_prefix("dropped "))
        .map(|n| n.parse::<usize>().unwrap())
        .sum()
}

#[tokio::test]
async fn an_accumulating_producer_holds_no_more_than_its_buffer_and_reports_drops() {
    let (p, plog) = probe();
    let p = producer(p)
        .buffer_size(100)
        .demand_flow(DemandFlow::Accumulate)
        .start()
        .unwrap();
    send_fifty_hundreds(&p);
    // Keep last: the newest 100 are held, the 4,900 before them dropped and reported.
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 100);
    let stats = p.stats().await.unwrap();
    assert_eq!(stats.buffered, 100);
    assert_eq!(stats.events_dropped, 4900);
    assert_eq!(dropped_reported(&plog), 4900);

    // The consumer's ask of 10,000 comes behind them: it gets the 100 held.
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    c.ask(sub, 10_000).unwrap();
    c.stats().await.unwrap();
    p.stats().await.unwrap();
    assert!(batches(&log).is_empty());
    p.set_demand_flow(DemandFlow::Forward).unwrap();
    eventually(|| batches(&log).concat().len() == 100).await;
    assert_eq!(batches(&log).concat(), (4900..5000).collect::<Vec<u64>>());
    assert_eq!(p.stats().await.unwrap().events_dropped, 4900);
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 0);
}

#[tokio::test]
async fn an_accumulating_producer_with_keep_first_drops_the_incoming_events() {
    let (p, plog) = probe();
    let p = producer(p)
        .buffer_size(100)
        .buffer_keep(BufferKeep::First)
        .demand_flow(DemandFlow::Accumulate)
        .start()
        .unwrap();
    send_fifty_hundreds(&p);
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 100);
    assert_eq!(dropped_reported(&plog), 4900);
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    c.ask(sub, 10_000).unwrap();
    p.set_demand_flow(DemandFlow::Forward).unwrap();
    eventually(|| batches(&log).concat().len() == 100).await;
    assert_eq!(batches(&log).concat(), (0..100).collect::<Vec<u64>>());
}

#[tokio::test]
async fn demand_asked_while_accumulating_is_served_before_anything_is_dropped() {
    let (p, plog) = probe();
    let p = producer(p)
        .buffer_size(100)
        .demand_flow(DemandFlow::Accumulate)
        .start()
        .unwrap();
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    c.ask(sub, 10_000).unwrap();
    // Round trips: the ask of 10,000 has reached the producer before the events.
    c.stats().await.unwrap();
    p.stats().await.unwrap();
    send_fifty_hundreds(&p);
    // All 5,000 are owed to the ask: held (and counted), none dropped, none sent.
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 5000);
    assert_eq!(p.stats().await.unwrap().events_dropped, 0);
    assert!(batches(&log).is_empty());
    p.set_demand_flow(DemandFlow::Forward).unwrap();
    eventually(|| batches(&log).concat().len() == 5000).await;
    assert_eq!(batches(&log).concat(), (0..5000).collect::<Vec<u64>>());
    assert_eq!(p.stats().await.unwrap().events_dropped, 0);
    assert_eq!(dropped_reported(&plog), 0);
    // Forwarding, the reserve is gone: of 5,200 more, 5,000 meet the rest of the
    // ask, the buffer keeps the last 100 and drops 100.
    p.send_info((5000..10_200).collect::<Vec<u64>>()).unwrap();
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 100);
    assert_eq!(p.stats().await.unwrap().events_dropped, 100);
    assert_eq!(dropped_reported(&plog), 100);
    eventually(|| batches(&log).concat().len() == 10_000).await;
    assert_eq!(batches(&log).concat(), (0..10_000).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_producer_tells_whether_it_accumulates_or_forwards() {
    let (counter, _) = Counter::new();
    let p = producer(counter)
        .demand_flow(DemandFlow::Accumulate)
        .start()
        .unwrap();
    assert_eq!(p.demand_flow().await.unwrap(), DemandFlow::Accumulate);
    assert_eq!(
        p.stats().await.unwrap().demand_flow,
        Some(DemandFlow::Accumulate)
    );
    p.set_demand_flow(DemandFlow::Forward).unwrap();
    assert_eq!(p.demand_flow().await.unwrap(), DemandFlow::Forward);
    assert_eq!(
        p.stats().await.unwrap().demand_flow,
        Some(DemandFlow::Forward)
    );
    let (rec, _) = Recorder::<u64>::new();
    let c = consumer(rec).start().unwrap();
    assert_eq!(c.stats().await.unwrap().demand_flow, None);
}

/// Emits its next scripted batch each time a consumer subscribes (so events
/// reach the buffer behind queued infos); records `&str` infos.
struct EmitOnSubscribe {
    script: std::collections::VecDeque<Vec<u64>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Producer for EmitOnSubscribe {
    type Event = u64;

    async fn handle_demand(&mut self, _: u64, _: &mut Context<u64>) {}

    async fn handle_subscribe(&mut self, _: demandflow::SubscriptionId, ctx: &mut Context<u64>) {
        if let Some(batch) = self.script.pop_front() {
            ctx.emit_vec(batch);
        }
    }

    async fn handle_info(&mut self, info: Info, _: &mut Context<u64>) {
        if let Some(s) = info.downcast_ref::<&str>() {
            self.log.lock().push((*s).to_owned());
        }
    }
}

#[tokio::test]
async fn infos_keep_their_place_among_buffered_events_and_split_batches() {
    // a b c, infos d e f, g h, info i; then one ask of 5. GenStage: [a,b,c],
    // d, e, f, [g,h], i. Here a b c = 1 2 3 and g h = 7 8.
    let plog = Arc::new(Mutex::new(Vec::new()));
    let p = producer(EmitOnSubscribe {
        script: [vec![1, 2, 3], vec![7, 8]].into(),
        log: plog.clone(),
    })
    .start()
    .unwrap();
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    // Emits a b c, which nobody has asked for yet.
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    p.send_info("d").unwrap();
    p.send_info("e").unwrap();
    p.send_info("f").unwrap();
    // A second consumer that never asks: its subscription emits g h.
    let (idle, idle_log) = Recorder::manual();
    let idle = consumer(idle).start().unwrap();
    idle.subscribe_to(&p, SubscribeOptions::new())
        .await
        .unwrap();
    p.send_info("i").unwrap();
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 5);
    assert!(plog.lock().is_empty());
    c.ask(sub, 5).unwrap();
    eventually(|| batches(&log).len() == 2 && plog.lock().len() == 4).await;
    assert_eq!(batches(&log), vec![vec![1, 2, 3], vec![7, 8]]);
    assert_eq!(*plog.lock(), vec!["d", "e", "f", "i"]);
    assert!(batches(&idle_log).is_empty());
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 0);
}

#[tokio::test]
async fn an_info_waits_for_the_events_queued_in_a_partition_before_it() {
    // Evens go to partition 0, odds to partition 1.
    let parity = demandflow::dispatcher::PartitionDispatcher::numbered(nz(2), |e: u64| {
        Some(((e % 2) as usize, e))
    })
    .build()
    .unwrap();
    let (p, plog) = probe();
    let p = producer(p).dispatcher(parity).start().unwrap();
    let (even, es, even_log) = manual_partition_consumer(&p, 0).await;
    let (odd, os, _odd_log) = manual_partition_consumer(&p, 1).await;
    odd.ask(os, 10).unwrap();
    odd.stats().await.unwrap();
    // Partition 0 has no demand: its 5 events wait in its queue.
    p.send_info(vec![0_u64, 2, 4, 6, 8]).unwrap();
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 5);
    p.send_info("after the evens").unwrap();
    p.stats().await.unwrap();
    assert!(plog.lock().is_empty());
    even.ask(es, 5).unwrap();
    eventually(|| plog.lock().len() == 1 && batches(&even_log).len() == 1).await;
    assert_eq!(batches(&even_log), vec![vec![0, 2, 4, 6, 8]]);
    assert_eq!(*plog.lock(), vec!["after the evens".to_owned()]);
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 0);
}

#[tokio::test]
async fn several_infos_waiting_for_a_partition_are_all_delivered_in_order() {
    // Evens go to partition 0, odds to partition 1.
    let parity = demandflow::dispatcher::PartitionDispatcher::numbered(nz(2), |e: u64| {
        Some(((e % 2) as usize, e))
    })
    .build()
    .unwrap();
    let (p, plog) = probe();
    let p = producer(p).dispatcher(parity).start().unwrap();
    let (even, es, even_log) = manual_partition_consumer(&p, 0).await;
    let (odd, os, _odd_log) = manual_partition_consumer(&p, 1).await;
    odd.ask(os, 10).unwrap();
    odd.stats().await.unwrap();
    // Partition 0 has no demand: its events wait in its queue, and every info
    // sent meanwhile waits behind them.
    p.send_info(vec![0_u64, 2]).unwrap();
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 2);
    p.send_info("first").unwrap();
    p.send_info("second").unwrap();
    p.send_info("third").unwrap();
    p.stats().await.unwrap();
    assert!(plog.lock().is_empty());
    even.ask(es, 2).unwrap();
    eventually(|| plog.lock().len() == 3).await;
    assert_eq!(*plog.lock(), vec!["first", "second", "third"]);
    assert_eq!(batches(&even_log), vec![vec![0, 2]]);
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 0);
}

#[tokio::test]
async fn events_held_while_accumulating_meet_demand_asked_before_it_began() {
    let (p, _) = probe();
    let p = producer(p).start().unwrap();
    let (rec, log) = Recorder::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    // Asked while forwarding: the dispatcher holds the demand of 5.
    c.ask(sub, 5).unwrap();
    c.stats().await.unwrap();
    p.stats().await.unwrap();
    p.set_demand_flow(DemandFlow::Accumulate).unwrap();
    p.send_info(vec![1_u64, 2, 3]).unwrap();
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 3);
    assert!(batches(&log).is_empty());
    p.set_demand_flow(DemandFlow::Forward).unwrap();
    eventually(|| batches(&log).concat() == vec![1, 2, 3]).await;
    assert_eq!(p.estimate_buffered_count().await.unwrap(), 0);
}

/// A count that is not zero, for the APIs that take `NonZeroUsize`.
fn nz(n: usize) -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(n).expect("counts here are not zero")
}
