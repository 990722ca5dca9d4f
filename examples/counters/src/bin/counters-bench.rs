//! The counter service's benchmark: the three modes (noop, sync, batched)
//! side by side, in one run, against PostgreSQL and SQLite, under `wrk` with
//! 400 connections posting random 3-letter keys and values 1..99.
//!
//! Run it with (wrk comes from Debian: `apt-get install wrk`):
//!
//! ```sh
//! cargo run --release -p demandflow-counters --bin counters-bench
//! cargo run --release -p demandflow-counters --bin counters-bench -- --quick
//! ```
//!
//! PostgreSQL is `DATABASE_URL` or 127.0.0.1:5432 database `test` (skipped
//! if unreachable). Each run gets a fresh table, a warm-up, then a measured
//! load; the median of the repetitions is reported (3, or 1 with `--quick`).
//! After each batched load the bench times how long the database takes to
//! equal memory again (it must within one interval, 5 s) and checks every
//! row. It also measures the in-memory structure: the sharded map against a
//! single mutex, same keys, same threads.
//!
//! Output: a table, then `RESULT {json}` with the rows (store, mode, rps,
//! p50_ms, p99_ms, rows_per_sec), the ratios and `db_matches_memory`.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, ExitCode};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use counters::{Config, Counters, Mode, Service, Store, router};
use parking_lot::Mutex;

const DEFAULT_POSTGRES: &str = "postgresql://postgres@127.0.0.1:5432/test";
const CONNECTIONS: u32 = 400;
const TABLE: &str = "counters_bench";

/// The load: random 3-letter keys, values 1..99.
const SCRIPT: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local letters = "abcdefghijklmnopqrstuvwxyz"
math.randomseed(os.time())
request = function()
  local a, b, c = math.random(26), math.random(26), math.random(26)
  local key = letters:sub(a, a) .. letters:sub(b, b) .. letters:sub(c, c)
  local body = string.format('{"key":"%s","value":%d}', key, math.random(99))
  return wrk.format(nil, "/increment", nil, body)
end
"#;

/// What one wrk run reported.
#[derive(Clone, Copy, Debug, Default)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn parse_ms(s: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e3)
    } else {
        (s, 1.0)
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn parse_wrk(out: &str) -> Load {
    let mut load = Load::default();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => load.rps = n.parse().unwrap_or(0.0),
            ["50%", t] => load.p50_ms = parse_ms(t).unwrap_or(0.0),
            ["99%", t] => load.p99_ms = parse_ms(t).unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", n] => load.errors += n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                load.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    load
}

async fn wrk(script: &std::path::Path, port: u16, seconds: u64) -> Load {
    let args = [
        "-t2".to_owned(),
        format!("-c{CONNECTIONS}"),
        format!("-d{seconds}s"),
        "--latency".to_owned(),
        "-s".to_owned(),
        script.display().to_string(),
        format!("http://127.0.0.1:{port}"),
    ];
    let output = tokio::task::spawn_blocking(move || Command::new("wrk").args(&args).output())
        .await
        .expect("wrk task")
        .expect("wrk runs");
    parse_wrk(&String::from_utf8_lossy(&output.stdout))
}

/// One measured run of one mode on one store.
struct Run {
    load: Load,
    rows_per_sec: f64,
    /// Batched only: how long after the load the database equalled memory,
    /// and whether every row did.
    /// And the longest write of a flush.
    caught_up: Option<(Duration, bool, Duration)>,
}

async fn run(
    url: &str,
    mode: Mode,
    script: &std::path::Path,
    warmup: u64,
    seconds: u64,
) -> Result<Run, String> {
    let store = Store::open(url, TABLE).await.map_err(|e| e.to_string())?;
    store
        .execute(&format!("DELETE FROM {TABLE}"))
        .await
        .map_err(|e| e.to_string())?;
    let config = Config {
        mode,
        ..Config::default()
    };
    let service = Service::start(store.clone(), &config)
        .await
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, router(service.clone()))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );
    wrk(script, port, warmup).await;
    let rows_before = store.rows_written();
    let started = Instant::now();
    let load = wrk(script, port, seconds).await;
    let elapsed = started.elapsed();
    let caught_up = match service.flush_stats() {
        Some(stats) => {
            let limit = Duration::from_secs(60);
            let after = stats.caught_up(limit).await.unwrap_or(limit);
            let stored = store.load_map().await.map_err(|e| e.to_string())?;
            let max_write = Duration::from_micros(stats.max_write_us.load(Ordering::Relaxed));
            Some((after, stored == service.counters().snapshot(), max_write))
        }
        None => None,
    };
    let rows_per_sec = (store.rows_written() - rows_before) as f64 / elapsed.as_secs_f64();
    let _ = stop.send(());
    let _ = server.await;
    service.shutdown(Duration::from_secs(30)).await;
    Ok(Run {
        load,
        rows_per_sec,
        caught_up,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Increments per second on random 3-letter keys from `threads` threads.
fn map_rate(threads: usize, per_thread: usize, add: impl Fn(&str) + Sync) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let add = &add;
            s.spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                let mut key = [0u8; 3];
                for _ in 0..per_thread {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    for (i, k) in key.iter_mut().enumerate() {
                        *k = b'a' + ((x >> (8 * i)) % 26) as u8;
                    }
                    add(std::str::from_utf8(&key).expect("ascii"));
                }
            });
        }
    });
    (threads * per_thread) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> ExitCode {
    let quick = std::env::args().any(|a| a == "--quick");
    let (warmup, seconds, reps) = if quick { (1, 4, 1) } else { (2, 8, 3) };
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed (Debian: apt-get install wrk)");
        return ExitCode::FAILURE;
    }
    let dir = std::env::temp_dir().join(format!("counters-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let script = dir.join("increment.lua");
    std::fs::File::create(&script)
        .and_then(|mut f| f.write_all(SCRIPT.as_bytes()))
        .expect("script written");
    let postgres = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres"))
        .unwrap_or_else(|| DEFAULT_POSTGRES.to_owned());
    let sqlite = format!("sqlite:{}", dir.join("counters.db").display());

    // The in-memory structure, measured first: the sharded map against one
    // mutex, with as many threads as cores and with 4 times as many (as a
    // server's workers and blocking threads may be, when a lock holder can be
    // preempted).
    let per_thread = if quick { 500_000 } else { 2_000_000 };
    let mut map_rows = Vec::new();
    for threads in [2, 8] {
        let sharded = Counters::new();
        let sharded_rate = map_rate(threads, per_thread, |key| {
            let _ = sharded.add(key, 1);
        });
        let single: Mutex<HashMap<Box<str>, i64>> = Mutex::new(HashMap::new());
        let single_rate = map_rate(threads, per_thread, |key| {
            let mut map = single.lock();
            match map.get_mut(key) {
                Some(v) => *v += 1,
                None => {
                    map.insert(key.into(), 1);
                }
            }
        });
        println!(
            "in-memory increments, {threads} threads, random 3-letter keys: sharded map {:.2} M/s, one mutex {:.2} M/s",
            sharded_rate / 1e6,
            single_rate / 1e6
        );
        map_rows.push(format!(
            r#"{{"threads":{threads},"sharded_per_sec":{sharded_rate:.0},"one_mutex_per_sec":{single_rate:.0}}}"#
        ));
    }

    println!("wrk -t2 -c{CONNECTIONS}: {warmup} s warm-up, {seconds} s measured, median of {reps}");
    println!(
        "{:<9} {:<8} {:>10} {:>8} {:>8} {:>10} {:>7} {:>9}",
        "store", "mode", "req/s", "p50 ms", "p99 ms", "rows/s", "errors", "caught up"
    );
    // "caught up": after the batched load stopped, how long until the
    // database equalled memory (the worst of the repetitions).
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    let mut db_matches_memory = true;
    let mut any = false;
    for (store_name, url) in [("postgres", postgres.as_str()), ("sqlite", sqlite.as_str())] {
        let mut runs: HashMap<Mode, Vec<Run>> = HashMap::new();
        let mut skipped = None;
        'reps: for _ in 0..reps {
            for mode in Mode::ALL {
                match run(url, mode, &script, warmup, seconds).await {
                    Ok(r) => runs.entry(mode).or_default().push(r),
                    Err(error) => {
                        skipped = Some(error);
                        break 'reps;
                    }
                }
            }
        }
        if let Some(error) = skipped {
            println!("{store_name}: skipped ({error})");
            continue;
        }
        any = true;
        let mut rps_of = HashMap::new();
        for mode in Mode::ALL {
            let runs = &runs[&mode];
            let rps = median(runs.iter().map(|r| r.load.rps).collect());
            let p50 = median(runs.iter().map(|r| r.load.p50_ms).collect());
            let p99 = median(runs.iter().map(|r| r.load.p99_ms).collect());
            let rows_per_sec = median(runs.iter().map(|r| r.rows_per_sec).collect());
            let errors: u64 = runs.iter().map(|r| r.load.errors).sum();
            let caught: Vec<(Duration, bool, Duration)> =
                runs.iter().filter_map(|r| r.caught_up).collect();
            let worst_catch_up = caught.iter().map(|(d, _, _)| *d).max();
            let worst_write = caught.iter().map(|(_, _, w)| *w).max();
            if mode == Mode::Batched {
                db_matches_memory &= caught
                    .iter()
                    .all(|(d, ok, _)| *ok && *d <= Config::default().interval);
            }
            rps_of.insert(mode, rps);
            println!(
                "{store_name:<9} {:<8} {rps:>10.0} {p50:>8.2} {p99:>8.2} {rows_per_sec:>10.0} {errors:>7} {:>9}",
                mode.name(),
                worst_catch_up.map_or("-".to_owned(), |d| format!("{} ms", d.as_millis()))
            );
            let catch = match (worst_catch_up, worst_write) {
                (Some(d), Some(w)) => format!(
                    r#","caught_up_ms":{},"max_write_ms":{}"#,
                    d.as_millis(),
                    w.as_millis()
                ),
                _ => String::new(),
            };
            rows.push(format!(
                r#"{{"store":"{store_name}","mode":"{}","rps":{rps:.0},"p50_ms":{p50:.3},"p99_ms":{p99:.3},"rows_per_sec":{rows_per_sec:.0},"errors":{errors}{catch}}}"#,
                mode.name()
            ));
        }
        let vs_noop = rps_of[&Mode::Batched] / rps_of[&Mode::Noop];
        let vs_sync = rps_of[&Mode::Batched] / rps_of[&Mode::Sync];
        println!("{store_name}: batched = {vs_noop:.2} x noop, {vs_sync:.1} x sync");
        ratios.push(format!(
            r#"{{"store":"{store_name}","batched_vs_noop":{vs_noop:.3},"batched_vs_sync":{vs_sync:.2}}}"#
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        r#"RESULT {{"bench":"counters","rows":[{}],"ratios":[{}],"map":[{}],"db_matches_memory":{}}}"#,
        rows.join(","),
        ratios.join(","),
        map_rows.join(","),
        db_matches_memory && any
    );
    if any && db_matches_memory {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
