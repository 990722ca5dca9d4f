//! Restarting stages: OTP's supervisor strategies for demandflow pipelines.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use demandflow_core::Reason;
use demandflow_runtime::{DrainReport, Pipeline, StageHandle};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::intensity::Intensity;

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

/// A child could not be started (its factory returned an error), or the
/// supervisor's configuration is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("child {child:?} failed to start: {message}")]
pub struct StartChildError {
    /// The child's name.
    pub child: String,
    /// What its factory reported.
    pub message: String,
}

struct Started {
    handle: StageHandle,
    typed: Arc<dyn Any + Send + Sync>,
}

type StartFuture = Pin<Box<dyn Future<Output = Result<Started, String>> + Send>>;
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
/// | `max_restarts` | 3 |
/// | `max_seconds` | 5 s |
#[must_use = "a builder does nothing until `start` is called"]
pub struct SupervisorBuilder {
    strategy: Strategy,
    max_restarts: usize,
    max_seconds: Duration,
    specs: Vec<Spec>,
}

impl SupervisorBuilder {
    /// A supervisor with `strategy` and no children yet.
    pub fn new(strategy: Strategy) -> Self {
        SupervisorBuilder {
            strategy,
            max_restarts: 3,
            max_seconds: Duration::from_secs(5),
            specs: Vec::new(),
        }
    }

    /// More than `max_restarts` restarts within [`max_seconds`](Self::max_seconds)
    /// stops the supervisor and all its children.
    pub fn max_restarts(mut self, max_restarts: usize) -> Self {
        self.max_restarts = max_restarts;
        self
    }

    /// The window restart intensity is measured over.
    pub fn max_seconds(mut self, window: Duration) -> Self {
        self.max_seconds = window;
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
        E: fmt::Display,
    {
        let factory: Factory = Box::new(move |children| {
            let started = factory(children);
            Box::pin(async move {
                match started.await {
                    Ok(handle) => Ok(Started {
                        typed: Arc::new(handle.clone()),
                        handle: handle.into(),
                    }),
                    Err(e) => Err(e.to_string()),
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
    /// A [`StartChildError`] when a factory fails (the children already started
    /// are stopped) or two children share a name.
    pub async fn start(self) -> Result<Supervisor, StartChildError> {
        for (i, spec) in self.specs.iter().enumerate() {
            if self.specs[..i].iter().any(|s| s.name == spec.name) {
                return Err(StartChildError {
                    child: spec.name.to_string(),
                    message: "another child has the same name".into(),
                });
            }
        }
        let (exits_tx, exits) = mpsc::unbounded_channel();
        let (cmd_tx, cmds) = mpsc::unbounded_channel();
        let (exit_tx, exit_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            children: Mutex::new(Children::default()),
            restarts: AtomicU64::new(0),
        });
        let mut task = SupervisorTask {
            strategy: self.strategy,
            max_restarts: self.max_restarts,
            max_seconds: self.max_seconds,
            slots: self
                .specs
                .into_iter()
                .map(|spec| Slot {
                    spec,
                    generation: 0,
                    running: None,
                })
                .collect(),
            intensity: Intensity::new(self.max_restarts, self.max_seconds),
            exits_tx,
            exits,
            cmds,
            shared: shared.clone(),
        };
        for i in 0..task.slots.len() {
            if let Err(error) = task.start_child(i).await {
                task.stop_all().await;
                return Err(error);
            }
        }
        tokio::spawn(async move {
            let reason = task.run().await;
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
    children: Mutex<Children>,
    restarts: AtomicU64,
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

    /// Waits until the supervisor stops and returns why.
    pub async fn wait(&self) -> Reason {
        let mut exit = self.handle.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or(Reason::Shutdown),
            Err(_) => Reason::Shutdown,
        }
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

struct SupervisorTask {
    strategy: Strategy,
    max_restarts: usize,
    max_seconds: Duration,
    slots: Vec<Slot>,
    intensity: Intensity,
    exits_tx: mpsc::UnboundedSender<(usize, u64, Reason)>,
    exits: mpsc::UnboundedReceiver<(usize, u64, Reason)>,
    cmds: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
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

    /// Restarts per the strategy; `Err` when the supervisor must stop.
    async fn on_exit(&mut self, i: usize, generation: u64, reason: Reason) -> Result<(), Reason> {
        let slot = &mut self.slots[i];
        if slot.generation != generation || slot.running.is_none() {
            return Ok(());
        }
        slot.running = None;
        self.publish();
        let name = self.slots[i].spec.name.clone();
        if !self.slots[i].spec.restart.applies(&reason) {
            tracing::debug!(child = &*name, %reason, "child stopped; not restarted");
            return Ok(());
        }
        if !self.intensity.add(Instant::now()) {
            tracing::error!(child = &*name, %reason, "restart intensity exceeded; supervisor stops");
            return Err(Reason::error(format!(
                "child {name:?} needed more than {} restarts in {:?} (last exit: {reason})",
                self.max_restarts, self.max_seconds
            )));
        }
        tracing::warn!(child = &*name, %reason, strategy = ?self.strategy, "restarting");
        let range = match self.strategy {
            Strategy::OneForOne => i..i + 1,
            Strategy::RestForOne => i..self.slots.len(),
            Strategy::OneForAll => 0..self.slots.len(),
        };
        for j in range.clone().rev() {
            self.stop_child(j).await;
        }
        self.shared.restarts.fetch_add(1, Ordering::Relaxed);
        for j in range {
            self.start_child(j)
                .await
                .map_err(|e| Reason::error(e.to_string()))?;
        }
        Ok(())
    }

    async fn start_child(&mut self, i: usize) -> Result<(), StartChildError> {
        let children = self.shared.children.lock().clone();
        let started = (self.slots[i].spec.factory)(children)
            .await
            .map_err(|message| StartChildError {
                child: self.slots[i].spec.name.to_string(),
                message,
            })?;
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
    }
}
