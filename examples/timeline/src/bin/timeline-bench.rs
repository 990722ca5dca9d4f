//! The timeline service under load, next to same-run baselines: a do-nothing
//! axum handler for HTTP and a do-nothing tonic service for gRPC. Everything
//! runs on this machine (the load generator too), so compare the ratios.
//!
//! Run it with (wrk comes from Debian: `apt-get install wrk`):
//!
//! ```sh
//! cargo run --release -p demandflow-timeline --bin timeline-bench             # 10 s per HTTP load
//! cargo run --release -p demandflow-timeline --bin timeline-bench -- --quick  # 3 s per HTTP load
//! ```
//!
//! Measured: `POST /api/event` and `GET /api/create_event` under
//! `wrk -t2 -c100` against the do-nothing handler; how long the backlog takes
//! to drain once the load stops; gRPC `collectEvent` × 100,000 from 100
//! concurrent callers against the do-nothing service, with the same client;
//! bulk ingest (bodies of 10,000 events, in process) until every event is
//! stored; events lost; peak RSS. The store is a SQLite file in a temporary
//! directory. Ends with a `RESULT {json}` line.

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};
use timeline::{
    Config, EventRequest, EventResponse, Grpc, STEPS, Service, Store, TimelineClient,
    TimelineServer, TimelineService, call, router,
};
use tonic::{Request, Response, Status};

const CONNECTIONS: u32 = 100;
const GRPC_CALLS: u64 = 100_000;
const GRPC_CALLERS: u64 = 100;
const BULK_EVENTS: usize = 10_000;

/// wrk's Lua: one random event per request, and a JSON summary at the end
/// (so nothing has to scrape wrk's table).
const EVENT_SCRIPT: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local steps = {"MESSAGE_CREATED", "MESSAGE_REACHED_BACKEND", "MESSAGE_IN_SEARCH_QUEUE",
               "MESSAGE_IN_UPDATES_QUEUE", "MESSAGE_IN_WS_QUEUE", "MESSAGE_REACHED_FRONTEND"}
math.randomseed(os.time())
request = function()
  local body = string.format('{"app_id":%d,"message_id":%d,"event":"%s"}',
    math.random(100), math.random(10000000) * 100, steps[math.random(6)])
  return wrk.format(nil, "/api/event", nil, body)
end
"#;

const SUMMARY_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'SUMMARY {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"#;

/// wrk's summary of one run, as its `done` hook printed it.
#[derive(Clone, Copy, Debug, Default)]
struct Load {
    requests: f64,
    duration_us: f64,
    p50_us: f64,
    p99_us: f64,
    errors: f64,
}

impl Load {
    fn rps(&self) -> f64 {
        self.requests / (self.duration_us / 1e6)
    }

    fn p50_ms(&self) -> f64 {
        self.p50_us / 1e3
    }

    fn p99_ms(&self) -> f64 {
        self.p99_us / 1e3
    }
}

fn wrk(script: &std::path::Path, url: &str, seconds: u64) -> Load {
    let output = Command::new("wrk")
        .args(["-t2", &format!("-c{CONNECTIONS}"), &format!("-d{seconds}s")])
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .lines()
        .find_map(|line| line.strip_prefix("SUMMARY "))
        .and_then(|json| serde_json::from_str::<Value>(json).ok())
        .unwrap_or_else(|| panic!("wrk printed no summary: {stdout}"));
    let field = |key: &str| summary[key].as_f64().unwrap_or(0.0);
    Load {
        requests: field("requests"),
        duration_us: field("duration_us"),
        p50_us: field("p50_us"),
        p99_us: field("p99_us"),
        errors: field("errors"),
    }
}

/// Serves `app` on a free local port; its address.
async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Serves a gRPC service on a free local port; its address.
async fn serve_grpc<T: TimelineService>(server: TimelineServer<T>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

/// The gRPC baseline: answers success and does nothing.
struct Noop;

#[tonic::async_trait]
impl TimelineService for Noop {
    async fn collect_event(
        &self,
        _: Request<EventRequest>,
    ) -> Result<Response<EventResponse>, Status> {
        Ok(Response::new(EventResponse { success: true }))
    }
}

/// `GRPC_CALLS` calls from `GRPC_CALLERS` concurrent callers over one
/// HTTP/2 connection; calls per second and how many failed.
async fn grpc_load(addr: std::net::SocketAddr) -> (f64, u64) {
    let client = TimelineClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let started = Instant::now();
    let callers: Vec<_> = (0..GRPC_CALLERS)
        .map(|caller| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut failed = 0;
                for i in 0..GRPC_CALLS / GRPC_CALLERS {
                    let request = EventRequest {
                        app_id: 1 + (caller % 100) as i64,
                        message_id: ((caller * 1_000 + i) * 100) as i64,
                        event: STEPS[(i % 6) as usize].to_owned(),
                        created_at: String::new(),
                    };
                    if client.collect_event(request).await.is_err() {
                        failed += 1;
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed = 0;
    for caller in callers {
        failed += caller.await.expect("caller");
    }
    (GRPC_CALLS as f64 / started.elapsed().as_secs_f64(), failed)
}

/// Posts `bodies` bulk bodies of `BULK_EVENTS` events in process from 2
/// tasks, retrying a 503 after a millisecond, and waits until all are
/// stored; events stored per second and how many 503s there were.
async fn bulk_load(service: &Arc<Service>, bodies: usize) -> (f64, u64) {
    let app = router(service.clone());
    let stored_before = service.stats().stored;
    let started = Instant::now();
    let tasks: Vec<_> = (0..2)
        .map(|task| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut refused = 0;
                for body in (task..bodies).step_by(2) {
                    // Event n of the whole load is step n % 6 of message
                    // n / 6 (app 0, which no other load uses): every
                    // (app, message, step) once, so the steps in the rows
                    // can be counted against the events accepted.
                    let events: Vec<Value> = (body * BULK_EVENTS..(body + 1) * BULK_EVENTS)
                        .map(|n| {
                            json!({
                                "app_id": 0,
                                "message_id": n / 6 * 100,
                                "event": STEPS[n % 6],
                            })
                        })
                        .collect();
                    let body = json!({ "events": events }).to_string();
                    loop {
                        let (status, _, _) = call(
                            &app,
                            "POST",
                            "/api/event/bulk",
                            Some("application/json"),
                            body.clone(),
                        )
                        .await;
                        match status {
                            StatusCode::OK => break,
                            StatusCode::SERVICE_UNAVAILABLE => {
                                refused += 1;
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                            other => panic!("bulk answered {other}"),
                        }
                    }
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for task in tasks {
        refused += task.await.expect("bulk task");
    }
    service
        .pipeline()
        .caught_up(Duration::from_secs(120))
        .await
        .expect("the bulk load is stored within 2 minutes");
    let stored = service.stats().stored - stored_before;
    (stored as f64 / started.elapsed().as_secs_f64(), refused)
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let seconds = if quick { 3 } else { 10 };
    let bulk_bodies = if quick { 30 } else { 100 };
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed (Debian: apt-get install wrk)");
        return ExitCode::FAILURE;
    }
    let dir = std::env::temp_dir().join(format!("timeline-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let event_script = dir.join("event.lua");
    std::fs::write(&event_script, format!("{EVENT_SCRIPT}{SUMMARY_SCRIPT}")).expect("script");
    let get_script = dir.join("get.lua");
    std::fs::write(&get_script, SUMMARY_SCRIPT).expect("script");

    let store = Store::open(
        &format!("sqlite:{}", dir.join("timeline.db").display()),
        "timeline",
    )
    .await
    .expect("store");
    let service = Service::start(store, Config::default())
        .await
        .expect("service");
    let timeline_http = serve(router(service.clone())).await;
    let timeline_grpc = serve_grpc(Grpc::server(service.clone())).await;
    // The baselines: the same routes, answering 200 and doing nothing else.
    let noop_http = serve(
        axum::Router::new()
            .route(
                "/api/event",
                axum::routing::post(|| async { StatusCode::OK }),
            )
            .route(
                "/api/create_event",
                axum::routing::get(|| async { StatusCode::OK }),
            ),
    )
    .await;
    let noop_grpc = serve_grpc(TimelineServer::new(Noop)).await;

    println!(
        "wrk -t2 -c{CONNECTIONS}, {seconds} s per load, SQLite store; the machine may be shared"
    );
    let wrk_at = |addr: std::net::SocketAddr, script: std::path::PathBuf, path: &'static str| {
        tokio::task::spawn_blocking(move || wrk(&script, &format!("http://{addr}{path}"), seconds))
    };
    let http_noop = wrk_at(noop_http, event_script.clone(), "/api/event")
        .await
        .expect("wrk");
    let single = wrk_at(timeline_http, event_script.clone(), "/api/event")
        .await
        .expect("wrk");
    let load_stopped = Instant::now();
    let drained = service
        .pipeline()
        .caught_up(Duration::from_secs(60))
        .await
        .map(|_| load_stopped.elapsed());
    let create = wrk_at(timeline_http, get_script.clone(), "/api/create_event")
        .await
        .expect("wrk");
    service.pipeline().caught_up(Duration::from_secs(60)).await;
    let (grpc_noop_rps, _) = grpc_load(noop_grpc).await;
    let (grpc_rps, grpc_failed) = grpc_load(timeline_grpc).await;
    service.pipeline().caught_up(Duration::from_secs(60)).await;
    let (bulk_rate, bulk_refused) = bulk_load(&service, bulk_bodies).await;
    service.shutdown(Duration::from_secs(60)).await;
    let stats = service.stats();
    // After a drained shutdown every accepted event must have been
    // acknowledged as stored: whatever was not (acknowledged as failed, or
    // never acknowledged) is lost. `stats.lost` alone would miss the latter.
    let lost_events = stats.accepted.saturating_sub(stats.stored);
    // The database's side: the bulk load wrote each (app 0, message, step)
    // once, so its rows must hold exactly that many steps.
    let bulk_steps_in_db: usize = service
        .store()
        .all()
        .await
        .expect("rows")
        .iter()
        .filter(|row| row.app_id == 0)
        .map(|row| row.events.len())
        .sum();
    let bulk_events = (bulk_bodies * BULK_EVENTS) as u64;
    let lost_events = lost_events.max(bulk_events.saturating_sub(bulk_steps_in_db as u64));
    let rss = peak_rss_mb();

    println!(
        "{:<34} {:>11} {:>8} {:>8} {:>8}",
        "load", "req/s", "p50 ms", "p99 ms", "errors"
    );
    for (name, load) in [
        ("POST /api/event, do-nothing axum", http_noop),
        ("POST /api/event, timeline", single),
        ("GET /api/create_event, timeline", create),
    ] {
        println!(
            "{name:<34} {:>11.0} {:>8.2} {:>8.2} {:>8}",
            load.rps(),
            load.p50_ms(),
            load.p99_ms(),
            load.errors
        );
    }
    println!(
        "single-event ingest: {:.2}× the do-nothing handler; backlog drained {} after the load",
        single.rps() / http_noop.rps(),
        drained.map_or("NOT within 60 s".to_owned(), |d| format!(
            "{:.0} ms",
            d.as_secs_f64() * 1e3
        ))
    );
    println!(
        "gRPC collectEvent × {GRPC_CALLS} ({GRPC_CALLERS} callers): {grpc_rps:.0}/s vs do-nothing {grpc_noop_rps:.0}/s ({:.2}×), {grpc_failed} failed",
        grpc_rps / grpc_noop_rps
    );
    println!(
        "bulk: {} × {BULK_EVENTS} events stored at {bulk_rate:.0} events/s ({bulk_refused} 503s retried)",
        bulk_bodies
    );
    println!(
        "accepted {}, stored {} (acknowledged), failed {}, lost {lost_events}; bulk steps in the database {bulk_steps_in_db} of {bulk_events}",
        stats.accepted, stats.stored, stats.lost
    );
    println!("peak RSS {rss:.0} MB (service, baselines and gRPC client in one process)");
    let _ = std::fs::remove_dir_all(&dir);
    let result = json!({
        "bench": "timeline",
        "http_single_rps": single.rps().round(),
        "http_single_p99_ms": (single.p99_ms() * 100.0).round() / 100.0,
        "http_noop_rps": http_noop.rps().round(),
        "grpc_rps": grpc_rps.round(),
        "grpc_noop_rps": grpc_noop_rps.round(),
        "bulk_events_per_sec": bulk_rate.round(),
        "backlog_drained_ms": drained.map_or(-1, |d| d.as_millis() as i64),
        "lost_events": lost_events,
        "peak_rss_mb": rss.round(),
    });
    println!("RESULT {result}");
    if lost_events == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
