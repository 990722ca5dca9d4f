//! The batching analytics sender, run and measured: 5 tasks record 10,000
//! events each, concurrently; every one must arrive exactly once, in batches of
//! at most 100 with at most 50 sends in flight — first to the null sink
//! (100–250 ms per send, no service needed), then to Redis Streams on
//! 127.0.0.1:6379 (or `REDIS_URL`) when it answers.
//!
//! ```sh
//! cargo run --release -p demandflow-analytics
//! ```
//!
//! It prints a table, then one line
//! `RESULT {"bench":"analytics","records":50000,"delivered":N,"duplicates":0,
//! "max_batch":N,"max_in_flight":N,"enqueue_ms":X,"null_sink_ms":X,"redis_ms":X}`
//! and exits non-zero when a check fails. `enqueue_ms` is how long the 5 tasks
//! took to record everything into the null-sink run; `null_sink_ms` and
//! `redis_ms` run from the first record until shutdown returned with
//! everything delivered. `delivered`, `duplicates`, `max_batch` and
//! `max_in_flight` cover both runs (the smaller delivered count, the larger of
//! the others), as measured by the sinks and, for Redis, by reading the stream
//! back. When Redis does not answer, `redis_ms` is `null` and a line says so;
//! with `CI=true` an unreachable Redis fails the run instead.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics::{
    Analytics, Measured, NullSink, Numbered, Record, RedisStreamsSink, Sink, record_numbered,
    redis_connection, take_stream,
};

const TASKS: u32 = 5;
const EACH: u64 = 10_000;
const RECORDS: u64 = TASKS as u64 * EACH;
const BATCH_SIZE: usize = 100;
const MAX_IN_FLIGHT: usize = 50;
/// Where Redis is unless `REDIS_URL` says otherwise.
const REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// What one run measured.
struct Run {
    enqueue: Duration,
    end_to_end: Duration,
    delivered: u64,
    duplicates: u64,
    max_batch: usize,
    max_in_flight: usize,
}

/// Records `EACH` numbered events from each of `TASKS` tasks into a sender
/// writing to `sink`, shuts it down, and reports what the sink measured.
async fn run<S: Sink>(sink: S, stream_prefix: &str) -> Run {
    let sink = Arc::new(Measured::new(sink));
    let analytics = Analytics::builder()
        .batch_size(BATCH_SIZE)
        .max_in_flight(MAX_IN_FLIGHT)
        // Room for every record, so `enqueue` is what recording costs the
        // tasks, not how long back-pressure held them.
        .capacity(RECORDS as usize)
        .stream_prefix(stream_prefix)
        .build(sink.clone())
        .expect("valid settings");
    let start = Instant::now();
    record_numbered(&analytics, TASKS, EACH).await;
    let enqueue = start.elapsed();
    let report = analytics.shutdown().await;
    let end_to_end = start.elapsed();
    if !report.is_complete() {
        eprintln!("shutdown was not complete: {report:?}");
    }
    Run {
        enqueue,
        end_to_end,
        delivered: sink.records() - sink.duplicates(),
        duplicates: sink.duplicates(),
        max_batch: sink.max_batch(),
        max_in_flight: sink.max_in_flight(),
    }
}

/// The enqueue baseline: what the same 5 tasks take to send 50,000 numbers
/// into a plain tokio channel with room for all of them, a receiver draining
/// it meanwhile.
async fn channel_baseline() -> Duration {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Numbered>(RECORDS as usize);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|source| {
            let tx = tx.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    tx.send(Numbered { source, n })
                        .await
                        .expect("receiver alive");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a sending task panicked");
    }
    let elapsed = start.elapsed();
    drop(tx);
    drain.await.expect("the receiver panicked");
    elapsed
}

/// The Redis baseline: what a hand-written loop takes to write the same
/// 50,000 records as 500 pipelined batches of 100 `XADD`s, one after another
/// on one connection (already encoded, no tasks, no retries).
async fn redis_baseline(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> redis::RedisResult<Duration> {
    let records: Vec<Record> = (0..TASKS)
        .flat_map(|source| (0..EACH).map(move |n| Record::of(&Numbered { source, n })))
        .collect();
    let start = Instant::now();
    for batch in records.chunks(BATCH_SIZE) {
        let mut pipe = redis::pipe();
        for record in batch {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("key")
                .arg(&record.partition_key)
                .arg("data")
                .arg(&record.data)
                .ignore();
        }
        pipe.query_async::<()>(conn).await?;
    }
    let elapsed = start.elapsed();
    let (written, _) = read_back(conn, stream).await?;
    if written != RECORDS {
        eprintln!("the Redis baseline wrote {written} records, not {RECORDS}");
    }
    Ok(elapsed)
}

/// Reads `stream` back, deletes it, and returns (distinct records, duplicates).
async fn read_back(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> redis::RedisResult<(u64, u64)> {
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for record in take_stream(conn, stream).await? {
        match Numbered::decode(&record.data) {
            Some(numbered) if !seen.insert(numbered) => duplicates += 1,
            Some(_) => {}
            None => eprintln!("an entry of {stream} is not a Numbered record"),
        }
    }
    Ok((seen.len() as u64, duplicates))
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

#[tokio::main]
async fn main() -> ExitCode {
    println!(
        "{TASKS} tasks x {EACH} records, batches of <= {BATCH_SIZE}, <= {MAX_IN_FLIGHT} sends in flight"
    );
    let null = run(NullSink::new(), "").await;
    let channel = channel_baseline().await;
    // 500 batches, 50 at a time, 175 ms each on average.
    let null_floor_ms = (RECORDS as f64 / BATCH_SIZE as f64 / MAX_IN_FLIGHT as f64 * 175.0).ceil();

    let in_ci = std::env::var("CI").as_deref() == Ok("true");
    let mut redis_loop = None;
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| REDIS_URL.to_string());
    let redis_run = match redis_connection(&url).await {
        Ok(mut conn) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let prefix = format!("analytics-example:{}:{nanos}:", std::process::id());
            let mut run = run(RedisStreamsSink::new(url.as_str()), &prefix).await;
            match redis_baseline(&mut conn, &format!("{prefix}baseline")).await {
                Ok(elapsed) => redis_loop = Some(elapsed),
                Err(e) => eprintln!("the Redis baseline failed: {e}"),
            }
            match read_back(&mut conn, &format!("{prefix}numbered")).await {
                Ok((delivered, duplicates)) => {
                    // What the stream holds, not what the sink believed it wrote.
                    run.delivered = delivered;
                    run.duplicates = run.duplicates.max(duplicates);
                }
                Err(e) => {
                    eprintln!("could not read the stream back: {e}");
                    run.delivered = 0;
                }
            }
            Some(run)
        }
        Err(e) if in_ci => {
            eprintln!("Redis at {url} is unreachable ({e}) and CI=true");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            println!("Redis at {url} is unreachable ({e}): redis_ms is null");
            None
        }
    };

    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>9} {:>9} {:>13}",
        "sink", "delivered", "duplicates", "max_batch", "in_flight", "enqueue", "end_to_end"
    );
    let runs = [("null", Some(&null)), ("redis", redis_run.as_ref())];
    for (name, run) in runs {
        if let Some(r) = run {
            println!(
                "{name:<12} {:>10} {:>10} {:>10} {:>9} {:>7.1}ms {:>11.1}ms",
                r.delivered,
                r.duplicates,
                r.max_batch,
                r.max_in_flight,
                ms(r.enqueue),
                ms(r.end_to_end)
            );
        }
    }
    println!();
    println!("baselines, same run:");
    println!(
        "  enqueue: 5 tasks into a tokio mpsc channel {:>9.1}ms  (sender {:.1}x)",
        ms(channel),
        null.enqueue.as_secs_f64() / channel.as_secs_f64()
    );
    println!(
        "  null sink: floor of 500 sends x 175 ms mean / 50 {null_floor_ms:>6.0}ms  (sender {:.2}x)",
        ms(null.end_to_end) / null_floor_ms
    );
    if let (Some(run), Some(elapsed)) = (&redis_run, redis_loop) {
        println!(
            "  redis: a hand loop of 500 pipelined XADD batches {:>8.1}ms  (sender {:.2}x)",
            ms(elapsed),
            run.end_to_end.as_secs_f64() / elapsed.as_secs_f64()
        );
    }
    let all = || runs.iter().filter_map(|(_, r)| *r);
    let delivered = all().map(|r| r.delivered).min().unwrap_or(0);
    let duplicates = all().map(|r| r.duplicates).max().unwrap_or(0);
    let max_batch = all().map(|r| r.max_batch).max().unwrap_or(0);
    let max_in_flight = all().map(|r| r.max_in_flight).max().unwrap_or(0);

    let ok = delivered == RECORDS
        && duplicates == 0
        && max_batch <= BATCH_SIZE
        && max_in_flight <= MAX_IN_FLIGHT;
    if !ok {
        eprintln!(
            "check failed: every record must arrive once, within the batch and in-flight bounds"
        );
    }
    let result = serde_json::json!({
        "bench": "analytics",
        "records": RECORDS,
        "delivered": delivered,
        "duplicates": duplicates,
        "max_batch": max_batch,
        "max_in_flight": max_in_flight,
        "enqueue_ms": ms(null.enqueue),
        "null_sink_ms": ms(null.end_to_end),
        "redis_ms": redis_run.as_ref().map(|r| ms(r.end_to_end)),
    });
    println!("RESULT {result}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
