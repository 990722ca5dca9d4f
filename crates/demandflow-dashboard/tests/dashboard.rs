//! The dashboard over HTTP, with a raw client: the page, the JSON snapshot with
//! the `live` example's stages and counts that grow, the event stream, and a
//! killed stage shown as restarted.

#[path = "../examples/live/pipeline.rs"]
mod pipeline;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GETs `path` with HTTP/1.1 and `Connection: close`; returns the status line,
/// the headers and the body.
async fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connecting");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).expect("UTF-8");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_lowercase(), body.to_owned())
}

async fn snapshot(addr: SocketAddr) -> Value {
    let (status, headers, body) = get(addr, "/api/snapshot").await;
    assert!(status.contains("200"), "{status}");
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );
    serde_json::from_str(&body).expect("JSON")
}

fn stage<'a>(view: &'a Value, name: &str) -> Option<&'a Value> {
    view["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["name"] == name)
}

fn count(view: &Value, name: &str, field: &str) -> u64 {
    stage(view, name).unwrap_or_else(|| panic!("{name} is not in the snapshot"))[field]
        .as_u64()
        .unwrap()
}

/// Polls the snapshot until `done` holds (bounded: 30 s of polls).
async fn until(
    sup: &demandflow::supervisor::Supervisor,
    addr: SocketAddr,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    let mut view = Value::Null;
    for _ in 0..300 {
        view = snapshot(addr).await;
        if done(&view) {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the snapshot never showed what was expected; the last one: {view:#}; the registry: {:?}; the supervisor's exit: {:?}",
        demandflow::registry::snapshot(),
        sup.exit_reason()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_live_pipeline_and_its_restarts() {
    let supervisor = pipeline::start().await;
    for name in pipeline::STAGES {
        assert!(
            demandflow::registry::find(name).is_some(),
            "{name} is not registered: {:?}",
            demandflow::registry::snapshot()
        );
    }
    let dashboard = demandflow_dashboard::Builder::new()
        .period(Duration::from_millis(100))
        .start("127.0.0.1:0")
        .await
        .unwrap();
    let addr = dashboard.local_addr();
    assert!(addr.ip().is_loopback());

    let (status, headers, page) = get(addr, "/").await;
    assert!(status.contains("200"), "{status}");
    assert!(headers.contains("content-type: text/html"), "{headers}");
    assert!(page.contains("<title>demandflow dashboard</title>"));
    assert!(page.contains("EventSource(\"api/events\")"));

    // Every stage appears, then its counts grow from one sample to a later one.
    let first = until(&supervisor, addr, |v| {
        pipeline::STAGES.iter().all(|name| {
            stage(v, name).is_some_and(|s| {
                s["events_in"].as_u64().unwrap() + s["events_out"].as_u64().unwrap() > 0
            })
        })
    })
    .await;
    let later = until(&supervisor, addr, |v| {
        v["samples"].as_u64() > first["samples"].as_u64()
            && count(v, "numbers", "events_out") > count(&first, "numbers", "events_out")
            && count(v, "square", "events_in") > count(&first, "square", "events_in")
            && count(v, "square", "events_out") > count(&first, "square", "events_out")
            && count(v, "sink", "events_in") > count(&first, "sink", "events_in")
    })
    .await;
    let square = stage(&later, "square").unwrap();
    assert_eq!(square["kind"], "producer_consumer");
    let upstream = square["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["peer"] == "producer")
        .expect("square's subscription to numbers");
    assert_eq!(upstream["peer_name"], "numbers");
    assert_eq!(upstream["cancel"], "permanent");
    assert!(upstream["pending_demand"].as_u64().unwrap() <= 100);
    assert_eq!(count(&later, "numbers", "buffer_limit"), 1_000);
    let sup = stage(&later, "live-supervisor").expect("the supervisor");
    assert_eq!(sup["kind"], "supervisor");
    assert_eq!(sup["supervisor_restarts"], 0);

    // The event stream sends the same figures.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = String::new();
    let mut buf = [0_u8; 4096];
    while !received.contains("event: snapshot\ndata: {") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an event within 10 s")
            .unwrap();
        assert!(n > 0, "the stream closed: {received}");
        received.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        received
            .to_lowercase()
            .contains("content-type: text/event-stream")
    );
    assert!(received.contains("\"name\":\"square\""));
    drop(stream);

    // A stage killed on purpose comes back, shown as restarted.
    let before = count(&later, "sink", "id");
    pipeline::kill_sink(&supervisor).await;
    let view = until(&supervisor, addr, |v| {
        stage(v, "sink").is_some_and(|s| s["restarts"].as_u64() >= Some(1))
    })
    .await;
    assert_eq!(
        stage(&view, "live-supervisor").unwrap()["supervisor_restarts"],
        1
    );
    // The new instance, with a new id, receives events again.
    let restarted = until(&supervisor, addr, |v| {
        count(v, "sink", "id") != before && count(v, "sink", "events_in") > 0
    })
    .await;
    assert_eq!(count(&restarted, "sink", "restarts"), 1);
    assert_eq!(count(&restarted, "square", "restarts"), 0);
    assert_eq!(count(&restarted, "numbers", "restarts"), 0);

    dashboard.stop();
    supervisor.stop(demandflow::Reason::Shutdown).await;
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}

#[tokio::test]
async fn a_dashboard_flag_is_taken_out_of_the_arguments_and_started() {
    let mut given = args(&["--events", "5", "--dashboard", "127.0.0.1:0", "--seed", "1"]);
    let dashboard = demandflow_dashboard::start_from_args(&mut given)
        .await
        .expect("a valid address")
        .expect("the flag was given");
    assert_eq!(given, args(&["--events", "5", "--seed", "1"]));
    let (status, _, body) = get(dashboard.local_addr(), "/").await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("<html"), "the page is served");

    let mut none = args(&["--events", "5"]);
    assert!(
        demandflow_dashboard::start_from_args(&mut none)
            .await
            .expect("no flag is no error")
            .is_none()
    );
    assert_eq!(none, args(&["--events", "5"]));

    for bad in [&["--dashboard"][..], &["--dashboard", "localhost"][..]] {
        let error = demandflow_dashboard::start_from_args(&mut args(bad))
            .await
            .expect_err("no address, or not a socket address");
        assert!(error.starts_with("--dashboard"), "{error}");
    }
}
