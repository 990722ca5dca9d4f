//! What the tests share: the stores to run against (SQLite always,
//! PostgreSQL when it answers or `CI=true`), a table of their own per test,
//! a service over it, and a way to stop its writes for a while.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
pub use timeline::Config;
use timeline::{PipelineConfig, Service, Store, call, router};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// SQLite, and PostgreSQL when it answers (required when `CI=true`).
pub async fn urls() -> Vec<String> {
    store_url::test_urls("timeline-tests").await
}

/// The SQLite URL alone, for tests about the HTTP surface rather than the store.
pub async fn sqlite() -> String {
    urls().await.remove(0)
}

/// A table of this run's own (other test runs share the PostgreSQL server),
/// dropped by [`Table::drop_table`].
pub struct Table {
    pub url: String,
    pub name: String,
}

impl Table {
    pub fn new(url: &str) -> Table {
        Table {
            url: url.to_owned(),
            name: format!(
                "timeline_test_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    pub async fn open(&self) -> Store {
        Store::open(&self.url, &self.name)
            .await
            .expect("store opens")
    }

    pub async fn drop_table(&self, store: &Store) {
        store
            .execute(&format!("DROP TABLE IF EXISTS {}", self.name))
            .await
            .expect("table dropped");
    }
}

/// A pipeline config for tests: small counts, the given window.
pub fn config(window: Duration, window_events: usize, capacity: u64) -> Config {
    Config {
        pipeline: PipelineConfig {
            window,
            window_events,
            capacity,
            ..PipelineConfig::default()
        },
        ..Config::default()
    }
}

/// A running service and its router.
pub struct Running {
    pub service: Arc<Service>,
    pub app: axum::Router,
}

pub async fn start(store: Store, config: Config) -> Running {
    let service = Service::start(store, config).await.expect("service starts");
    let app = router(service.clone());
    Running { service, app }
}

impl Running {
    /// `POST /api/event` with a JSON body; the status and the JSON answer.
    pub async fn post(&self, body: &str) -> (u16, Value) {
        let (status, _, value) = call(
            &self.app,
            "POST",
            "/api/event",
            Some("application/json"),
            body.to_owned(),
        )
        .await;
        (status.as_u16(), value)
    }

    /// Posts step `event` of message `message_id` (app 1).
    pub async fn step(&self, message_id: i64, event: &str) -> u16 {
        self.post(&format!(
            r#"{{"app_id":1,"message_id":{message_id},"event":"{event}"}}"#
        ))
        .await
        .0
    }

    pub async fn get(&self, uri: &str) -> Value {
        let (status, _, value) = call(&self.app, "GET", uri, None, "").await;
        assert_eq!(status.as_u16(), 200, "GET {uri}: {value}");
        value
    }

    /// Waits until every accepted event is stored (at most 30 s).
    pub async fn stored(&self) {
        if self
            .service
            .pipeline()
            .caught_up(Duration::from_secs(30))
            .await
            .is_none()
        {
            panic!(
                "the pipeline did not catch up in 30 s: {:?}",
                self.service.stats()
            );
        }
    }
}

/// Writes to `table` fail or wait until [`WritesHeld::release`]: SQLite's
/// table is renamed away, PostgreSQL's locked by a transaction of another
/// connection.
pub enum WritesHeld {
    Sqlite(Store, String),
    Postgres(tokio_postgres::Client),
}

impl WritesHeld {
    pub async fn hold(table: &Table, store: &Store) -> WritesHeld {
        if store.kind() == "sqlite" {
            store
                .execute(&format!("ALTER TABLE {0} RENAME TO {0}_away", table.name))
                .await
                .expect("table renamed");
            WritesHeld::Sqlite(store.clone(), table.name.clone())
        } else {
            let (client, connection) = tokio_postgres::connect(&table.url, tokio_postgres::NoTls)
                .await
                .expect("a second connection");
            tokio::spawn(connection);
            client
                .batch_execute(&format!(
                    "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
                    table.name
                ))
                .await
                .expect("table locked");
            WritesHeld::Postgres(client)
        }
    }

    pub async fn release(self) {
        match self {
            WritesHeld::Sqlite(store, name) => store
                .execute(&format!("ALTER TABLE {name}_away RENAME TO {name}"))
                .await
                .expect("table back"),
            WritesHeld::Postgres(client) => {
                client.batch_execute("COMMIT").await.expect("lock released")
            }
        }
    }
}
