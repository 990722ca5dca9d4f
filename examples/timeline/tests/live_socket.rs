//! The live timeline over a real socket: a websocket watcher gets each step
//! of its message once, after it is stored, and nothing of other messages;
//! the page serves the stored steps.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::{Table, config, start};
use timeline::{STEPS, router};
use tokio_tungstenite::tungstenite::Message;

/// Serves the router on a free local port; returns its address.
async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn next_step(
    socket: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> serde_json::Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a step within 30 s")
            .expect("the socket is open")
            .expect("a message");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_watcher_receives_each_step_of_its_message_once_after_it_is_stored() {
    let table = Table::new(&support::sqlite().await);
    let store = table.open().await;
    let running = start(store.clone(), config(Duration::from_millis(20), 3, 1_000)).await;
    let addr = serve(router(running.service.clone())).await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/socket/timeline/4200"))
            .await
            .expect("websocket handshake");
    assert_eq!(running.service.live().watched(), 1);

    // Every step of 4200 (one of them reported twice within a window), with
    // steps of other messages in between.
    for (i, step) in STEPS.iter().enumerate() {
        assert_eq!(running.step(4200, step).await, 200);
        assert_eq!(running.step(4300 + i as i64, step).await, 200);
    }
    let mut seen = Vec::new();
    for _ in 0..STEPS.len() {
        let step = next_step(&mut socket).await;
        let event = step["event"].as_str().expect("an event").to_owned();
        // Sent after it was stored: the row already holds it, at that time.
        let rows = store.message(4200).await.expect("row");
        assert_eq!(rows[0].events[&event], step["time"], "{step}");
        seen.push(event);
    }
    seen.sort();
    let mut expected: Vec<String> = STEPS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(seen, expected, "each step once");

    // Nothing else was queued for this watcher: the next thing it gets is a
    // marker step posted now.
    assert_eq!(running.step(4200, "MARKER").await, 200);
    assert_eq!(next_step(&mut socket).await["event"], "MARKER");

    // Leaving unsubscribes.
    socket.send(Message::Close(None)).await.expect("close");
    drop(socket);
    for _ in 0..3_000 {
        if running.service.live().watched() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(running.service.live().watched(), 0);
    running.service.shutdown(Duration::from_secs(10)).await;
    table.drop_table(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_stored_steps_and_opens_the_socket() {
    let table = Table::new(&support::sqlite().await);
    let store = table.open().await;
    let running = start(store.clone(), config(Duration::from_millis(10), 100, 1_000)).await;
    assert_eq!(running.step(55, STEPS[0]).await, 200);
    running.stored().await;
    let (status, headers, _) = timeline::call(&running.app, "GET", "/timeline/55", None, "").await;
    assert_eq!(status.as_u16(), 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html")
    );
    let addr = serve(router(running.service.clone())).await;
    let page = String::from_utf8(
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            write!(
                stream,
                "GET /timeline/55 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            )
            .expect("request");
            let mut page = Vec::new();
            stream.read_to_end(&mut page).expect("page");
            page
        })
        .await
        .expect("read"),
    )
    .expect("UTF-8");
    assert!(
        page.contains(r#"const steps = new Map(Object.entries({"MESSAGE_CREATED":"#),
        "{page}"
    );
    assert!(page.contains("/socket/timeline/${messageId}"));
    let (status, _, _) = timeline::call(&running.app, "GET", "/timeline/abc", None, "").await;
    assert_eq!(status.as_u16(), 400);
    running.service.shutdown(Duration::from_secs(10)).await;
    table.drop_table(&store).await;
}
