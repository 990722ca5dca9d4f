//! What the tests share: the stores to run against, fresh tables, waiting
//! for the write-behind pipeline.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use counters::{Service, Store};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// SQLite, and PostgreSQL when it answers (required when `CI=true`).
pub async fn urls() -> Vec<String> {
    store_url::test_urls("counters-tests").await
}

/// Opens `url` with a table of its own, empty, named after `test`.
pub async fn fresh(url: &str, test: &str) -> Store {
    // The same names on every run, so PostgreSQL does not collect tables;
    // unique within a run (each test binary uses its own test names).
    let table = format!(
        "counters_test_{test}_{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let store = Store::open(url, &table).await.expect("store opens");
    store
        .execute(&format!(
            "DROP TABLE IF EXISTS {table}_away; DELETE FROM {table}"
        ))
        .await
        .expect("table emptied");
    store
}

/// Waits until the write-behind pipeline has written every change (at most 30 s).
pub async fn written(service: &Service) {
    let stats = service.flush_stats().expect("batched mode");
    if stats.caught_up(Duration::from_secs(30)).await.is_none() {
        panic!("the write-behind pipeline did not catch up in 30 s");
    }
}

/// Waits until `done` holds (at most 30 s).
pub async fn until(mut done: impl FnMut() -> bool, what: &str) {
    for _ in 0..3_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Every stored counter.
pub async fn stored(store: &Store) -> HashMap<String, i64> {
    store.load_map().await.expect("load")
}
