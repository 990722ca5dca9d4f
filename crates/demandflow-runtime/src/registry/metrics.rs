//! The registry's figures through the [`metrics`] crate's facade, so that any
//! exporter (Prometheus, StatsD, …) shows them. Enabled by the `metrics` feature.
//!
//! [`record`] writes one [`snapshot`] as metrics and
//! [`spawn_reporter`] does so periodically. Every series carries a `stage`
//! label with the stage's name (the name given to its builder), so name your
//! stages; unnamed ones are labelled `producer-3` and the like.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `demandflow_events_in_total` | counter | `stage`, `kind` | events received |
//! | `demandflow_events_out_total` | counter | `stage`, `kind` | events delivered |
//! | `demandflow_events_dropped_total` | counter | `stage`, `kind` | events dropped |
//! | `demandflow_buffered` | gauge | `stage`, `kind` | events in the buffer and dispatcher |
//! | `demandflow_buffer_limit` | gauge | `stage`, `kind` | the buffer's bound (bounded buffers only) |
//! | `demandflow_queued_in` | gauge | `stage`, `kind` | events received, not yet handled |
//! | `demandflow_pending_demand` | gauge | `stage`, `peer`, `side` | demand outstanding on a subscription (`side` is `upstream` or `downstream`) |
//! | `demandflow_restarts_total` | counter | `stage`, `kind` | a supervisor's restarts |
//! | `demandflow_child_restarts_total` | counter | `stage`, `child` | restarts of one child |
//! | `demandflow_partition_backlog` | gauge | `stage`, `partition` | a keyed partition's queued events |
//! | `demandflow_partition_busy_keys` | gauge | `stage`, `partition` | keys a worker holds |
//! | `demandflow_batch_size` | histogram | `stage` | events per `handle_events` call |
//! | `demandflow_handler_seconds` | histogram | `stage` | time in `handle_events` |
//!
//! The two histograms are recorded by the stages themselves, once per batch
//! (one clock read and two histogram records per batch: the only cost the
//! feature adds to the data path); everything else is read from the registry
//! when [`record`] runs.

use std::time::Duration;

use metrics::{Histogram, counter, gauge, histogram};

use super::{Entry, snapshot};
use crate::Peer;

/// Writes `entries` (a [`snapshot`]) as metrics.
pub fn record(entries: &[Entry]) {
    for e in entries {
        let stage = e.name.clone();
        let kind = e.kind.as_str();
        counter!("demandflow_events_in_total", "stage" => stage.clone(), "kind" => kind)
            .absolute(e.events_in);
        counter!("demandflow_events_out_total", "stage" => stage.clone(), "kind" => kind)
            .absolute(e.events_out);
        counter!("demandflow_events_dropped_total", "stage" => stage.clone(), "kind" => kind)
            .absolute(e.events_dropped);
        gauge!("demandflow_buffered", "stage" => stage.clone(), "kind" => kind)
            .set(e.buffered as f64);
        if let Some(limit) = e.buffer_limit {
            gauge!("demandflow_buffer_limit", "stage" => stage.clone(), "kind" => kind)
                .set(limit as f64);
        }
        gauge!("demandflow_queued_in", "stage" => stage.clone(), "kind" => kind)
            .set(e.queued_in as f64);
        for sub in &e.subscriptions {
            let Some(demand) = sub.pending_demand else {
                continue;
            };
            let side = match sub.peer {
                Peer::Producer => "upstream",
                Peer::Consumer => "downstream",
            };
            let peer = sub
                .peer_name
                .clone()
                .unwrap_or_else(|| sub.peer_id.to_string());
            gauge!("demandflow_pending_demand", "stage" => stage.clone(), "peer" => peer, "side" => side)
                .set(demand as f64);
        }
        if let Some(restarts) = e.restarts {
            counter!("demandflow_restarts_total", "stage" => stage.clone(), "kind" => kind)
                .absolute(restarts);
        }
        for child in &e.children {
            counter!("demandflow_child_restarts_total", "stage" => stage.clone(), "child" => child.name.clone())
                .absolute(child.restarts);
        }
        for (i, p) in e.partitions.iter().enumerate() {
            gauge!("demandflow_partition_backlog", "stage" => stage.clone(), "partition" => i.to_string())
                .set(p.backlog as f64);
            gauge!("demandflow_partition_busy_keys", "stage" => stage.clone(), "partition" => i.to_string())
                .set(p.busy_keys as f64);
        }
    }
}

/// Spawns a task on the current tokio runtime that, every `period`,
/// [refreshes](super::refresh) the registry and [`record`]s it. It runs until
/// aborted through the returned handle.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn spawn_reporter(period: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            super::refresh().await;
            record(&snapshot());
            tokio::time::sleep(period).await;
        }
    })
}

/// The histograms a stage records per batch.
pub(crate) struct Histograms {
    batch_size: Histogram,
    handler_seconds: Histogram,
}

impl Histograms {
    pub(crate) fn new(stage: &str) -> Self {
        Histograms {
            batch_size: histogram!("demandflow_batch_size", "stage" => stage.to_owned()),
            handler_seconds: histogram!("demandflow_handler_seconds", "stage" => stage.to_owned()),
        }
    }

    #[inline]
    pub(crate) fn record(&self, len: usize, took: Duration) {
        self.batch_size.record(len as f64);
        self.handler_seconds.record(took);
    }
}
