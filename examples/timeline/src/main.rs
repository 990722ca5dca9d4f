//! The event-timeline service: `POST /api/event` with `{"app_id",
//! "message_id", "event", "created_at"}` (and `/api/event/bulk`, gRPC
//! `collectEvent`) reports a step; the steps are grouped per message and
//! upserted in batches to SQLite (`timeline.db` by default) or to the
//! PostgreSQL that `DATABASE_URL` names; `GET /timeline/{message_id}` shows a
//! message's steps, live.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --release -p demandflow-timeline
//! DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test cargo run --release -p demandflow-timeline
//! ```
//!
//! then open <http://127.0.0.1:4000/timeline/100> and, in another terminal:
//!
//! ```sh
//! curl -H 'content-type: application/json' -d '{"app_id":1,"message_id":100,"event":"MESSAGE_CREATED"}' \
//!      http://127.0.0.1:4000/api/event
//! ```
//!
//! Options: `--listen ADDR` (HTTP, default 127.0.0.1:4000), `--grpc-listen
//! ADDR` (default 127.0.0.1:50051), `--database URL` (default `DATABASE_URL`,
//! else `sqlite:timeline.db`), `--window-ms N` (default 1000),
//! `--window-events N` (default 10000), `--capacity N` (events accepted and
//! not yet stored, default 200000), `--retention-days N` (default 14).
//! SIGINT or SIGTERM stops it gracefully: the servers stop taking requests,
//! then everything accepted is stored before the process exits.

use std::process::ExitCode;
use std::time::Duration;

use timeline::{Config, Grpc, Service, Store, router};
use tokio_util::sync::CancellationToken;

fn usage(error: &str) -> ExitCode {
    eprintln!("{error}");
    eprintln!(
        "usage: demandflow-timeline [--listen ADDR] [--grpc-listen ADDR] [--database URL] \
         [--window-ms N] [--window-events N] [--capacity N] [--retention-days N]"
    );
    ExitCode::from(2)
}

struct Options {
    listen: String,
    grpc_listen: String,
    database: String,
    config: Config,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        listen: "127.0.0.1:4000".to_owned(),
        grpc_listen: "127.0.0.1:50051".to_owned(),
        database: std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite:timeline.db".to_owned()),
        config: Config::default(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|e| format!("{arg}: {e}"));
        let pipeline = &mut options.config.pipeline;
        match arg.as_str() {
            "--listen" => options.listen = value,
            "--grpc-listen" => options.grpc_listen = value,
            "--database" => options.database = value,
            "--window-ms" => pipeline.window = Duration::from_millis(number()?),
            "--window-events" => pipeline.window_events = number()? as usize,
            "--capacity" => pipeline.capacity = number()?,
            "--retention-days" => {
                options.config.retention = Duration::from_secs(number()? * 24 * 3600)
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

/// Resolves on the first SIGINT or SIGTERM.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(error) => return usage(&error),
    };
    match serve(options).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until a signal; returns how many accepted events were not stored.
async fn serve(options: Options) -> Result<u64, Box<dyn std::error::Error>> {
    let store = Store::open(&options.database, "timeline").await?;
    let service = Service::start(store, options.config.clone()).await?;
    let retention = service.spawn_retention();
    let http = tokio::net::TcpListener::bind(&options.listen).await?;
    let grpc = tokio::net::TcpListener::bind(&options.grpc_listen).await?;
    eprintln!(
        "timeline: HTTP on http://{}, gRPC on {}, store {} ({}), window {:?} / {} events, capacity {}",
        http.local_addr()?,
        grpc.local_addr()?,
        service.store().kind(),
        options.database,
        options.config.pipeline.window,
        options.config.pipeline.window_events,
        options.config.pipeline.capacity,
    );
    // One signal stops both servers; each finishes the requests in flight.
    let stop = CancellationToken::new();
    let http_server = axum::serve(http, router(service.clone()))
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future();
    let grpc_server = tonic::transport::Server::builder()
        .add_service(Grpc::server(service.clone()))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc),
            stop.clone().cancelled_owned(),
        );
    let signal = async {
        stop_signal().await;
        eprintln!("timeline: stopping, draining the pipeline");
        stop.cancel();
    };
    let servers = async {
        let (http, grpc) = tokio::join!(http_server, grpc_server);
        http?;
        grpc?;
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    tokio::select! {
        result = servers => result?,
        () = async { signal.await; std::future::pending::<()>().await } => unreachable!(),
    }
    retention.abort();
    let lost = service.shutdown(Duration::from_secs(30)).await;
    let stats = service.stats();
    eprintln!(
        "timeline: stopped; {} events accepted, {} stored, {lost} lost",
        stats.accepted, stats.stored
    );
    Ok(lost)
}
