//! A pipeline to watch on the dashboard: `numbers -> square -> sink` under a
//! supervisor, with the `sink` stage killed on purpose every `--kill-every`
//! seconds so that restarts show.
//!
//! ```sh
//! cargo run -p demandflow-dashboard --example live -- --addr 127.0.0.1:4040 --seconds 60
//! ```
//!
//! Then open <http://127.0.0.1:4040/>. Options: `--addr ADDR` (default
//! 127.0.0.1:4040), `--seconds N` (how long to run, default 30; 0 runs until
//! interrupted), `--kill-every N` (default 5; 0 never kills). It ends with a
//! `RESULT {json}` line naming the stages it saw in the dashboard's snapshot.

mod pipeline;

use std::net::SocketAddr;
use std::time::Duration;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr: SocketAddr = arg(&args, "--addr")
        .map(|a| a.parse().expect("--addr: an address like 127.0.0.1:4040"))
        .unwrap_or(demandflow_dashboard::DEFAULT_ADDR);
    let seconds: u64 =
        arg(&args, "--seconds").map_or(30, |s| s.parse().expect("--seconds: a number"));
    let kill_every: u64 =
        arg(&args, "--kill-every").map_or(5, |s| s.parse().expect("--kill-every: a number"));

    let supervisor = pipeline::start().await;
    let dashboard = demandflow_dashboard::start(addr)
        .await
        .expect("binding the dashboard's address");
    println!("dashboard on {}", dashboard.url());

    let started = tokio::time::Instant::now();
    let mut kills = 0_u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let elapsed = started.elapsed().as_secs();
        if seconds > 0 && elapsed >= seconds {
            break;
        }
        if kill_every > 0 && elapsed > 0 && elapsed % kill_every == 0 {
            pipeline::kill_sink(&supervisor).await;
            kills += 1;
            println!("killed sink ({kills})");
        }
    }
    let entries = demandflow::registry::snapshot();
    let seen: Vec<&str> = pipeline::STAGES
        .into_iter()
        .filter(|name| {
            entries
                .iter()
                .any(|e| e.name == *name && e.events_in + e.events_out > 0)
        })
        .collect();
    let ok = seen.len() == pipeline::STAGES.len() && supervisor.restarts() >= kills;
    println!(
        "RESULT {}",
        serde_json::json!({
            "example": "live",
            "ok": ok,
            "stages_seen": seen,
            "kills": kills,
            "restarts": supervisor.restarts(),
        })
    );
    dashboard.stop();
    supervisor.stop(demandflow::Reason::Shutdown).await;
}
