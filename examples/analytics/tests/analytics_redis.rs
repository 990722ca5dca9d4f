//! The Redis Streams sink end to end against the server on 127.0.0.1:6379:
//! skipped (with a printed reason) when it is unreachable, except under
//! `CI=true`, where it must run.

use std::collections::HashSet;
use std::time::Duration;

use analytics::{Analytics, Numbered, RedisStreamsSink};
use redis::aio::MultiplexedConnection;

const URL: &str = "redis://127.0.0.1:6379/";

async fn redis_or_skip(test: &str) -> Option<MultiplexedConnection> {
    let client = redis::Client::open(URL).unwrap();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    match client
        .get_multiplexed_async_connection_with_config(&config)
        .await
    {
        Ok(conn) => Some(conn),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping {test}: redis at {URL} is unreachable ({e})");
            None
        }
        Err(e) => panic!("{test}: redis at {URL} is unreachable ({e}) and CI=true"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_tasks_write_every_record_once_to_their_redis_stream() {
    let Some(mut conn) = redis_or_skip("redis end to end").await else {
        return;
    };
    // A stream name no other test, run or helper uses.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("analytics-test:{}:{nanos}:", std::process::id());
    let analytics = Analytics::builder()
        .batch_size(100)
        .max_in_flight(8)
        .interval(Duration::from_millis(50))
        .stream_prefix(prefix.clone())
        .build(RedisStreamsSink::new(URL))
        .unwrap();

    let tasks: Vec<_> = (0..5u32)
        .map(|source| {
            let analytics = analytics.clone();
            tokio::spawn(async move {
                for n in 0..1_000 {
                    analytics.record(Numbered { source, n }).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let report = analytics.shutdown().await;
    assert!(report.is_complete(), "{report:?}");

    let stream = format!("{prefix}numbered");
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();

    let mut seen = HashSet::new();
    for entry in &entries.ids {
        let data: Vec<u8> = entry.get("data").expect("a data field");
        let key: String = entry.get("key").expect("a key field");
        let record = Numbered::decode(&data).expect("a Numbered record");
        assert_eq!(key, record.source.to_string());
        assert!(seen.insert(record), "{record:?} written twice");
    }
    assert_eq!(seen.len(), 5_000);
    assert_eq!(report.metrics.records_sent, 5_000);
}
