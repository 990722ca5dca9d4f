//! gRPC `collectEvent` over a real socket: accepted events are stored, bad
//! ones are INVALID_ARGUMENT, and a full pipeline answers RESOURCE_EXHAUSTED.

mod support;

use std::time::Duration;

use support::{Table, config, start};
use timeline::{EventRequest, Grpc, STEPS, TimelineClient};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_event_stores_refuses_bad_input_and_pushes_back_when_full() {
    let table = Table::new(&support::sqlite().await);
    let store = table.open().await;
    // Capacity 3 and a window that never times out: the fourth event finds
    // the pipeline full until the drain.
    let running = start(store.clone(), config(Duration::from_secs(3600), 1_000, 3)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let addr = listener.local_addr().expect("an address");
    let server = tonic::transport::Server::builder()
        .add_service(Grpc::server(running.service.clone()))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    let mut client = TimelineClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");

    let request = |message_id: i64, event: &str, created_at: &str| EventRequest {
        app_id: 7,
        message_id,
        event: event.to_owned(),
        created_at: created_at.to_owned(),
    };
    for (i, step) in STEPS[..3].iter().enumerate() {
        let at = if i == 0 { "2026-12-03T10:00:00Z" } else { "" };
        let answer = client
            .collect_event(request(900, step, at))
            .await
            .expect("accepted");
        assert!(answer.into_inner().success);
    }
    let refused = client
        .collect_event(request(900, STEPS[3], ""))
        .await
        .expect_err("full");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    for bad in [
        request(-1, "A", ""),
        request(1, "not a step", ""),
        request(1, "A", "later"),
    ] {
        let refused = client.collect_event(bad).await.expect_err("bad input");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }
    assert_eq!(running.service.stats().accepted, 3);

    assert_eq!(running.service.shutdown(Duration::from_secs(10)).await, 0);
    let rows = store.message(900).await.expect("row");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].app_id, 7);
    assert_eq!(rows[0].events.len(), 3);
    assert_eq!(rows[0].events[STEPS[0]], "2026-12-03T10:00:00Z");
    let refused = client
        .collect_event(request(901, STEPS[0], ""))
        .await
        .expect_err("drained");
    assert_eq!(refused.code(), Code::Unavailable);
    table.drop_table(&store).await;
}
