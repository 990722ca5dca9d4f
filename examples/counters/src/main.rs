//! The counter service: `POST /increment` with `{"key": "…", "value": n}`
//! answers 202; `GET /counters/{key}` answers the counter's value. Counters
//! live in memory and are written behind, coalesced and batched, to SQLite
//! (`counters.db` by default) or to the PostgreSQL that `DATABASE_URL` names.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --release -p demandflow-counters
//! cargo run --release -p demandflow-counters -- --mode sync --listen 127.0.0.1:4000
//! DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test cargo run --release -p demandflow-counters
//! ```
//!
//! Options: `--mode noop|sync|batched` (default batched), `--listen ADDR`
//! (default 127.0.0.1:4000), `--max-updates N` (default 10000),
//! `--interval-ms N` (default 5000). Ctrl-C stops it gracefully: requests in
//! flight finish, then everything pending is written.
//!
//! `--self-test` instead runs a load through the service in process against
//! SQLite and PostgreSQL (`DATABASE_URL`, or 127.0.0.1:5432 database `test`;
//! skipped if unreachable unless `CI=true`), checks that the database ends up
//! equal to memory and that a restart reloads the counters, and ends with a
//! `RESULT {json}` line.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use counters::{Config, Mode, Service, Store, request, router};

const DEFAULT_POSTGRES: &str = "postgresql://postgres@127.0.0.1:5432/test";

fn usage(error: &str) -> ExitCode {
    eprintln!("{error}");
    eprintln!(
        "usage: demandflow-counters [--mode noop|sync|batched] [--listen ADDR] \
         [--max-updates N] [--interval-ms N] | --self-test"
    );
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut config = Config::default();
    let mut listen = "127.0.0.1:4000".to_owned();
    let mut self_test = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        let parsed: Result<(), String> = (|| {
            match arg.as_str() {
                "--mode" => config.mode = value()?.parse()?,
                "--listen" => listen = value()?,
                "--max-updates" => {
                    config.max_updates = value()?.parse().map_err(|e| format!("{e}"))?
                }
                "--interval-ms" => {
                    config.interval =
                        Duration::from_millis(value()?.parse().map_err(|e| format!("{e}"))?)
                }
                "--self-test" => self_test = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
            Ok(())
        })();
        if let Err(error) = parsed {
            return usage(&error);
        }
    }
    if self_test {
        return run_self_test().await;
    }
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite:counters.db".to_owned());
    match serve(&url, &listen, &config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(url: &str, listen: &str, config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open(url, "counters").await?;
    let service = Service::start(store, config).await?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!(
        "counters: {} mode on {} (store {}), max_updates {}, interval {:?}",
        config.mode.name(),
        listener.local_addr()?,
        service.store().kind(),
        config.max_updates,
        config.interval
    );
    axum::serve(listener, router(service.clone()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    let unwritten = service.shutdown(Duration::from_secs(30)).await;
    eprintln!("counters: stopped, {unwritten} changes unwritten");
    Ok(())
}

/// One store's self-test: a load through the router, then the database must
/// equal memory, and a restart must reload it.
async fn self_test_store(url: &str) -> Result<String, String> {
    let table = "counters_self_test";
    let store = Store::open(url, table).await.map_err(|e| e.to_string())?;
    store
        .execute(&format!("DELETE FROM {table}"))
        .await
        .map_err(|e| e.to_string())?;
    let config = Config {
        mode: Mode::Batched,
        max_updates: 100,
        interval: Duration::from_millis(200),
    };
    let service = Service::start(store.clone(), &config)
        .await
        .map_err(|e| e.to_string())?;
    let app = router(service.clone());
    let started = Instant::now();
    // 8 clients, 500 increments each, over 50 keys.
    let clients: Vec<_> = (0..8u64)
        .map(|client| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut sent: HashMap<String, i64> = HashMap::new();
                for i in 0..500u64 {
                    let key = format!("k{}", (client * 7 + i * 13) % 50);
                    let value = ((client + i) % 99 + 1) as i64;
                    let body = format!(r#"{{"key":"{key}","value":{value}}}"#);
                    let (status, _) = request(&app, "POST", "/increment", &body).await;
                    assert_eq!(status.as_u16(), 202);
                    *sent.entry(key).or_default() += value;
                }
                sent
            })
        })
        .collect();
    let mut expected: HashMap<String, i64> = HashMap::new();
    for client in clients {
        for (key, value) in client.await.map_err(|e| e.to_string())? {
            *expected.entry(key).or_default() += value;
        }
    }
    let elapsed = started.elapsed();
    if service.counters().snapshot() != expected {
        return Err("memory does not hold the sums of the increments".into());
    }
    // The last batch is written at most one interval after its first key.
    let stats = service.flush_stats().ok_or("no write-behind")?;
    let caught_up = stats
        .caught_up(Duration::from_secs(30))
        .await
        .ok_or("the write-behind did not catch up in 30 s")?;
    let stored = store.load_map().await.map_err(|e| e.to_string())?;
    if stored != expected {
        return Err("the database does not equal memory".into());
    }
    service.shutdown(Duration::from_secs(10)).await;
    let restarted = Service::start(store.clone(), &config)
        .await
        .map_err(|e| e.to_string())?;
    let reloaded = restarted.counters().snapshot() == expected;
    restarted.shutdown(Duration::from_secs(10)).await;
    if !reloaded {
        return Err("a restart did not reload the counters".into());
    }
    let flushes = stats.by_size.load(std::sync::atomic::Ordering::Relaxed)
        + stats.by_interval.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "{}: 4000 increments in {:.0} ms, {} flushes, database equal to memory {:.0} ms after the load, restart reloads",
        store.kind(),
        elapsed.as_secs_f64() * 1e3,
        flushes,
        caught_up.as_secs_f64() * 1e3
    );
    Ok(format!(
        r#"{{"store":"{}","ok":true,"flushes":{flushes},"caught_up_ms":{}}}"#,
        store.kind(),
        caught_up.as_millis()
    ))
}

async fn run_self_test() -> ExitCode {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let dir = std::env::temp_dir().join(format!("counters-self-test-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let sqlite = format!("sqlite:{}", dir.join("counters.db").display());
    let postgres = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres"))
        .unwrap_or_else(|| DEFAULT_POSTGRES.to_owned());
    let mut rows = Vec::new();
    let mut ok = true;
    for url in [sqlite.as_str(), postgres.as_str()] {
        match self_test_store(url).await {
            Ok(row) => rows.push(row),
            Err(error) if url == postgres && !ci && error.contains("connect") => {
                println!("postgres: skipped, not reachable at {url} ({error})");
            }
            Err(error) => {
                println!("{url}: FAILED: {error}");
                ok = false;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        r#"RESULT {{"example":"counters","ok":{ok},"stores":[{}]}}"#,
        rows.join(",")
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
