//! The `metrics` feature: the registry's figures and the per-batch histograms
//! through the `metrics` facade, caught by a small recorder of this test's own.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use demandflow_runtime::registry::{self, metrics::record};
use demandflow_runtime::{SubscribeOptions, for_each, producer, push};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// Every value recorded, by metric name and sorted labels.
#[derive(Clone, Default)]
struct Values(Arc<Mutex<BTreeMap<String, Vec<f64>>>>);

struct Series(String, Values);

impl Series {
    fn put(&self, v: f64) {
        self.1.0.lock().unwrap().insert(self.0.clone(), vec![v]);
    }
    fn push(&self, v: f64) {
        self.1
            .0
            .lock()
            .unwrap()
            .entry(self.0.clone())
            .or_default()
            .push(v);
    }
}

impl CounterFn for Series {
    fn increment(&self, v: u64) {
        self.push(v as f64);
    }
    fn absolute(&self, v: u64) {
        self.put(v as f64);
    }
}

impl GaugeFn for Series {
    fn increment(&self, v: f64) {
        self.push(v);
    }
    fn decrement(&self, v: f64) {
        self.push(-v);
    }
    fn set(&self, v: f64) {
        self.put(v);
    }
}

impl HistogramFn for Series {
    fn record(&self, v: f64) {
        self.push(v);
    }
}

fn name(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Values {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Series(name(key), self.clone())))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Series(name(key), self.clone())))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Series(name(key), self.clone())))
    }
}

#[test]
fn figures_are_published_labelled_by_stage_name() {
    let values = Values::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&values, || {
        runtime.block_on(async {
            let (events, pusher) = push::<u64>(std::num::NonZeroUsize::new(1_000).unwrap());
            let source = producer(events)
                .name("m-source")
                .buffer_size(500)
                .start()
                .unwrap();
            let sink = for_each(|_: u64| {}).name("m-sink").start().unwrap();
            sink.subscribe_to(&source, SubscribeOptions::new().max_demand(100))
                .await
                .unwrap();
            for n in 0..250 {
                pusher.send(n).await.unwrap();
            }
            // The pusher is alive, so both stages still run and are listed.
            while registry::find("m-sink").is_none_or(|e| e.events_in < 250) {
                tokio::task::yield_now().await;
            }
            registry::refresh().await;
            let entries: Vec<_> = registry::snapshot()
                .into_iter()
                .filter(|e| e.name.starts_with("m-"))
                .collect();
            record(&entries);
        });
    });
    let map = values.0.lock().unwrap();
    let get = |k: &str| map.get(k).unwrap_or_else(|| panic!("no {k} in {map:#?}"));
    assert_eq!(
        get("demandflow_events_out_total{kind=producer,stage=m-source}"),
        &[250.0]
    );
    assert_eq!(
        get("demandflow_events_in_total{kind=consumer,stage=m-sink}"),
        &[250.0]
    );
    assert_eq!(
        get("demandflow_buffer_limit{kind=producer,stage=m-source}"),
        &[500.0]
    );
    assert_eq!(
        get("demandflow_events_dropped_total{kind=consumer,stage=m-sink}"),
        &[0.0]
    );
    // Every event went through `handle_events` in batches of at most max_demand.
    let sizes = get("demandflow_batch_size{stage=m-sink}");
    assert_eq!(sizes.iter().sum::<f64>(), 250.0);
    assert!(sizes.iter().all(|&n| n > 0.0 && n <= 100.0), "{sizes:?}");
    assert_eq!(
        get("demandflow_handler_seconds{stage=m-sink}").len(),
        sizes.len()
    );
}
