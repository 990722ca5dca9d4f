//! The keyed scheduler through the public API: per-key order and mutual
//! exclusion, cross-key concurrency, panics, back-pressure, the consumer stage.

mod support;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use demandflow::keyed;
use demandflow::keyed::{Keyed, KeyedBatch, KeyedBuilder, KeyedHandler};
use demandflow::prelude::*;
use parking_lot::Mutex;
use proptest::prelude::*;
use support::{Counter, eventually};
use tokio::sync::Semaphore;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// An event of the fixture: an id, and how long handling it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Job {
    id: u32,
    millis: u64,
}

fn job(id: u32) -> Job {
    Job { id, millis: 0 }
}

/// Records the order events were handled in, per key, and checks that no key
/// is ever handled by two workers at once. Jobs with `millis` sleep that long
/// (on the paused clock); an `id` of `u32::MAX` panics; `gate` holds each batch
/// until a permit is given.
#[derive(Default)]
struct Recorder {
    handled: Mutex<Vec<(u64, u32)>>,
    busy: Mutex<HashMap<u64, usize>>,
    overlaps: AtomicUsize,
    running: AtomicUsize,
    most_running: AtomicUsize,
    gate: Option<Arc<Semaphore>>,
}

impl Recorder {
    fn gated(gate: Arc<Semaphore>) -> Self {
        Recorder {
            gate: Some(gate),
            ..Recorder::default()
        }
    }

    fn ids_of(&self, key: u64) -> Vec<u32> {
        let handled = self.handled.lock();
        handled
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, id)| *id)
            .collect()
    }

    fn count(&self) -> usize {
        self.handled.lock().len()
    }
}

impl KeyedHandler for Recorder {
    type Key = u64;
    type Event = Job;

    async fn handle(&self, batch: &mut KeyedBatch<u64, Job>) {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(now, Ordering::SeqCst);
        for key in batch.keys() {
            let mut busy = self.busy.lock();
            let n = busy.entry(*key).or_insert(0);
            *n += 1;
            if *n > 1 {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
        }
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        for (key, jobs) in batch.iter() {
            for job in jobs {
                assert_ne!(job.id, u32::MAX, "poisoned job");
                if job.millis > 0 {
                    tokio::time::sleep(Duration::from_millis(job.millis)).await;
                }
                self.handled.lock().push((*key, job.id));
            }
        }
        for key in batch.keys() {
            *self.busy.lock().get_mut(key).unwrap() -= 1;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_key_whose_handler_is_slow_does_not_hold_up_other_keys_in_its_partition() {
    let keyed = KeyedBuilder::dense(Recorder::default())
        .partitions(nz(1))
        .max_workers(nz(2))
        .max_batch(nz(1))
        .start()
        .unwrap();
    let start = tokio::time::Instant::now();
    keyed
        .send(
            0,
            Job {
                id: 0,
                millis: 1000,
            },
        )
        .await
        .unwrap();
    keyed.send(0, job(1)).await.unwrap();
    for id in 2..12 {
        keyed.send(u64::from(id), job(id)).await.unwrap();
    }
    let recorder = keyed.handler();
    eventually(|| recorder.count() == 10).await;
    // Keys 2..12 are done and no time has passed: key 0 is still asleep.
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(recorder.ids_of(0), Vec::<u32>::new());
    assert_eq!(keyed.stats().in_flight_keys, 1);
    keyed.wait_idle().await;
    assert_eq!(start.elapsed(), Duration::from_millis(1000));
    assert_eq!(recorder.ids_of(0), [0, 1]);
    assert_eq!(recorder.overlaps.load(Ordering::SeqCst), 0);
}

/// Handles events at once, except that a key with a slow job is held and
/// finished in a task of its own.
#[derive(Default)]
struct Holder {
    handled: Mutex<Vec<(u64, u32)>>,
    slow: Arc<Mutex<Vec<(u64, u32)>>>,
}

impl KeyedHandler for Holder {
    type Key = u64;
    type Event = Job;

    async fn handle(&self, batch: &mut KeyedBatch<u64, Job>) {
        let slow = batch
            .iter()
            .position(|(_, jobs)| jobs.iter().any(|j| j.millis > 0));
        if let Some(run) = slow {
            let (hold, jobs) = batch.hold(run);
            let log = self.slow.clone();
            tokio::spawn(async move {
                for job in jobs {
                    tokio::time::sleep(Duration::from_millis(job.millis)).await;
                    log.lock().push((*hold.key(), job.id));
                }
                drop(hold); // releases the key
            });
        }
        for (key, jobs) in batch.iter() {
            for job in jobs {
                self.handled.lock().push((*key, job.id));
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_held_key_leaves_its_batch_so_its_batch_mates_go_on() {
    let keyed = KeyedBuilder::dense(Holder::default())
        .partitions(nz(1))
        .max_workers(nz(1))
        .max_batch(nz(100))
        .start()
        .unwrap();
    let start = tokio::time::Instant::now();
    // One batch: keys 0 (slow), 1 and 2.
    keyed
        .send_all([
            (
                0,
                Job {
                    id: 0,
                    millis: 1000,
                },
            ),
            (1, job(1)),
            (2, job(2)),
        ])
        .await
        .unwrap();
    // Later events for key 1 and 2 flow while key 0 sleeps; key 0's waits.
    keyed
        .send_all([(1, job(3)), (2, job(4)), (0, job(5))])
        .await
        .unwrap();
    let holder = keyed.handler();
    eventually(|| holder.handled.lock().len() == 4).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(*holder.handled.lock(), [(1, 1), (2, 2), (1, 3), (2, 4)]);
    assert_eq!(keyed.stats().in_flight_keys, 1);
    keyed.wait_idle().await;
    assert_eq!(start.elapsed(), Duration::from_millis(1000));
    assert_eq!(*holder.slow.lock(), [(0, 0)]);
    assert_eq!(holder.handled.lock().last(), Some(&(0, 5)));
}

#[tokio::test(start_paused = true)]
async fn a_sender_waiting_for_room_is_woken_when_a_held_key_is_released() {
    let keyed = KeyedBuilder::dense(Holder::default())
        .partitions(nz(1))
        .max_workers(nz(1))
        .max_batch(nz(1))
        .capacity(nz(2))
        .start()
        .unwrap();
    let start = tokio::time::Instant::now();
    keyed.send(0, Job { id: 0, millis: 100 }).await.unwrap();
    eventually(|| keyed.stats().in_flight_keys == 1).await; // held, asleep
    keyed.send(0, job(1)).await.unwrap();
    keyed.send(0, job(2)).await.unwrap();
    // Full: both wait behind the held key, and so does this sender.
    keyed.send(0, job(3)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    keyed.wait_idle().await;
    let holder = keyed.handler();
    assert_eq!(*holder.slow.lock(), [(0, 0)]);
    assert_eq!(*holder.handled.lock(), [(0, 1), (0, 2), (0, 3)]);
}

#[tokio::test(start_paused = true)]
async fn two_events_for_one_key_are_handled_one_after_the_other_even_when_the_first_is_slow() {
    let keyed = KeyedBuilder::dense(Recorder::default())
        .partitions(nz(2))
        .max_workers(nz(4))
        .max_batch(nz(1))
        .start()
        .unwrap();
    keyed.send(7, Job { id: 1, millis: 500 }).await.unwrap();
    // Let a worker take the first event: the second waits behind it.
    eventually(|| keyed.stats().in_flight_keys == 1).await;
    keyed.send(7, Job { id: 2, millis: 1 }).await.unwrap();
    keyed.wait_idle().await;
    assert_eq!(keyed.handler().ids_of(7), [1, 2]);
    assert_eq!(keyed.handler().overlaps.load(Ordering::SeqCst), 0);
    let stats = keyed.stats();
    assert_eq!((stats.sent, stats.handled, stats.batches), (2, 2, 2));
}

#[tokio::test(start_paused = true)]
async fn workers_start_on_demand_and_never_exceed_the_cap() {
    let gate = Arc::new(Semaphore::new(0));
    let keyed = KeyedBuilder::dense(Recorder::gated(gate.clone()))
        .partitions(nz(2))
        .max_workers(nz(3))
        .max_batch(nz(1))
        .start()
        .unwrap();
    assert_eq!(keyed.stats().workers, 0);
    for id in 0..20 {
        keyed.send(u64::from(id), job(id)).await.unwrap();
    }
    // Keys 0..20 split evenly: each partition started 3 workers, each of
    // which takes one key and waits at the gate.
    let recorder = keyed.handler();
    eventually(|| recorder.running.load(Ordering::SeqCst) == 6).await;
    let stats = keyed.stats();
    assert_eq!(
        (stats.workers, stats.in_flight_keys, stats.queued),
        (6, 6, 14)
    );
    gate.add_permits(20);
    keyed.wait_idle().await;
    assert_eq!(recorder.count(), 20);
    assert_eq!(recorder.most_running.load(Ordering::SeqCst), 6);
    eventually(|| keyed.stats().workers == 0).await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_releases_its_keys_and_is_reported() {
    let reports: Arc<Mutex<Vec<keyed::HandlerPanic<u64>>>> = Arc::default();
    let seen = reports.clone();
    let keyed = KeyedBuilder::dense(Recorder::default())
        .partitions(nz(1))
        .max_workers(nz(1))
        .max_batch(nz(1))
        .on_panic(move |report| seen.lock().push(report.clone()))
        .start()
        .unwrap();
    keyed.send(3, Job { id: 1, millis: 10 }).await.unwrap();
    // A worker takes it alone (and sleeps): the poisoned job comes next, alone.
    eventually(|| keyed.stats().in_flight_keys == 1).await;
    keyed.send(3, job(u32::MAX)).await.unwrap();
    keyed.wait_idle().await;
    // The key was released after the panic: its next event is handled.
    keyed.send(3, job(2)).await.unwrap();
    keyed.wait_idle().await;
    assert_eq!(keyed.handler().ids_of(3), [1, 2]);
    let stats = keyed.stats();
    assert_eq!(
        (stats.handled, stats.panicked_batches, stats.failed),
        (2, 1, 1)
    );
    let reports = reports.lock();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].keys, [3]);
    assert_eq!(reports[0].events, 1);
    assert!(reports[0].message.contains("poisoned job"));
}

#[tokio::test(start_paused = true)]
async fn senders_wait_while_the_partition_is_full() {
    let gate = Arc::new(Semaphore::new(0));
    let keyed = KeyedBuilder::dense(Recorder::gated(gate.clone()))
        .partitions(nz(1))
        .max_workers(nz(1))
        .max_batch(nz(2))
        .capacity(nz(4))
        .start()
        .unwrap();
    // The first send starts a worker, which takes key 0 and waits at the
    // gate; 4 more fit in the queue.
    keyed.try_send(0, job(0)).unwrap();
    eventually(|| keyed.stats().in_flight_keys == 1).await;
    for id in 1..5 {
        keyed.try_send(u64::from(id), job(id)).unwrap();
    }
    let stats = keyed.stats();
    assert_eq!((stats.queued, stats.in_flight_events), (4, 1));
    assert!(matches!(
        keyed.try_send(5, job(5)),
        Err(demandflow::TrySendError::Full((5, _)))
    ));
    let sender = keyed.clone();
    let blocked = tokio::spawn(async move { sender.send(5, job(5)).await });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!blocked.is_finished());
    // One batch handled: the worker takes keys 1 and 2, which makes room.
    gate.add_permits(1);
    blocked.await.unwrap().unwrap();
    let stats = keyed.stats();
    assert_eq!((stats.queued, stats.in_flight_events), (3, 2));
    gate.add_permits(10);
    keyed.shutdown().await;
    assert_eq!(keyed.handler().count(), 6);
    assert_eq!(keyed.stats().peak_queued, 4);
    assert!(matches!(
        keyed.send(9, job(9)).await,
        Err(demandflow::SendError((9, _)))
    ));
}

#[tokio::test(start_paused = true)]
async fn send_all_keeps_each_keys_order_across_partitions() {
    let keyed = KeyedBuilder::dense(Recorder::default())
        .partitions(nz(3))
        .max_batch(nz(16))
        .capacity(nz(8))
        .start()
        .unwrap();
    let pairs = (0..3000_u32).map(|id| (u64::from(id % 10), job(id)));
    keyed.send_all(pairs).await.unwrap();
    keyed.wait_idle().await;
    for key in 0..10_u64 {
        let expected: Vec<u32> = (0..300).map(|i| i * 10 + key as u32).collect();
        assert_eq!(keyed.handler().ids_of(key), expected, "key {key}");
    }
    assert!(keyed.stats().peak_queued <= 8);
}

#[tokio::test(start_paused = true)]
async fn hashed_keys_get_the_same_guarantees() {
    struct Words(Mutex<Vec<(String, u32)>>);
    impl KeyedHandler for Words {
        type Key = String;
        type Event = u32;
        async fn handle(&self, batch: &mut KeyedBatch<String, u32>) {
            for (key, events) in batch.iter() {
                for n in events {
                    self.0.lock().push((key.clone(), *n));
                }
            }
        }
    }
    let keyed = KeyedBuilder::hashed(Words(Mutex::new(Vec::new())))
        .partitions(nz(2))
        .start()
        .unwrap();
    let words = ["alpha", "beta", "gamma"];
    keyed
        .send_all((0..30).map(|n| (words[n as usize % 3].to_owned(), n)))
        .await
        .unwrap();
    keyed.wait_idle().await;
    let seen = keyed.handler().0.lock();
    let beta: Vec<u32> = seen
        .iter()
        .filter(|(k, _)| k == "beta")
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(beta, [1, 4, 7, 10, 13, 16, 19, 22, 25, 28]);
    assert_eq!(seen.len(), 30);
}

#[tokio::test(start_paused = true)]
async fn the_consumer_stage_asks_only_for_what_the_scheduler_has_room_for() {
    let gate = Arc::new(Semaphore::new(0));
    let keyed: Keyed<_, _> = KeyedBuilder::dense(Recorder::gated(gate.clone()))
        .partitions(nz(1))
        .max_workers(nz(1))
        .max_batch(nz(10))
        .capacity(nz(100))
        .start()
        .unwrap();
    let (counter, demands) = Counter::new();
    let numbers = producer(counter).start().unwrap();
    let stage = consumer(keyed.consumer(|job: &Job| u64::from(job.id)))
        .start()
        .unwrap();
    // The counter emits u64; map to jobs through a producer-consumer.
    struct ToJob;
    impl ProducerConsumer for ToJob {
        type In = u64;
        type Out = Job;
        async fn handle_events(
            &mut self,
            events: Vec<u64>,
            _: SubscriptionId,
            ctx: &mut Context<Job>,
        ) {
            ctx.emit_all(events.into_iter().map(|n| job(n as u32)));
        }
    }
    let to_job = producer_consumer(ToJob).start().unwrap();
    to_job
        .subscribe_to(&numbers, SubscribeOptions::new().max_demand(1000))
        .await
        .unwrap();
    stage
        .subscribe_to(&to_job, SubscribeOptions::new())
        .await
        .unwrap();
    // 100 queued fill the room; the worker took 10; the stage asked for 10 more.
    eventually(|| {
        let s = keyed.stats();
        s.queued == 100 && s.in_flight_events == 10
    })
    .await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let s = keyed.stats();
    assert_eq!((s.sent, s.queued, s.in_flight_events), (110, 100, 10));
    // Let 5 batches through: 50 more events flow in, never more than room.
    gate.add_permits(5);
    eventually(|| keyed.handler().count() == 50).await;
    eventually(|| keyed.stats().sent == 160).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let s = keyed.stats();
    assert_eq!((s.sent, s.queued, s.in_flight_events), (160, 100, 10));
    assert_eq!(s.peak_queued, 100);
    assert!(
        demands.lock()[0] >= 110,
        "the producer-consumer asked ahead"
    );
    gate.add_permits(1000);
    eventually(|| keyed.handler().count() >= 1000).await;
    let recorder = keyed.handler();
    let handled = recorder.handled.lock();
    let ids: Vec<u32> = handled.iter().map(|(_, id)| *id).take(1000).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..1000).collect::<Vec<u32>>(),
        "each once, none lost"
    );
}

#[tokio::test(start_paused = true)]
async fn the_consumer_stage_honours_the_subscriptions_demand_bounds() {
    /// Counts events; the scheduler has far more room than the bounds allow.
    struct Count(AtomicUsize);
    impl KeyedHandler for Count {
        type Key = u64;
        type Event = u64;
        async fn handle(&self, batch: &mut KeyedBatch<u64, u64>) {
            let n: usize = batch.iter().map(|(_, events)| events.len()).sum();
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }
    let keyed = KeyedBuilder::dense(Count(AtomicUsize::new(0)))
        .partitions(nz(1))
        .start()
        .unwrap();
    let (counter, demands) = Counter::new();
    let numbers = producer(counter).start().unwrap();
    let stage = consumer(keyed.consumer(|n: &u64| n % 5)).start().unwrap();
    stage
        .subscribe_to(
            &numbers,
            SubscribeOptions::new().max_demand(4).min_demand(1),
        )
        .await
        .unwrap();
    eventually(|| keyed.handler().0.load(Ordering::Relaxed) >= 40).await;
    let demands = demands.lock().clone();
    // The counter answers each ask at once with one batch, so every batch
    // empties the subscription's pending demand and it is asked back to 4.
    assert!(demands.len() >= 10, "{demands:?}");
    assert!(demands.iter().all(|&d| d == 4), "{demands:?}");
}

#[tokio::test(start_paused = true)]
async fn the_consumer_stage_with_automatic_demand_waits_for_room_and_loses_nothing() {
    let keyed = KeyedBuilder::dense(Recorder::default())
        .partitions(nz(2))
        .max_batch(nz(4))
        .capacity(nz(8))
        .start()
        .unwrap();
    let numbers = producer(from_iter(0..500_u32)).start().unwrap();
    let stage = consumer(
        keyed
            .consumer(|job: &Job| u64::from(job.id % 7))
            .demand_mode(DemandMode::Automatic),
    )
    .start()
    .unwrap();
    struct ToJob;
    impl ProducerConsumer for ToJob {
        type In = u32;
        type Out = Job;
        async fn handle_events(
            &mut self,
            events: Vec<u32>,
            _: SubscriptionId,
            ctx: &mut Context<Job>,
        ) {
            ctx.emit_all(events.into_iter().map(job));
        }
    }
    let to_job = producer_consumer(ToJob).start().unwrap();
    to_job
        .subscribe_to(&numbers, SubscribeOptions::new().max_demand(50))
        .await
        .unwrap();
    stage
        .subscribe_to(&to_job, SubscribeOptions::new().max_demand(50))
        .await
        .unwrap();
    stage.wait().await;
    keyed.wait_idle().await;
    for key in 0..7_u32 {
        let expected: Vec<u32> = (0..500).filter(|n| n % 7 == key).collect();
        assert_eq!(keyed.handler().ids_of(u64::from(key)), expected);
    }
    assert!(keyed.stats().peak_queued <= 8);
}

#[test]
fn keyed_types_are_send_and_sync() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Keyed<demandflow::keyed::DenseKeys, Recorder>>();
    sync::<Keyed<demandflow::keyed::DenseKeys, Recorder>>();
    send::<demandflow::keyed::KeyedQueue<demandflow::keyed::HashedKeys<String>, u64>>();
    sync::<demandflow::keyed::KeyedQueue<demandflow::keyed::HashedKeys<String>, u64>>();
    send::<KeyedBatch<u64, Job>>();
    sync::<KeyedBatch<u64, Job>>();
    send::<demandflow::keyed::KeyHold<u64>>();
    sync::<demandflow::keyed::KeyHold<u64>>();
    send::<demandflow::keyed::KeyedConsumer<demandflow::keyed::DenseKeys, Recorder, fn(&Job) -> u64>>(
    );
    send::<demandflow::keyed::Stats>();
    sync::<demandflow::keyed::Stats>();
    send::<keyed::HandlerPanic<u64>>();
    sync::<keyed::HandlerPanic<u64>>();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn under_random_load_each_key_keeps_its_order_and_every_event_is_handled_once(
        partitions in 1_usize..4,
        workers in 1_usize..4,
        batch in 1_usize..8,
        capacity in 1_usize..16,
        sends in proptest::collection::vec((0_u64..12, 0_u64..4), 1..200),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let keyed = KeyedBuilder::dense(Recorder::default())
                .partitions(nz(partitions))
                .max_workers(nz(workers))
                .max_batch(nz(batch))
                .capacity(nz(capacity))
                .start()
                .unwrap();
            // Two concurrent senders, each with its own keys (even, odd), so
            // each key has one sender and a defined order.
            let mut tasks = Vec::new();
            for parity in 0..2_u64 {
                let keyed = keyed.clone();
                let mine: Vec<(u64, Job)> = sends
                    .iter()
                    .enumerate()
                    .filter(|(_, (key, _))| key % 2 == parity)
                    .map(|(i, (key, millis))| (*key, Job { id: i as u32, millis: *millis }))
                    .collect();
                tasks.push(tokio::spawn(async move {
                    for (i, (key, job)) in mine.into_iter().enumerate() {
                        if i % 3 == 0 {
                            keyed.send_all([(key, job)]).await.unwrap();
                        } else {
                            keyed.send(key, job).await.unwrap();
                        }
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            keyed.wait_idle().await;
            let recorder = keyed.handler();
            assert_eq!(recorder.overlaps.load(Ordering::SeqCst), 0);
            assert_eq!(recorder.count(), sends.len(), "every event handled once");
            for key in 0..12 {
                let expected: Vec<u32> = sends
                    .iter()
                    .enumerate()
                    .filter(|(_, (k, _))| *k == key)
                    .map(|(i, _)| i as u32)
                    .collect();
                assert_eq!(recorder.ids_of(key), expected, "key {}", key);
            }
            assert!(keyed.stats().peak_queued <= capacity);
            assert!(recorder.most_running.load(Ordering::SeqCst) <= partitions * workers);
        });
    }
}
