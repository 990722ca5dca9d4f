//! The HTTP ingest surface: refusals of bad input that leave the pipeline
//! untouched, 503 with `Retry-After` while the pipeline is full and full
//! recovery after, the bulk endpoint, the load route and the stats.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Table, WritesHeld, config, start};
use timeline::{MAX_EVENT_BYTES, STEPS, call};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_an_error_list_and_nothing_reaches_the_pipeline() {
    let table = Table::new(&support::sqlite().await);
    let store = table.open().await;
    let running = start(store.clone(), config(Duration::from_millis(10), 100, 1_000)).await;
    let app = &running.app;
    let json = Some("application/json");
    let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
        (
            json,
            r#"{"message_id":1,"event":"A"}"#.into(),
            400,
            "app_id: missing",
        ),
        (
            json,
            r#"{"app_id":1,"message_id":"1","event":"A"}"#.into(),
            400,
            "message_id: must be an integer",
        ),
        (
            json,
            r#"{"app_id":1,"message_id":1,"event":7}"#.into(),
            400,
            "event: must be a string",
        ),
        (
            json,
            r#"{"app_id":1,"message_id":1,"event":"A","created_at":"soon"}"#.into(),
            400,
            "created_at: not an RFC 3339 time",
        ),
        (
            json,
            r#"{"app_id":1,"message_id":1,"#.into(),
            400,
            "body: malformed JSON",
        ),
        (json, "[1,2]".into(), 400, "body: must be a JSON object"),
        (
            Some("text/plain"),
            r#"{"app_id":1,"message_id":1,"event":"A"}"#.into(),
            415,
            "content-type: expected application/json",
        ),
        (
            None,
            r#"{"app_id":1,"message_id":1,"event":"A"}"#.into(),
            415,
            "content-type",
        ),
        (
            json,
            format!(
                r#"{{"app_id":1,"message_id":1,"event":"A","pad":"{}"}}"#,
                "x".repeat(MAX_EVENT_BYTES)
            ),
            413,
            "body: larger than",
        ),
    ];
    for (content_type, body, status, error) in cases {
        let (got, _, answer) = call(app, "POST", "/api/event", content_type, body.clone()).await;
        assert_eq!(got.as_u16(), status, "{body:.80}: {answer}");
        let first = answer["errors"][0].as_str().unwrap_or_default();
        assert!(first.starts_with(error), "{body:.80}: {answer}");
    }
    // A bulk body with one bad event refuses them all.
    let (got, _, answer) = call(
        app,
        "POST",
        "/api/event/bulk",
        json,
        r#"{"events":[{"app_id":1,"message_id":1,"event":"A"},{"app_id":1,"message_id":1}]}"#,
    )
    .await;
    assert_eq!(got.as_u16(), 400);
    assert_eq!(answer, json!({ "errors": ["events[1].event: missing"] }));
    assert_eq!(running.service.stats().accepted, 0);

    let (got, _, answer) = call(
        app,
        "POST",
        "/api/event",
        json,
        r#"{"app_id":1,"message_id":1,"event":"A"}"#,
    )
    .await;
    assert_eq!((got.as_u16(), answer), (200, json!({ "success": true })));
    running.service.shutdown(Duration::from_secs(10)).await;
    assert_eq!(running.service.stats().stored, 1);
    table.drop_table(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_pipeline_answers_503_with_retry_after_and_recovers_fully() {
    for url in support::urls().await {
        let table = Table::new(&url);
        let store = table.open().await;
        const CAPACITY: u64 = 20;
        let running = start(store.clone(), config(Duration::from_millis(5), 4, CAPACITY)).await;
        let held = WritesHeld::hold(&table, &store).await;
        // Nothing can be stored, so exactly CAPACITY events are accepted.
        for i in 0..CAPACITY as i64 {
            assert_eq!(running.step(i, STEPS[0]).await, 200, "{url}: event {i}");
        }
        let (status, headers, answer) = call(
            &running.app,
            "POST",
            "/api/event",
            Some("application/json"),
            r#"{"app_id":1,"message_id":999,"event":"MESSAGE_CREATED"}"#,
        )
        .await;
        assert_eq!(status.as_u16(), 503, "{url}");
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(answer, json!({ "errors": ["the pipeline is full"] }));
        let (status, _, _) = call(&running.app, "GET", "/api/create_event", None, "").await;
        assert_eq!(status.as_u16(), 503);
        let stats = running.get("/api/q/stats").await;
        assert_eq!(stats["pending"]["total"], CAPACITY, "{url}: {stats}");
        assert_eq!(stats["accepted"], CAPACITY);

        held.release().await;
        running.stored().await;
        for i in 0..CAPACITY as i64 {
            assert_eq!(
                running.step(i, STEPS[1]).await,
                200,
                "{url}: after recovery"
            );
        }
        running.stored().await;
        let stats = running.service.stats();
        assert_eq!((stats.stored, stats.lost), (2 * CAPACITY, 0), "{url}");
        let rows = store.all().await.expect("rows");
        assert_eq!(rows.len(), CAPACITY as usize);
        assert!(rows.iter().all(|row| row.events.len() == 2), "{url}");
        running.service.shutdown(Duration::from_secs(10)).await;
        table.drop_table(&store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bulk_endpoint_takes_10000_events_and_stores_them_all() {
    for url in support::urls().await {
        let table = Table::new(&url);
        let store = table.open().await;
        let running = start(store.clone(), support::Config::default()).await;
        // 10,000 events over 2,000 messages of 2 apps, 5 steps each.
        let events: Vec<_> = (0..10_000)
            .map(|i| {
                json!({
                    "app_id": 1 + i % 2,
                    "message_id": (i / 5) * 100,
                    "event": STEPS[(i % 5) as usize],
                    "created_at": "2026-12-03T12:00:00Z",
                })
            })
            .collect();
        let body = json!({ "events": events }).to_string();
        let (status, _, answer) = call(
            &running.app,
            "POST",
            "/api/event/bulk",
            Some("application/json"),
            body,
        )
        .await;
        assert_eq!(status.as_u16(), 200, "{url}: {answer}");
        assert_eq!(answer, json!({ "success": true, "accepted": 10_000 }));
        running.stored().await;
        let rows = store.all().await.expect("rows");
        // Message (i / 5) gets its 5 events alternately from app 1 and app 2.
        assert_eq!(rows.len(), 4_000, "{url}");
        let steps: usize = rows.iter().map(|row| row.events.len()).sum();
        assert_eq!(steps, 10_000);
        assert_eq!(running.service.stats().stored, 10_000);
        running.service.shutdown(Duration::from_secs(10)).await;
        table.drop_table(&store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_route_status_and_stats_answer() {
    let table = Table::new(&support::sqlite().await);
    let store = table.open().await;
    let running = start(
        store.clone(),
        config(Duration::from_secs(3600), 10_000, 100),
    )
    .await;
    assert_eq!(running.get("/status").await, json!({ "status": "up" }));
    for _ in 0..3 {
        assert_eq!(
            running.get("/api/create_event").await,
            json!({ "success": true })
        );
    }
    // The window stays open an hour: all three wait in the aggregators' stage.
    let stats = running.get("/api/q/stats").await;
    assert_eq!(stats["pending"]["total"], 3, "{stats}");
    assert_eq!(
        stats["pending"]["collectors"].as_u64().unwrap_or(9)
            + stats["pending"]["aggregators"].as_u64().unwrap_or(9)
            + stats["pending"]["store"].as_u64().unwrap_or(9),
        3
    );
    running.service.shutdown(Duration::from_secs(10)).await;
    let stats = running.get("/api/q/stats").await;
    assert_eq!(
        (stats["pending"]["total"].clone(), stats["stored"].clone()),
        (json!(0), json!(3))
    );
    let rows = store.all().await.expect("rows");
    assert!(
        rows.iter()
            .all(|row| row.message_id % 100 == 0 && row.events.len() == 1)
    );
    table.drop_table(&store).await;
}
