//! The scale-out proof as a test: 3 worker processes over 200,000 entries, one
//! killed with SIGKILL mid-stream; the survivors finish, nothing is lost, and
//! duplicates stay within what the killed worker held.

use std::process::Command;

#[test]
fn killing_one_of_three_workers_loses_nothing() {
    let reachable = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:6379".parse().unwrap(),
        std::time::Duration::from_secs(2),
    )
    .is_ok();
    if !reachable && std::env::var("CI").as_deref() != Ok("true") {
        eprintln!("skipping: redis at 127.0.0.1:6379 is unreachable");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_redis_workers"))
        .args(["--workers", "3", "--messages", "200000"])
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    let result: serde_json::Value = serde_json::from_str(
        last.strip_prefix("RESULT ")
            .unwrap_or_else(|| panic!("no RESULT line:\n{stdout}\n{stderr}")),
    )
    .unwrap();
    assert_eq!(result["ok"], true, "{stdout}\n{stderr}");
    assert_eq!(result["lost"], 0);
    assert_eq!(result["pending_at_end"], 0);
    assert_eq!(result["processed_unique"], 200_000);
    let duplicates = result["duplicates"].as_u64().unwrap();
    let in_flight = result["killed_in_flight"].as_u64().unwrap();
    assert!(
        duplicates <= in_flight,
        "{duplicates} duplicates, {in_flight} in flight"
    );
    assert!(out.status.success());
}
