//! What the runtime logs: every warning names its stage, repeated warnings are
//! rate-limited with a count, and an intended early stop is not a loss.

mod support;

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use demandflow::dispatcher::{Partition, PartitionDispatcher};
use demandflow::{Context, Producer, Stall, SubscribeOptions, consumer, from_iter, producer};
use parking_lot::Mutex;
use support::{Counter, Recorder, eventually};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One captured log event.
#[derive(Clone, Debug)]
struct Logged {
    level: Level,
    fields: HashMap<String, String>,
}

impl Logged {
    fn message(&self) -> &str {
        self.fields.get("message").map_or("", String::as_str)
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// A subscriber that records WARN and ERROR events, with their own fields only:
/// spans are disabled, so what it sees is what a user filtering at WARN sees.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Logged>>>);

impl Capture {
    fn warnings(&self) -> Vec<Logged> {
        self.0.lock().clone()
    }
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && *metadata.level() <= Level::WARN
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().push(Logged {
            level: *event.metadata().level(),
            fields,
        });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let guard = tracing::subscriber::set_default(capture.clone());
    (capture, guard)
}

/// Emits ten events for any demand: more than a small buffer holds.
struct TenPerDemand;

impl Producer for TenPerDemand {
    type Event = u64;

    async fn handle_demand(&mut self, _: u64, ctx: &mut Context<u64>) {
        ctx.emit_all(0..10);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_warning_names_its_stage_and_repeats_are_counted_not_repeated() {
    let (logs, _guard) = capture();
    let p = producer(TenPerDemand)
        .name("tens")
        .buffer_size(2)
        .start()
        .unwrap();
    let (rec, _) = Recorder::<u64>::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    for _ in 0..10 {
        c.ask(sub, 3).unwrap();
        // The ask has been handled once the producer answers.
        let _ = c.stats().await.unwrap();
        let _ = p.stats().await.unwrap();
    }
    let overflows = |logs: &Capture| -> Vec<Logged> {
        logs.warnings()
            .into_iter()
            .filter(|l| l.message().contains("buffer full"))
            .collect()
    };
    let first = overflows(&logs);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].level, Level::WARN);
    assert_eq!(first[0].field("stage"), Some("tens"));
    assert_eq!(first[0].field("times"), Some("1"));

    tokio::time::advance(Duration::from_secs(1)).await;
    c.ask(sub, 3).unwrap();
    let _ = c.stats().await.unwrap();
    let dropped = p.stats().await.unwrap().events_dropped;
    let all = overflows(&logs);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1].field("times"), Some("10"));
    let reported: u64 = all
        .iter()
        .map(|l| l.field("dropped").unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(reported, dropped);
}

#[tokio::test(flavor = "current_thread")]
async fn an_unnamed_stage_is_named_by_its_kind_and_id() {
    let (logs, _guard) = capture();
    let p = producer(TenPerDemand).buffer_size(2).start().unwrap();
    let (rec, _) = Recorder::<u64>::manual();
    let c = consumer(rec).start().unwrap();
    let sub = c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    c.ask(sub, 1).unwrap();
    let _ = c.stats().await.unwrap();
    let _ = p.stats().await.unwrap();
    let expected = format!("producer-{}", p.id().as_u64());
    let warnings = logs.warnings();
    assert!(
        !warnings.is_empty() && warnings.iter().all(|l| l.field("stage") == Some(&expected)),
        "{warnings:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_stream_dropped_after_take_is_not_reported_as_a_loss() {
    let (logs, _guard) = capture();
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let mut stream = p
        .stream(SubscribeOptions::new().max_demand(10).min_demand(5))
        .unwrap();
    // Taking the sixth event finishes the first chunk of five and asks for more:
    // those events are on their way when the stream is dropped.
    for expected in 0..6 {
        assert_eq!(stream.next().await, Some(expected));
    }
    drop(stream);
    let stats = p.stats().await.unwrap();
    assert!(stats.events_out > 10, "{stats:?}");
    assert_eq!(stats.events_dropped, 0);
    let warnings = logs.warnings();
    assert!(warnings.is_empty(), "{warnings:?}");
}

fn stalls(logs: &Capture) -> Vec<Logged> {
    logs.warnings()
        .into_iter()
        .filter(|l| l.message().contains("stalled"))
        .collect()
}

// A consumer that nobody subscribed to any producer waits forever: after its
// stall report time (5 s by default) it says so, once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_unsubscribed_consumer_is_reported_once_naming_it() {
    let (logs, _guard) = capture();
    let (rec, _) = Recorder::<u64>::new();
    let c = consumer(rec).name("orphan").start().unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(stalls(&logs).is_empty());
    assert_eq!(c.stats().await.unwrap().stall, None);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let reported = stalls(&logs);
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].level, Level::WARN);
    assert_eq!(reported[0].field("stage"), Some("orphan"));
    assert_eq!(
        reported[0].field("waiting_for"),
        Some("not subscribed to any producer")
    );
    assert_eq!(c.stats().await.unwrap().stall, Some(Stall::NoProducer));
    assert_eq!(stalls(&logs).len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_partition_without_a_consumer_is_reported_once_naming_the_stage_and_partition() {
    let (logs, _guard) = capture();
    let halves = PartitionDispatcher::numbered(NonZeroUsize::new(2).unwrap(), |e: u64| {
        Some(((e % 2) as usize, e))
    })
    .build()
    .unwrap();
    let p = producer(from_iter(0..1000_u64))
        .name("halves")
        .dispatcher(halves)
        .start()
        .unwrap();
    let (rec, log) = Recorder::<u64>::new();
    let even = consumer(rec).start().unwrap();
    even.subscribe_to(&p, SubscribeOptions::new().partition(0).max_demand(10))
        .await
        .unwrap();
    // The even half flows; the odd half waits for a consumer that never comes.
    eventually(|| support::batches(&log).concat().len() >= 100).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let reported = stalls(&logs);
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].field("stage"), Some("halves"));
    assert!(
        reported[0]
            .field("waiting_for")
            .unwrap()
            .starts_with("no consumer subscribed to partition 1"),
        "{reported:?}"
    );
    let stall = p.stats().await.unwrap().stall;
    assert!(
        matches!(
            stall,
            Some(Stall::PartitionWithoutConsumer { partition: Partition::Index(1), buffered }) if buffered > 0
        ),
        "{stall:?}"
    );
}

/// A producer whose `handle_demand` never returns: it takes no message again.
struct Stuck;

impl Producer for Stuck {
    type Event = u64;

    async fn handle_demand(&mut self, _: u64, _: &mut Context<u64>) {
        std::future::pending::<()>().await;
    }
}

/// A producer with nothing to send: asked, it emits nothing, and that is fine.
struct Quiet;

impl Producer for Quiet {
    type Event = u64;

    async fn handle_demand(&mut self, _: u64, _: &mut Context<u64>) {}
}

// A consumer that asked a producer stuck in a callback waits forever: it says
// so once, naming itself and the producer.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_consumer_waiting_on_a_stuck_producer_is_reported_once_naming_both() {
    let (logs, _guard) = capture();
    let stuck = producer(Stuck).name("stuck").start().unwrap();
    let (rec, log) = Recorder::<u64>::new();
    let sink = consumer(rec).name("sink").start().unwrap();
    sink.subscribe_to(&stuck, SubscribeOptions::new().max_demand(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(stalls(&logs).is_empty());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(support::batches(&log).is_empty());
    let reported = stalls(&logs);
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].level, Level::WARN);
    assert_eq!(reported[0].field("stage"), Some("sink"));
    assert_eq!(
        reported[0].field("waiting_for"),
        Some("10 events asked of producer stuck, which has taken no message since: it is stuck")
    );
    assert_eq!(
        sink.stats().await.unwrap().stall,
        Some(Stall::NoEvents {
            producer: "stuck".into(),
            asked: 10,
            producer_buffered: 0,
        })
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(stalls(&logs).len(), 1);
}

// A broadcast producer holds its events while one consumer asks nothing: the
// consumer that did ask waits on a producer holding events, and says so.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_consumer_waiting_on_a_producer_that_holds_events_is_reported_once() {
    struct Pushed;
    impl Producer for Pushed {
        type Event = u64;
        async fn init(&mut self, ctx: &mut Context<u64>) {
            ctx.emit_all(0..100);
        }
        async fn handle_demand(&mut self, _: u64, _: &mut Context<u64>) {}
    }
    let (logs, _guard) = capture();
    let p = producer(Pushed)
        .dispatcher(demandflow::dispatcher::BroadcastDispatcher::new())
        .start()
        .unwrap();
    let (rec, _) = Recorder::<u64>::manual();
    let idle = consumer(rec).name("asks-nothing").start().unwrap();
    idle.subscribe_to(&p, SubscribeOptions::new())
        .await
        .unwrap();
    let (rec, log) = Recorder::<u64>::new();
    let eager = consumer(rec).name("eager").start().unwrap();
    eager
        .subscribe_to(&p, SubscribeOptions::new().max_demand(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(support::batches(&log).is_empty());
    let reported = stalls(&logs);
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].field("stage"), Some("eager"));
    let stall = eager.stats().await.unwrap().stall;
    assert!(
        matches!(
            &stall,
            Some(Stall::NoEvents {
                asked: 50,
                producer_buffered: 100,
                ..
            })
        ),
        "{stall:?}"
    );
    assert_eq!(idle.stats().await.unwrap().stall, None);
    assert_eq!(p.stats().await.unwrap().stall, None);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_idle_producer_is_not_reported() {
    let (logs, _guard) = capture();
    // No consumer and nothing buffered: idle.
    let (counter, _) = Counter::new();
    let alone = producer(counter).start().unwrap();
    // A consumer that asks nothing: the producer has nothing to do.
    let (counter, _) = Counter::new();
    let p = producer(counter).start().unwrap();
    let (rec, _) = Recorder::<u64>::manual();
    let c = consumer(rec).start().unwrap();
    c.subscribe_to(&p, SubscribeOptions::new()).await.unwrap();
    // A consumer that asked a producer with nothing to send: a quiet source.
    let quiet = producer(Quiet).start().unwrap();
    let (rec, _) = Recorder::<u64>::new();
    let waiting = consumer(rec).start().unwrap();
    waiting
        .subscribe_to(&quiet, SubscribeOptions::new())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(logs.warnings().is_empty(), "{:?}", logs.warnings());
    assert_eq!(alone.stats().await.unwrap().stall, None);
    assert_eq!(p.stats().await.unwrap().stall, None);
    assert_eq!(c.stats().await.unwrap().stall, None);
    assert_eq!(quiet.stats().await.unwrap().stall, None);
    assert_eq!(waiting.stats().await.unwrap().stall, None);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stall_report_can_be_turned_off() {
    let (logs, _guard) = capture();
    let (rec, _) = Recorder::<u64>::new();
    let c = consumer(rec).stall_report(None).start().unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(logs.warnings().is_empty());
    assert_eq!(c.stats().await.unwrap().stall, None);
}
