//! Draining a whole pipeline: stop taking input, deliver what is in flight, stop.

use std::time::Duration;

use demandflow_core::{Reason, StageId};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::StageHandle;

/// How long a stage that missed the deadline gets to answer a stop.
const STOP_GRACE: Duration = Duration::from_millis(100);

/// The stages of one pipeline, for draining them together.
///
/// Add stages in pipeline order, sources first: the report lists them in that
/// order and the deadline is shared.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use demandflow_runtime::{consumer, from_iter, producer, Consumer, ConsumerContext, Pipeline, SubscribeOptions, SubscriptionId};
///
/// struct Count(u64);
/// impl Consumer for Count {
///     type Event = u64;
///     async fn handle_events(&mut self, e: Vec<u64>, _: SubscriptionId, _: &mut ConsumerContext) {
///         self.0 += e.len() as u64;
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let source = producer(from_iter(0..u64::MAX)).start().unwrap();
/// let sink = consumer(Count(0)).start().unwrap();
/// sink.subscribe_to(&source, SubscribeOptions::new()).await.unwrap();
///
/// let pipeline = Pipeline::new().with(&source).with(&sink);
/// let report = pipeline.drain(Duration::from_secs(5)).await;
/// assert!(report.is_complete());
/// assert!(!source.is_running() && !sink.is_running());
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    stages: Vec<StageHandle>,
}

/// What happened to each stage of a drained pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Time from the start of the drain to the end of the last stage.
    pub elapsed: Duration,
    /// One entry per stage, in pipeline order.
    pub stages: Vec<StageDrain>,
}

/// One stage in a [`DrainReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageDrain {
    /// The stage's id.
    pub id: StageId,
    /// The stage's name.
    pub name: String,
    /// How it ended.
    pub outcome: DrainOutcome,
}

/// How one stage ended during a drain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainOutcome {
    /// It had stopped before the drain began.
    AlreadyStopped(Reason),
    /// It delivered everything and stopped within the deadline.
    Drained(Reason),
    /// It missed the deadline and was stopped holding these events, which are lost.
    Stopped {
        /// Events in its buffer and dispatcher.
        buffered: usize,
        /// Events received and not yet handled.
        queued: usize,
    },
    /// It missed the deadline and did not answer a stop either: a callback is
    /// blocked. It is still running.
    Stuck,
}

impl Pipeline {
    /// An empty pipeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a stage (builder style).
    #[must_use]
    pub fn with(mut self, stage: impl Into<StageHandle>) -> Self {
        self.stages.push(stage.into());
        self
    }

    /// Adds a stage.
    pub fn add(&mut self, stage: impl Into<StageHandle>) -> &mut Self {
        self.stages.push(stage.into());
        self
    }

    /// The stages, in the order they were added.
    pub fn stages(&self) -> &[StageHandle] {
        &self.stages
    }

    /// Drains the pipeline: every producer stops taking new input, events in
    /// flight flow through every stage, and each stage stops once its producers
    /// are gone. Stages still running at `deadline` are stopped, and the report
    /// says what each held.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future leaves stages draining.
    pub async fn drain(&self, deadline: Duration) -> DrainReport {
        let start = Instant::now();
        let until = start + deadline;
        let before: Vec<Option<Reason>> = self.stages.iter().map(|s| s.exit_reason()).collect();
        for stage in &self.stages {
            let _ = stage.drain();
        }
        let mut report = Vec::with_capacity(self.stages.len());
        for (stage, before) in self.stages.iter().zip(before) {
            let outcome = match before {
                Some(reason) => DrainOutcome::AlreadyStopped(reason),
                None => match timeout_at(until, stage.wait()).await {
                    Ok(reason) => DrainOutcome::Drained(reason),
                    Err(_) => stop_late(stage).await,
                },
            };
            if !matches!(
                outcome,
                DrainOutcome::Drained(_) | DrainOutcome::AlreadyStopped(_)
            ) {
                tracing::warn!(
                    stage = stage.name(),
                    ?outcome,
                    "stage did not drain in time"
                );
            }
            report.push(StageDrain {
                id: stage.id(),
                name: stage.name().to_owned(),
                outcome,
            });
        }
        DrainReport {
            elapsed: start.elapsed(),
            stages: report,
        }
    }

    /// Drains the pipeline when `token` is cancelled (for example together with an
    /// HTTP server's graceful shutdown), on a spawned task.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn drain_on(
        self,
        token: CancellationToken,
        deadline: Duration,
    ) -> tokio::task::JoinHandle<DrainReport> {
        tokio::spawn(async move {
            token.cancelled().await;
            self.drain(deadline).await
        })
    }
}

async fn stop_late(stage: &StageHandle) -> DrainOutcome {
    let stats = timeout(STOP_GRACE, stage.stats()).await;
    let _ = stage
        .control
        .control(crate::port::Control::Stop(Reason::Shutdown));
    if timeout(STOP_GRACE, stage.wait()).await.is_err() {
        return DrainOutcome::Stuck;
    }
    match stats {
        Ok(Ok(stats)) => DrainOutcome::Stopped {
            buffered: stats.buffered,
            queued: stats.queued_in,
        },
        _ => DrainOutcome::Stuck,
    }
}

impl DrainReport {
    /// `true` when every stage drained (or had already stopped).
    pub fn is_complete(&self) -> bool {
        self.stages.iter().all(|s| {
            matches!(
                s.outcome,
                DrainOutcome::Drained(_) | DrainOutcome::AlreadyStopped(_)
            )
        })
    }

    /// Events lost by stages stopped at the deadline.
    pub fn undrained_events(&self) -> usize {
        self.stages
            .iter()
            .map(|s| match s.outcome {
                DrainOutcome::Stopped { buffered, queued } => buffered + queued,
                _ => 0,
            })
            .sum()
    }
}
