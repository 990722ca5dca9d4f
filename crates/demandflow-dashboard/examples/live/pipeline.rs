//! The pipeline the `live` example shows on the dashboard, shared with the
//! dashboard's tests: an endless, paced source, a producer-consumer and a sink,
//! under a supervisor that restarts whichever of them is killed.

use std::time::Duration;

use demandflow::supervisor::{Restart, Strategy, Supervisor};
use demandflow::{
    ConsumerRef, Context, Producer, ProducerConsumerRef, ProducerRef, Reason, SubscribeOptions,
    for_each, map, producer,
};

/// The stage names, in pipeline order.
pub(crate) const STAGES: [&str; 3] = ["numbers", "square", "sink"];

/// Emits 0, 1, 2, … as asked, pausing 2 ms per request so the figures move at a
/// readable pace (tens of thousands of events per second).
struct Numbers {
    next: u64,
}

impl Producer for Numbers {
    type Event = u64;

    async fn handle_demand(&mut self, demand: u64, ctx: &mut Context<u64>) {
        tokio::time::sleep(Duration::from_millis(2)).await;
        ctx.emit_all(self.next..self.next + demand);
        self.next += demand;
    }
}

fn options() -> SubscribeOptions<u64> {
    SubscribeOptions::new().max_demand(100)
}

/// Starts `numbers -> square -> sink` under a rest-for-one supervisor named
/// `live-supervisor`, each child's stage named after the child.
pub(crate) async fn start() -> Supervisor {
    Supervisor::builder(Strategy::RestForOne)
        .name("live-supervisor")
        .max_restarts(1_000)
        .child("numbers", Restart::Permanent, |_| async {
            producer(Numbers { next: 0 })
                .name("numbers")
                .buffer_size(1_000)
                .start()
        })
        .child("square", Restart::Permanent, |children| async move {
            let numbers: ProducerRef<u64> = children.get("numbers").ok_or("no numbers")?;
            let square = map(|n: u64| n.wrapping_mul(n))
                .name("square")
                .start()
                .map_err(|e| e.to_string())?;
            square
                .subscribe_to(&numbers, options())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(square)
        })
        .child("sink", Restart::Permanent, |children| async move {
            let square: ProducerConsumerRef<u64, u64> =
                children.get("square").ok_or("no square")?;
            let sink = for_each(|n: u64| {
                std::hint::black_box(n);
            })
            .name("sink")
            .start()
            .map_err(|e| e.to_string())?;
            sink.subscribe_to(&square, options())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(sink)
        })
        .start()
        .await
        .expect("starting the live pipeline")
}

/// Kills the `sink` stage on purpose; the supervisor restarts it.
pub(crate) async fn kill_sink(supervisor: &Supervisor) {
    let sink: ConsumerRef<u64> = supervisor.child("sink").expect("sink is running");
    let _ = sink.stop(Reason::error("killed on purpose")).await;
}
