//! A live topology dashboard for demandflow pipelines, served from inside the
//! process that runs them.
//!
//! [`start`] binds an address and serves, read-only:
//!
//! - `/`: a page (plain HTML, CSS and JavaScript shipped inside this crate)
//!   drawing every live stage as a node and every subscription as an edge
//!   annotated with its outstanding demand; each node shows its events per
//!   second, a sparkline of the last minute, its buffer's fill, what it dropped,
//!   its restarts (highlighted) and, for a keyed scheduler, each partition's
//!   backlog. It updates about once a second through server-sent events.
//! - `/api/snapshot`: the same figures as JSON.
//! - `/api/events`: the server-sent events stream the page listens to (one
//!   JSON snapshot per event).
//!
//! The figures come from the [`registry`]: name
//! your stages (`.name("parse")` on their builders) so the page can tell them
//! apart. A stage that ends and starts again under the same name (a supervised
//! child) is shown as restarted; name a supervisor's child stages after the
//! children so their restart counts show on them.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> std::io::Result<()> {
//! // ... start the pipeline, naming its stages ...
//! let dashboard = demandflow_dashboard::start(demandflow_dashboard::DEFAULT_ADDR).await?;
//! println!("dashboard on {}", dashboard.url());
//! # Ok(())
//! # }
//! ```
//!
//! The server binds where it is told: [`DEFAULT_ADDR`] is on the loopback
//! interface, so only this machine can see the page. It has no authentication
//! and changes nothing in the pipeline.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use demandflow_runtime::Peer;
use demandflow_runtime::registry::{self, Entry, EntryKind};
use futures_util::stream::{self, Stream};
use serde::Serialize;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where [`start`] is usually pointed: port 4040 on the loopback interface.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4040));

/// How often the figures are sampled unless [`Builder::period`] says otherwise.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(1);

/// Samples kept per stage for its sparkline.
const HISTORY: usize = 60;

/// The page, shipped inside the crate.
const PAGE: &str = include_str!("page.html");

/// Starts the dashboard on `addr` with the default options (see [`Builder`]).
///
/// # Errors
///
/// When the address cannot be bound.
///
/// # Panics
///
/// Outside a tokio runtime.
pub async fn start(addr: impl ToSocketAddrs) -> io::Result<Dashboard> {
    Builder::new().start(addr).await
}

/// For programs with a `--dashboard ADDR` option: takes the option out of
/// `args` (leaving the program's other options) and, when it was there, starts
/// the dashboard on `ADDR`. `Ok(None)` when there was no such option.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), String> {
/// let mut args: Vec<String> = std::env::args().skip(1).collect();
/// if let Some(dashboard) = demandflow_dashboard::start_from_args(&mut args).await? {
///     println!("dashboard on {}", dashboard.url());
/// }
/// // ... parse the rest of `args`, run the pipeline ...
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// A message for the user when the option has no value, the value is not a
/// socket address (like `127.0.0.1:4040`), or the address cannot be bound.
///
/// # Panics
///
/// Outside a tokio runtime.
pub async fn start_from_args(args: &mut Vec<String>) -> Result<Option<Dashboard>, String> {
    let Some(i) = args.iter().position(|a| a == "--dashboard") else {
        return Ok(None);
    };
    let Some(value) = args.get(i + 1).cloned() else {
        return Err("--dashboard needs an address like 127.0.0.1:4040".to_owned());
    };
    args.drain(i..i + 2);
    let addr: SocketAddr = value
        .parse()
        .map_err(|e| format!("--dashboard {value}: {e} (an address like 127.0.0.1:4040)"))?;
    start(addr)
        .await
        .map(Some)
        .map_err(|e| format!("--dashboard {addr}: {e}"))
}

/// Options of a dashboard.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct Builder {
    period: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// The default options.
    pub fn new() -> Self {
        Builder {
            period: DEFAULT_PERIOD,
        }
    }

    /// How often the registry is sampled and the page updated (default: one
    /// second; at least 50 ms).
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period.max(Duration::from_millis(50));
        self
    }

    /// Binds `addr` and serves the dashboard on the current tokio runtime until
    /// the returned [`Dashboard`] is stopped or dropped.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn start(self, addr: impl ToSocketAddrs) -> io::Result<Dashboard> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let mut sampler = Sampler::new(self.period);
        let (tx, rx) = watch::channel(Arc::new(sampler.sample().await));
        let sampling = tokio::spawn(async move {
            let mut tick = tokio::time::interval(sampler.period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let view = sampler.sample().await;
                if tx.send(Arc::new(view)).is_err() {
                    return;
                }
            }
        });
        let app = Router::new()
            .route("/", get(page))
            .route("/api/snapshot", get(snapshot))
            .route("/api/events", get(events))
            .with_state(rx);
        let serving = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the dashboard's server stopped");
            }
        });
        tracing::info!(addr = %local_addr, "dashboard serving");
        Ok(Dashboard {
            local_addr,
            tasks: [sampling, serving],
        })
    }
}

/// A running dashboard. Dropping it stops the server.
#[derive(Debug)]
pub struct Dashboard {
    local_addr: SocketAddr,
    tasks: [JoinHandle<()>; 2],
}

impl Dashboard {
    /// The address it listens on (with the port the system chose when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The page's address, like `http://127.0.0.1:4040/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.local_addr)
    }

    /// Stops the server (as dropping it does).
    pub fn stop(self) {}
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

type Views = watch::Receiver<Arc<View>>;

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

async fn snapshot(State(views): State<Views>) -> impl IntoResponse {
    let view = views.borrow().clone();
    axum::Json(View::clone(&view))
}

async fn events(
    State(mut views): State<Views>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // The current figures at once, then each new sample.
    views.mark_changed();
    let stream = stream::unfold(views, |mut views| async move {
        views.changed().await.ok()?;
        let view = views.borrow_and_update().clone();
        let event = Event::default().event("snapshot").json_data(&*view).ok()?;
        Some((Ok(event), views))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// What the page and `/api/snapshot` show: one sample of the registry.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    /// When the sample was taken, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The sampling period, in milliseconds.
    pub period_ms: u64,
    /// Samples taken so far.
    pub samples: u64,
    /// Every live stage, supervisor and keyed scheduler, by id.
    pub stages: Vec<StageView>,
}

/// One entry of a [`View`].
#[derive(Debug, Clone, Serialize)]
pub struct StageView {
    /// The registry id.
    pub id: u64,
    /// The name.
    pub name: String,
    /// `producer`, `producer_consumer`, `consumer`, `supervisor`,
    /// `partition_supervisor` or `keyed`.
    pub kind: &'static str,
    /// Events received.
    pub events_in: u64,
    /// Events delivered (handled, for a keyed scheduler).
    pub events_out: u64,
    /// Events dropped.
    pub events_dropped: u64,
    /// Events received per second over the last period.
    pub rate_in: f64,
    /// Events delivered per second over the last period.
    pub rate_out: f64,
    /// The stage's throughput: `rate_in` for a consumer, else `rate_out`.
    pub rate: f64,
    /// Events buffered.
    pub buffered: usize,
    /// The buffer's bound, when bounded.
    pub buffer_limit: Option<usize>,
    /// Events received and not yet handled.
    pub queued_in: usize,
    /// How many times a stage of this name was restarted: seen ending and
    /// starting again, or counted by its supervisor for a child of this name.
    pub restarts: u64,
    /// A supervisor's own restart count.
    pub supervisor_restarts: Option<u64>,
    /// A supervisor's children and their restarts.
    pub children: Vec<ChildView>,
    /// A keyed scheduler's partitions.
    pub partitions: Vec<PartitionView>,
    /// Subscriptions on both sides.
    pub subscriptions: Vec<SubscriptionView>,
    /// `rate` over the last minute of samples, oldest first.
    pub history: Vec<f64>,
}

/// A supervisor's child in a [`StageView`].
#[derive(Debug, Clone, Serialize)]
pub struct ChildView {
    /// The child's name.
    pub name: String,
    /// Its restarts.
    pub restarts: u64,
}

/// A partition in a [`StageView`].
#[derive(Debug, Clone, Serialize)]
pub struct PartitionView {
    /// Events queued.
    pub backlog: usize,
    /// Keys being handled.
    pub busy_keys: usize,
}

/// A subscription in a [`StageView`].
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionView {
    /// The subscription id.
    pub sub: u64,
    /// `producer` when the other stage is this one's producer, else `consumer`.
    pub peer: &'static str,
    /// The other stage's id.
    pub peer_id: u64,
    /// The other stage's name, when known.
    pub peer_name: Option<String>,
    /// Demand outstanding, when counted.
    pub pending_demand: Option<u64>,
    /// The cancel mode (consumer side only): `permanent`, `transient` or `temporary`.
    pub cancel: Option<String>,
}

/// What the sampler remembers of a name between samples.
struct Seen {
    id: u64,
    events_in: u64,
    events_out: u64,
    restarts_seen: u64,
    history: VecDeque<f64>,
    last_sample: u64,
}

struct Sampler {
    period: Duration,
    samples: u64,
    last: Option<Instant>,
    seen: BTreeMap<String, Seen>,
}

impl Sampler {
    fn new(period: Duration) -> Self {
        Sampler {
            period,
            samples: 0,
            last: None,
            seen: BTreeMap::new(),
        }
    }

    async fn sample(&mut self) -> View {
        registry::refresh().await;
        let entries = registry::snapshot();
        let now = Instant::now();
        let elapsed = self
            .last
            .map_or(self.period, |last| now.duration_since(last))
            .as_secs_f64()
            .max(1e-3);
        self.last = Some(now);
        self.samples += 1;
        // Restarts a supervisor counted, by child name.
        let mut supervised: BTreeMap<&str, u64> = BTreeMap::new();
        for e in &entries {
            for child in &e.children {
                *supervised.entry(child.name.as_str()).or_default() += child.restarts;
            }
        }
        let stages = entries
            .iter()
            .map(|e| self.view(e, elapsed, supervised.get(e.name.as_str()).copied()))
            .collect();
        // Forget names not seen for a minute.
        let samples = self.samples;
        self.seen
            .retain(|_, s| samples - s.last_sample < HISTORY as u64);
        View {
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            period_ms: self.period.as_millis() as u64,
            samples,
            stages,
        }
    }

    fn view(&mut self, e: &Entry, elapsed: f64, supervised: Option<u64>) -> StageView {
        let id = e.id.as_u64();
        let samples = self.samples;
        let seen = self.seen.entry(e.name.clone()).or_insert_with(|| Seen {
            id,
            events_in: 0,
            events_out: 0,
            restarts_seen: 0,
            history: VecDeque::new(),
            last_sample: samples,
        });
        if seen.id != id {
            // The same name under a new id: the stage ended and was started again.
            seen.id = id;
            seen.restarts_seen += 1;
            seen.events_in = 0;
            seen.events_out = 0;
        }
        let rate_in = e.events_in.saturating_sub(seen.events_in) as f64 / elapsed;
        let rate_out = e.events_out.saturating_sub(seen.events_out) as f64 / elapsed;
        let rate = if e.kind == EntryKind::Consumer {
            rate_in
        } else {
            rate_out
        };
        seen.events_in = e.events_in;
        seen.events_out = e.events_out;
        seen.last_sample = samples;
        if samples > 1 {
            if seen.history.len() == HISTORY {
                seen.history.pop_front();
            }
            seen.history.push_back(rate);
        }
        StageView {
            id,
            name: e.name.clone(),
            kind: e.kind.as_str(),
            events_in: e.events_in,
            events_out: e.events_out,
            events_dropped: e.events_dropped,
            rate_in,
            rate_out,
            rate,
            buffered: e.buffered,
            buffer_limit: e.buffer_limit,
            queued_in: e.queued_in,
            restarts: supervised.unwrap_or(0).max(seen.restarts_seen),
            supervisor_restarts: e.restarts,
            children: e
                .children
                .iter()
                .map(|c| ChildView {
                    name: c.name.clone(),
                    restarts: c.restarts,
                })
                .collect(),
            partitions: e
                .partitions
                .iter()
                .map(|p| PartitionView {
                    backlog: p.backlog,
                    busy_keys: p.busy_keys,
                })
                .collect(),
            subscriptions: e
                .subscriptions
                .iter()
                .map(|s| SubscriptionView {
                    sub: s.sub.as_u64(),
                    peer: match s.peer {
                        Peer::Producer => "producer",
                        Peer::Consumer => "consumer",
                    },
                    peer_id: s.peer_id.as_u64(),
                    peer_name: s.peer_name.clone(),
                    pending_demand: s.pending_demand,
                    cancel: s.cancel.map(|c| format!("{c:?}").to_lowercase()),
                })
                .collect(),
            history: seen.history.iter().copied().collect(),
        }
    }
}
