//! The contract of the `ecs` example's world, built on the keyed scheduler:
//! handler order, halting, argument changes, per-object sequencing, objects
//! not holding each other up, "no handler", and order and exactly-once under
//! random load.

mod support;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use ecs_world::{
    Behaviour, Event, EventName, Flow, Handled, ObjectId, SendError, World, WorldBuilder,
};
use parking_lot::Mutex;
use proptest::prelude::*;
use support::eventually;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// The arguments of the test events.
#[derive(Clone, Debug, Default, PartialEq)]
struct Args {
    /// Which event of its object this is.
    seq: u32,
    /// Behaviours that saw the event, in order: each appends its tag.
    trail: Vec<&'static str>,
    /// The behaviour with this tag waits this long (paused clock) first.
    wait: Option<(&'static str, u64)>,
    /// The behaviour with this tag halts the event.
    halt: Option<&'static str>,
}

/// One record per behaviour call: (tag, object, seq, trail so far).
type Log = Arc<Mutex<Vec<(&'static str, u64, u32, Vec<&'static str>)>>>;

/// Appends its tag to the trail, logs, and waits or halts when asked to. Its
/// state counts the events it saw for the object.
struct Tagged {
    tag: &'static str,
    name: EventName,
    log: Log,
}

impl Behaviour<Args> for Tagged {
    type State = u32;

    fn name(&self) -> &str {
        self.tag
    }

    fn handles(&self) -> Vec<EventName> {
        vec![self.name]
    }

    fn handle(&self, object: ObjectId, seen: &mut u32, event: &mut Event<Args>) -> Handled {
        *seen += 1;
        event.args.trail.push(self.tag);
        let trail = event.args.trail.clone();
        let record = (self.tag, object.0, event.args.seq, trail);
        let halt = event.args.halt == Some(self.tag);
        match event.args.wait {
            Some((tag, millis)) if tag == self.tag => {
                let log = self.log.clone();
                Handled::wait(async move {
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                    log.lock().push(record);
                    if halt { Flow::Halt } else { Flow::Continue }
                })
            }
            _ => {
                self.log.lock().push(record);
                if halt {
                    Handled::Halt
                } else {
                    Handled::Continue
                }
            }
        }
    }
}

struct Fixture {
    world: World<Args>,
    name: EventName,
    log: Log,
    tags: Vec<ecs_world::BehaviourId<Tagged>>,
}

/// A world with behaviours tagged `tags`, registered in that order, and
/// `objects` objects with all of them attached.
fn fixture(tags: &[&'static str], objects: u64, partitions: usize, batch: usize) -> Fixture {
    let log: Log = Arc::default();
    let mut builder = WorldBuilder::<Args>::new(objects as usize + 8)
        .partitions(nz(partitions))
        .max_workers(nz(2))
        .max_batch(nz(batch))
        .queue_capacity(nz(64));
    let name = builder.event("poke");
    let ids: Vec<_> = tags
        .iter()
        .map(|&tag| {
            builder.register(Tagged {
                tag,
                name,
                log: log.clone(),
            })
        })
        .collect();
    let world = builder.start().unwrap();
    let all = world.spawn_many(objects);
    for &id in &ids {
        world.attach_many(all.clone(), id, |_| 0);
    }
    Fixture {
        world,
        name,
        log,
        tags: ids,
    }
}

fn poke(name: EventName, object: u64, seq: u32) -> Event<Args> {
    Event {
        name,
        target: ObjectId(object),
        args: Args {
            seq,
            ..Args::default()
        },
    }
}

#[tokio::test(start_paused = true)]
async fn handlers_run_in_registration_order() {
    let f = fixture(&["first", "second", "third"], 1, 1, 16);
    f.world.send(poke(f.name, 0, 0)).await.unwrap();
    f.world.idle().await;
    let tags: Vec<_> = f.log.lock().iter().map(|r| r.0).collect();
    assert_eq!(tags, ["first", "second", "third"]);
}

#[tokio::test(start_paused = true)]
async fn halt_stops_later_handlers() {
    let f = fixture(&["first", "second", "third"], 1, 1, 16);
    let mut event = poke(f.name, 0, 0);
    event.args.halt = Some("second");
    f.world.send(event).await.unwrap();
    f.world.idle().await;
    let tags: Vec<_> = f.log.lock().iter().map(|r| r.0).collect();
    assert_eq!(tags, ["first", "second"]);
    assert_eq!(f.world.state(ObjectId(0), f.tags[2]), Some(0));
    assert_eq!(f.world.stats().halted, 1);
}

#[tokio::test(start_paused = true)]
async fn argument_changes_reach_later_handlers() {
    let f = fixture(&["a", "b", "c"], 1, 1, 16);
    f.world.send(poke(f.name, 0, 0)).await.unwrap();
    f.world.idle().await;
    let trails: Vec<_> = f.log.lock().iter().map(|r| r.3.clone()).collect();
    assert_eq!(trails, [vec!["a"], vec!["a", "b"], vec!["a", "b", "c"]]);
}

#[tokio::test(start_paused = true)]
async fn two_events_to_one_object_are_handled_one_after_the_other_even_when_the_first_is_slow() {
    let f = fixture(&["slow", "after"], 1, 2, 16);
    let start = tokio::time::Instant::now();
    let mut first = poke(f.name, 0, 0);
    first.args.wait = Some(("slow", 1000));
    f.world.send(first).await.unwrap();
    f.world.send(poke(f.name, 0, 1)).await.unwrap();
    f.world.idle().await;
    assert_eq!(start.elapsed(), Duration::from_millis(1000));
    let calls: Vec<_> = f.log.lock().iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(
        calls,
        [("slow", 0), ("after", 0), ("slow", 1), ("after", 1)]
    );
    assert_eq!(f.world.state(ObjectId(0), f.tags[1]), Some(2));
    assert_eq!(f.world.stats().waited, 1);
}

#[tokio::test(start_paused = true)]
async fn an_object_whose_handler_is_blocked_does_not_hold_up_other_objects_in_its_partition() {
    // One partition, and batches large enough to hold every object at once.
    let f = fixture(&["gate"], 10, 1, 100);
    let start = tokio::time::Instant::now();
    let mut blocked = poke(f.name, 0, 0);
    blocked.args.wait = Some(("gate", 60_000));
    let frame = std::iter::once(blocked).chain((1..10).map(|o| poke(f.name, o, 0)));
    f.world.send_all(frame).await.unwrap();
    // A second round for everyone: object 0's waits behind its first.
    f.world
        .send_all((0..10).map(|o| poke(f.name, o, 1)))
        .await
        .unwrap();
    eventually(|| f.log.lock().len() == 18).await;
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "nobody waited for object 0"
    );
    assert!(f.log.lock().iter().all(|r| r.1 != 0));
    f.world.idle().await;
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    let object0: Vec<_> = f
        .log
        .lock()
        .iter()
        .filter(|r| r.1 == 0)
        .map(|r| r.2)
        .collect();
    assert_eq!(object0, [0, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_frame_of_one_event_per_object_halts_waits_and_orphans_each_object_on_its_own() {
    // One partition and one batch for the whole frame: each object has one
    // event, so the world runs the batch behaviour by behaviour.
    let f = fixture(&["a", "b", "c"], 6, 1, 100);
    let start = tokio::time::Instant::now();
    let mut frame: Vec<_> = (0..6).map(|o| poke(f.name, o, 0)).collect();
    frame[1].args.halt = Some("a");
    frame[2].args.wait = Some(("a", 1000)); // waits, then goes on to b and c
    frame[3].args.wait = Some(("b", 2000));
    frame[3].args.halt = Some("b"); // waits at b, then halts
    f.world.send_all(frame).await.unwrap();
    // Object 5 loses its behaviours after its event was sent (the workers of
    // this single-threaded runtime have not run yet): the event is orphaned.
    for &id in &f.tags {
        assert_eq!(f.world.detach(ObjectId(5), id), Some(0));
    }
    f.world.idle().await;
    assert_eq!(start.elapsed(), Duration::from_millis(2000));
    let trail_of = |object: u64, seq: u32| -> Vec<&'static str> {
        let log = f.log.lock();
        log.iter()
            .filter(|r| r.1 == object && r.2 == seq)
            .map(|r| r.3.clone())
            .max_by_key(Vec::len)
            .unwrap_or_default()
    };
    assert_eq!(trail_of(0, 0), ["a", "b", "c"]);
    assert_eq!(trail_of(1, 0), ["a"]);
    assert_eq!(trail_of(2, 0), ["a", "b", "c"]);
    assert_eq!(trail_of(3, 0), ["a", "b"]);
    assert_eq!(trail_of(4, 0), ["a", "b", "c"]);
    // Per behaviour, how many events each object's state counted.
    let seen = |object: u64| -> Vec<Option<u32>> {
        f.tags
            .iter()
            .map(|&id| f.world.state(ObjectId(object), id))
            .collect()
    };
    assert_eq!(seen(0), [Some(1), Some(1), Some(1)]);
    assert_eq!(seen(1), [Some(1), Some(0), Some(0)]);
    assert_eq!(seen(2), [Some(1), Some(1), Some(1)]);
    assert_eq!(seen(3), [Some(1), Some(1), Some(0)]);
    assert_eq!(seen(4), [Some(1), Some(1), Some(1)]);
    let stats = f.world.stats();
    assert_eq!(
        (stats.handled, stats.halted, stats.waited, stats.orphaned),
        (6, 2, 2, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_world_on_hashed_keys_keeps_each_objects_order_and_state() {
    let log: Log = Arc::default();
    let mut builder = WorldBuilder::<Args>::new(100)
        .partitions(nz(3))
        .max_workers(nz(2))
        .max_batch(nz(8))
        .queue_capacity(nz(64));
    let name = builder.event("poke");
    let ids: Vec<_> = ["one", "two"]
        .into_iter()
        .map(|tag| {
            builder.register(Tagged {
                tag,
                name,
                log: log.clone(),
            })
        })
        .collect();
    let world = builder.start_hashed().unwrap();
    let all = world.spawn_many(100);
    for &id in &ids {
        world.attach_many(all.clone(), id, |_| 0);
    }
    let start = tokio::time::Instant::now();
    for seq in 0..3 {
        let frame = (0..100).map(|o| {
            let mut event = poke(name, o, seq);
            if o == 42 && seq == 0 {
                event.args.wait = Some(("one", 500));
            }
            event
        });
        world.send_all(frame).await.unwrap();
    }
    world.idle().await;
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    let log = log.lock();
    for object in 0..100 {
        let calls: Vec<(&str, u32)> = log
            .iter()
            .filter(|r| r.1 == object)
            .map(|r| (r.0, r.2))
            .collect();
        let expected: Vec<(&str, u32)> = (0..3).flat_map(|s| [("one", s), ("two", s)]).collect();
        assert_eq!(calls, expected, "object {object}");
        for &id in &ids {
            assert_eq!(world.state(ObjectId(object), id), Some(3));
        }
    }
    assert_eq!(world.stats().handled, 300);
    assert_eq!(world.stats().waited, 1);
}

#[tokio::test(start_paused = true)]
async fn an_event_no_attached_behaviour_handles_is_refused_with_no_handler() {
    let f = fixture(&["only"], 2, 1, 16);
    let loner = f.world.spawn();
    let refused = f.world.send(poke(f.name, loner.0, 0)).await;
    assert!(matches!(refused, Err(SendError::NoHandler(e)) if e.target == loner));
    // Detached: refused too.
    assert_eq!(f.world.detach(ObjectId(1), f.tags[0]), Some(0));
    assert!(matches!(
        f.world.send(poke(f.name, 1, 0)).await,
        Err(SendError::NoHandler(_))
    ));
    let sent = f
        .world
        .send_all((0..3).map(|o| poke(f.name, o, 0)))
        .await
        .unwrap();
    assert_eq!((sent.sent, sent.no_handler), (1, 2));
    f.world.idle().await;
    let stats = f.world.stats();
    assert_eq!((stats.handled, stats.no_handler), (1, 4));
    assert_eq!(f.log.lock().len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn under_random_load_each_object_keeps_its_order_and_every_event_is_handled_once(
        partitions in 1_usize..4,
        batch in 1_usize..32,
        sends in proptest::collection::vec((0_u64..16, 0_u64..5, any::<bool>()), 1..150),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let f = fixture(&["one", "two"], 16, partitions, batch);
            let mut seqs = [0_u32; 16];
            let mut chunk = Vec::new();
            for (i, (object, wait, flush)) in sends.iter().enumerate() {
                let mut event = poke(f.name, *object, seqs[*object as usize]);
                seqs[*object as usize] += 1;
                if *wait > 0 {
                    event.args.wait = Some((if i % 2 == 0 { "one" } else { "two" }, *wait));
                }
                chunk.push(event);
                if *flush {
                    f.world.send_all(chunk.drain(..)).await.unwrap();
                }
            }
            f.world.send_all(chunk).await.unwrap();
            f.world.idle().await;
            let log = f.log.lock();
            for object in 0..16_u64 {
                for tag in ["one", "two"] {
                    let seen: Vec<u32> = log
                        .iter()
                        .filter(|r| r.1 == object && r.0 == tag)
                        .map(|r| r.2)
                        .collect();
                    let expected: Vec<u32> = (0..seqs[object as usize]).collect();
                    assert_eq!(seen, expected, "object {} behaviour {}", object, tag);
                }
                // Per object, "one" then "two" for each event, never interleaved.
                let calls: Vec<(&str, u32)> =
                    log.iter().filter(|r| r.1 == object).map(|r| (r.0, r.2)).collect();
                let expected: Vec<(&str, u32)> = (0..seqs[object as usize])
                    .flat_map(|s| [("one", s), ("two", s)])
                    .collect();
                assert_eq!(calls, expected, "object {}", object);
            }
            assert_eq!(f.world.stats().handled, sends.len() as u64);
        });
    }
}
