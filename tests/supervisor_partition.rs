//! The partition supervisor: routing by key, casts and calls, restarts that keep
//! the mailbox, the restart limit, back-pressure and stopping.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use demandflow::supervisor::{BuildError, CallError, PartitionSupervisor, PartitionWorker};
use demandflow::{
    ConfigError, Hashed, Key, Reason, SendError, StartError, TrySendError, key_partition,
};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

/// Yields until `cond` holds (no clock involved).
/// `count` partitions.
fn n(count: usize) -> NonZeroUsize {
    NonZeroUsize::new(count).expect("at least one partition")
}

async fn settle(mut cond: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never became true");
}

/// Answers every message with its partition index.
struct Echo(usize);

impl PartitionWorker for Echo {
    type Message = ();
    type Reply = usize;

    async fn handle(&mut self, (): ()) -> usize {
        self.0
    }
}

#[tokio::test]
async fn integer_keys_go_to_key_mod_n_and_strings_through_key_partition() {
    let started = Arc::new(Mutex::new(Vec::new()));
    let s = started.clone();
    let echo = PartitionSupervisor::start(n(4), move |partition| {
        s.lock().push(partition);
        Echo(partition)
    })
    .unwrap();
    for key in 0..12_u64 {
        assert_eq!(echo.call(key, ()).await.unwrap(), (key % 4) as usize);
    }
    assert_eq!(echo.call(-3_i64, ()).await.unwrap(), 1);
    assert_eq!(echo.call(u128::MAX, ()).await.unwrap(), 3);
    assert_eq!(
        echo.call("user-17", ()).await.unwrap(),
        key_partition("user-17", 4)
    );
    assert_eq!(
        echo.call(String::from("user-17"), ()).await.unwrap(),
        key_partition("user-17", 4)
    );
    assert_eq!(
        echo.call(Hashed((3, 'x')), ()).await.unwrap(),
        key_partition(&Hashed((3, 'x')), 4)
    );
    assert_eq!(echo.partition_of(&"user-17"), "user-17".partition(4));
    assert_eq!(echo.partitions(), 4);
    // Each partition's worker was made once, told its own index.
    let mut started = started.lock().clone();
    started.sort_unstable();
    assert_eq!(started, vec![0, 1, 2, 3]);
}

type JournalLog = Arc<Mutex<Vec<(usize, usize, &'static str)>>>;

/// Writes every note to a shared journal as (partition, incarnation, note);
/// panics on "boom". A call returns the worker's incarnation.
struct Journal {
    partition: usize,
    incarnation: usize,
    log: JournalLog,
}

impl PartitionWorker for Journal {
    type Message = &'static str;
    type Reply = usize;

    async fn handle(&mut self, note: &'static str) -> usize {
        assert_ne!(note, "boom", "partition {} hit a bomb", self.partition);
        self.log
            .lock()
            .push((self.partition, self.incarnation, note));
        self.incarnation
    }
}

/// A factory of journals that counts each partition's incarnations.
fn journals(
    partitions: usize,
) -> (
    impl Fn(usize) -> Journal + Send + Sync + 'static,
    JournalLog,
) {
    let log: JournalLog = Arc::default();
    let incarnations: Arc<Vec<AtomicUsize>> =
        Arc::new((0..partitions).map(|_| AtomicUsize::new(0)).collect());
    let l = log.clone();
    let factory = move |partition: usize| Journal {
        partition,
        incarnation: incarnations[partition].fetch_add(1, Ordering::SeqCst),
        log: l.clone(),
    };
    (factory, log)
}

#[tokio::test(start_paused = true)]
async fn a_panic_loses_only_the_message_being_handled_and_the_restarted_worker_gets_the_rest() {
    let (factory, log) = journals(2);
    let sup = PartitionSupervisor::start(n(2), factory).unwrap();
    for note in ["a", "boom", "b", "c"] {
        sup.cast(1_u64, note).await.unwrap();
    }
    assert_eq!(sup.call(1_u64, "d").await.unwrap(), 1);
    assert_eq!(
        *log.lock(),
        vec![(1, 0, "a"), (1, 1, "b"), (1, 1, "c"), (1, 1, "d")]
    );
    assert_eq!(sup.restarts(), 1);

    // A call that panics gets no reply; the partition comes back once more.
    assert_eq!(sup.call(1_u64, "boom").await, Err(CallError::NoReply));
    assert_eq!(sup.call(1_u64, "e").await.unwrap(), 2);
    // The other partition never restarted.
    assert_eq!(sup.call(0_u64, "f").await.unwrap(), 0);
    assert_eq!(sup.restarts(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_fourth_restart_within_five_seconds_stops_every_partition_with_a_clear_reason() {
    let (factory, log) = journals(2);
    let sup = PartitionSupervisor::start(n(2), factory).unwrap();
    for _ in 0..3 {
        sup.cast(0_u64, "boom").await.unwrap();
    }
    assert_eq!(sup.call(0_u64, "boom").await, Err(CallError::NoReply));
    assert_eq!(
        sup.wait().await,
        Reason::error(
            "partition supervisor reached its restart limit: more than 3 restarts within 5s"
        )
    );
    assert_eq!(sup.restarts(), 3);
    assert_eq!(sup.cast(1_u64, "late").await, Err(SendError("late")));
    assert_eq!(
        sup.call(1_u64, "late").await,
        Err(CallError::NotRunning("late"))
    );
    assert!(log.lock().is_empty());
}

#[tokio::test]
async fn a_factory_that_panics_is_retried_as_a_restart() {
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    let echo = PartitionSupervisor::start(n(2), move |partition| {
        if partition == 1 && t.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("partition 1 fails to start once");
        }
        Echo(partition)
    })
    .unwrap();
    assert_eq!(echo.call(1_u64, ()).await.unwrap(), 1);
    assert_eq!(tries.load(Ordering::SeqCst), 2);
    assert_eq!(echo.restarts(), 1);
}

/// Records each number once the test lets it through the gate.
struct Gated {
    gate: Arc<Semaphore>,
    started: Arc<AtomicUsize>,
    done: Arc<Mutex<Vec<u32>>>,
}

impl PartitionWorker for Gated {
    type Message = u32;
    type Reply = ();

    async fn handle(&mut self, n: u32) {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.unwrap().forget();
        self.done.lock().push(n);
    }
}

fn gated(capacity: usize) -> (PartitionSupervisor<u32>, Gated) {
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Mutex::new(Vec::new()));
    let probe = Gated {
        gate: gate.clone(),
        started: started.clone(),
        done: done.clone(),
    };
    let sup = PartitionSupervisor::builder(n(1), move |_| Gated {
        gate: gate.clone(),
        started: started.clone(),
        done: done.clone(),
    })
    .mailbox_capacity(capacity.try_into().unwrap())
    .start()
    .unwrap();
    (sup, probe)
}

#[tokio::test]
async fn a_full_mailbox_makes_cast_wait_and_try_cast_hand_the_message_back() {
    let (sup, probe) = gated(2);
    sup.cast(0_u64, 1).await.unwrap();
    settle(|| probe.started.load(Ordering::SeqCst) == 1).await;
    // 1 is being handled; 2 and 3 fill the mailbox.
    sup.try_cast(0_u64, 2).unwrap();
    sup.try_cast(0_u64, 3).unwrap();
    let full = sup.try_cast(0_u64, 4).unwrap_err();
    assert!(matches!(full, TrySendError::Full(4)));
    assert_eq!(full.into_inner(), 4);

    let waiting = tokio::spawn({
        let sup = sup.clone();
        async move { sup.cast(0_u64, 5).await }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished());

    probe.gate.add_permits(4);
    waiting.await.unwrap().unwrap();
    settle(|| probe.done.lock().len() == 4).await;
    assert_eq!(*probe.done.lock(), vec![1, 2, 3, 5]);
}

#[tokio::test]
async fn stop_refuses_new_messages_and_lets_queued_ones_finish() {
    let (sup, probe) = gated(8);
    for n in 1..=3 {
        sup.cast(0_u64, n).await.unwrap();
    }
    settle(|| probe.started.load(Ordering::SeqCst) == 1).await;
    let stopping = tokio::spawn({
        let sup = sup.clone();
        async move { sup.stop().await }
    });
    // Let the stopping task run up to its wait.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(matches!(
        sup.try_cast(0_u64, 4),
        Err(TrySendError::Closed(4))
    ));
    assert_eq!(sup.cast(0_u64, 5).await, Err(SendError(5)));
    assert!(sup.exit_reason().is_none());

    probe.gate.add_permits(3);
    assert_eq!(stopping.await.unwrap(), Reason::Shutdown);
    assert_eq!(*probe.done.lock(), vec![1, 2, 3]);
    assert_eq!(sup.exit_reason(), Some(Reason::Shutdown));
}

/// Sets its flag when dropped.
struct Flagged(Arc<AtomicBool>);

impl Drop for Flagged {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl PartitionWorker for Flagged {
    type Message = ();
    type Reply = ();

    async fn handle(&mut self, (): ()) {}
}

#[tokio::test]
async fn dropping_every_handle_ends_every_partition() {
    let flags: Arc<Vec<Arc<AtomicBool>>> = Arc::new((0..3).map(|_| Arc::default()).collect());
    let f = flags.clone();
    let sup = PartitionSupervisor::start(n(3), move |i| Flagged(f[i].clone())).unwrap();
    let other = sup.clone();
    for key in 0..3_u64 {
        sup.call(key, ()).await.unwrap();
    }
    drop(sup);
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(flags.iter().all(|f| !f.load(Ordering::SeqCst)));
    drop(other);
    settle(|| flags.iter().all(|f| f.load(Ordering::SeqCst))).await;
}

#[tokio::test]
async fn bad_options_are_build_errors() {
    let err = PartitionSupervisor::builder(n(2), Echo)
        .max_seconds(Duration::ZERO)
        .start()
        .unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::Start(StartError::Config(ConfigError::Zero {
                option: "max_seconds"
            }))
        ),
        "{err:?}"
    );
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let err = PartitionSupervisor::start(n(2), Echo).unwrap_err();
    assert!(
        matches!(err, BuildError::Start(StartError::NoRuntime)),
        "{err:?}"
    );
}
