//! Properties over random schedules, panics and shutdown points: every message
//! is acknowledged exactly once, never both ok and failed, and per-key order
//! holds where processors are partitioned.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Once};
use std::time::Duration;

use demandflow_messages::{Batcher, DummySource, Processors, Topology};
use proptest::prelude::*;
use support::{Recorder, Tally};

#[derive(Clone, Debug)]
enum Shutdown {
    /// Push everything, then drain with a generous deadline.
    DrainAtEnd,
    /// Drain after this many pushes, with this deadline (ms).
    DrainAfter(usize, u64),
    /// Stop abruptly after this many pushes.
    StopAfter(usize),
}

#[derive(Clone, Debug)]
struct Case {
    keys: Vec<u64>,
    /// Pushes: how many messages, then how long to wait (ms).
    chunks: Vec<(usize, u64)>,
    processors: usize,
    max_demand: u64,
    batch_size: usize,
    timeout_ms: u64,
    handlers: usize,
    panic: HashSet<u64>,
    batch_panic: HashSet<u64>,
    fail: HashSet<u64>,
    drop: HashSet<u64>,
    batch_delay_ms: u64,
    shutdown: Shutdown,
}

/// Chunk sizes covering exactly `n` messages, in order: the generated sizes
/// cut off at `n`, then whatever is left in one last chunk.
fn covering(n: usize, raw_chunks: Vec<(usize, u64)>) -> Vec<(usize, u64)> {
    let mut chunks = Vec::new();
    let mut left = n;
    for (size, wait) in raw_chunks {
        if left == 0 {
            break;
        }
        let size = size.min(left);
        chunks.push((size, wait));
        left -= size;
    }
    if left > 0 {
        chunks.push((left, 0));
    }
    chunks
}

prop_compose! {
    /// A case of `n` messages.
    fn case_of(n: usize)(
        keys in proptest::collection::vec(0_u64..5, n),
        raw_chunks in proptest::collection::vec((1_usize..40, 0_u64..300), 1..8),
        (processors, max_demand, batch_size, timeout_ms, handlers)
            in (1_usize..4, 1_u64..20, 1_usize..30, 1_u64..400, 1_usize..3),
        panic in proptest::collection::hash_set(0..n as u64, 0..4),
        batch_panic in proptest::collection::hash_set(0..n as u64, 0..3),
        fail in proptest::collection::hash_set(0..n as u64, 0..8),
        drop in proptest::collection::hash_set(0..n as u64, 0..8),
        batch_delay_ms in 0_u64..200,
        shutdown in prop_oneof![
            Just(Shutdown::DrainAtEnd),
            (0_usize..8, 0_u64..500).prop_map(|(a, d)| Shutdown::DrainAfter(a, d)),
            (0_usize..8).prop_map(Shutdown::StopAfter),
        ],
    ) -> Case {
        let chunks = covering(n, raw_chunks);
        Case { keys, chunks, processors, max_demand, batch_size, timeout_ms, handlers, panic, batch_panic, fail, drop, batch_delay_ms, shutdown }
    }
}

fn case() -> impl Strategy<Value = Case> {
    (1_usize..160).prop_flat_map(case_of)
}

fn quiet_test_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !text.contains("boom") {
                default(info);
            }
        }));
    });
}

fn run(case: Case) -> Result<(), TestCaseError> {
    let n = case.keys.len() as u64;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let keys = Arc::new(case.keys.clone());
        let in_set = |set: &HashSet<u64>| {
            let set = set.clone();
            Some(Box::new(move |n| set.contains(&n)) as Box<dyn Fn(u64) -> bool + Send + Sync>)
        };
        let handler = Recorder {
            panic: in_set(&case.panic),
            batch_panic: in_set(&case.batch_panic),
            fail: in_set(&case.fail),
            batch_drop: in_set(&case.drop),
            key: Some({
                let keys = keys.clone();
                Box::new(move |n| keys[n as usize])
            }),
            batch_delay: Some(Duration::from_millis(case.batch_delay_ms)),
            ..Recorder::default()
        };
        let log = handler.log.clone();
        let partition_keys = keys.clone();
        let topology = Topology::builder("prop", handler)
            .source(1, |_| DummySource::new())
            .processors(
                Processors::new(case.processors)
                    .max_demand(case.max_demand)
                    .partition_by(move |m| partition_keys[m.data as usize]),
            )
            .batcher(
                Batcher::new("default")
                    .batch_size(case.batch_size)
                    .batch_timeout(Duration::from_millis(case.timeout_ms))
                    .concurrency(case.handlers)
                    .partition_by_key(),
            )
            .start()
            .await
            .unwrap();

        let tally = Arc::new(Tally::default());
        let all = support::messages(n, &tally);
        let mut all = all.into_iter();
        let mut drained = None;
        for (i, (size, wait)) in case.chunks.iter().enumerate() {
            match case.shutdown {
                Shutdown::DrainAfter(at, deadline) if at == i => {
                    let topology = topology.clone();
                    drained = Some(tokio::spawn(async move {
                        topology.drain(Duration::from_millis(deadline)).await
                    }));
                }
                Shutdown::StopAfter(at) if at == i => topology.stop().await,
                _ => {}
            }
            let chunk: Vec<_> = all.by_ref().take(*size).collect();
            let _ = topology.push_messages(chunk);
            tokio::time::sleep(Duration::from_millis(*wait)).await;
        }
        let report = match drained {
            Some(drain) => drain.await.unwrap(),
            None => topology.drain(Duration::from_secs(3600)).await,
        };
        drop(topology);
        // Let stopped stages drop what they held.
        tokio::time::sleep(Duration::from_secs(1)).await;

        let t = tally.inner.lock();
        for token in 0..n {
            let ok = t.ok.get(&token).copied().unwrap_or(0);
            let failed = t.failed.get(&token).map_or(0, |f| f.0);
            prop_assert_eq!(
                ok + failed,
                1,
                "token {} acked {} ok, {} failed",
                token,
                ok,
                failed
            );
        }
        if matches!(case.shutdown, Shutdown::DrainAtEnd) {
            prop_assert!(report.is_complete(), "{:?}", report);
            // Everything not failed on purpose succeeded.
            for token in 0..n {
                let meant_to_fail = case.panic.contains(&token)
                    || case.fail.contains(&token)
                    || case.drop.contains(&token);
                if !meant_to_fail && !t.ok.contains_key(&token) {
                    // Only a panicking batch may have taken it down.
                    let batch_failed = matches!(
                        t.failed.get(&token),
                        Some((_, demandflow_messages::Failure::Panicked(_)))
                    );
                    prop_assert!(
                        batch_failed,
                        "token {} failed: {:?}",
                        token,
                        t.failed.get(&token)
                    );
                }
            }
        }

        // Per key, processors and batch handlers saw messages in push order.
        let log = log.0.lock();
        let mut last: HashMap<u64, u64> = HashMap::new();
        for (data, _) in &log.handled {
            let key = keys[*data as usize];
            if let Some(prev) = last.insert(key, *data) {
                prop_assert!(
                    prev < *data,
                    "processor order: key {} saw {} after {}",
                    key,
                    data,
                    prev
                );
            }
        }
        let mut last: HashMap<u64, u64> = HashMap::new();
        for (info, data, _) in &log.batches {
            for d in data {
                prop_assert_eq!(keys[*d as usize], support::key_of(info));
                if let Some(prev) = last.insert(keys[*d as usize], *d) {
                    prop_assert!(prev < *d, "batch order: {} after {}", d, prev);
                }
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_message_is_acked_exactly_once_and_per_key_order_holds(case in case()) {
        quiet_test_panics();
        run(case)?;
    }
}
