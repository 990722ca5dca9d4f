//! The Redis Streams source and sink against the Redis server on 127.0.0.1:6379.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use demandflow_messages::{
    BatchInfo, Batcher, Message, MessageHandler, Processors, Topology, TopologyBuilder,
};
use demandflow_redis::{
    BuildSourceError, FailurePolicy, RedisSink, RedisSource, RedisSourceBuilder, StreamEntry,
};
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamRangeReply;
use support::{URL, add_numbers, cleanup, eventually, pending, redis_or_skip, unique_key};
use tokio::sync::Semaphore;

fn number(entry: &StreamEntry) -> Result<u64, String> {
    entry.parse("n")
}

/// A connection and a fresh stream (named after `name`) holding `0..count`;
/// `None` when the test is skipped.
async fn numbers_stream(
    test: &str,
    name: &str,
    count: u64,
) -> Option<(MultiplexedConnection, String)> {
    let mut conn = redis_or_skip(test).await?;
    let stream = unique_key(name);
    add_numbers(&mut conn, &stream, 0..count).await;
    Some((conn, stream))
}

/// A source on `stream`, group `g`, decoding field `n`, with `tune` applied.
async fn source_on(
    stream: &str,
    tune: impl FnOnce(RedisSourceBuilder<u64>) -> RedisSourceBuilder<u64>,
) -> RedisSource<u64> {
    tune(RedisSource::builder(URL, stream, "g").decode(number))
        .build()
        .await
        .unwrap()
}

/// Quick claiming: entries idle `idle_ms` are claimed, checked every
/// `interval_ms`, with reads blocking 50 ms.
fn claims(
    builder: RedisSourceBuilder<u64>,
    idle_ms: u64,
    interval_ms: u64,
) -> RedisSourceBuilder<u64> {
    builder
        .claim_min_idle(Duration::from_millis(idle_ms))
        .claim_interval(Duration::from_millis(interval_ms))
        .block(Duration::from_millis(50))
}

/// A topology named `name` running `handler` over `copies` copies of `source`.
fn topology<H: MessageHandler<u64>>(
    name: &str,
    handler: H,
    source: &RedisSource<u64>,
    copies: usize,
) -> TopologyBuilder<u64, H> {
    let s = source.clone();
    Topology::builder(name, handler).source(copies, move |i| s.copy(i))
}

/// Starts [`topology`] with `processors`.
async fn run<H: MessageHandler<u64>>(
    name: &str,
    handler: H,
    source: &RedisSource<u64>,
    copies: usize,
    processors: Processors<u64>,
) -> Topology<u64> {
    topology(name, handler, source, copies)
        .processors(processors)
        .start()
        .await
        .unwrap()
}

/// Waits until `source` has acknowledged `n` entries.
async fn all_acked(source: &RedisSource<u64>, n: u64) {
    eventually("every entry acknowledged", || {
        let source = source.clone();
        async move { source.metrics().acked == n }
    })
    .await;
}

/// Drains `topology`, then deletes `keys`.
async fn finish(topology: Topology<u64>, conn: &mut MultiplexedConnection, keys: &[&str]) {
    topology.drain(Duration::from_secs(5)).await;
    cleanup(conn, keys).await;
}

/// Every entry of `stream`.
async fn xrange(conn: &mut MultiplexedConnection, stream: &str) -> StreamRangeReply {
    redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap()
}

/// Counts how often each number was handled; fails the numbers in `fail`
/// while their count is below `fail_until` (u32::MAX: always).
#[derive(Clone, Default)]
struct Record {
    seen: Arc<Mutex<HashMap<u64, u32>>>,
    fail: Vec<u64>,
    fail_until: u32,
    gate: Option<Arc<Semaphore>>,
}

impl Record {
    /// A record whose handler first takes a permit of the returned gate,
    /// which starts with `permits`.
    fn gated(permits: usize) -> (Record, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(permits));
        let record = Record {
            gate: Some(gate.clone()),
            ..Record::default()
        };
        (record, gate)
    }

    fn count(&self) -> usize {
        self.seen.lock().len()
    }
}

impl MessageHandler<u64> for Record {
    async fn handle_message(&self, message: &mut Message<u64>) {
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        let n = message.data;
        let times = {
            let mut seen = self.seen.lock();
            let times = seen.entry(n).or_default();
            *times += 1;
            *times
        };
        if self.fail.contains(&n) && times <= self.fail_until {
            message.fail("told to fail");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_is_processed_and_acknowledged() {
    let Some((mut conn, stream)) =
        numbers_stream("every_entry_is_processed_and_acknowledged", "all", 2_000).await
    else {
        return;
    };
    let source = source_on(&stream, |b| b).await;
    let record = Record::default();
    let topology = run(
        "all",
        record.clone(),
        &source,
        2,
        Processors::new(2).max_demand(100),
    )
    .await;
    all_acked(&source, 2_000).await;
    assert_eq!(record.count(), 2_000);
    assert!(
        record.seen.lock().values().all(|&n| n == 1),
        "an entry was handled twice"
    );
    assert_eq!(pending(&mut conn, &stream, "g").await, 0);
    let metrics = source.metrics();
    assert_eq!((metrics.read, metrics.left_pending), (2_000, 0));
    finish(topology, &mut conn, &[&stream]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_never_holds_more_entries_than_were_asked() {
    let Some((mut conn, stream)) = numbers_stream(
        "the_source_never_holds_more_entries_than_were_asked",
        "demand",
        1_000,
    )
    .await
    else {
        return;
    };
    let source = source_on(&stream, |b| b).await;
    // The handler waits at the gate: the processor holds what it was given
    // and asks for nothing more, so the group's pending list shows exactly
    // what the source read: the processor's max_demand, never more.
    let (record, gate) = Record::gated(0);
    let topology = run(
        "demand",
        record.clone(),
        &source,
        1,
        Processors::new(1).max_demand(10),
    )
    .await;
    eventually("the first read", || {
        let source = source.clone();
        async move { source.metrics().read > 0 }
    })
    .await;
    // Give an over-eager source every chance to read more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(source.metrics().read, 10);
    assert_eq!(pending(&mut conn, &stream, "g").await, 10);
    gate.add_permits(1_000);
    all_acked(&source, 1_000).await;
    assert_eq!(pending(&mut conn, &stream, "g").await, 0);
    finish(topology, &mut conn, &[&stream]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_message_is_left_pending_and_delivered_again() {
    let Some((mut conn, stream)) = numbers_stream(
        "a_failed_message_is_left_pending_and_delivered_again",
        "retry",
        100,
    )
    .await
    else {
        return;
    };
    let source = source_on(&stream, |b| claims(b, 1_000, 100)).await;
    // 7 and 42 fail twice, then succeed.
    let record = Record {
        fail: vec![7, 42],
        fail_until: 2,
        ..Record::default()
    };
    let topology = run("retry", record.clone(), &source, 1, Processors::new(1)).await;
    all_acked(&source, 100).await;
    {
        let seen = record.seen.lock();
        assert_eq!((seen[&7], seen[&42], seen[&8]), (3, 3, 1));
    }
    let metrics = source.metrics();
    assert_eq!(metrics.left_pending, 4);
    assert_eq!(metrics.claimed, 4);
    assert_eq!(pending(&mut conn, &stream, "g").await, 0);
    finish(topology, &mut conn, &[&stream]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_malformed_entries_go_to_the_dead_letter_stream_after_n_deliveries() {
    let Some((mut conn, stream)) = numbers_stream("dead letters", "dl", 50).await else {
        return;
    };
    let dead = format!("{stream}:dead");
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("n")
        .arg("not a number")
        .query_async(&mut conn)
        .await
        .unwrap();
    let source = source_on(&stream, |b| {
        claims(b, 500, 50).on_failure(FailurePolicy::dead_letter(&dead, 3))
    })
    .await;
    let record = Record {
        fail: vec![13],
        fail_until: u32::MAX,
        ..Record::default()
    };
    let topology = run("dl", record.clone(), &source, 1, Processors::new(1)).await;
    eventually("both bad entries dead-lettered", || {
        let source = source.clone();
        async move { source.metrics().dead_lettered == 2 }
    })
    .await;
    eventually("nothing pending", || {
        let mut conn = conn.clone();
        let stream = stream.clone();
        async move { pending(&mut conn, &stream, "g").await == 0 }
    })
    .await;
    assert_eq!(
        record.seen.lock()[&13],
        3,
        "13 was delivered 3 times, then moved"
    );
    let metrics = source.metrics();
    assert_eq!(metrics.malformed, 3);
    assert_eq!(metrics.acked, 51);
    let dead_entries = xrange(&mut conn, &dead).await;
    let mut found: Vec<(String, String, String)> = dead_entries
        .ids
        .iter()
        .map(|e| {
            let get = |k: &str| e.get::<String>(k).unwrap_or_default();
            (get("n"), get("deliveries"), get("error"))
        })
        .collect();
    found.sort();
    assert_eq!(found[0].0, "13");
    assert_eq!(found[0].1, "3");
    assert_eq!(found[1].0, "not a number");
    assert!(found[1].2.contains("malformed entry"), "{found:?}");
    finish(topology, &mut conn, &[&stream, &dead]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_consumer_that_disappeared_are_claimed_and_finished() {
    let Some((mut conn, stream)) = numbers_stream("claiming", "claim", 500).await else {
        return;
    };
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    // A consumer reads 120 entries and vanishes without acknowledging them.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("gone")
        .arg("COUNT")
        .arg(120)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending(&mut conn, &stream, "g").await, 120);
    let source = source_on(&stream, |b| claims(b, 1_000, 100)).await;
    let record = Record::default();
    let topology = run(
        "claim",
        record.clone(),
        &source,
        1,
        Processors::new(1).max_demand(50),
    )
    .await;
    all_acked(&source, 500).await;
    assert_eq!(record.count(), 500);
    let metrics = source.metrics();
    assert_eq!((metrics.read, metrics.claimed), (380, 120));
    assert_eq!(pending(&mut conn, &stream, "g").await, 0);
    finish(topology, &mut conn, &[&stream]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_is_reopened_and_nothing_is_lost() {
    let Some((mut conn, stream)) = numbers_stream("reconnect", "reconnect", 3_000).await else {
        return;
    };
    let consumer = format!("reconnect-{}", std::process::id());
    let source = source_on(&stream, |b| claims(b.consumer(&consumer), 300, 100)).await;
    let (record, gate) = Record::gated(500);
    let topology = run(
        "reconnect",
        record.clone(),
        &source,
        1,
        Processors::new(1).max_demand(100),
    )
    .await;
    eventually("500 handled", || {
        let record = record.clone();
        async move { record.count() == 500 }
    })
    .await;
    // Kill the reader's connection, found by the name it gives itself.
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    let name = format!("name=df-{consumer}-0 ");
    let ids: Vec<&str> = clients
        .lines()
        .filter(|l| l.contains(&name))
        .filter_map(|l| l.split(' ').next()?.strip_prefix("id="))
        .collect();
    assert_eq!(ids.len(), 1, "{clients}");
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(ids[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    gate.add_permits(10_000);
    all_acked(&source, 3_000).await;
    assert_eq!(record.count(), 3_000);
    let metrics = source.metrics();
    assert!(
        metrics.connection_errors >= 1 && metrics.reconnects >= 1,
        "{metrics:?}"
    );
    assert_eq!(pending(&mut conn, &stream, "g").await, 0);
    finish(topology, &mut conn, &[&stream]).await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_from_the_builder() {
    let started = std::time::Instant::now();
    let error = RedisSource::builder("redis://127.0.0.1:1/", "s", "g")
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(error, BuildSourceError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("unreachable"), "{error}");
    // Not a hang: the connect timeout is 3 s.
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Copies every message to the output stream, then lets it be acknowledged.
struct Copy(Arc<RedisSink>);

impl MessageHandler<u64> for Copy {
    async fn handle_message(&self, _message: &mut Message<u64>) {}

    async fn handle_batch(&self, batch: Vec<Message<u64>>, _: &BatchInfo) -> Vec<Message<u64>> {
        self.0
            .write(batch, |n| {
                vec![("n".to_owned(), n.to_string().into_bytes())]
            })
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_writes_every_message_before_it_is_acknowledged() {
    let Some((mut conn, input)) = numbers_stream("sink", "sink-in", 1_000).await else {
        return;
    };
    let output = format!("{input}:out");
    let source = source_on(&input, |b| b).await;
    let sink = Arc::new(RedisSink::connect(URL, &output).await.unwrap());
    let topology = topology("sink", Copy(sink), &source, 1)
        .processors(Processors::new(1).max_demand(200))
        .batcher(Batcher::new("default").batch_size(100))
        .start()
        .await
        .unwrap();
    all_acked(&source, 1_000).await;
    let written = xrange(&mut conn, &output).await;
    let mut numbers: Vec<u64> = written
        .ids
        .iter()
        .map(|e| e.get::<String>("n").unwrap().parse().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..1_000).collect::<Vec<_>>());
    finish(topology, &mut conn, &[&input, &output]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_trims_the_stream_with_maxlen() {
    let Some(mut conn) = redis_or_skip("maxlen").await else {
        return;
    };
    let output = unique_key("maxlen");
    let sink = RedisSink::connect(URL, &output)
        .await
        .unwrap()
        .maxlen_approx(100);
    let messages: Vec<Message<u64>> = (0..2_000)
        .map(|n| Message::new(n, demandflow_messages::AckRef::noop()))
        .collect();
    let back = sink
        .write(messages, |n| {
            vec![("n".to_owned(), n.to_string().into_bytes())]
        })
        .await;
    assert!(back.iter().all(Message::is_ok));
    let len: u64 = redis::cmd("XLEN")
        .arg(&output)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((100..2_000).contains(&len), "XLEN {len}");
    cleanup(&mut conn, &[&output]).await;
}
