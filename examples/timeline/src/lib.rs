//! An event-timeline service: clients report that message M reached step E
//! (over HTTP or gRPC); the service groups the reports per message, stores one
//! row per message holding the union of its steps, and pushes each new step,
//! once stored, to whoever watches that message over a websocket.
//!
//! ```text
//! POST /api/event ─┐                        ┌─> SQLite / PostgreSQL: one upsert per message,
//! gRPC collectEvent┼─> Pipeline::try_push ──┤   one transaction per window
//! bulk, load route ┘   (503 / RESOURCE_     └─> Live: each stored step to the message's
//!                       EXHAUSTED when full)       websockets and its /timeline page
//! ```
//!
//! - [`event`](crate::Event): what a report is and how a body becomes one;
//! - [`Pipeline`]: the demandflow topology from collectors through
//!   aggregators and a window of at most 1 s / N events to the store
//!   consumers, behind a bounded push handle;
//! - [`Store`]: the rows, in SQLite (the default, embedded) or PostgreSQL;
//! - [`Live`]: who watches which message;
//! - [`router`] and [`Grpc`]: the HTTP and gRPC surfaces;
//! - [`Service`]: all of it together, with the retention job and the drain.
//!
//! `src/main.rs` runs it (`cargo run --release -p demandflow-timeline`); the
//! guide's chapter 12, *An event-timeline service*, walks through the design,
//! and `src/bin/timeline-bench.rs` measures it.

mod event;
mod grpc;
mod http;
mod live;
mod pipeline;
mod store;

use std::sync::Arc;
use std::time::Duration;

pub use event::{
    Event, MAX_STEP_BYTES, STEPS, check_step, now_ms, now_rfc3339, parse_bulk, parse_created_at,
    parse_event, random_event,
};
pub use grpc::{
    EventRequest, EventResponse, Grpc, TimelineClient, TimelineServer, TimelineService,
};
pub use http::{MAX_BULK_BYTES, MAX_EVENT_BYTES, RETRY_AFTER_SECS, call, router};
pub use live::{Live, StepJson, Watch};
pub use pipeline::{Pipeline, PipelineConfig, PushRefused, Stats, group};
pub use store::{Row, Store, StoreError, Upsert};

/// How the service runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The pipeline's shape and capacity.
    pub pipeline: PipelineConfig,
    /// Rows not updated for this long are deleted (default 14 days).
    pub retention: Duration,
    /// How often the retention job runs (default hourly).
    pub retention_every: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pipeline: PipelineConfig::default(),
            retention: Duration::from_secs(14 * 24 * 3600),
            retention_every: Duration::from_secs(3600),
        }
    }
}

/// Starting the service failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The pipeline did not start.
    #[error("starting the pipeline: {0}")]
    Pipeline(#[from] demandflow::messages::StartTopologyError),
}

/// The running service: its store, its pipeline and its watchers.
#[derive(Debug)]
pub struct Service {
    store: Store,
    live: Arc<Live>,
    pipeline: Pipeline,
    config: Config,
}

impl Service {
    /// Starts the pipeline over `store`.
    ///
    /// # Errors
    ///
    /// [`StartError`] if the pipeline cannot start.
    pub async fn start(store: Store, config: Config) -> Result<Arc<Service>, StartError> {
        let live = Arc::new(Live::default());
        let pipeline = Pipeline::start(&config.pipeline, store.clone(), live.clone()).await?;
        Ok(Arc::new(Service {
            store,
            live,
            pipeline,
            config,
        }))
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The watchers.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Where the pipeline stands.
    pub fn stats(&self) -> Stats {
        self.pipeline.stats()
    }

    /// Hands `events` to the pipeline, all or none.
    ///
    /// # Errors
    ///
    /// [`PushRefused`] when the pipeline is full, they are more than it
    /// holds, or it is shutting down.
    pub fn ingest(&self, events: Vec<Event>) -> Result<(), PushRefused> {
        self.pipeline.try_push(events)
    }

    /// The stored steps of `message_id`, over every application that
    /// reported it (a step both reported keeps the later time).
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn timeline(
        &self,
        message_id: i64,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
        let mut steps = serde_json::Map::new();
        for row in self.store.message(message_id).await? {
            for (step, time) in row.events {
                let later = match (steps.get(&step), &time) {
                    (Some(serde_json::Value::String(old)), serde_json::Value::String(new)) => {
                        new > old
                    }
                    _ => true,
                };
                if later {
                    steps.insert(step, time);
                }
            }
        }
        Ok(steps)
    }

    /// Deletes the rows not updated for the configured retention, as of
    /// `now` (ms since the epoch); returns how many.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn expire(&self, now: i64) -> Result<u64, StoreError> {
        let age = i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX);
        self.store.delete_older_than(now.saturating_sub(age)).await
    }

    /// Runs [`expire`](Self::expire) every `retention_every`, starting now,
    /// until the returned task is aborted.
    pub fn spawn_retention(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(service.config.retention_every);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                match service.expire(now_ms()).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "retention: old rows deleted"),
                    Err(error) => tracing::warn!(%error, "retention failed"),
                }
            }
        })
    }

    /// Stops taking events and stores everything accepted (retrying a
    /// failing database until `deadline`). Call it once no request is served
    /// any more; returns how many accepted events could not be stored.
    pub async fn shutdown(&self, deadline: Duration) -> u64 {
        self.pipeline.drain(deadline).await;
        self.pipeline.stats().lost
    }
}
