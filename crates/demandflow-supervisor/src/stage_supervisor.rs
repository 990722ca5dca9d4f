//! Restarting stages: OTP's supervisor strategies for demandflow pipelines.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use demandflow_core::{Reason, StageId};
use demandflow_runtime::registry::{
    self, ChildEntry as RegistryChild, Entry, EntryKind, Observed, Registration,
};
use demandflow_runtime::{DrainReport, Pipeline, StageHandle, catch_panic};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::error::error_chain;
use crate::intensity::{Intensity, IntensityLimit, intensity_setters};
use crate::{BuildError, StartChildError};

/// Which children restart when one fails (OTP's strategies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Only the failed child restarts.
    OneForOne,
    /// The failed child and every child started after it restart, in order: the
    /// strategy for pipelines, where later stages subscribe to earlier ones.
    RestForOne,
    /// Every child restarts.
    OneForAll,
}

/// When a child is restarted after it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Restart {
    /// Always, whatever the reason.
    Permanent,
    /// Only after an abnormal stop (a panic or an error), not after a normal end
    /// such as a finite source running out. The default.
    #[default]
    Transient,
    /// Never.
    Temporary,
}

impl Restart {
    fn applies(self, reason: &Reason) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => !reason.is_normal(),
            Restart::Temporary => false,
        }
    }
}

/// The current handles of a supervisor's children, by name, as factories and
/// [`Supervisor::child`] see them.
#[derive(Clone, Default)]
pub struct Children {
    entries: Arc<Vec<ChildEntry>>,
}

/// A running child's name and its handle, as its factory returned it.
type ChildEntry = (Arc<str>, Arc<dyn Any + Send + Sync>);

impl Children {
    /// The running child `name`, as the handle type its factory returned.
    ///
    /// `None` when no such child is running or it has another handle type.
    pub fn get<H: Clone + 'static>(&self, name: &str) -> Option<H> {
        self.entries
            .iter()
            .find(|(n, _)| &**n == name)
            .and_then(|(_, h)| h.downcast_ref::<H>().cloned())
    }

    /// Names of the running children, in start order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| &**n)
    }
}

impl fmt::Debug for Children {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

struct Started {
    handle: StageHandle,
    typed: Arc<dyn Any + Send + Sync>,
}

type StartFuture = Pin<Box<dyn Future<Output = Result<Started, BoxError>> + Send>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Factory = Box<dyn Fn(Children) -> StartFuture + Send + Sync>;

struct Spec {
    name: Arc<str>,
    restart: Restart,
    factory: Factory,
}

/// Configures a [`Supervisor`]: its strategy, restart intensity and children.
///
/// | option | default |
/// |---|---|
/// | [`max_restarts`](Self::max_restarts) | 3 |
/// | [`max_seconds`](Self::max_seconds) | 5 s |
#[must_use = "a builder does nothing until `start` is called"]
pub struct SupervisorBuilder {
    name: Option<String>,
    strategy: Strategy,
    intensity: IntensityLimit,
    specs: Vec<Spec>,
}

impl SupervisorBuilder {
    /// A supervisor with `strategy` and no children yet.
    pub fn new(strategy: Strategy) -> Self {
        SupervisorBuilder {
            name: None,
            strategy,
            intensity: IntensityLimit::default(),
            specs: Vec::new(),
        }
    }

    intensity_setters!();

    /// Names the supervisor in the [registry](demandflow_runtime::registry)
    /// (default: `supervisor-ID`). Name each child's stage after the child so
    /// that a dashboard can show the child's restarts on the stage.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a child, started after the children added before it.
    ///
    /// `factory` starts the stage and makes its subscriptions; it gets the
    /// handles of the children already running (see [`Children::get`]), so a
    /// restarted stage subscribes to the current instances of its producers. It
    /// runs again at every restart.
    pub fn child<H, E, F, Fut>(mut self, name: &str, restart: Restart, factory: F) -> Self
    where
        F: Fn(Children) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<H, E>> + Send + 'static,
        H: Clone + Into<StageHandle> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        let factory: Factory = Box::new(move |children| {
            let started = factory(children);
            Box::pin(async move {
                match started.await {
                    Ok(handle) => Ok(Started {
                        typed: Arc::new(handle.clone()),
                        handle: handle.into(),
                    }),
                    Err(e) => Err(e.into()),
                }
            })
        });
        self.specs.push(Spec {
            name: name.into(),
            restart,
            factory,
        });
        self
    }

    /// Starts every child in order, then supervises them on a spawned task.
    ///
    /// # Errors
    ///
    /// [`BuildError::Start`] with a [`ConfigError::Zero`](demandflow_core::ConfigError::Zero)
    /// when `max_seconds` is zero, and
    /// [`BuildError::Child`] when two children share a name or a factory fails
    /// (returns an error or panics; the children already started are stopped).
    pub async fn start(self) -> Result<Supervisor, BuildError> {
        self.intensity.check()?;
        for (i, spec) in self.specs.iter().enumerate() {
            if self.specs[..i].iter().any(|s| s.name == spec.name) {
                return Err(BuildError::Child(StartChildError::DuplicateName {
                    child: spec.name.to_string(),
                }));
            }
        }
        let (exits_tx, exits) = mpsc::unbounded_channel();
        let (cmd_tx, cmds) = mpsc::unbounded_channel();
        let (exit_tx, exit_rx) = watch::channel(None);
        let id = StageId::next();
        let shared = Arc::new(Shared {
            id,
            name: self
                .name
                .unwrap_or_else(|| format!("supervisor-{}", id.as_u64())),
            children: Mutex::new(Children::default()),
            restarts: AtomicU64::new(0),
            idle: watch::Sender::new(self.specs.is_empty()),
            child_restarts: self
                .specs
                .iter()
                .map(|s| (s.name.clone(), AtomicU64::new(0)))
                .collect(),
        });
        let observed: Arc<dyn Observed> = shared.clone();
        let registration = registry::register(&observed);
        let mut task = SupervisorTask {
            strategy: self.strategy,
            slots: self
                .specs
                .into_iter()
                .map(|spec| Slot {
                    spec,
                    generation: 0,
                    running: None,
                })
                .collect(),
            intensity: self.intensity.window(),
            restarting: false,
            exits_tx,
            exits,
            cmds,
            shared: shared.clone(),
            _registration: registration,
        };
        for i in 0..task.slots.len() {
            if let Err(failure) = task.start_child(i).await {
                task.stop_all().await;
                return Err(BuildError::Child(
                    failure.into_error(&task.slots[i].spec.name),
                ));
            }
        }
        tokio::spawn(async move {
            // The supervisor's own code runs user code (the factories) and must
            // never end without saying why: a panic here is its exit reason.
            let reason = match catch_panic(task.run()).await {
                Ok(reason) => reason,
                Err(message) => {
                    tracing::error!(%message, "supervisor panicked; stopping its children");
                    if let Err(again) = catch_panic(task.stop_all()).await {
                        tracing::error!(message = %again, "supervisor panicked again while stopping its children");
                    }
                    Reason::Panic(message.into())
                }
            };
            let _ = exit_tx.send(Some(reason));
        });
        Ok(Supervisor {
            handle: Arc::new(Handle {
                cmd: cmd_tx,
                exit: exit_rx,
                shared,
            }),
        })
    }
}

struct Shared {
    id: StageId,
    name: String,
    children: Mutex<Children>,
    restarts: AtomicU64,
    /// `true` when no child is running and none is being restarted.
    idle: watch::Sender<bool>,
    /// Restarts of each child, in the order they were added.
    child_restarts: Vec<(Arc<str>, AtomicU64)>,
}

impl Observed for Shared {
    fn entry(&self) -> Entry {
        let mut entry = Entry::new(self.id, EntryKind::Supervisor, &*self.name);
        entry.restarts = Some(self.restarts.load(Ordering::Relaxed));
        entry.children = self
            .child_restarts
            .iter()
            .map(|(name, n)| RegistryChild::new(&**name, n.load(Ordering::Relaxed)))
            .collect();
        entry
    }
}

struct Handle {
    cmd: mpsc::UnboundedSender<Command>,
    exit: watch::Receiver<Option<Reason>>,
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.cmd.send(Command::Stop(Reason::Shutdown));
    }
}

enum Command {
    Stop(Reason),
    Drain(Duration, oneshot::Sender<DrainReport>),
}

/// A running supervisor. Cheap to clone; when the last clone is dropped the
/// supervisor stops its children and exits.
///
/// # What a crash loses
///
/// When a stage crashes, the events inside it are lost: those it had received
/// and not yet handled, the batch it was handling, and events it had emitted
/// but not yet dispatched. Events still in its producers' buffers are not lost:
/// its producers keep them until the restarted stage subscribes and asks again.
/// Under [`Strategy::RestForOne`] the stages after it are stopped with
/// [`Reason::Shutdown`] before they restart; a stop is queued behind the events
/// a stage has already received, so a consumer whose subscription is
/// [`Temporary`](demandflow_core::CancelMode::Temporary) handles everything
/// delivered to it before it restarts. (With a permanent subscription it stops
/// at once when its producer crashes, and what was in its mailbox is lost too.)
#[derive(Clone)]
pub struct Supervisor {
    handle: Arc<Handle>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("children", &*self.handle.shared.children.lock())
            .field("restarts", &self.restarts())
            .finish()
    }
}

impl Supervisor {
    /// Starts configuring a supervisor.
    pub fn builder(strategy: Strategy) -> SupervisorBuilder {
        SupervisorBuilder::new(strategy)
    }

    /// The running instance of child `name`, as the handle type its factory returned.
    pub fn child<H: Clone + 'static>(&self, name: &str) -> Option<H> {
        self.handle.shared.children.lock().get(name)
    }

    /// The running children.
    pub fn children(&self) -> Children {
        self.handle.shared.children.lock().clone()
    }

    /// The supervisor's id in the [registry](demandflow_runtime::registry).
    pub fn id(&self) -> StageId {
        self.handle.shared.id
    }

    /// How many restarts the supervisor has made.
    pub fn restarts(&self) -> u64 {
        self.handle.shared.restarts.load(Ordering::Relaxed)
    }

    /// Stops the children (last started first) and the supervisor, and waits.
    pub async fn stop(&self, reason: Reason) -> Reason {
        let _ = self.handle.cmd.send(Command::Stop(reason));
        self.wait().await
    }

    /// Drains the children as a [`Pipeline`] in start order, without restarting
    /// any, then stops the supervisor.
    ///
    /// # Errors
    ///
    /// `None` when the supervisor had already stopped.
    pub async fn drain(&self, deadline: Duration) -> Option<DrainReport> {
        let (tx, rx) = oneshot::channel();
        self.handle.cmd.send(Command::Drain(deadline, tx)).ok()?;
        rx.await.ok()
    }

    /// Waits until no child is running and none is being restarted: every
    /// child has stopped and its restart policy did not apply (a transient
    /// child that ended normally, say), or the supervisor has stopped.
    ///
    /// Unlike watching [`children`](Self::children), this does not return in
    /// the middle of a restart, when the old children have stopped and the
    /// new ones are not started yet. The supervisor itself keeps running.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_children(&self) {
        let mut idle = self.handle.shared.idle.subscribe();
        tokio::select! {
            _ = idle.wait_for(|idle| *idle) => {}
            _ = self.wait() => {}
        }
    }

    /// Waits until the supervisor stops and returns why.
    ///
    /// The reason is abnormal when the supervisor failed: it gave up after too
    /// many restarts, a child could not be restarted (its factory returned an
    /// error, or panicked: [`Reason::Panic`] with the panic's message), or its
    /// task was dropped before it could say why (the runtime shut down).
    pub async fn wait(&self) -> Reason {
        let mut exit = self.handle.exit.clone();
        let reason = exit
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone());
        reason.unwrap_or_else(|| Reason::error("the supervisor's task ended without a reason"))
    }

    /// The exit reason, once the supervisor has stopped.
    pub fn exit_reason(&self) -> Option<Reason> {
        self.handle.exit.borrow().clone()
    }
}

struct Slot {
    spec: Spec,
    /// Bumped at every start and deliberate stop, so exits of old instances are ignored.
    generation: u64,
    running: Option<Started>,
}

/// Why a child could not be started.
enum ChildFailure {
    /// Its factory returned this error.
    Failed(BoxError),
    /// Its factory panicked, with this message.
    Panicked(String),
}

impl ChildFailure {
    fn into_error(self, child: &str) -> StartChildError {
        let child = child.to_owned();
        match self {
            ChildFailure::Failed(source) => StartChildError::Failed {
                child,
                source: source.into(),
            },
            ChildFailure::Panicked(message) => StartChildError::Panicked { child, message },
        }
    }
}

struct SupervisorTask {
    strategy: Strategy,
    slots: Vec<Slot>,
    /// Between the stop of the children a restart replaces and the start of
    /// the last new one.
    restarting: bool,
    intensity: Intensity,
    exits_tx: mpsc::UnboundedSender<(usize, u64, Reason)>,
    exits: mpsc::UnboundedReceiver<(usize, u64, Reason)>,
    cmds: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
    /// Lists the supervisor in the registry while it runs.
    _registration: Registration,
}

impl SupervisorTask {
    async fn run(&mut self) -> Reason {
        loop {
            tokio::select! {
                Some((i, generation, reason)) = self.exits.recv() => {
                    if let Err(reason) = self.on_exit(i, generation, reason).await {
                        self.stop_all().await;
                        return reason;
                    }
                }
                command = self.cmds.recv() => match command {
                    Some(Command::Drain(deadline, reply)) => {
                        let mut pipeline = Pipeline::new();
                        for slot in &self.slots {
                            if let Some(running) = &slot.running {
                                pipeline.add(running.handle.clone());
                            }
                        }
                        let report = pipeline.drain(deadline).await;
                        let _ = reply.send(report);
                        self.stop_all().await;
                        return Reason::Shutdown;
                    }
                    Some(Command::Stop(reason)) => {
                        self.stop_all().await;
                        return reason;
                    }
                    None => {
                        self.stop_all().await;
                        return Reason::Shutdown;
                    }
                },
            }
        }
    }

    /// Whether an exit report of child `i`'s instance `generation` is about
    /// the instance running now.
    fn is_current(&self, i: usize, generation: u64) -> bool {
        let slot = &self.slots[i];
        slot.generation == generation && slot.running.is_some()
    }

    /// The first child before `i` that has stopped while the supervisor has
    /// not heard of it yet, and why it stopped.
    fn stopped_before(&self, i: usize) -> Option<(usize, u64, Reason)> {
        self.slots[..i].iter().enumerate().find_map(|(k, slot)| {
            let reason = slot.running.as_ref()?.handle.exit_reason()?;
            Some((k, slot.generation, reason))
        })
    }

    /// Restarts per the strategy; `Err` when the supervisor must stop.
    async fn on_exit(&mut self, i: usize, generation: u64, reason: Reason) -> Result<(), Reason> {
        if !self.is_current(i, generation) {
            return Ok(());
        }
        // Exits are heard in the order their watchers report them, not the
        // order they happened: a consumer that stopped because its producer
        // did (a permanent subscription) can be heard first. Restarting it
        // then would hand its factory the stopped producer. A stage publishes
        // its exit before its consumers hear of it, so an earlier child whose
        // exit caused this one has stopped by now: handle its exit first (its
        // own report comes later and is ignored). Under rest for one or one
        // for all that restart includes this child, whose report is then stale.
        if let Some((k, k_generation, k_reason)) = self.stopped_before(i) {
            Box::pin(self.on_exit(k, k_generation, k_reason)).await?;
            if !self.is_current(i, generation) {
                return Ok(());
            }
        }
        let slot = &mut self.slots[i];
        slot.running = None;
        let name = self.slots[i].spec.name.clone();
        if !self.slots[i].spec.restart.applies(&reason) {
            self.publish();
            tracing::debug!(child = &*name, %reason, "child stopped; not restarted");
            return Ok(());
        }
        if !self.intensity.add(Instant::now()) {
            self.publish();
            tracing::error!(child = &*name, %reason, "restart intensity exceeded; supervisor stops");
            return Err(Reason::error(format!(
                "child {name:?} needed {} (last exit: {reason})",
                self.intensity.limit()
            )));
        }
        tracing::warn!(child = &*name, %reason, strategy = ?self.strategy, "restarting");
        // Published with the crashed child gone, so that nobody watching the
        // children takes the gap before the new ones start for the end.
        self.restarting = true;
        self.publish();
        let range = match self.strategy {
            Strategy::OneForOne => i..i + 1,
            Strategy::RestForOne => i..self.slots.len(),
            Strategy::OneForAll => 0..self.slots.len(),
        };
        for j in range.clone().rev() {
            self.stop_child(j).await;
        }
        self.shared.restarts.fetch_add(1, Ordering::Relaxed);
        for j in range.clone() {
            self.shared.child_restarts[j]
                .1
                .fetch_add(1, Ordering::Relaxed);
        }
        for j in range {
            if let Err(failure) = self.start_child(j).await {
                // An earlier child stopped while this restart ran and the
                // factory found it stopped: restart from that child, which
                // starts this one again, rather than fail.
                if self.strategy != Strategy::OneForOne
                    && let Some((k, k_generation, k_reason)) = self.stopped_before(j)
                    && self.slots[k].spec.restart.applies(&k_reason)
                {
                    return Box::pin(self.on_exit(k, k_generation, k_reason)).await;
                }
                self.restarting = false;
                let child = &*self.slots[j].spec.name;
                tracing::error!(child, "child could not be restarted; supervisor stops");
                return Err(match failure {
                    ChildFailure::Panicked(message) => Reason::Panic(message.into()),
                    failed => Reason::error(error_chain(&failed.into_error(child))),
                });
            }
        }
        self.restarting = false;
        self.publish();
        Ok(())
    }

    /// Runs child `i`'s factory, catching a panic in it (when it is called or
    /// while its future runs), and watches the stage it started.
    async fn start_child(&mut self, i: usize) -> Result<(), ChildFailure> {
        let children = self.shared.children.lock().clone();
        let factory = &self.slots[i].spec.factory;
        let started = match catch_panic(async { factory(children).await }).await {
            Ok(Ok(started)) => started,
            Ok(Err(error)) => return Err(ChildFailure::Failed(error)),
            Err(message) => return Err(ChildFailure::Panicked(message)),
        };
        let slot = &mut self.slots[i];
        slot.generation += 1;
        let monitor = started.handle.monitor();
        let (generation, exits) = (slot.generation, self.exits_tx.clone());
        tokio::spawn(async move {
            let reason = monitor.wait().await;
            let _ = exits.send((i, generation, reason));
        });
        slot.running = Some(started);
        self.publish();
        Ok(())
    }

    async fn stop_child(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.generation += 1;
        if let Some(running) = slot.running.take() {
            let _ = running.handle.stop(Reason::Shutdown).await;
        }
        self.publish();
    }

    async fn stop_all(&mut self) {
        for i in (0..self.slots.len()).rev() {
            self.stop_child(i).await;
        }
    }

    fn publish(&self) {
        let entries = self
            .slots
            .iter()
            .filter_map(|s| {
                s.running
                    .as_ref()
                    .map(|r| (s.spec.name.clone(), r.typed.clone()))
            })
            .collect();
        *self.shared.children.lock() = Children {
            entries: Arc::new(entries),
        };
        let idle = !self.restarting && self.slots.iter().all(|s| s.running.is_none());
        self.shared.idle.send_replace(idle);
    }
}
