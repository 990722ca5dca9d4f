//! Rate limiting: at most N messages per interval, shared by all source copies,
//! nothing dropped; on the paused clock.

mod support;

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use demandflow_messages::{Batcher, Message, Processors, Topology};
use demandflow_runtime::from_iter;
use support::{Recorder, Tally};
use tokio::time::Instant;

/// The most messages handled within any window of `window` starting at a handling.
fn busiest(times: &[Instant], window: Duration) -> usize {
    let mut times = times.to_vec();
    times.sort();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t < times[i] + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn ten_per_100ms_over_1000_messages_from_two_source_copies() {
    let tally = Arc::new(Tally::default());
    let sources = support::halves(1_000, &tally);
    let handler = Recorder::default();
    let log = handler.log.clone();
    let t0 = Instant::now();
    let topology = support::started(
        Topology::builder("limited", handler)
            .source(2, move |i| {
                from_iter(std::mem::take(&mut sources.lock()[i]))
            })
            .processors(Processors::new(2).max_demand(8))
            .batcher(Batcher::new("default").batch_size(25))
            .rate_limit(support::rate(10, Duration::from_millis(100))),
    )
    .await;
    topology.wait().await;

    tally.assert_exactly_once(1_000);
    assert_eq!(
        tally.inner.lock().ok.len(),
        1_000,
        "all delivered, none dropped"
    );
    let times: Vec<Instant> = support::handled_times(&log);
    assert_eq!(times.len(), 1_000);
    assert_eq!(busiest(&times, Duration::from_millis(100)), 10);
    // Fixed windows from the start, as the limiter counts them.
    let windows = times
        .iter()
        .map(|t| (*t - t0).as_millis() / 100)
        .max()
        .unwrap() as usize
        + 1;
    let mut per_window = vec![0_usize; windows];
    for t in &times {
        per_window[((*t - t0).as_millis() / 100) as usize] += 1;
    }
    assert!(per_window.iter().all(|&n| n <= 10), "{per_window:?}");
}

#[tokio::test(start_paused = true)]
async fn the_limit_can_change_while_running() {
    let tally = Arc::new(Tally::default());
    let sources = support::halves(300, &tally);
    let handler = Recorder::default();
    let log = handler.log.clone();
    let t0 = Instant::now();
    let topology = support::started(
        Topology::builder("limited", handler)
            .source(1, move |i| {
                from_iter(std::mem::take(&mut sources.lock()[i * 2]))
            })
            .processors(Processors::new(1).max_demand(100))
            .rate_limit(support::rate(5, Duration::from_secs(1))),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    // Windows 0, 1 and 2 handled 5 each.
    assert_eq!(log.0.lock().handled.len(), 15);
    topology.set_rate_limit(NonZeroU64::new(50).unwrap());
    assert_eq!(topology.rate_limiter().unwrap().limit(), 50);
    topology.wait().await;
    // The 150 even messages of the only source copy: 15, then 50 a second.
    let times: Vec<Instant> = support::handled_times(&log);
    assert_eq!(times.len(), 150);
    let mut per_window = vec![0_usize; 6];
    for t in &times {
        per_window[((*t - t0).as_millis() / 1000) as usize] += 1;
    }
    assert_eq!(per_window, vec![5, 5, 5, 50, 50, 35]);
}

#[tokio::test(start_paused = true)]
async fn the_limit_holds_when_partitions_get_their_messages_late() {
    // The first 300 messages all go to one processor, the next 300 to the
    // other: demand the idle processor asked for early must not arrive as a
    // burst later.
    let other = (1..)
        .find(|k| demandflow_core::key_partition(k, 2) != demandflow_core::key_partition(&0_u64, 2))
        .unwrap();
    let tally = Arc::new(Tally::default());
    let sources = parking_lot::Mutex::new(Some(support::messages(600, &tally)));
    let handler = Recorder::default();
    let log = handler.log.clone();
    let topology = support::started(
        Topology::builder("limited", handler)
            .source(1, move |_| {
                from_iter(sources.lock().take().unwrap_or_default())
            })
            .processors(
                Processors::new(2)
                    .max_demand(50)
                    .partition_by(move |m: &Message<u64>| if m.data < 300 { 0 } else { other }),
            )
            .rate_limit(support::rate(10, Duration::from_millis(100))),
    )
    .await;
    topology.wait().await;
    tally.assert_exactly_once(600);
    let times: Vec<Instant> = support::handled_times(&log);
    assert_eq!(times.len(), 600);
    assert_eq!(busiest(&times, Duration::from_millis(100)), 10);
}
