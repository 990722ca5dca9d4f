//! The Redis Streams sink end to end against the server on 127.0.0.1:6379:
//! skipped (with a printed reason) when it is unreachable, except under
//! `CI=true`, where it must run.

use std::collections::HashSet;
use std::time::Duration;

use analytics::{
    Analytics, Numbered, RedisStreamsSink, record_numbered, redis_connection, take_stream,
};

const URL: &str = "redis://127.0.0.1:6379/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_tasks_write_every_record_once_to_their_redis_stream() {
    let mut conn = match redis_connection(URL).await {
        Ok(conn) => conn,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipping: redis at {URL} is unreachable ({e})");
            return;
        }
        Err(e) => panic!("redis at {URL} is unreachable ({e}) and CI=true"),
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

    record_numbered(&analytics, 5, 1_000).await;
    let report = analytics.shutdown().await;
    assert!(report.is_complete(), "{report:?}");

    let records = take_stream(&mut conn, &format!("{prefix}numbered"))
        .await
        .unwrap();
    let mut seen = HashSet::new();
    for record in &records {
        let numbered = Numbered::decode(&record.data).expect("a Numbered record");
        assert_eq!(record.partition_key, numbered.source.to_string());
        assert!(seen.insert(numbered), "{numbered:?} written twice");
    }
    assert_eq!(seen.len(), 5_000);
    assert_eq!(report.metrics.records_sent, 5_000);
}
