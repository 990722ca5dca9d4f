//! A running pipeline's figures as Prometheus metrics: demandflow's `metrics`
//! feature publishes them through the `metrics` facade, and
//! `metrics-exporter-prometheus` serves them on `/metrics`.
//!
//! What it teaches:
//!
//! - installing an exporter (any `metrics` recorder works; this one is
//!   Prometheus's, with its own HTTP listener) before the pipeline starts, so
//!   the stages' per-batch histograms land in it;
//! - naming stages (`.name("square")`), because every series is labelled with
//!   the stage's name;
//! - [`spawn_reporter`](demandflow::registry::metrics::spawn_reporter): a task
//!   that reads the registry every half second and writes its counters and
//!   gauges as metrics.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --release -p demandflow-prometheus-example
//! # keep it up for a minute, to look with curl or Prometheus:
//! cargo run --release -p demandflow-prometheus-example -- --addr 127.0.0.1:9464 --seconds 60
//! curl -s http://127.0.0.1:9464/metrics | grep demandflow_
//! ```
//!
//! It scrapes its own `/metrics` twice, a little over a second apart, and
//! checks that each stage's event counter is there and went up, and that the
//! batch-size histogram is there too. The last line is `RESULT {json}`; the
//! exit status is non-zero when the check fails.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use demandflow::{Context, Producer, SubscribeOptions, for_each, map, producer};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where `/metrics` is served unless `--addr` says otherwise (the port
/// OpenTelemetry's Prometheus exporter also uses by default).
const ADDR: &str = "127.0.0.1:9464";

/// Each stage, and the counter that shows its throughput: what a source emits,
/// what a sink takes in.
const STAGES: [(&str, &str); 3] = [
    ("numbers", "demandflow_events_out_total"),
    ("square", "demandflow_events_out_total"),
    ("sum", "demandflow_events_in_total"),
];

/// How often the registry is written as metrics.
const REPORT_EVERY: Duration = Duration::from_millis(500);

/// Emits 0, 1, 2, … as asked, pausing a millisecond per request so the run is
/// a steady stream rather than a busy loop.
struct Numbers {
    next: u64,
}

impl Producer for Numbers {
    type Event = u64;

    async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<u64>) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        ctx.emit_all(self.next..self.next + demand);
        self.next += demand;
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Fetches `/metrics` over a plain HTTP/1.0 request (so the body is not
/// chunked) and returns the body.
async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("a response without a body"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        let status = head.lines().next().unwrap_or_default();
        return Err(std::io::Error::other(format!("/metrics answered {status}")));
    }
    Ok(body.to_owned())
}

/// The value of the series `metric` whose `stage` label is `stage`, in a
/// scrape in Prometheus's text format.
fn series(scrape: &str, metric: &str, stage: &str) -> Option<f64> {
    let label = format!("stage=\"{stage}\"");
    scrape.lines().find_map(|line| {
        let (name, rest) = line.split_once('{')?;
        let (labels, value) = rest.rsplit_once("} ")?;
        (name == metric && labels.split(',').any(|l| l == label))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr: SocketAddr = match arg(&args, "--addr").as_deref().unwrap_or(ADDR).parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("prometheus: --addr: {e}");
            return ExitCode::from(2);
        }
    };
    let seconds: u64 = arg(&args, "--seconds").map_or(0, |s| s.parse().unwrap_or(0));

    // The recorder first: a stage's histograms bind to the recorder installed
    // when the stage starts.
    if let Err(e) = PrometheusBuilder::new().with_http_listener(addr).install() {
        eprintln!("prometheus: installing the exporter on {addr}: {e}");
        return ExitCode::FAILURE;
    }
    let reporter = demandflow::registry::metrics::spawn_reporter(REPORT_EVERY);

    let numbers = producer(Numbers { next: 0 })
        .name("numbers")
        .start()
        .expect("inside a tokio runtime");
    let square = map(|n: u64| n.wrapping_mul(n))
        .name("square")
        .start()
        .expect("inside a tokio runtime");
    let sum = for_each(|n: u64| {
        std::hint::black_box(n);
    })
    .name("sum")
    .start()
    .expect("inside a tokio runtime");
    let options = || SubscribeOptions::new().max_demand(500);
    square
        .subscribe_to(&numbers, options())
        .await
        .expect("square subscribes to numbers");
    sum.subscribe_to(&square, options())
        .await
        .expect("sum subscribes to square");
    println!("serving http://{addr}/metrics");
    tokio::time::sleep(Duration::from_secs(seconds)).await;

    // Two scrapes, more than two report periods apart, so the counters have
    // been written again in between.
    tokio::time::sleep(2 * REPORT_EVERY).await;
    let first = scrape(addr).await;
    tokio::time::sleep(3 * REPORT_EVERY).await;
    let second = scrape(addr).await;
    let (first, second) = match (first, second) {
        (Ok(first), Ok(second)) => (first, second),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("prometheus: scraping http://{addr}/metrics: {e}");
            println!("RESULT {{\"example\":\"prometheus\",\"ok\":false,\"scraped\":false}}");
            return ExitCode::FAILURE;
        }
    };

    let mut growth = BTreeMap::new();
    for (stage, metric) in STAGES {
        let (before, after) = (
            series(&first, metric, stage),
            series(&second, metric, stage),
        );
        println!("{metric}{{stage=\"{stage}\"}}: {before:?} then {after:?}");
        growth.insert(stage, (before.unwrap_or(0.0), after.unwrap_or(0.0)));
    }
    let histogram = series(&second, "demandflow_batch_size_count", "sum");
    println!("demandflow_batch_size_count{{stage=\"sum\"}}: {histogram:?}");
    let increasing = growth
        .values()
        .all(|&(before, after)| before > 0.0 && after > before);
    let ok = increasing && histogram.is_some_and(|n| n > 0.0);

    reporter.abort();
    numbers
        .stop(demandflow::Reason::Shutdown)
        .await
        .expect("numbers is running");
    sum.wait().await;
    let series: Vec<String> = growth
        .iter()
        .map(|(stage, (before, after))| {
            format!("\"{stage}\":{{\"first\":{before},\"second\":{after}}}")
        })
        .collect();
    println!(
        "RESULT {{\"example\":\"prometheus\",\"ok\":{ok},\"scraped\":true,\"stages\":{{{}}},\"batch_size_count\":{}}}",
        series.join(","),
        histogram.unwrap_or(0.0)
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
