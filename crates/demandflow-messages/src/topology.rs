//! A running topology: its counters, the test helpers that push messages into
//! it, waiting for it to finish, draining and stopping it.

use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use demandflow_runtime::{DrainOutcome, DrainReport, ProducerRef};
use demandflow_supervisor::Supervisor;
use tokio_util::sync::CancellationToken;

use crate::ack::{AckRef, ChannelAcknowledger};
use crate::builder::TopologyBuilder;
use crate::handler::MessageHandler;
use crate::message::Message;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::rate::RateLimiter;
use crate::source::{Inbox, Pushed};
use crate::testing::TestAcks;

/// What every clone of a running topology shares.
pub(crate) struct Inner {
    pub(crate) name: Arc<str>,
    pub(crate) supervisor: Supervisor,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) limiter: Option<Arc<RateLimiter>>,
    /// Stage names of the source copies and of the processors.
    pub(crate) sources: Vec<String>,
    pub(crate) processors: Vec<String>,
    pub(crate) next_source: AtomicUsize,
    pub(crate) next_token: AtomicU64,
    pub(crate) abort: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Release handlers blocked in user code so the stages can stop.
        self.abort.cancel();
    }
}

/// A running topology of sources, processors, batchers and batch handlers.
///
/// Cheap to clone. When the last clone is dropped, the topology stops: the
/// messages inside are acknowledged as failed ([`Failure::Shutdown`](crate::Failure::Shutdown)
/// or [`Failure::Dropped`](crate::Failure::Dropped)). Use [`drain`](Self::drain)
/// to finish them instead.
pub struct Topology<T> {
    inner: Arc<Inner>,
    inboxes: Vec<Arc<Inbox<T>>>,
    _messages: PhantomData<fn(T)>,
}

impl<T> Clone for Topology<T> {
    fn clone(&self) -> Self {
        Topology {
            inner: self.inner.clone(),
            inboxes: self.inboxes.clone(),
            _messages: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Topology<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("name", &self.inner.name)
            .field("supervisor", &self.inner.supervisor)
            .finish_non_exhaustive()
    }
}

/// What [`Topology::drain`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopologyDrain {
    /// What happened to each stage, sources first (empty when the topology had
    /// already stopped).
    pub stages: Option<DrainReport>,
    /// Messages that could not be finished before the deadline; each was
    /// acknowledged as failed.
    pub unfinished: u64,
    /// The topology's counters once it stopped.
    pub metrics: MetricsSnapshot,
}

impl TopologyDrain {
    /// `true` when every stage drained in time and every message was finished.
    pub fn is_complete(&self) -> bool {
        self.unfinished == 0 && self.stages.as_ref().is_none_or(DrainReport::is_complete)
    }
}

/// The topology has stopped: nothing can be pushed into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("topology is not running")]
pub struct PushError;

impl<T> Topology<T> {
    pub(crate) fn new(inner: Inner, inboxes: Vec<Arc<Inbox<T>>>) -> Self {
        Topology {
            inner: Arc::new(inner),
            inboxes,
            _messages: PhantomData,
        }
    }
}

impl<T: Send + 'static> Topology<T> {
    /// Starts configuring a topology named `name` whose stages run `handler`.
    pub fn builder<H: MessageHandler<T>>(
        name: impl Into<Arc<str>>,
        handler: H,
    ) -> TopologyBuilder<T, H> {
        TopologyBuilder::new(name.into(), handler)
    }

    /// The topology's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// The shared rate limiter, when the topology has one; change its limit at
    /// run time with [`RateLimiter::set_limit`].
    pub fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.inner.limiter.as_deref()
    }

    /// Changes the rate limit; does nothing on a topology without one.
    pub fn set_rate_limit(&self, limit: NonZeroU64) {
        if let Some(limiter) = &self.inner.limiter {
            limiter.set_limit(limit);
        }
    }

    /// How many stages have been restarted.
    pub fn restarts(&self) -> u64 {
        self.inner.supervisor.restarts()
    }

    /// Pushes `messages` into a copy of the source (round robin), as if it had
    /// emitted them. They take their place behind the events it has buffered.
    ///
    /// A push that returns `Ok` before a drain starts is finished by the
    /// drain; one made once the drain has started fails.
    ///
    /// # Errors
    ///
    /// [`PushError`] when the source is draining or has stopped; the messages
    /// are then acknowledged as failed ([`Failure::Dropped`](crate::Failure::Dropped)).
    pub fn push_messages(&self, messages: Vec<Message<T>>) -> Result<(), PushError> {
        if messages.is_empty() {
            return Ok(());
        }
        let i = self.inner.next_source.fetch_add(1, Ordering::Relaxed) % self.inboxes.len();
        self.push_to(i, messages)
    }

    /// Pushes `messages` into the copy of the source that `key` picks: every
    /// push with the same key goes to the same copy, so its messages reach
    /// the processors in the order they were pushed. With processors
    /// partitioned by the same key, one processor sees them in that order.
    /// ([`push_messages`](Topology::push_messages) spreads pushes over the
    /// copies, so two pushes may overtake each other.)
    ///
    /// # Errors
    ///
    /// As [`push_messages`](Topology::push_messages).
    pub fn push_messages_by_key(
        &self,
        key: u64,
        messages: Vec<Message<T>>,
    ) -> Result<(), PushError> {
        if messages.is_empty() {
            return Ok(());
        }
        let i = (key % self.inboxes.len() as u64) as usize;
        self.push_to(i, messages)
    }

    fn push_to(&self, i: usize, messages: Vec<Message<T>>) -> Result<(), PushError> {
        // Dropped on failure, which acknowledges them as failed.
        self.inboxes[i].push(messages).map_err(|_| PushError)?;
        if let Some(source) = self
            .inner
            .supervisor
            .child::<ProducerRef<Message<T>>>(&self.inner.sources[i])
        {
            // A source that stopped meanwhile dropped its inbox in `terminate`,
            // or a restarted one takes it over in `init`.
            let _ = source.send_info(Pushed);
        }
        Ok(())
    }

    /// Pushes one message per item of `data`, with a fresh channel
    /// acknowledger, and returns where their acknowledgements arrive. Tokens
    /// are numbered from 0 in the order of `data`.
    ///
    /// If the topology has stopped, every message is acknowledged as failed.
    pub fn test_messages(&self, data: impl IntoIterator<Item = T>) -> TestAcks {
        self.push_test(data, |m, _| m)
    }

    /// Like [`test_messages`](Self::test_messages), for messages meant to form
    /// one batch: they share a batch key of their own, and the last asks to
    /// flush the batch. With partitioned or concurrent processors they may
    /// still be split; use one processor to get exactly one batch.
    pub fn test_batch(&self, data: impl IntoIterator<Item = T>) -> TestAcks {
        let key = format!(
            "test-batch-{}",
            self.inner.next_token.fetch_add(1, Ordering::Relaxed)
        );
        let data: Vec<T> = data.into_iter().collect();
        let last = data.len().saturating_sub(1);
        self.push_test(data, move |mut m, i| {
            m.put_batch_key(key.as_str());
            if i == last {
                m.flush_batch();
            }
            m
        })
    }

    fn push_test(
        &self,
        data: impl IntoIterator<Item = T>,
        mut shape: impl FnMut(Message<T>, usize) -> Message<T>,
    ) -> TestAcks {
        let (acknowledger, rx) = ChannelAcknowledger::new();
        let messages: Vec<Message<T>> = data
            .into_iter()
            .enumerate()
            .map(|(i, data)| {
                shape(
                    Message::new(data, AckRef::new(acknowledger.clone(), i as u64)),
                    i,
                )
            })
            .collect();
        let expected = messages.len();
        // On failure the messages were dropped, which acknowledged them as failed.
        let _ = self.push_messages(messages);
        TestAcks::new(rx, expected)
    }

    /// Waits until every stage has stopped on its own: the sources ran out and
    /// everything after them finished. A stage that crashes is restarted (with
    /// the stages after it) and waited for too.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait(&self) {
        self.inner.supervisor.wait_children().await;
    }

    /// Drains the topology: the sources stop taking input, every processor
    /// finishes what it holds, every open batch is flushed (trigger
    /// [`Flush`](crate::BatchTrigger::Flush)) and handled, everything is
    /// acknowledged, and the stages stop. Whatever is not finished by
    /// `deadline` is acknowledged as failed and counted in
    /// [`TopologyDrain::unfinished`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future leaves the topology draining.
    pub async fn drain(&self, deadline: Duration) -> TopologyDrain {
        let before = self.inner.metrics.snapshot();
        // At the deadline, handlers still running are abandoned (their
        // messages fail) so that their stages can stop.
        let abort = self.inner.abort.clone();
        let at_deadline = tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            abort.cancel();
        });
        let stages = self.inner.supervisor.drain(deadline).await;
        at_deadline.abort();
        // Let stopped stages finish dropping what they held.
        tokio::task::yield_now().await;
        let after = self.inner.metrics.snapshot();
        let mut unfinished = after.messages_failed_on_shutdown - before.messages_failed_on_shutdown
            + after.in_flight;
        if let Some(report) = &stages {
            for stage in &report.stages {
                if let DrainOutcome::Stopped { buffered, queued } = stage.outcome {
                    if self.inner.sources.contains(&stage.name) {
                        unfinished += buffered as u64;
                    } else if self.inner.processors.contains(&stage.name) {
                        unfinished += queued as u64;
                    }
                }
            }
        }
        if unfinished > 0 {
            tracing::warn!(topology = %self.inner.name, unfinished, "drain left messages unfinished");
        }
        TopologyDrain {
            stages,
            unfinished,
            metrics: after,
        }
    }

    /// Drains the topology with [`drain`](Self::drain) once `token` is
    /// cancelled, on a spawned task.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn drain_on(
        &self,
        token: CancellationToken,
        deadline: Duration,
    ) -> tokio::task::JoinHandle<TopologyDrain> {
        let topology = self.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            topology.drain(deadline).await
        })
    }

    /// Stops every stage now; messages inside are acknowledged as failed.
    pub async fn stop(&self) {
        self.inner.abort.cancel();
        self.inner
            .supervisor
            .stop(demandflow_runtime::Reason::Shutdown)
            .await;
    }
}
