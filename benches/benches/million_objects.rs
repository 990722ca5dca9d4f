//! A million objects, each hit once per frame, through the `ecs` example's world on the keyed
//! scheduler, next to a hand-written single-threaded loop doing the same updates.
//!
//! ```text
//! cargo bench -p demandflow-benches --bench million_objects -- --quick
//! ```
//!
//! Every object has two behaviours, armor (takes its rating off the damage) and health
//! (subtracts what gets through, and checks that frames arrive in order). A frame sends one
//! event to every object; the next frame starts as soon as every event of the previous one has
//! been handled (a game loop), and a frame's drain time is from its first send to its last
//! event handled. Then a small scenario: 1 000 objects receiving an event every 10 ms.
//! See `benches/README.md` for what each figure means.

use std::fmt::Write as _;
use std::fs;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use demandflow::StartError;
use demandflow_benches::{
    Args, LogLogPlot, Mode, Progress, Reference, Series, median, report_dir, result_line, rounded,
};
use ecs_world::{Behaviour, Event, EventName, Handled, ObjectId, World, WorldBuilder, WorldKeys};
use serde_json::json;

/// Damage of every hit; armor takes `ARMOR` off it.
const DAMAGE: u32 = 7;
const ARMOR: u32 = 3;
/// Health every object starts with: enough for every frame of a full run.
const HEALTH: i64 = 1 << 40;

/// Workers per partition, and events per batch (and per chunk a sender queues). Handlers here
/// never wait, so two workers per partition are plenty; larger batches spread the fixed costs
/// (locks, task switches) over more events. `--quick` on 2 cores, same machine: 1 024 events
/// per batch gave 64-72 fps, 4 096 gave 74-78 fps.
const WORKERS: NonZeroUsize = NonZeroUsize::new(2).unwrap();
const BATCH: NonZeroUsize = NonZeroUsize::new(4096).unwrap();

/// The arguments of a hit: the damage, which armor lowers, and the frame it belongs to.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Hit {
    damage: u32,
    frame: u32,
}

/// Takes its rating off the damage.
struct ArmorB {
    hit: EventName,
}

impl Behaviour<Hit> for ArmorB {
    type State = u32;

    fn name(&self) -> &str {
        "armor"
    }

    fn handles(&self) -> Vec<EventName> {
        vec![self.hit]
    }

    #[inline]
    fn handle(&self, _: ObjectId, rating: &mut u32, event: &mut Event<Hit>) -> Handled {
        event.args.damage -= event.args.damage.min(*rating);
        Handled::Continue
    }
}

/// An object's health and the last frame that reached it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Health {
    hp: i64,
    last_frame: u32,
}

/// Subtracts the damage that gets through; counts frames arriving out of order.
struct HealthB {
    hit: EventName,
    violations: Arc<AtomicU64>,
}

impl Behaviour<Hit> for HealthB {
    type State = Health;

    fn name(&self) -> &str {
        "health"
    }

    fn handles(&self) -> Vec<EventName> {
        vec![self.hit]
    }

    #[inline]
    fn handle(&self, _: ObjectId, health: &mut Health, event: &mut Event<Hit>) -> Handled {
        health.hp -= i64::from(event.args.damage);
        if event.args.frame != health.last_frame + 1 {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
        health.last_frame = event.args.frame;
        Handled::Continue
    }
}

/// How big a run is.
#[derive(Clone, Copy)]
struct Plan {
    objects: u64,
    frames: u32,
    /// Frames of the hand-written loop, before and after the world's.
    hand_frames: u32,
    /// The small scenario: how long, and its tick.
    small_for: Duration,
    small_tick: Duration,
    /// Frames sent through the pipeline (stage path).
    stage_frames: u32,
    /// Frames of the same world on hashed keys.
    hashed_frames: u32,
}

impl Plan {
    fn for_mode(mode: Mode) -> Plan {
        match mode {
            Mode::Smoke => Plan {
                objects: 10_000,
                frames: 3,
                hand_frames: 3,
                small_for: Duration::from_millis(100),
                small_tick: Duration::from_millis(10),
                stage_frames: 2,
                hashed_frames: 3,
            },
            Mode::Quick => Plan {
                objects: 1_000_000,
                frames: 120,
                hand_frames: 20,
                small_for: Duration::from_secs(2),
                small_tick: Duration::from_millis(10),
                stage_frames: 10,
                hashed_frames: 30,
            },
            Mode::Full => Plan {
                objects: 1_000_000,
                frames: 600,
                hand_frames: 60,
                small_for: Duration::from_secs(10),
                small_tick: Duration::from_millis(10),
                stage_frames: 60,
                hashed_frames: 300,
            },
        }
    }
}

/// How a world is started: `WorldBuilder::start` (dense keys) or
/// `WorldBuilder::start_hashed`.
type Start<X> = fn(WorldBuilder<Hit>) -> Result<World<Hit, X>, StartError>;

/// A world with armor and health on every object.
struct Setup<X: WorldKeys = demandflow::keyed::DenseKeys> {
    world: World<Hit, X>,
    hit: EventName,
    health: ecs_world::BehaviourId<HealthB>,
    /// Counted by the health behaviour.
    violations: Arc<AtomicU64>,
}

/// The world with armor and health on `objects` objects, on dense keys.
fn build_world(objects: u64) -> Setup {
    build_world_on(objects, WorldBuilder::start)
}

/// The world with armor and health on `objects` objects, started by `start`
/// (on dense or on hashed keys).
fn build_world_on<X: WorldKeys>(objects: u64, start: Start<X>) -> Setup<X> {
    let violations = Arc::new(AtomicU64::new(0));
    let mut builder = WorldBuilder::<Hit>::new(objects as usize)
        .max_workers(WORKERS)
        .max_batch(BATCH);
    let hit = builder.event("hit");
    let armor = builder.register(ArmorB { hit });
    let health = builder.register(HealthB {
        hit,
        violations: violations.clone(),
    });
    let world = start(builder).expect("inside a tokio runtime");
    let all = world.spawn_many(objects);
    world.attach_many(all.clone(), armor, |_| ARMOR);
    world.attach_many(all, health, |_| Health {
        hp: HEALTH,
        last_frame: 0,
    });
    Setup {
        world,
        hit,
        health,
        violations,
    }
}

/// What the world's run measured.
struct WorldRun {
    drains: Vec<Duration>,
    total: Duration,
    /// CPU time of every thread of the process during the frames.
    cpu: Duration,
    max_backlog: u64,
    peak_queued: usize,
    handled: u64,
    violations: u64,
    wrong_state: u64,
}

/// Sends `frames` frames of one hit per object, each after the previous one
/// has drained, to the world `start` starts.
async fn run_world<X: WorldKeys>(
    plan: &Plan,
    frames: u32,
    start: Start<X>,
    progress: &Progress,
) -> WorldRun {
    let Setup {
        world,
        hit,
        health,
        violations,
    } = build_world_on(plan.objects, start);
    let plan = &Plan { frames, ..*plan };
    let mut drains = Vec::with_capacity(plan.frames as usize);
    let mut max_backlog = 0;
    let start = Instant::now();
    let cpu_start = process_cpu();
    for frame in 1..=plan.frames {
        let t0 = Instant::now();
        let events = (0..plan.objects).map(|o| Event {
            name: hit,
            target: ObjectId(o),
            args: Hit {
                damage: DAMAGE,
                frame,
            },
        });
        world.send_all(events).await.expect("the world is running");
        let keyed = world.keyed_stats();
        max_backlog = max_backlog.max(keyed.sent - keyed.handled);
        world.idle().await;
        drains.push(t0.elapsed());
        if frame % 60 == 0 {
            let last = &drains[drains.len() - 60..];
            progress.note(&format!(
                "[million_objects] frame {frame}/{}: drain median {:.2} ms",
                plan.frames,
                ms(median_duration(last))
            ));
        }
    }
    let total = start.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_start);
    let stats = world.stats();
    let keyed = world.keyed_stats();
    // Every object lost (damage - armor) per frame, exactly once per frame.
    let expected = HEALTH - i64::from(plan.frames) * i64::from(DAMAGE - ARMOR);
    let wrong_state = (0..plan.objects)
        .filter(|&o| {
            world
                .state(ObjectId(o), health)
                .map(|h| (h.hp, h.last_frame))
                != Some((expected, plan.frames))
        })
        .count() as u64;
    world.shutdown().await;
    WorldRun {
        drains,
        total,
        cpu,
        max_backlog,
        peak_queued: keyed.peak_queued,
        handled: stats.handled,
        violations: violations.load(Ordering::Relaxed),
        wrong_state,
    }
}

/// One progress step: `frames` frames through the world `start` starts.
fn world_step<X: WorldKeys>(
    runtime: &tokio::runtime::Runtime,
    plan: &Plan,
    frames: u32,
    start: Start<X>,
    progress: &mut Progress,
    what: &str,
) -> WorldRun {
    progress.start(&format!(
        "{what}: {frames} frames of {} objects",
        plan.objects
    ));
    let run = runtime.block_on(run_world(plan, frames, start, progress));
    progress.finish(&format!(
        "{:.1} fps",
        run.drains.len() as f64 / run.total.as_secs_f64()
    ));
    run
}

/// The hand-written loop: the same two updates on dense vectors, one thread. Returns the time of
/// each frame.
fn run_hand_loop(objects: u64, frames: u32) -> (Vec<Duration>, Duration, bool) {
    let armor = vec![ARMOR; objects as usize];
    let mut health = vec![
        Health {
            hp: HEALTH,
            last_frame: 0
        };
        objects as usize
    ];
    let mut violations = 0_u64;
    let mut times = Vec::with_capacity(frames as usize);
    let cpu_start = thread_cpu();
    for frame in 1..=frames {
        let t0 = Instant::now();
        for (h, &rating) in health.iter_mut().zip(&armor) {
            let mut damage = std::hint::black_box(DAMAGE);
            damage -= damage.min(rating);
            h.hp -= i64::from(damage);
            if frame != h.last_frame + 1 {
                violations += 1;
            }
            h.last_frame = frame;
        }
        times.push(t0.elapsed());
    }
    let cpu = thread_cpu().saturating_sub(cpu_start);
    let expected = HEALTH - i64::from(frames) * i64::from(DAMAGE - ARMOR);
    let ok = violations == 0 && health.iter().all(|h| h.hp == expected);
    (times, cpu, ok)
}

/// The same world fed through a pipeline: `from_iter` of `frames` frames (frame after frame,
/// not waiting for one to drain) into the world's consumer stage. Returns the time from
/// subscribing to the last event handled, and the ordering violations and lost events.
async fn run_stage(objects: u64, frames: u32) -> (Duration, u64, u64) {
    let Setup {
        world,
        hit,
        violations,
        ..
    } = build_world(objects);
    let events = (1..=frames).flat_map(move |frame| {
        (0..objects).map(move |o| Event {
            name: hit,
            target: ObjectId(o),
            args: Hit {
                damage: DAMAGE,
                frame,
            },
        })
    });
    let source = demandflow::producer(demandflow::from_iter(events))
        .start()
        .expect("inside a tokio runtime");
    let feed = demandflow::consumer(world.consumer())
        .start()
        .expect("inside a tokio runtime");
    let start = Instant::now();
    feed.subscribe_to(
        &source,
        demandflow::SubscribeOptions::new().max_demand(BATCH.get() as u64 * 2),
    )
    .await
    .expect("subscribed");
    feed.wait().await; // the source ran out
    world.idle().await;
    let elapsed = start.elapsed();
    let lost = (objects * u64::from(frames)).abs_diff(world.stats().handled);
    world.shutdown().await;
    (elapsed, violations.load(Ordering::Relaxed), lost)
}

/// The small scenario: `objects` objects, one event each every `tick`, for `duration`; the
/// drain time of each tick.
async fn run_small(objects: u64, tick: Duration, duration: Duration) -> (Vec<Duration>, u64) {
    let Setup {
        world,
        hit,
        violations,
        ..
    } = build_world(objects);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ticks = (duration.as_nanos() / tick.as_nanos().max(1)) as u32;
    let mut drains = Vec::with_capacity(ticks as usize);
    for frame in 1..=ticks {
        interval.tick().await;
        let t0 = Instant::now();
        let events = (0..objects).map(|o| Event {
            name: hit,
            target: ObjectId(o),
            args: Hit {
                damage: DAMAGE,
                frame,
            },
        });
        world.send_all(events).await.expect("the world is running");
        world.idle().await;
        drains.push(t0.elapsed());
    }
    world.shutdown().await;
    let lost = u64::from(ticks) * objects - world.stats().handled;
    (drains, lost + violations.load(Ordering::Relaxed))
}

/// On-CPU time read from a `schedstat` file (its first field, in ns); zero
/// where there is none (not Linux, or no scheduler statistics).
fn schedstat(path: &std::path::Path) -> Duration {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// On-CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    schedstat("/proc/thread-self/schedstat".as_ref())
}

/// On-CPU time of every live thread of this process so far (the runtime's
/// worker threads stay alive, so differences over a stretch are exact).
fn process_cpu() -> Duration {
    fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .map(|task| schedstat(&task.path().join("schedstat")))
                .sum()
        })
        .unwrap_or(Duration::ZERO)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median_duration(values: &[Duration]) -> Duration {
    Duration::from_secs_f64(median(
        &values.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
    ))
}

/// The `q` quantile (0..=1) of `values`, nearest rank.
fn quantile(values: &[Duration], q: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Peak resident set size of this process (VmHWM), in MiB.
fn peak_rss_mb() -> f64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> ExitCode {
    let args = match Args::from_env_or_exit("million_objects") {
        Ok(args) => args,
        Err(code) => return code,
    };
    let plan = Plan::for_mode(args.mode);
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let mut progress = Progress::new("million_objects", args.mode, 6);
    progress.start(&format!(
        "hand loop: {} frames of {} objects",
        plan.hand_frames, plan.objects
    ));
    let (mut hand, hand_cpu_before, hand_ok_before) = run_hand_loop(plan.objects, plan.hand_frames);
    progress.finish(&format!("{:.2} ms per frame", ms(median_duration(&hand))));
    let run = world_step(
        &runtime,
        &plan,
        plan.frames,
        WorldBuilder::start,
        &mut progress,
        &format!("world on {cores} cores"),
    );
    progress.start("hand loop again");
    let (hand_after, hand_cpu_after, hand_ok_after) = run_hand_loop(plan.objects, plan.hand_frames);
    let hand_cpu_ms = ms(hand_cpu_before + hand_cpu_after) / f64::from(2 * plan.hand_frames);
    progress.finish(&format!(
        "{:.2} ms per frame",
        ms(median_duration(&hand_after))
    ));
    // The peak of the frames scenario (world and hand loop), before the other scenarios.
    let rss = peak_rss_mb();
    let hand_before_ms = ms(median_duration(&hand));
    let hand_after_ms = ms(median_duration(&hand_after));
    hand.extend(hand_after);
    let hashed = world_step(
        &runtime,
        &plan,
        plan.hashed_frames,
        WorldBuilder::start_hashed,
        &mut progress,
        "world on hashed keys",
    );
    progress.start(&format!(
        "small: 1000 objects every {} ms for {:.0} s",
        plan.small_tick.as_millis(),
        plan.small_for.as_secs_f64()
    ));
    let (small, small_bad) = runtime.block_on(run_small(1_000, plan.small_tick, plan.small_for));
    progress.finish(&format!("{} ticks", small.len()));
    progress.start(&format!(
        "stage path: {} frames of {} objects through from_iter -> KeyedConsumer",
        plan.stage_frames, plan.objects
    ));
    let (stage_time, stage_violations, stage_lost) =
        runtime.block_on(run_stage(plan.objects, plan.stage_frames));
    progress.finish(&format!("{:.2} s", stage_time.as_secs_f64()));
    drop(progress);
    let rss_end = peak_rss_mb();

    let frames = run.drains.len() as u64;
    let fps = frames as f64 / run.total.as_secs_f64();
    let p50 = ms(quantile(&run.drains, 0.5));
    let p99 = ms(quantile(&run.drains, 0.99));
    let hand_ms = ms(median_duration(&hand));
    let expected = plan.objects * frames;
    let lost = expected.saturating_sub(run.handled) + run.wrong_state;
    let duplicated = run.handled.saturating_sub(expected);
    let hashed_frames = hashed.drains.len() as u64;
    let hashed_fps = hashed_frames as f64 / hashed.total.as_secs_f64();
    let hashed_p50 = ms(quantile(&hashed.drains, 0.5));
    let hashed_p99 = ms(quantile(&hashed.drains, 0.99));
    let hashed_expected = plan.objects * hashed_frames;
    let hashed_lost = hashed_expected.saturating_sub(hashed.handled) + hashed.wrong_state;
    let hashed_duplicated = hashed.handled.saturating_sub(hashed_expected);

    let mut table = String::new();
    let _ = writeln!(
        table,
        "million_objects: {} objects x {frames} frames, {cores} cores",
        plan.objects
    );
    let _ = writeln!(table, "| figure | value |");
    let _ = writeln!(table, "|---|---|");
    let _ = writeln!(table, "| fps (frames / wall time) | {fps:.1} |");
    let _ = writeln!(table, "| drain per frame p50 | {p50:.2} ms |");
    let _ = writeln!(table, "| drain per frame p99 | {p99:.2} ms |");
    let _ = writeln!(
        table,
        "| drain per frame max | {:.2} ms |",
        ms(quantile(&run.drains, 1.0))
    );
    let _ = writeln!(
        table,
        "| events/s | {:.1} M |",
        expected as f64 / run.total.as_secs_f64() / 1e6
    );
    let _ = writeln!(
        table,
        "| hand loop per frame (baseline, 1 thread, median) | {hand_ms:.2} ms (before {hand_before_ms:.2}, after {hand_after_ms:.2}) |"
    );
    let _ = writeln!(table, "| drain p50 / hand loop | {:.1}x |", p50 / hand_ms);
    let cpu_ms = ms(run.cpu) / frames as f64;
    let _ = writeln!(
        table,
        "| CPU per frame, all threads (hand loop: {hand_cpu_ms:.2} ms) | {cpu_ms:.2} ms, {:.1}x |",
        cpu_ms / hand_cpu_ms
    );
    let _ = writeln!(
        table,
        "| peak RSS (VmHWM) after the frames | {rss:.1} MiB (end of run: {rss_end:.1} MiB) |"
    );
    let _ = writeln!(
        table,
        "| max backlog (sent - handled, after a frame is sent) | {} |",
        run.max_backlog
    );
    let _ = writeln!(
        table,
        "| most events queued in one partition | {} |",
        run.peak_queued
    );
    let _ = writeln!(table, "| ordering violations | {} |", run.violations);
    let _ = writeln!(
        table,
        "| lost events (incl. objects in a wrong state) | {lost} |"
    );
    let _ = writeln!(table, "| duplicated events | {duplicated} |");
    let verdict = if args.mode == Mode::Smoke {
        "not judged (smoke run)"
    } else if p50 <= 16.7 && fps >= 60.0 && rss <= 256.0 {
        "met"
    } else {
        "NOT met"
    };
    let _ = writeln!(
        table,
        "| target: 60 fps (p50 drain <= 16.7 ms), peak RSS <= 256 MiB | {verdict} |"
    );
    let _ = writeln!(table);
    let _ = writeln!(
        table,
        "hashed keys: the same world on HashedKeys<u64> (WorldBuilder::start_hashed), {hashed_frames} frames"
    );
    let _ = writeln!(table, "| fps | {hashed_fps:.1} |");
    let _ = writeln!(
        table,
        "| drain per frame p50, p99 | {hashed_p50:.2} ms, {hashed_p99:.2} ms |"
    );
    let _ = writeln!(
        table,
        "| drain p50 / hand loop (dense keys: {:.1}x) | {:.1}x |",
        p50 / hand_ms,
        hashed_p50 / hand_ms
    );
    let hashed_cpu_ms = ms(hashed.cpu) / hashed_frames as f64;
    let _ = writeln!(
        table,
        "| CPU per frame / hand loop's (dense keys: {:.1}x) | {hashed_cpu_ms:.2} ms, {:.1}x |",
        cpu_ms / hand_cpu_ms,
        hashed_cpu_ms / hand_cpu_ms
    );
    let _ = writeln!(
        table,
        "| ordering violations, lost, duplicated events | {}, {hashed_lost}, {hashed_duplicated} |",
        hashed.violations
    );
    let _ = writeln!(table);
    let stage_events = plan.objects * u64::from(plan.stage_frames);
    let _ = writeln!(
        table,
        "stage path: {} frames back to back through from_iter -> KeyedConsumer -> world",
        plan.stage_frames
    );
    let _ = writeln!(
        table,
        "| events/s (direct send_all above: {:.1} M) | {:.1} M |",
        expected as f64 / run.total.as_secs_f64() / 1e6,
        stage_events as f64 / stage_time.as_secs_f64() / 1e6
    );
    let _ = writeln!(
        table,
        "| per frame | {:.2} ms |",
        ms(stage_time) / f64::from(plan.stage_frames)
    );
    let _ = writeln!(
        table,
        "| ordering violations, lost events | {stage_violations}, {stage_lost} |"
    );
    let _ = writeln!(table);
    let _ = writeln!(
        table,
        "small: 1000 objects, an event each every {} ms, {} ticks",
        plan.small_tick.as_millis(),
        small.len()
    );
    let _ = writeln!(
        table,
        "| drain per tick p50 | {:.3} ms |",
        ms(quantile(&small, 0.5))
    );
    let _ = writeln!(
        table,
        "| drain per tick p99 | {:.3} ms |",
        ms(quantile(&small, 0.99))
    );
    let _ = writeln!(table, "| lost events + ordering violations | {small_bad} |");
    print!("{table}");

    if args.mode == Mode::Full {
        let plot = LogLogPlot {
            title: "million_objects: drain time of each frame".into(),
            subtitle: format!(
                "{} objects, armor + health, {cores} cores; lower is better",
                plan.objects
            ),
            x_label: "frame".into(),
            y_label: "drain time (ms)".into(),
            x_span: (1.0, frames as f64),
            series: vec![
                Series {
                    name: "demandflow keyed world".into(),
                    points: run
                        .drains
                        .iter()
                        .enumerate()
                        .map(|(i, d)| ((i + 1) as f64, ms(*d)))
                        .collect(),
                },
                Series {
                    name: "demandflow keyed world, hashed keys".into(),
                    points: hashed
                        .drains
                        .iter()
                        .enumerate()
                        .map(|(i, d)| ((i + 1) as f64, ms(*d)))
                        .collect(),
                },
            ],
            references: vec![
                Reference {
                    name: "60 fps budget (16.7 ms)".into(),
                    value: 1000.0 / 60.0,
                },
                Reference {
                    name: "hand loop, 1 thread".into(),
                    value: hand_ms,
                },
            ],
        };
        let dir = report_dir();
        let path = dir.join("million_objects.svg");
        let written = fs::create_dir_all(&dir)
            .and_then(|()| plot.to_svg())
            .and_then(|svg| fs::write(&path, svg));
        match written {
            Ok(()) => println!("plot: {}", path.display()),
            Err(e) => eprintln!("million_objects: could not write {}: {e}", path.display()),
        }
    }

    // serde_json keeps the keys in this order (its `preserve_order` feature).
    let result = json!({
        "bench": "million_objects",
        "objects": plan.objects,
        "frames": frames,
        "fps": rounded(fps, 1),
        "drain_ms_p50": rounded(p50, 3),
        "drain_ms_p99": rounded(p99, 3),
        "hand_loop_ms": rounded(hand_ms, 3),
        "peak_rss_mb": rounded(rss, 1),
        "max_backlog": run.max_backlog,
        "ordering_violations": run.violations,
        "lost_events": lost,
        "cpu_ms_per_frame": rounded(cpu_ms, 3),
        "hand_loop_cpu_ms": rounded(hand_cpu_ms, 3),
        "hashed_frames": hashed_frames,
        "hashed_fps": rounded(hashed_fps, 1),
        "hashed_drain_ms_p50": rounded(hashed_p50, 3),
        "hashed_drain_ms_p99": rounded(hashed_p99, 3),
        "hashed_cpu_ms_per_frame": rounded(hashed_cpu_ms, 3),
        "hashed_ordering_violations": hashed.violations,
        "hashed_lost_events": hashed_lost,
    });
    println!("{}", result_line(&result));
    let ok = stage_violations == 0
        && stage_lost == 0
        && hand_ok_before
        && hand_ok_after
        && run.violations == 0
        && lost == 0
        && duplicated == 0
        && hashed.violations == 0
        && hashed_lost == 0
        && hashed_duplicated == 0
        && small_bad == 0;
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("million_objects: a correctness check failed");
        ExitCode::FAILURE
    }
}
