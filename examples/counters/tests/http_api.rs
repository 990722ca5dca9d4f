//! The HTTP API through the router: increments and lookups in every mode and
//! on both stores, and the 400 answers with their error lists.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use counters::{Config, Mode, Service, request, router};
use serde_json::{Value, json};

async fn post(app: &axum::Router, body: &str) -> (StatusCode, Value) {
    request(app, "POST", "/increment", body).await
}

async fn value_of(app: &axum::Router, key: &str) -> i64 {
    let (status, body) = request(app, "GET", &format!("/counters/{key}"), "").await;
    assert_eq!(status, StatusCode::OK);
    body["value"].as_i64().expect("an integer value")
}

#[tokio::test]
async fn increments_add_up_and_unknown_keys_are_zero_in_batched_and_sync_modes() {
    for url in support::urls().await {
        for mode in [Mode::Batched, Mode::Sync] {
            let store = support::fresh(&url, "add_up").await;
            let config = Config {
                mode,
                ..Config::default()
            };
            let service = Service::start(store, &config).await.expect("starts");
            let app = router(service.clone());

            assert_eq!(
                post(&app, r#"{"key":"a","value":2}"#).await,
                (StatusCode::ACCEPTED, Value::Null)
            );
            assert_eq!(value_of(&app, "a").await, 2, "{url} {mode:?}");
            assert_eq!(
                post(&app, r#"{"key":"b","value":2}"#).await.0,
                StatusCode::ACCEPTED
            );
            assert_eq!(
                post(&app, r#"{"key":"b","value":6}"#).await.0,
                StatusCode::ACCEPTED
            );
            assert_eq!(value_of(&app, "b").await, 8, "{url} {mode:?}");
            assert_eq!(value_of(&app, "never-seen").await, 0, "{url} {mode:?}");
            service.shutdown(Duration::from_secs(10)).await;
        }
    }
}

#[tokio::test]
async fn noop_mode_validates_like_the_others_and_stores_nothing() {
    let url = support::urls().await.remove(0);
    let store = support::fresh(&url, "noop").await;
    let config = Config {
        mode: Mode::Noop,
        ..Config::default()
    };
    let service = Service::start(store.clone(), &config)
        .await
        .expect("starts");
    let app = router(service);
    assert_eq!(
        post(&app, r#"{"key":"a","value":2}"#).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(post(&app, "{}").await.0, StatusCode::BAD_REQUEST);
    assert!(support::stored(&store).await.is_empty());
}

#[tokio::test]
async fn invalid_increments_are_refused_with_one_error_per_problem() {
    let url = support::urls().await.remove(0);
    let store = support::fresh(&url, "invalid").await;
    for mode in Mode::ALL {
        let config = Config {
            mode,
            ..Config::default()
        };
        let service = Service::start(store.clone(), &config)
            .await
            .expect("starts");
        let app = router(service.clone());
        let long_key = "k".repeat(257);
        let cases: Vec<(String, Vec<&str>)> = vec![
            ("{}".into(), vec!["key: missing", "value: missing"]),
            (r#"{"value":1}"#.into(), vec!["key: missing"]),
            (r#"{"key":"a"}"#.into(), vec!["value: missing"]),
            (
                r#"{"key":"a","value":1.5}"#.into(),
                vec!["value: must be an integer"],
            ),
            (
                r#"{"key":"a","value":"1"}"#.into(),
                vec!["value: must be an integer"],
            ),
            (
                r#"{"key":"a","value":9223372036854775808}"#.into(),
                vec!["value: out of range for a 64-bit signed integer"],
            ),
            (
                r#"{"key":"a","value":-99999999999999999999}"#.into(),
                vec!["value: out of range for a 64-bit signed integer"],
            ),
            (
                r#"{"key":"","value":1}"#.into(),
                vec!["key: must not be empty"],
            ),
            (
                r#"{"key":7,"value":1}"#.into(),
                vec!["key: must be a string"],
            ),
            (
                format!(r#"{{"key":"{long_key}","value":1}}"#),
                vec!["key: longer than 256 bytes"],
            ),
            (r#"[1,2]"#.into(), vec!["body: must be a JSON object"]),
        ];
        for (body, expected) in cases {
            assert_eq!(
                post(&app, &body).await,
                (StatusCode::BAD_REQUEST, json!({ "errors": expected })),
                "{mode:?} {body}"
            );
        }
        let (status, errors) = post(&app, r#"{"key":"a","#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let errors = errors["errors"].as_array().expect("an error list");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .as_str()
                .unwrap()
                .starts_with("body: malformed JSON")
        );
        // A key of exactly 256 bytes is fine.
        let key = "k".repeat(256);
        let body = format!(r#"{{"key":"{key}","value":1}}"#);
        assert_eq!(post(&app, &body).await.0, StatusCode::ACCEPTED, "{mode:?}");
        service.shutdown(Duration::from_secs(10)).await;
    }
}

#[tokio::test]
async fn an_increment_that_would_overflow_is_refused_and_changes_nothing() {
    let url = support::urls().await.remove(0);
    let store = support::fresh(&url, "overflow").await;
    let service = Service::start(store, &Config::default())
        .await
        .expect("starts");
    let app = router(service.clone());
    let max = format!(r#"{{"key":"big","value":{}}}"#, i64::MAX);
    assert_eq!(post(&app, &max).await.0, StatusCode::ACCEPTED);
    let (status, body) = post(&app, r#"{"key":"big","value":1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({ "errors": ["value: the counter would overflow"] })
    );
    assert_eq!(value_of(&app, "big").await, i64::MAX);
    service.shutdown(Duration::from_secs(10)).await;
}
