//! `cargo bench -p demandflow-connectors-bench --bench connectors [-- --quick] [--messages N]`
//!
//! Redis Streams end to end: 200,000 entries XADD'ed to a fresh stream, then
//! read through a consumer group and acknowledged, timed from the first read
//! to the last XACK. Three ways, each run in turn, several times, in the same
//! run (BENCH.md):
//!
//! - `redis_streams`: a [`RedisSource`] feeding a messages topology (two
//!   processors that parse each entry's number and add it up), XACK'ed by the
//!   source's acknowledger as the messages finish;
//! - `redis_hand_loop`: what a user writes by hand with the same client:
//!   `XREADGROUP COUNT 1000` into the client's typed `StreamReadReply`, parse
//!   the numbers, `XACK` the ids, repeat;
//! - `redis_hand_loop_raw`: the same loop reading the raw reply, as the source
//!   does (fewer allocations; the stricter baseline).
//!
//! And Kafka, as a fourth row of the same rounds:
//!
//! - `kafka_mock`: 200,000 records on 4 partitions of librdkafka's in-process
//!   mock cluster, read by a [`KafkaSource`] (a fresh consumer group each
//!   round) into the same topology, timed from the first record fetched (the
//!   group join before it takes the mock about 3 s) to the last
//!   acknowledgement. The mock is not a broker: the figure tells the source's
//!   own cost, not what a Kafka cluster would sustain, and has no target.
//!
//! `--messages N` runs N entries and records instead of 200,000 (CI runs
//! 20,000 on the dev profile, as a smoke check).
//!
//! The ratio reported is the Redis source over the faster hand loop. The
//! last line is `RESULT {"bench":"connectors","rows":[…]}`; a full run also
//! writes `target/bench-report/connectors.svg`. Needs Redis on
//! 127.0.0.1:6379 (or `REDIS_URL`).

#[path = "../../../crates/demandflow-kafka/tests/support/mod.rs"]
mod kafka_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use demandflow_kafka::{KafkaSource, partition_of};
use demandflow_messages::{Message, MessageHandler, Processors, Topology};
use demandflow_redis::{RedisSource, StreamEntry};
use redis::Value;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};

/// Entries (and records) per run: 200,000, or `--messages N`.
static MESSAGES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

fn messages() -> u64 {
    *MESSAGES.get().unwrap_or(&200_000)
}

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// A fresh stream of `messages()` entries (field `n`) with group `g` at its start.
async fn fill(conn: &mut MultiplexedConnection, key: &str) {
    let _: () = redis::cmd("DEL").arg(key).query_async(conn).await.unwrap();
    for chunk in (0..messages()).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for n in chunk {
            pipe.cmd("XADD").arg(key).arg("*").arg("n").arg(n).ignore();
        }
        pipe.query_async::<()>(conn).await.unwrap();
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("g")
        .arg("0")
        .query_async(conn)
        .await
        .unwrap();
}

fn number(entry: &StreamEntry) -> Result<u64, String> {
    entry.parse("n")
}

struct Sum(Arc<AtomicU64>);

impl MessageHandler<u64> for Sum {
    async fn handle_message(&self, message: &mut Message<u64>) {
        self.0.fetch_add(message.data, Ordering::Relaxed);
    }
}

async fn source_run(conn: &mut MultiplexedConnection, key: &str) -> f64 {
    fill(conn, key).await;
    let sum = Arc::new(AtomicU64::new(0));
    let source = RedisSource::builder(url(), key, "g")
        .consumer("bench")
        .decode(number)
        .build()
        .await
        .unwrap();
    let start = Instant::now();
    let s = source.clone();
    let topology = Topology::builder("bench", Sum(sum.clone()))
        .source(1, move |i| s.copy(i))
        .processors(Processors::new(2).max_demand(1_000))
        .start()
        .await
        .unwrap();
    finish(topology, &sum, start, 0, || source.metrics().acked).await
}

/// Waits until `acked()` counts every message, checks the sum and drains
/// `topology`; returns the rate since `start` of the messages acknowledged
/// after the first `before`.
async fn finish(
    topology: Topology<u64>,
    sum: &AtomicU64,
    start: Instant,
    before: u64,
    acked: impl Fn() -> u64,
) -> f64 {
    while acked() < messages() {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let elapsed = start.elapsed();
    assert_eq!(
        sum.load(Ordering::Relaxed),
        messages() * (messages() - 1) / 2
    );
    topology.drain(Duration::from_secs(5)).await;
    (messages() - before) as f64 / elapsed.as_secs_f64()
}

async fn hand_loop_typed(conn: &mut MultiplexedConnection, key: &str) -> f64 {
    fill(conn, key).await;
    let start = Instant::now();
    let (mut done, mut sum) = (0, 0_u64);
    let options = StreamReadOptions::default().group("g", "hand").count(1000);
    while done < messages() {
        let reply: StreamReadReply =
            redis::AsyncCommands::xread_options(conn, &[key], &[">"], &options)
                .await
                .unwrap();
        let mut ids = Vec::with_capacity(1000);
        for stream in reply.keys {
            for entry in stream.ids {
                let n: String = entry.get("n").unwrap();
                sum += n.parse::<u64>().unwrap();
                ids.push(entry.id);
            }
        }
        done += ids.len() as u64;
        let _: u64 = redis::AsyncCommands::xack(conn, key, "g", &ids)
            .await
            .unwrap();
    }
    let elapsed = start.elapsed();
    assert_eq!(sum, messages() * (messages() - 1) / 2);
    messages() as f64 / elapsed.as_secs_f64()
}

async fn hand_loop_raw(conn: &mut MultiplexedConnection, key: &str) -> f64 {
    fill(conn, key).await;
    let start = Instant::now();
    let (mut done, mut sum) = (0, 0_u64);
    while done < messages() {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("raw")
            .arg("COUNT")
            .arg(1000)
            .arg("STREAMS")
            .arg(key)
            .arg(">")
            .query_async(conn)
            .await
            .unwrap();
        let mut ids: Vec<Vec<u8>> = Vec::with_capacity(1000);
        let Value::Array(streams) = reply else {
            panic!("unexpected reply")
        };
        for stream in streams {
            let Value::Array(pair) = stream else { continue };
            let Some(Value::Array(entries)) = pair.into_iter().nth(1) else {
                continue;
            };
            for entry in entries {
                let Value::Array(parts) = entry else { continue };
                let mut parts = parts.into_iter();
                let (Some(Value::BulkString(id)), Some(Value::Array(fields))) =
                    (parts.next(), parts.next())
                else {
                    continue;
                };
                if let Some(Value::BulkString(n)) = fields.get(1) {
                    sum += std::str::from_utf8(n).unwrap().parse::<u64>().unwrap();
                }
                ids.push(id);
            }
        }
        done += ids.len() as u64;
        let _: u64 = redis::cmd("XACK")
            .arg(key)
            .arg("g")
            .arg(&ids)
            .query_async(conn)
            .await
            .unwrap();
    }
    let elapsed = start.elapsed();
    assert_eq!(sum, messages() * (messages() - 1) / 2);
    messages() as f64 / elapsed.as_secs_f64()
}

const KAFKA_TOPIC: &str = "bench";
const KAFKA_PARTITIONS: i32 = 4;

/// The mock cluster holding `messages()` records (the numbers as text).
fn kafka_cluster() -> kafka_support::Cluster {
    let cluster = kafka_support::cluster(KAFKA_TOPIC, KAFKA_PARTITIONS);
    kafka_support::produce(&cluster.brokers, KAFKA_TOPIC, KAFKA_PARTITIONS, messages());
    cluster
}

/// Reads the whole topic as consumer group `group` (new, so from the start).
async fn kafka_run(brokers: &str, group: &str) -> f64 {
    let sum = Arc::new(AtomicU64::new(0));
    let source = KafkaSource::builder(brokers, [KAFKA_TOPIC], group)
        .consumer("bench")
        .decode(|record| record.text()?.parse::<u64>().map_err(|e| e.to_string()))
        .build()
        .await
        .unwrap();
    let s = source.clone();
    let topology = Topology::builder("bench", Sum(sum.clone()))
        .source(1, move |i| s.copy(i))
        .processors(
            Processors::new(2)
                .max_demand(1_000)
                .partition_by(partition_of),
        )
        .start()
        .await
        .unwrap();
    // The clock starts at the first record: joining the mock's group takes
    // about 3 s, which says nothing about the source.
    while source.metrics().received == 0 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let start = Instant::now();
    let before = source.metrics().acked;
    finish(topology, &sum, start, before, || source.metrics().acked).await
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn svg(rows: &[(&str, f64)]) -> String {
    let max = rows.iter().map(|r| r.1).fold(1.0, f64::max);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"{}\" font-family=\"sans-serif\" font-size=\"13\">\n",
        40 + rows.len() * 40
    );
    out += "<text x=\"10\" y=\"20\">200,000 entries read and acknowledged (messages/s, median; Kafka on the mock cluster)</text>\n";
    for (i, (name, rate)) in rows.iter().enumerate() {
        let y = 35 + i * 40;
        let w = (rate / max * 380.0).round();
        out += &format!(
            "<text x=\"10\" y=\"{}\">{name}</text><rect x=\"170\" y=\"{y}\" width=\"{w}\" height=\"24\" fill=\"#4a7ab5\"/><text x=\"{}\" y=\"{}\">{:.0}</text>\n",
            y + 17,
            175.0 + w,
            y + 17,
            rate
        );
    }
    out + "</svg>\n"
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let args: Vec<String> = std::env::args().collect();
    if let Some(n) = args.windows(2).find(|w| w[0] == "--messages") {
        let n: u64 = n[1].parse().expect("--messages takes a count");
        assert!(n > 0, "--messages takes a positive count");
        MESSAGES.set(n).expect("set once");
    }
    // `cargo test` runs bench targets with no `--bench`: a smoke run is enough then.
    let bench = std::env::args().any(|a| a == "--bench");
    let reps = if quick || !bench { 3 } else { 7 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = redis::Client::open(url()).unwrap();
        // A pipeline of 10,000 XADDs can take longer than the client's
        // default response timeout on a loaded machine, unoptimised.
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(60)));
        let mut conn = match tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer in 5 s".to_owned(),
                };
                eprintln!(
                    "connectors: redis at {} is unreachable ({why}); start redis-server first",
                    url()
                );
                std::process::exit(2);
            }
        };
        let key = format!("demandflow-bench:connectors:{}", std::process::id());
        let kafka = kafka_cluster();
        let (mut source, mut typed, mut raw, mut mock) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // One warm-up round, then `reps` rounds, the four interleaved.
        for rep in 0..=reps {
            let s = source_run(&mut conn, &key).await;
            let t = hand_loop_typed(&mut conn, &key).await;
            let r = hand_loop_raw(&mut conn, &key).await;
            let k = kafka_run(&kafka.brokers, &format!("bench-{rep}")).await;
            eprintln!(
                "round {rep}/{reps}: source {s:.0}/s, hand loop {t:.0}/s, raw hand loop {r:.0}/s, kafka mock {k:.0}/s"
            );
            if rep > 0 {
                source.push(s);
                typed.push(t);
                raw.push(r);
                mock.push(k);
            }
        }
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let (s, t, r, k) = (median(source), median(typed), median(raw), median(mock));
        let rows = [
            ("redis_streams", s),
            ("redis_hand_loop", t),
            ("redis_hand_loop_raw", r),
            ("kafka_mock", k),
        ];
        println!("{:<22} {:>14}", "name", "messages/s");
        for (name, rate) in rows {
            println!("{name:<22} {rate:>14.0}");
        }
        println!(
            "source / hand loop: {:.2}x; source / raw hand loop: {:.2}x",
            s / t,
            s / r
        );
        if bench && !quick {
            let dir =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-report");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("connectors.svg"), svg(&rows)).unwrap();
            eprintln!("plot: {}", dir.join("connectors.svg").display());
        }
        let rows_json: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, rate)| serde_json::json!({"name": name, "messages_per_sec": rate.round()}))
            .collect();
        let result = serde_json::json!({
            "bench": "connectors",
            "rows": rows_json,
            "ratio_vs_hand_loop": ((s / t.max(r)) * 100.0).round() / 100.0,
        });
        println!("RESULT {result}");
    });
}
