//! Shared by the Redis tests: a connection (or a reason to skip), unique keys,
//! and waiting for a condition.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use redis::aio::MultiplexedConnection;

pub const URL: &str = "redis://127.0.0.1:6379/";

/// A connection to the test server; `None` (after printing why) when it is
/// unreachable outside CI. In CI (`CI=true`) an unreachable server fails.
pub async fn redis_or_skip(test: &str) -> Option<MultiplexedConnection> {
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

/// A stream key no other test (or run) uses.
pub fn unique_key(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "demandflow-test:{name}:{}:{nanos}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Adds entries `n = 0..count` (field `n`) to `stream`.
pub async fn add_numbers(
    conn: &mut MultiplexedConnection,
    stream: &str,
    range: std::ops::Range<u64>,
) {
    let mut pipe = redis::pipe();
    for n in range {
        pipe.cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("n")
            .arg(n)
            .ignore();
    }
    pipe.query_async::<()>(conn).await.unwrap();
}

/// The number of entries pending in `group`.
pub async fn pending(conn: &mut MultiplexedConnection, stream: &str, group: &str) -> u64 {
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await
        .unwrap();
    match summary {
        redis::Value::Array(parts) => match parts.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            _ => 0,
        },
        _ => 0,
    }
}

/// Waits (up to 30 s, then panics naming `what`) until `check` is true.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes `keys`.
pub async fn cleanup(conn: &mut MultiplexedConnection, keys: &[&str]) {
    let _: () = redis::cmd("DEL").arg(keys).query_async(conn).await.unwrap();
}
