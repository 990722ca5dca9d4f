//! A three-stage pipeline: a finite source, a transforming stage and a sink.
//!
//! What it teaches:
//!
//! - turning an iterator into a producer with `from_iter`;
//! - writing a producer-consumer (`Square`) and a consumer (`Total`);
//! - connecting stages with `subscribe_to`;
//! - how a finite pipeline ends: the source stops normally when its iterator
//!   runs out, the stop flows downstream stage by stage, and `wait()` on the last
//!   stage returns `Reason::Normal` once every event has been handled;
//! - getting a result out of a stage through its `terminate` callback.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --release --example three_stage
//! ```
//!
//! It prints a short summary and, as its last line, `RESULT {json}` with the
//! checked totals. It exits with a non-zero status if the totals are wrong or the
//! pipeline did not end normally.

use std::process::ExitCode;
use std::time::Instant;

use demandflow::prelude::*;
use tokio::sync::oneshot;

/// How many events flow through the pipeline.
const EVENTS: u64 = 1_000_000;

/// Squares every event it receives.
struct Square;

impl ProducerConsumer for Square {
    type In = u64;
    type Out = u64;

    async fn handle_events(
        &mut self,
        events: Vec<u64>,
        _from: SubscriptionId,
        ctx: &mut Context<u64>,
    ) {
        ctx.emit_all(events.into_iter().map(|n| n * n));
    }
}

/// Counts and adds up what it receives, and reports the totals when it stops.
struct Total {
    events: u64,
    sum: u64,
    report: Option<oneshot::Sender<(u64, u64)>>,
}

impl Consumer for Total {
    type Event = u64;

    async fn handle_events(
        &mut self,
        events: Vec<u64>,
        _from: SubscriptionId,
        _ctx: &mut ConsumerContext,
    ) {
        self.events += events.len() as u64;
        self.sum += events.iter().sum::<u64>();
    }

    async fn terminate(&mut self, _reason: &Reason) {
        if let Some(report) = self.report.take() {
            let _ = report.send((self.events, self.sum));
        }
    }
}

/// The sum of n² for n in 0..count: (count - 1) · count · (2·count - 1) / 6.
fn sum_of_squares_below(count: u64) -> u64 {
    let n = u128::from(count);
    let sum = n.saturating_sub(1) * n * (2 * n).saturating_sub(1) / 6;
    u64::try_from(sum).expect("the sum fits in a u64")
}

/// What one run measured.
struct Outcome {
    events: u64,
    sum: u64,
    reason: Reason,
    elapsed_secs: f64,
}

async fn run() -> Result<Outcome, Box<dyn std::error::Error>> {
    let (report, totals) = oneshot::channel();

    let numbers = producer(from_iter(0..EVENTS)).name("numbers").start()?;
    let square = producer_consumer(Square).name("square").start()?;
    let total = consumer(Total {
        events: 0,
        sum: 0,
        report: Some(report),
    })
    .name("total")
    .start()?;

    let started = Instant::now();
    square
        .subscribe_to(&numbers, SubscribeOptions::new())
        .await?;
    total.subscribe_to(&square, SubscribeOptions::new()).await?;

    // `numbers` stops normally when its iterator runs out; `square` and then
    // `total` follow, because their subscriptions are permanent (the default).
    let reason = total.wait().await;
    let elapsed_secs = started.elapsed().as_secs_f64();
    let (events, sum) = totals.await?;
    Ok(Outcome {
        events,
        sum,
        reason,
        elapsed_secs,
    })
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::from('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[tokio::main]
async fn main() -> ExitCode {
    let expected_sum = sum_of_squares_below(EVENTS);
    println!("numbers -> square -> total, {EVENTS} events");
    let (ok, result) = match run().await {
        Ok(Outcome {
            events,
            sum,
            reason,
            elapsed_secs,
        }) => {
            let ok = reason == Reason::Normal && events == EVENTS && sum == expected_sum;
            let rate = events as f64 / elapsed_secs;
            println!("  events:   {events} (expected {EVENTS})");
            println!("  sum:      {sum} (expected {expected_sum})");
            println!("  stopped:  {reason}");
            println!("  elapsed:  {:.1} ms", elapsed_secs * 1e3);
            println!("  rate:     {rate:.0} events/s");
            let result = format!(
                "{{\"example\":\"three_stage\",\"events\":{events},\"sum\":{sum},\
                 \"expected_sum\":{expected_sum},\"reason\":{},\"elapsed_ms\":{:.3},\
                 \"events_per_sec\":{rate:.0},\"ok\":{ok}}}",
                json_string(&reason.to_string()),
                elapsed_secs * 1e3,
            );
            (ok, result)
        }
        Err(error) => {
            println!("  the pipeline failed: {error}");
            let result = format!(
                "{{\"example\":\"three_stage\",\"events\":0,\"sum\":0,\
                 \"expected_sum\":{expected_sum},\"error\":{},\"ok\":false}}",
                json_string(&error.to_string()),
            );
            (false, result)
        }
    };
    println!("  check:    {}", if ok { "ok" } else { "FAILED" });
    println!("RESULT {result}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
