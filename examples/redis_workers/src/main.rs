//! Scale-out across processes: N worker processes of one topology share a
//! Redis stream through a consumer group; one of them is killed with SIGKILL
//! in the middle, and the survivors finish its work.
//!
//! ```sh
//! cargo run --release -p redis-workers                   # 3 workers, 200,000 entries
//! cargo run --release -p redis-workers -- --workers 4 --messages 50000
//! ```
//!
//! Without `--worker`, the program is the coordinator: it fills a fresh
//! stream with numbered entries, starts the workers (itself, with
//! `--worker`), kills worker 1 once a third of the stream is done, waits until
//! every number has been recorded and nothing is pending, stops the survivors
//! by closing their standard input, and checks the outcome.
//!
//! Each worker runs a topology: a [`RedisSource`] (consumer group `workers`),
//! two processors, and a batcher of 500 entries / 20 ms whose handler records
//! each number in a Redis hash with `HINCRBY seen <n> 1`, one pipelined
//! round trip per batch. Recording a number is the *effect*, and it is
//! idempotent: a number is in the hash or not. The count beside it only
//! measures duplicates: an entry the killed worker had recorded but not yet
//! acknowledged is delivered again (XAUTOCLAIM) and recorded twice. So
//! duplicates can never exceed what the killed worker held: its pending
//! entries at the moment it died (`killed_in_flight`).
//!
//! The last line is `RESULT {"example":"redis_workers","ok":…,"messages":…,
//! "processed_unique":…,"lost":0,"duplicates":…,"killed_in_flight":…,
//! "pending_at_end":0}`; the process exits non-zero when the check fails.
//! Needs Redis at 127.0.0.1:6379 (or `REDIS_URL`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use demandflow_messages::{BatchInfo, Batcher, Message, MessageHandler, Processors, Topology};
use demandflow_redis::{RedisSource, StreamEntry};
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::io::AsyncReadExt;

const GROUP: &str = "workers";

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// A connection whose replies may take a while (HVALS of 200,000 fields in a
/// debug build, on a busy machine).
async fn connect(client: &redis::Client) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if std::env::args().any(|a| a == "--worker") {
        rt.block_on(worker());
    } else {
        let ok = rt.block_on(coordinator());
        std::process::exit(if ok { 0 } else { 1 });
    }
}

/// Records each batch's numbers in the `seen` hash.
struct Record {
    conn: MultiplexedConnection,
    seen: String,
}

impl MessageHandler<u64> for Record {
    async fn handle_message(&self, _message: &mut Message<u64>) {}

    async fn handle_batch(&self, mut batch: Vec<Message<u64>>, _: &BatchInfo) -> Vec<Message<u64>> {
        let mut pipe = redis::pipe();
        for message in &batch {
            pipe.cmd("HINCRBY")
                .arg(&self.seen)
                .arg(message.data)
                .arg(1)
                .ignore();
        }
        // Acknowledged only once the write is confirmed; a failed write fails
        // the batch, whose entries stay pending and are delivered again.
        if let Err(e) = pipe.query_async::<()>(&mut self.conn.clone()).await {
            for message in &mut batch {
                message.fail(format!("recording failed: {e}"));
            }
        }
        batch
    }
}

fn number(entry: &StreamEntry) -> Result<u64, String> {
    entry.parse("n")
}

/// One worker process: runs until its standard input closes, then drains.
async fn worker() {
    let stream = arg("--stream").expect("--stream");
    let seen = arg("--seen").expect("--seen");
    let name = arg("--name").expect("--name");
    let source = RedisSource::builder(url(), &stream, GROUP)
        .consumer(&name)
        .decode(number)
        .claim_min_idle(Duration::from_secs(3))
        .claim_interval(Duration::from_millis(500))
        .block(Duration::from_millis(200))
        .build()
        .await
        .unwrap_or_else(|e| panic!("worker {name}: {e}"));
    let conn = connect(&redis::Client::open(url()).expect("url"))
        .await
        .expect("a connection for the sink");
    let s = source.clone();
    let topology = Topology::builder(name.clone(), Record { conn, seen })
        .source(1, move |i| s.copy(i))
        .processors(Processors::new(2).max_demand(500))
        .batcher(
            Batcher::new("default")
                .batch_size(500)
                .batch_timeout(Duration::from_millis(20)),
        )
        .start()
        .await
        .expect("the topology");
    // The coordinator closes our stdin to stop us (and so does its death).
    let mut stdin = tokio::io::stdin();
    let mut buf = [0_u8; 64];
    while stdin.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    topology.drain(Duration::from_secs(10)).await;
    eprintln!("worker {name}: {:?}", source.metrics());
}

fn spawn_worker(stream: &str, seen: &str, name: &str) -> Child {
    Command::new(std::env::current_exe().expect("own path"))
        .args([
            "--worker", "--stream", stream, "--seen", seen, "--name", name,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("a worker process")
}

async fn query<T: redis::FromRedisValue>(
    conn: &mut MultiplexedConnection,
    cmd: &mut redis::Cmd,
) -> T {
    cmd.query_async(conn).await.expect("a redis command")
}

/// The group's pending count, and that of `consumer`, from `XPENDING key group`.
async fn pending(conn: &mut MultiplexedConnection, stream: &str, consumer: &str) -> (u64, u64) {
    let summary: Value = query(conn, redis::cmd("XPENDING").arg(stream).arg(GROUP)).await;
    let Value::Array(parts) = summary else {
        return (0, 0);
    };
    let total = match parts.first() {
        Some(Value::Int(n)) => *n as u64,
        _ => 0,
    };
    let mut mine = 0;
    if let Some(Value::Array(consumers)) = parts.get(3) {
        for row in consumers {
            if let Value::Array(pair) = row
                && let [Value::BulkString(name), count] = pair.as_slice()
                && name == consumer.as_bytes()
            {
                mine = match count {
                    Value::BulkString(b) => String::from_utf8_lossy(b).parse().unwrap_or(0),
                    Value::Int(n) => *n as u64,
                    _ => 0,
                };
            }
        }
    }
    (total, mine)
}

async fn coordinator() -> bool {
    let workers: usize = arg("--workers").map_or(3, |v| v.parse().expect("--workers N"));
    let messages: u64 = arg("--messages").map_or(200_000, |v| v.parse().expect("--messages N"));
    assert!(workers >= 2, "at least 2 workers: one is killed");
    let client = redis::Client::open(url()).expect("a redis url");
    let mut conn = match connect(&client).await {
        Ok(conn) => conn,
        _ => {
            eprintln!(
                "redis_workers: redis at {} is unreachable; start redis-server first",
                url()
            );
            println!(
                "RESULT {}",
                serde_json::json!({"example": "redis_workers", "ok": false, "error": "redis unreachable"})
            );
            return false;
        }
    };
    let prefix = format!(
        "demandflow:redis_workers:{}:{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let (stream, seen) = (format!("{prefix}:stream"), format!("{prefix}:seen"));

    // The stream: `messages` numbered entries, and the group at its start.
    let started = Instant::now();
    for chunk in (0..messages).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for n in chunk {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("n")
                .arg(n)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.expect("XADD");
    }
    let _: () = query(
        &mut conn,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(GROUP)
            .arg("0"),
    )
    .await;
    eprintln!("{messages} entries added in {:?}", started.elapsed());

    let names: Vec<String> = (0..workers).map(|i| format!("w{i}")).collect();
    let started = Instant::now();
    let mut children: Vec<Child> = names
        .iter()
        .map(|name| spawn_worker(&stream, &seen, name))
        .collect();

    // Kill worker 1 once a third of the stream is recorded.
    let victim = 1;
    let deadline = Instant::now() + Duration::from_secs(300);
    while query::<u64>(&mut conn, redis::cmd("HLEN").arg(&seen)).await < messages / 3 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    children[victim].kill().expect("SIGKILL");
    children[victim].wait().expect("reaped");
    // What it held when it died: its pending entries (copy 0 of its source).
    let victim_consumer = format!("{}-0", names[victim]);
    let (_, killed_in_flight) = pending(&mut conn, &stream, &victim_consumer).await;
    let done_at_kill: u64 = query(&mut conn, redis::cmd("HLEN").arg(&seen)).await;
    eprintln!(
        "killed {} (SIGKILL) at {done_at_kill} recorded, after {:?}; it had {killed_in_flight} entries pending",
        names[victim],
        started.elapsed()
    );

    // The survivors finish, the victim's pending entries included.
    let mut timed_out = false;
    loop {
        let unique: u64 = query(&mut conn, redis::cmd("HLEN").arg(&seen)).await;
        let (pending_now, _) = pending(&mut conn, &stream, "").await;
        if unique == messages && pending_now == 0 {
            break;
        }
        if Instant::now() > deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();

    // Stop the survivors: close their stdin; they drain and exit.
    let mut survivors_ok = true;
    for (i, child) in children.iter_mut().enumerate() {
        if i == victim {
            continue;
        }
        drop(child.stdin.take());
        let stop_by = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait().expect("try_wait") {
                Some(status) => {
                    survivors_ok &= status.success();
                    break;
                }
                None if Instant::now() > stop_by => {
                    let _ = child.kill();
                    let _ = child.wait();
                    survivors_ok = false;
                    break;
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    let counts: Vec<u64> = query(&mut conn, redis::cmd("HVALS").arg(&seen)).await;
    let processed_unique = counts.len() as u64;
    let duplicates: u64 = counts.iter().map(|c| c - 1).sum();
    let (pending_at_end, _) = pending(&mut conn, &stream, "").await;
    let lost = messages - processed_unique.min(messages);
    let _: () = query(&mut conn, redis::cmd("DEL").arg(&stream).arg(&seen)).await;

    let ok = !timed_out
        && survivors_ok
        && lost == 0
        && processed_unique == messages
        && duplicates <= killed_in_flight
        && pending_at_end == 0;
    println!(
        "{workers} workers, {messages} entries, worker {victim} killed: {processed_unique} recorded, \
         {lost} lost, {duplicates} recorded twice (it had {killed_in_flight} in flight), \
         {pending_at_end} pending at the end; {:.0} entries/s",
        messages as f64 / elapsed.as_secs_f64()
    );
    println!(
        "RESULT {}",
        serde_json::json!({
            "example": "redis_workers",
            "ok": ok,
            "messages": messages,
            "processed_unique": processed_unique,
            "lost": lost,
            "duplicates": duplicates,
            "killed_in_flight": killed_in_flight,
            "pending_at_end": pending_at_end,
        })
    );
    ok
}
