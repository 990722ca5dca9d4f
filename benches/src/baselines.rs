//! What a user would write instead of demandflow to move events from a producer to a consumer.
//!
//! Each baseline moves the events `0..events` (as `u64`) from a producer to a consumer that sums
//! them, in batches, over a bounded channel, and checks the count and the sum, so the work can be
//! neither skipped nor optimised away. Both are written the idiomatic way, without tricks a
//! typical user would not reach for:
//!
//! - The producer builds each batch with `collect` from a range into a fresh `Vec`, and the
//!   consumer drops the `Vec` after summing it. Batches are not sent back for reuse: a return
//!   channel is an optimisation few write, and at 1000 events a batch the allocation is one
//!   `malloc`/`free` pair per 1000 events.
//! - Timing starts before the producer and the consumer are started and stops after both have
//!   finished; building the tokio runtime is outside it (an application builds it once).

use std::thread;
use std::time::Instant;

use crate::Sample;

/// What the consumer saw: events received and their wrapping sum.
type Seen = (u64, u64);

/// Moves `events` events between two OS threads over a crossbeam bounded channel of `capacity`
/// batches of `batch` events.
///
/// The baseline `crossbeam_batched_1000` is `crossbeam_batched(events, 1000, capacity)`.
///
/// # Panics
///
/// If `batch` or `capacity` is 0, or if the consumer did not receive exactly `0..events`.
pub fn crossbeam_batched(events: u64, batch: usize, capacity: usize) -> Sample {
    assert!(
        batch > 0 && capacity > 0,
        "batch and capacity must not be 0"
    );
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u64>>(capacity);
    let start = Instant::now();
    let producer = thread::spawn(move || {
        for range in batches(events, batch) {
            tx.send(range.collect()).expect("the consumer hung up");
        }
    });
    let consumer = thread::spawn(move || {
        let mut seen = (0, 0);
        for batch in rx {
            seen = consume(seen, &batch);
        }
        seen
    });
    producer.join().expect("the producer panicked");
    let seen = consumer.join().expect("the consumer panicked");
    let elapsed = start.elapsed();
    check(events, seen);
    Sample::new(events, elapsed)
}

/// Moves `events` events between two tokio tasks on a multi-thread runtime with 2 workers over a
/// bounded tokio mpsc channel of `capacity` batches of `batch` events.
///
/// The runtime is built before timing starts and shut down after it stops. The baseline
/// `tokio_mpsc_batched_1000` is `tokio_mpsc_batched(events, 1000, capacity)`.
///
/// # Panics
///
/// If `batch` or `capacity` is 0, if the runtime cannot be built, or if the consumer did not
/// receive exactly `0..events`.
pub fn tokio_mpsc_batched(events: u64, batch: usize, capacity: usize) -> Sample {
    assert!(
        batch > 0 && capacity > 0,
        "batch and capacity must not be 0"
    );
    let runtime = two_worker_runtime();
    let (seen, elapsed) = runtime.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u64>>(capacity);
        let start = Instant::now();
        let producer = tokio::spawn(async move {
            for range in batches(events, batch) {
                tx.send(range.collect())
                    .await
                    .expect("the consumer hung up");
            }
        });
        let consumer = tokio::spawn(async move {
            let mut seen = (0, 0);
            while let Some(batch) = rx.recv().await {
                seen = consume(seen, &batch);
            }
            seen
        });
        producer.await.expect("the producer panicked");
        let seen = consumer.await.expect("the consumer panicked");
        (seen, start.elapsed())
    });
    check(events, seen);
    Sample::new(events, elapsed)
}

/// Moves `events` events one at a time between two tokio tasks on a multi-thread runtime with 2
/// workers, the consumer asking for each next event over a second channel before it can arrive.
///
/// This is not what anyone would write to move events fast: it is the floor under every
/// `max_demand` 1 row, where a consumer must ask before each event, so each event costs two
/// messages and two task wake-ups across tasks. Both channels are tokio's unbounded mpsc, its
/// cheapest, and the messages are bare `u64`s. The baseline `tokio_mpsc_round_trip_1` is
/// `tokio_mpsc_round_trip(events)`; its events per second are round trips per second.
///
/// # Panics
///
/// If the runtime cannot be built, or if the consumer did not receive exactly `0..events`.
pub fn tokio_mpsc_round_trip(events: u64) -> Sample {
    let runtime = two_worker_runtime();
    let (seen, elapsed) = runtime.block_on(async move {
        let (ask_tx, mut ask_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (event_tx, mut event_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let start = Instant::now();
        let producer = tokio::spawn(async move {
            let mut next = 0;
            while next < events && ask_rx.recv().await.is_some() {
                event_tx.send(next).expect("the consumer hung up");
                next += 1;
            }
        });
        let consumer = tokio::spawn(async move {
            let mut seen = (0, 0);
            while seen.0 < events {
                ask_tx.send(()).expect("the producer hung up");
                let event = event_rx.recv().await.expect("the producer hung up");
                seen = consume(seen, &[event]);
            }
            seen
        });
        let seen = consumer.await.expect("the consumer panicked");
        producer.await.expect("the producer panicked");
        (seen, start.elapsed())
    });
    check(events, seen);
    Sample::new(events, elapsed)
}

/// Runs `workers` tokio tasks that do nothing, spawned from one task in waves of `wave`, each
/// wave awaited before the next: the floor under the `consumer_supervisor` rows, which start a
/// task per event.
///
/// Runs on a multi-thread runtime with 2 workers. The baseline `tokio_spawn_1000` is
/// `tokio_spawn(workers, 1000)`; its events per second are tasks started and finished per second.
///
/// # Panics
///
/// If `wave` is 0, if the runtime cannot be built, or if a task did not run exactly once.
pub fn tokio_spawn(workers: u64, wave: usize) -> Sample {
    assert!(wave > 0, "wave must not be 0");
    let runtime = two_worker_runtime();
    let (seen, elapsed) = runtime.block_on(async move {
        let start = Instant::now();
        let seen = tokio::spawn(async move {
            let mut seen = (0, 0);
            let mut tasks = Vec::with_capacity(wave);
            for range in batches(workers, wave) {
                tasks.extend(range.map(|i| tokio::spawn(async move { std::hint::black_box(i) })));
                for task in tasks.drain(..) {
                    seen = consume(seen, &[task.await.expect("a task panicked")]);
                }
            }
            seen
        })
        .await
        .expect("the spawning task panicked");
        (seen, start.elapsed())
    });
    check(workers, seen);
    Sample::new(workers, elapsed)
}

/// The runtime of the tokio baselines: multi-thread with 2 workers, like the demandflow rows'.
fn two_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("building the tokio runtime")
}

/// `0..events` cut into ranges of `batch` (the last one shorter).
fn batches(events: u64, batch: usize) -> impl Iterator<Item = std::ops::Range<u64>> {
    let batch = batch as u64;
    (0..events.div_ceil(batch)).map(move |i| i * batch..((i + 1) * batch).min(events))
}

/// Adds `batch` to what the consumer has seen.
fn consume((count, sum): Seen, batch: &[u64]) -> Seen {
    let batch_sum = batch.iter().fold(0u64, |acc, &x| acc.wrapping_add(x));
    (count + batch.len() as u64, sum.wrapping_add(batch_sum))
}

/// Panics unless the consumer saw exactly the events `0..events`.
fn check(events: u64, (count, sum): Seen) {
    // The wrapping sum of 0..n is n(n-1)/2 modulo 2^64.
    let expected = (u128::from(events) * u128::from(events.saturating_sub(1)) / 2) as u64;
    assert_eq!(
        count, events,
        "the consumer received a wrong number of events"
    );
    assert_eq!(sum, expected, "the consumer received wrong events");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_the_range_once_with_a_short_last_one() {
        let all: Vec<_> = batches(2_500, 1_000).collect();
        assert_eq!(all, [0..1_000, 1_000..2_000, 2_000..2_500]);
        assert_eq!(batches(0, 1_000).count(), 0);
        assert_eq!(batches(1_000, 1_000).count(), 1);
    }

    #[test]
    fn both_baselines_deliver_every_event_once() {
        for events in [0, 1, 999, 1_000, 12_345] {
            assert_eq!(crossbeam_batched(events, 1_000, 4).events, events);
            assert_eq!(tokio_mpsc_batched(events, 1_000, 4).events, events);
            assert_eq!(tokio_mpsc_round_trip(events).events, events);
            assert_eq!(tokio_spawn(events, 1_000).events, events);
        }
    }

    #[test]
    #[should_panic(expected = "wrong events")]
    fn check_refuses_a_wrong_sum() {
        check(10, (10, 44));
    }
}
