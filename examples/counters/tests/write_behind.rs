//! The write-behind pipeline against real databases: the database catches up
//! with memory, a restart reloads it, a full batch is written at once, an
//! outage is retried until it ends, and concurrent increments sum exactly.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use counters::{Config, Mode, Service};

fn short(max_updates: usize, interval: Duration) -> Config {
    Config {
        mode: Mode::Batched,
        max_updates,
        interval,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_load_the_database_equals_memory_and_a_restart_reloads_it() {
    for url in support::urls().await {
        let store = support::fresh(&url, "load").await;
        let config = short(5, Duration::from_millis(500));
        let service = Service::start(store.clone(), &config)
            .await
            .expect("starts");
        let clients: Vec<_> = (0..4i64)
            .map(|client| {
                let service = service.clone();
                tokio::spawn(async move {
                    for i in 0..500i64 {
                        let key = format!("k{}", (client * 31 + i * 7) % 40);
                        service
                            .increment(&key, i % 99 + 1)
                            .await
                            .expect("increment");
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.expect("client");
        }
        support::written(&service).await;
        let memory = service.counters().snapshot();
        assert_eq!(memory.len(), 40);
        assert_eq!(support::stored(&store).await, memory, "{url}");
        let stats = service.flush_stats().expect("batched");
        assert!(
            stats.by_size.load(Ordering::Relaxed) >= 1,
            "{url}: 40 keys in batches of 6"
        );

        service.shutdown(Duration::from_secs(10)).await;
        let restarted = Service::start(store.clone(), &config)
            .await
            .expect("restarts");
        assert_eq!(restarted.counters().snapshot(), memory, "{url}: reloaded");
        assert_eq!(restarted.get("k0").await.expect("get"), memory["k0"]);
        restarted.shutdown(Duration::from_secs(10)).await;
    }
}

#[tokio::test]
async fn shutdown_writes_what_is_pending() {
    for url in support::urls().await {
        let store = support::fresh(&url, "shutdown").await;
        // Neither the size nor the interval would flush these.
        let service = Service::start(store.clone(), &short(100, Duration::from_secs(3600)))
            .await
            .expect("starts");
        for key in ["a", "b", "c"] {
            service.increment(key, 4).await.expect("increment");
        }
        service.increment("a", -1).await.expect("increment");
        assert_eq!(service.shutdown(Duration::from_secs(10)).await, 0);
        let stored = support::stored(&store).await;
        assert_eq!(stored.len(), 3, "{url}");
        assert_eq!((stored["a"], stored["b"], stored["c"]), (3, 4, 4), "{url}");
    }
}

#[tokio::test]
async fn more_than_max_updates_pending_keys_are_written_without_waiting_for_the_interval() {
    for url in support::urls().await {
        let store = support::fresh(&url, "threshold").await;
        // An interval of an hour: only the size can trigger the flush.
        let service = Service::start(store.clone(), &short(5, Duration::from_secs(3600)))
            .await
            .expect("starts");
        let stats = service.flush_stats().expect("batched");
        for i in 0..5 {
            service
                .increment(&format!("k{i}"), 1)
                .await
                .expect("increment");
        }
        // Repeated changes of a pending key do not count again.
        service.increment("k0", 1).await.expect("increment");
        assert_eq!(stats.pending.load(Ordering::Relaxed), 5);
        service.increment("k5", 1).await.expect("increment");
        support::until(
            || stats.by_size.load(Ordering::Relaxed) == 1,
            "a size flush",
        )
        .await;
        support::written(&service).await;
        let stored = support::stored(&store).await;
        assert_eq!(stored.len(), 6, "{url}");
        assert_eq!(stored["k0"], 2, "{url}");
        assert_eq!(stats.by_interval.load(Ordering::Relaxed), 0);
        service.shutdown(Duration::from_secs(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_during_an_outage_is_retried_and_lands_after_it() {
    for url in support::urls().await {
        let store = support::fresh(&url, "outage").await;
        let service = Service::start(store.clone(), &short(1, Duration::from_millis(200)))
            .await
            .expect("starts");
        let stats = service.flush_stats().expect("batched");
        service.increment("before", 1).await.expect("increment");
        support::written(&service).await;

        // The outage: the table is gone while the next flush is attempted.
        let table = store.table().to_owned();
        store
            .execute(&format!("ALTER TABLE {table} RENAME TO {table}_away"))
            .await
            .expect("table taken away");
        service.increment("during", 5).await.expect("increment");
        service.increment("before", 1).await.expect("increment");
        support::until(
            || stats.failures.load(Ordering::Relaxed) >= 2,
            "two failed attempts",
        )
        .await;
        assert_eq!(stats.pending.load(Ordering::Relaxed), 2);
        // Memory kept answering meanwhile.
        assert_eq!(service.get("during").await.expect("get"), 5);

        store
            .execute(&format!("ALTER TABLE {table}_away RENAME TO {table}"))
            .await
            .expect("table back");
        support::written(&service).await;
        let stored = support::stored(&store).await;
        assert_eq!((stored["before"], stored["during"]), (2, 5), "{url}");
        service.shutdown(Duration::from_secs(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_of_one_key_sum_exactly() {
    for url in support::urls().await {
        for (mode, per_task) in [(Mode::Batched, 2_000i64), (Mode::Sync, 50)] {
            let store = support::fresh(&url, "concurrent").await;
            let config = Config {
                mode,
                ..short(10, Duration::from_millis(100))
            };
            let service = Service::start(store.clone(), &config)
                .await
                .expect("starts");
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let service: Arc<Service> = service.clone();
                    tokio::spawn(async move {
                        for _ in 0..per_task {
                            service.increment("hot", 3).await.expect("increment");
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("task");
            }
            let expected = 8 * per_task * 3;
            assert_eq!(
                service.get("hot").await.expect("get"),
                expected,
                "{url} {mode:?}"
            );
            if mode == Mode::Batched {
                support::written(&service).await;
            }
            assert_eq!(
                store.get("hot").await.expect("get"),
                expected,
                "{url} {mode:?}"
            );
            service.shutdown(Duration::from_secs(10)).await;
        }
    }
}
