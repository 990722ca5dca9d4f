//! Objects, behaviours and events on demandflow's keyed scheduler: per-object
//! ordered, concurrent event handling for an entity-component world.
//!
//! What it teaches:
//!
//! - a [`Keyed`](demandflow::keyed::Keyed) scheduler keyed by object id
//!   ([`DenseKeys`](demandflow::keyed::DenseKeys): no hashing, no per-object
//!   allocation), so each object's events are handled one at a time and in
//!   order while different objects are handled concurrently (`world.rs`);
//! - behaviours registered in order, each declaring the events it handles,
//!   attached to and detached from objects; component state stored densely, a
//!   vector per behaviour and partition;
//! - an event (name, target, mutable arguments) going through the target's
//!   behaviours in registration order, each returning continue or halt, and
//!   argument changes reaching the later ones (armor lowers the damage
//!   durability then takes);
//! - sending to an object no behaviour of which handles the event: "no
//!   handler", nothing queued;
//! - then a crowd of objects hit every frame, checked object by object.
//!
//! With `--dashboard ADDR`, the [dashboard](demandflow_dashboard) serves the
//! live topology on `ADDR` while the example runs, and the crowd is fed through
//! a pipeline a person can watch: a `frames` push source, paced at 10 frames a
//! second (300 frames unless `--frames` says otherwise), into a `world-input`
//! consumer stage that hands each event to the `world` keyed scheduler, whose
//! partitions show their backlog and busy keys.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example ecs
//! cargo run --release --example ecs -- --objects 1000000 --frames 10
//! cargo run --release --example ecs -- --dashboard 127.0.0.1:4040   # then open http://127.0.0.1:4040/
//! ```
//!
//! The last line is `RESULT {json}`; the exit status is non-zero when a check fails.

mod barrel;

use std::num::NonZeroUsize;
use std::ops::Range;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use barrel::{Armor, Attack, Durability, Element, Fireproof, Flammable, Log};
use ecs_world::{Event, EventName, ObjectId, SendError, World, WorldBuilder};

/// Objects in the crowd, and frames it is hit for, unless given on the command line.
const OBJECTS: u64 = 20_000;
const FRAMES: u32 = 5;
/// Frames, and the time between two, when the crowd is fed for the dashboard.
const WATCHED_FRAMES: u32 = 300;
const FRAME_EVERY: Duration = Duration::from_millis(100);

fn attack(name: EventName, target: ObjectId, damage: u32, element: Element) -> Event<Attack> {
    Event {
        name,
        target,
        args: Attack { damage, element },
    }
}

/// Sends `event`, waits until it is handled, and prints what the behaviours said.
async fn hit(world: &World<Attack>, log: &Log, event: Event<Attack>) -> bool {
    let what = format!(
        "{} {:?} {} -> object {}",
        world.name_of(event.name),
        event.args.element,
        event.args.damage,
        event.target.0
    );
    println!("{what}");
    let sent = world.send(event).await;
    world.idle().await;
    for line in log.take() {
        println!("{line}");
    }
    match sent {
        Ok(()) => true,
        Err(SendError::NoHandler(_)) => {
            println!("  no handler: nothing attached to the object handles it");
            false
        }
        Err(SendError::Closed(_)) => false,
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Hits every object of `crowd` `frames` times through a pipeline the
/// dashboard shows: a `frames` push source, fed a frame every
/// [`FRAME_EVERY`], into the world's consumer stage `world-input`.
async fn feed_watched(
    world: &World<Attack>,
    attack_name: EventName,
    crowd: Range<ObjectId>,
    frames: u32,
) {
    let (source, pusher) =
        demandflow::push::<Event<Attack>>(NonZeroUsize::new(4_096).expect("4096 > 0"));
    let source = demandflow::producer(source)
        .name("frames")
        .start()
        .expect("inside a tokio runtime");
    let input = demandflow::consumer(world.consumer())
        .name("world-input")
        .start()
        .expect("inside a tokio runtime");
    input
        .subscribe_to(
            &source,
            demandflow::SubscribeOptions::new().max_demand(2_048),
        )
        .await
        .expect("world-input subscribes to frames");
    let mut tick = tokio::time::interval(FRAME_EVERY);
    for _ in 0..frames {
        tick.tick().await;
        for o in crowd.start.0..crowd.end.0 {
            let event = attack(attack_name, ObjectId(o), 5, Element::Physical);
            pusher.send(event).await.expect("frames is running");
        }
    }
    drop(pusher); // the last pusher: `frames` ends, then `world-input`
    input.wait().await;
    world.idle().await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    let dashboard = match demandflow_dashboard::start_from_args(&mut args).await {
        Ok(dashboard) => dashboard,
        Err(e) => {
            eprintln!("ecs: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(dashboard) = &dashboard {
        println!("dashboard on {}", dashboard.url());
    }
    let objects = arg("--objects", OBJECTS);
    let default_frames = if dashboard.is_some() {
        WATCHED_FRAMES
    } else {
        FRAMES
    };
    let frames = arg("--frames", u64::from(default_frames)) as u32;
    let log: Log = Arc::default();

    // Registration order is handling order: armor, fireproof, flammable, durability.
    let mut builder = WorldBuilder::<Attack>::new(4 + objects as usize);
    let attack_name = builder.event("attack");
    let armor = builder.register(Armor {
        attack: attack_name,
        log: log.clone(),
    });
    let fireproof = builder.register(Fireproof {
        attack: attack_name,
        log: log.clone(),
    });
    let flammable = builder.register(Flammable {
        attack: attack_name,
        log: log.clone(),
    });
    let durability = builder.register(Durability {
        attack: attack_name,
        log: log.clone(),
    });
    let world = builder
        .name("world")
        .start()
        .expect("inside a tokio runtime");

    let barrel = world.spawn();
    world.attach(barrel, flammable, false);
    world.attach(barrel, durability, 50);
    let crate_ = world.spawn();
    world.attach(crate_, armor, 4);
    world.attach(crate_, durability, 30);
    let jar = world.spawn();
    world.attach(jar, fireproof, ());
    world.attach(jar, flammable, false);
    world.attach(jar, durability, 20);
    let rock = world.spawn();

    println!("== a barrel (durability 50, flammable)");
    hit(
        &world,
        &log,
        attack(attack_name, barrel, 10, Element::Physical),
    )
    .await;
    let after_physical = (
        world.state(barrel, durability),
        world.state(barrel, flammable),
    );
    println!(
        "  barrel: durability {:?}, burning {:?}",
        after_physical.0, after_physical.1
    );
    hit(&world, &log, attack(attack_name, barrel, 15, Element::Fire)).await;
    let after_fire = (
        world.state(barrel, durability),
        world.state(barrel, flammable),
    );
    println!(
        "  barrel: durability {:?}, burning {:?}",
        after_fire.0, after_fire.1
    );

    println!("== a crate (durability 30, armor 4): armor changes the damage durability sees");
    hit(
        &world,
        &log,
        attack(attack_name, crate_, 10, Element::Physical),
    )
    .await;
    let crate_left = world.state(crate_, durability);

    println!("== a stone jar (fireproof, flammable, durability 20): fireproof halts fire");
    hit(&world, &log, attack(attack_name, jar, 15, Element::Fire)).await;
    let jar_state = (world.state(jar, durability), world.state(jar, flammable));
    println!(
        "  jar: durability {:?}, burning {:?}",
        jar_state.0, jar_state.1
    );

    println!("== a rock (no behaviours)");
    let rock_handled = hit(
        &world,
        &log,
        attack(attack_name, rock, 5, Element::Physical),
    )
    .await;

    println!("== the barrel loses its flammability");
    let was = world.detach(barrel, flammable);
    println!("  detached flammable (state was burning: {was:?})");
    hit(&world, &log, attack(attack_name, barrel, 5, Element::Fire)).await;

    // A crowd: armor 2 and durability 1000 each, hit for 5 physical every frame.
    println!("== a crowd of {objects} objects, hit {frames} times each");
    let crowd = world.spawn_many(objects);
    log.set_quiet(true);
    world.attach_many(crowd.clone(), armor, |_| 2);
    world.attach_many(crowd.clone(), durability, |_| 1000);
    let start = Instant::now();
    if dashboard.is_some() {
        feed_watched(&world, attack_name, crowd.clone(), frames).await;
    } else {
        for _ in 0..frames {
            let frame = (crowd.start.0..crowd.end.0)
                .map(|o| attack(attack_name, ObjectId(o), 5, Element::Physical));
            world.send_all(frame).await.expect("the world is running");
            world.idle().await;
        }
    }
    let elapsed = start.elapsed();
    let expected = 1000 - 3 * frames.min(333);
    let wrong = (crowd.start.0..crowd.end.0)
        .filter(|&o| world.state(ObjectId(o), durability) != Some(expected))
        .count();
    let events = objects * u64::from(frames);
    let rate = events as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "  {events} events in {:.1} ms ({:.1} M events/s); objects not at durability {expected}: {wrong}",
        elapsed.as_secs_f64() * 1e3,
        rate / 1e6
    );
    world.shutdown().await;
    drop(dashboard);
    let stats = world.stats();
    println!("  world: {stats:?}");

    let ok = after_physical == (Some(40), Some(false))
        && after_fire == (Some(25), Some(true))
        && crate_left == Some(24)
        && jar_state == (Some(20), Some(false))
        && !rock_handled
        && was == Some(true)
        && world.state(barrel, durability) == Some(20)
        && wrong == 0
        && stats.no_handler == 1
        && stats.halted == 1;
    println!(
        "RESULT {{\"example\":\"ecs\",\"ok\":{ok},\"barrel_durability\":{},\"barrel_burning\":{},\"objects\":{objects},\"frames\":{frames},\"events\":{events},\"events_per_sec\":{rate:.0}}}",
        after_fire.0.unwrap_or(0),
        after_fire.1.unwrap_or(false),
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
