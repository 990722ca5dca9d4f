//! What ends up in the database, on both stores: one row per message with
//! the union of its steps, one upsert per message per window, rows that
//! survive a restart and a graceful shutdown, and the retention job.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use support::{Table, config, start};
use timeline::{STEPS, Service};

fn step_names(events: &serde_json::Map<String, serde_json::Value>) -> BTreeSet<String> {
    events.keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_events_for_k_messages_become_exactly_k_rows_each_with_the_union_of_its_steps() {
    for url in support::urls().await {
        let table = Table::new(&url);
        let store = table.open().await;
        // A short window so that steps of one message land in several
        // windows and the merge with the stored row is exercised too.
        let running = start(
            store.clone(),
            config(Duration::from_millis(20), 100, 100_000),
        )
        .await;
        const K: i64 = 40;
        // Message m gets the first 1 + m % 6 steps, some of them twice, from
        // 4 clients at once.
        let mut expected: HashMap<i64, BTreeSet<String>> = HashMap::new();
        let mut posts = Vec::new();
        for m in 0..K {
            let steps = 1 + (m % 6) as usize;
            for (i, step) in STEPS.iter().take(steps).enumerate() {
                posts.push((1000 + m, *step));
                if i % 2 == 0 {
                    posts.push((1000 + m, *step));
                }
                expected
                    .entry(1000 + m)
                    .or_default()
                    .insert(step.to_string());
            }
        }
        let n = posts.len() as u64;
        let mut clients = Vec::new();
        for chunk in posts.chunks(posts.len().div_ceil(4)) {
            let chunk = chunk.to_vec();
            let app = running.app.clone();
            let service = running.service.clone();
            clients.push(tokio::spawn(async move {
                let running = support::Running { service, app };
                for (message, step) in chunk {
                    assert_eq!(running.step(message, step).await, 200);
                }
            }));
        }
        for client in clients {
            client.await.expect("client");
        }
        running.stored().await;
        let stats = running.service.stats();
        assert_eq!(
            (stats.accepted, stats.stored, stats.lost),
            (n, n, 0),
            "{url}"
        );

        let rows = store.all().await.expect("rows");
        assert_eq!(rows.len(), K as usize, "{url}: one row per message");
        for row in &rows {
            assert_eq!(row.app_id, 1);
            assert_eq!(step_names(&row.events), expected[&row.message_id], "{url}");
            assert!(row.inserted_at <= row.updated_at);
        }
        running.service.shutdown(Duration::from_secs(10)).await;
        table.drop_table(&store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_of_one_message_posted_within_one_window_are_stored_in_one_upsert() {
    for url in support::urls().await {
        let table = Table::new(&url);
        let store = table.open().await;
        // The window closes at 6 events (an hour is never reached).
        let running = start(store.clone(), config(Duration::from_secs(3600), 6, 1_000)).await;
        for step in STEPS {
            assert_eq!(running.step(77, step).await, 200);
        }
        running.stored().await;
        let stats = running.service.stats();
        assert_eq!(stats.upserts, 1, "{url}: six steps, one upsert");
        assert_eq!(stats.windows, [1, 0, 0], "{url}: closed because full");
        assert_eq!(store.transactions(), 1);
        let rows = store.message(77).await.expect("row");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].events.len(), 6);

        // A second window of the same message: one more upsert, merged into
        // the row, a step reported again taking its new time.
        let at = "2030-01-01T00:00:00Z";
        for step in &STEPS[..5] {
            assert_eq!(running.step(77, step).await, 200);
        }
        let (status, _) = running
            .post(&format!(
                r#"{{"app_id":1,"message_id":77,"event":"MESSAGE_CREATED","created_at":"{at}"}}"#
            ))
            .await;
        assert_eq!(status, 200);
        running.stored().await;
        assert_eq!(running.service.stats().upserts, 2);
        let rows = store.message(77).await.expect("row");
        assert_eq!(rows[0].events.len(), 6);
        assert_eq!(
            rows[0].events["MESSAGE_CREATED"], at,
            "{url}: the new time wins"
        );
        running.service.shutdown(Duration::from_secs(10)).await;
        table.drop_table(&store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_stores_the_open_window_and_a_restart_keeps_the_rows() {
    for url in support::urls().await {
        let table = Table::new(&url);
        let store = table.open().await;
        // The window would stay open for an hour: only the drain closes it.
        let running = start(
            store.clone(),
            config(Duration::from_secs(3600), 10_000, 1_000),
        )
        .await;
        for message in [5, 6] {
            for step in &STEPS[..3] {
                assert_eq!(running.step(message, step).await, 200);
            }
        }
        assert_eq!(running.service.stats().stored, 0);
        assert_eq!(running.service.shutdown(Duration::from_secs(10)).await, 0);
        assert_eq!(running.service.stats().windows, [0, 0, 1], "{url}");
        assert_eq!(
            running.step(5, "LATE").await,
            503,
            "a drained service refuses"
        );
        drop(running);

        let reopened = table.open().await;
        let restarted = start(
            reopened.clone(),
            config(Duration::from_millis(10), 100, 1_000),
        )
        .await;
        let before = restarted.get("/api/timeline/5").await;
        assert_eq!(
            before["events"].as_object().map(|e| e.len()),
            Some(3),
            "{url}"
        );
        assert_eq!(restarted.step(5, STEPS[5]).await, 200);
        restarted.stored().await;
        let after = restarted.get("/api/timeline/5").await;
        let steps: BTreeSet<&str> = after["events"]
            .as_object()
            .expect("events")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            steps,
            BTreeSet::from([STEPS[0], STEPS[1], STEPS[2], STEPS[5]])
        );
        assert_eq!(reopened.all().await.expect("rows").len(), 2);
        restarted.service.shutdown(Duration::from_secs(10)).await;
        table.drop_table(&reopened).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_rows_not_updated_for_the_configured_age() {
    for url in support::urls().await {
        let table = Table::new(&url);
        let store = table.open().await;
        let service = Service::start(store.clone(), config(Duration::from_millis(10), 100, 100))
            .await
            .expect("starts");
        let running = support::Running {
            app: timeline::router(service.clone()),
            service,
        };
        assert_eq!(running.step(1, STEPS[0]).await, 200);
        assert_eq!(running.step(2, STEPS[0]).await, 200);
        running.stored().await;
        let now = timeline::now_ms();
        let day = 24 * 3600 * 1000;
        assert_eq!(
            running
                .service
                .expire(now + 13 * day)
                .await
                .expect("expire"),
            0
        );
        assert_eq!(
            running
                .service
                .expire(now + 15 * day)
                .await
                .expect("expire"),
            2,
            "{url}"
        );
        assert!(store.all().await.expect("rows").is_empty());
        running.service.shutdown(Duration::from_secs(10)).await;
        table.drop_table(&store).await;
    }
}

/// A burst of single-event pushes far larger than a collector's own buffer
/// (10,000 events by default) but within the pipeline's capacity: every
/// accepted event must be stored. The runtime is single-threaded and the
/// pushes never yield, so the whole burst lands in the collectors' inboxes
/// before any stage runs — no timing involved. The collectors used to emit
/// it into a bounded buffer that dropped what did not fit (acknowledged as
/// failed, so the backlog still read 0 and only `lost` told).
#[tokio::test(flavor = "current_thread")]
async fn a_burst_larger_than_a_collectors_buffer_is_stored_whole() {
    for url in support::urls().await {
        let table = Table::new(&url);
        let store = table.open().await;
        let running = start(
            store.clone(),
            config(Duration::from_millis(50), 10_000, 200_000),
        )
        .await;
        // 10,000 messages × the six steps, each (message, step) once, so the
        // steps stored in the rows can be counted against the events accepted.
        const MESSAGES: i64 = 10_000;
        let mut accepted = 0u64;
        for step in STEPS {
            for m in 0..MESSAGES {
                let event = timeline::Event {
                    app_id: 1,
                    message_id: (m + 1) * 100,
                    event: step.into(),
                    created_at: timeline::now_rfc3339(),
                };
                running
                    .service
                    .ingest(vec![event])
                    .expect("within capacity");
                accepted += 1;
            }
        }
        running.stored().await;
        let stats = running.service.stats();
        assert_eq!(
            (stats.accepted, stats.stored, stats.lost),
            (accepted, accepted, 0),
            "{url}: {stats:?}"
        );
        let rows = store.all().await.expect("rows");
        assert_eq!(rows.len(), MESSAGES as usize, "{url}: one row per message");
        let steps: usize = rows.iter().map(|row| row.events.len()).sum();
        assert_eq!(
            steps as u64, accepted,
            "{url}: every accepted step is in a row"
        );
        running.service.shutdown(Duration::from_secs(10)).await;
        table.drop_table(&store).await;
    }
}
