//! Batching: 100,000 keyed readings through processors partitioned by key and a
//! per-key batcher, every one acknowledged to its source exactly once.
//!
//! What it teaches:
//!
//! - a [`Message`] per reading, carrying an [`AckRef`]: the source's
//!   acknowledger and the reading's sequence number as its token;
//! - a [`Topology`]: one finite source, 4 processors partitioned by key (so
//!   one key's readings are handled in order), a batcher of 1,000 readings or
//!   50 ms per key, and 2 batch handlers that take batches of a key in order;
//! - failing a message in a processor (every 10,000th reading is malformed):
//!   it never reaches the batcher and is acknowledged as failed;
//! - checking the result: the acknowledger counts every token once, and the
//!   batch handler checks that each key's readings arrive in order.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --release --example batching
//! ```
//!
//! It prints the throughput and, as its last line, `RESULT {json}` with the
//! messages acknowledged ok and failed, the batches by trigger and the ordering
//! violations. It exits with a non-zero status if the check fails.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use demandflow::from_iter;
use demandflow::messages::{
    AckRef, Acknowledger, BatchInfo, Batcher, Failure, Message, MessageHandler, Processors,
    Topology,
};
use parking_lot::Mutex;

const MESSAGES: u64 = 100_000;
const KEYS: u64 = 64;

/// One reading of sensor `key`, the `seq`-th overall.
struct Reading {
    key: u64,
    seq: u64,
}

/// The source's side of acknowledgement: one bit per token, set once.
struct Ledger {
    seen: Mutex<Vec<u8>>,
    ok: AtomicU64,
    failed: AtomicU64,
    twice: AtomicU64,
}

impl Acknowledger for Ledger {
    fn ack(&self, successful: Vec<u64>, failed: Vec<(u64, Failure)>) {
        let mut seen = self.seen.lock();
        for token in successful.iter().chain(failed.iter().map(|(t, _)| t)) {
            let slot = &mut seen[*token as usize];
            if *slot != 0 {
                self.twice.fetch_add(1, Ordering::Relaxed);
            }
            *slot = 1;
        }
        self.ok
            .fetch_add(successful.len() as u64, Ordering::Relaxed);
        self.failed
            .fetch_add(failed.len() as u64, Ordering::Relaxed);
    }
}

/// Validates readings, batches them per sensor, and checks per-sensor order.
#[derive(Default)]
struct Sensors {
    last_seq: Mutex<HashMap<u64, u64>>,
    violations: Arc<AtomicU64>,
}

impl MessageHandler<Reading> for Sensors {
    async fn handle_message(&self, message: &mut Message<Reading>) {
        if message.data.seq % 10_000 == 9_999 {
            message.fail("malformed reading");
            return;
        }
        let key = message.data.key;
        message.put_batch_key(key);
    }

    async fn handle_batch(
        &self,
        messages: Vec<Message<Reading>>,
        info: &BatchInfo,
    ) -> Vec<Message<Reading>> {
        // Where a real service would write the batch to a database in one call.
        let mut last = self.last_seq.lock();
        for message in &messages {
            let reading = &message.data;
            debug_assert_eq!(info.batch_key, reading.key.into());
            if let Some(prev) = last.insert(reading.key, reading.seq)
                && prev >= reading.seq
            {
                self.violations.fetch_add(1, Ordering::Relaxed);
            }
        }
        messages
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let ledger = Arc::new(Ledger {
        seen: Mutex::new(vec![0; MESSAGES as usize]),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        twice: AtomicU64::new(0),
    });
    let sensors = Sensors::default();
    let violations = sensors.violations.clone();
    let started = Instant::now();
    let acknowledger = ledger.clone();
    let topology = Topology::builder("batching", sensors)
        .source(1, move |_| {
            let acknowledger: Arc<dyn Acknowledger> = acknowledger.clone();
            from_iter((0..MESSAGES).map(move |seq| {
                let reading = Reading {
                    key: seq % KEYS,
                    seq,
                };
                Message::new(reading, AckRef::new(acknowledger.clone(), seq))
            }))
        })
        .processors(
            Processors::new(4)
                .max_demand(1_000)
                .partition_by(|m: &Message<Reading>| m.data.key),
        )
        .batcher(
            Batcher::new("default")
                .batch_size(1_000)
                .batch_timeout(Duration::from_millis(50))
                .concurrency(2)
                .partition_by_key(),
        )
        .start()
        .await
        .expect("the topology starts");
    topology.wait().await;
    let elapsed = started.elapsed();

    let metrics = topology.metrics();
    let (ok, failed) = (
        ledger.ok.load(Ordering::Relaxed),
        ledger.failed.load(Ordering::Relaxed),
    );
    let missing = ledger.seen.lock().iter().filter(|s| **s == 0).count();
    let twice = ledger.twice.load(Ordering::Relaxed);
    let violations = violations.load(Ordering::Relaxed);
    let passed = ok + failed == MESSAGES
        && failed == MESSAGES / 10_000
        && missing == 0
        && twice == 0
        && violations == 0
        && metrics.messages_ok == ok;
    println!(
        "{MESSAGES} messages in {:.1} ms: {:.2} M messages/s acknowledged",
        elapsed.as_secs_f64() * 1e3,
        MESSAGES as f64 / elapsed.as_secs_f64() / 1e6
    );
    println!(
        "RESULT {{\"example\":\"batching\",\"ok\":{passed},\"messages\":{MESSAGES},\"acked_ok\":{ok},\"acked_failed\":{failed},\"batches_by_trigger\":{{\"size\":{},\"timeout\":{},\"flush\":{}}},\"ordering_violations\":{violations}}}",
        metrics.batches_by_size, metrics.batches_by_timeout, metrics.batches_by_flush
    );
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
