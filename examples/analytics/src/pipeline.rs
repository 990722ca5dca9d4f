//! One event type's pipeline: a push source, one processor, a batcher whose
//! `max_in_flight` batch handlers each send one batch at a time.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use demandflow_messages::{
    AckRef, BatchInfo, Batcher, DEFAULT_BATCHER, Message, MessageHandler, Processors,
    StartTopologyError, Topology,
};
use demandflow_runtime::{
    Pusher, SendError as PushSendError, TrySendError, catch_call, catch_panic, push,
};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::analytics::{Config, RecordError, TryRecordError};
use crate::event::{Event, Record};
use crate::metrics::Counters;
use crate::sink::Sink;

/// A running pipeline of event type `E`: where records go in, and the
/// topology they go through (still starting, on a task of its own, right
/// after the first record).
pub(crate) struct Pipeline<E: Event> {
    pub(crate) stream: Arc<str>,
    pusher: Pusher<Message<E>>,
    counters: Arc<Counters>,
    topology: tokio::sync::Mutex<Option<Starting<E>>>,
}

/// The task starting a pipeline's topology; taken (and awaited) by shutdown.
type Starting<E> = JoinHandle<Result<Topology<E>, StartTopologyError>>;

/// How one pipeline's shutdown went.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamShutdown {
    /// The stream the pipeline wrote to.
    pub stream: String,
    /// Records still inside when the shutdown timeout passed (each counted as
    /// failed), 0 when everything was flushed.
    pub unfinished: u64,
    /// Why the pipeline never ran, when its topology failed to start.
    pub start_error: Option<String>,
}

impl<E: Event> Pipeline<E> {
    /// Starts the pipeline of `E` on a task of its own and returns at once:
    /// records can be queued before the stages are up.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub(crate) fn start<S: Sink>(config: &Config, sink: Arc<S>, counters: Arc<Counters>) -> Self {
        let stream: Arc<str> = format!("{}{}", config.stream_prefix, E::STREAM).into();
        let (source, pusher) = push::<Message<E>>(config.capacity);
        // The topology asks for a source at start and again if the source's
        // stage is restarted. Only the first gets the pushers' source; a
        // restarted one is a source without pushers, which ends at once and
        // winds the pipeline down (records are then refused, never lost
        // silently). A push source has no code of ours that could fail, so
        // this is a backstop, not a path taken in practice.
        let source = Mutex::new(Some(source));
        let handler = SendBatches {
            stream: stream.clone(),
            sink,
            counters: counters.clone(),
            retries: config.retries,
            backoff: config.backoff,
            max_backoff: config.max_backoff,
        };
        let builder = Topology::builder(format!("analytics.{stream}"), handler)
            .source(1, move |_| {
                source.lock().take().unwrap_or_else(|| {
                    tracing::error!("analytics: a pipeline's source restarted; it winds down");
                    push(NonZeroUsize::MIN).0
                })
            })
            // One processor keeps the records in the order they were pushed;
            // it does nothing but hand them on, so it is never the bottleneck.
            .processors(Processors::new(1).max_demand(config.batch_size.clamp(10, 1_000) as u64))
            .batcher(
                Batcher::new(DEFAULT_BATCHER)
                    .batch_size(config.batch_size)
                    .batch_timeout(config.interval)
                    .concurrency(config.max_in_flight),
            );
        let start_stream = stream.clone();
        let topology = tokio::spawn(async move {
            let started = builder.start().await;
            if let Err(e) = &started {
                tracing::error!(stream = %start_stream, error = %e, "analytics: pipeline failed to start");
            }
            started
        });
        Pipeline {
            stream,
            pusher,
            counters,
            topology: tokio::sync::Mutex::new(Some(topology)),
        }
    }

    /// Records need no acknowledgement: nothing upstream waits to hear about
    /// them, and the batch handler counts what was sent and what failed.
    fn message(&self, event: E) -> Message<E> {
        Message::new(event, AckRef::noop())
    }

    /// Queues `event`, waiting for room; hands it back once the pipeline is
    /// shutting down or stopped.
    pub(crate) async fn record(&self, event: E) -> Result<(), RecordError<E>> {
        self.pusher
            .send(self.message(event))
            .await
            .map_err(|PushSendError(message)| RecordError(message.data))
    }

    /// Queues `event` if there is room.
    pub(crate) fn try_record(&self, event: E) -> Result<(), TryRecordError<E>> {
        self.pusher
            .try_send(self.message(event))
            .map_err(|e| match e {
                TrySendError::Full(message) => TryRecordError::Full(message.data),
                TrySendError::Closed(message) => TryRecordError::Closed(message.data),
            })
    }

    /// Drains the pipeline: every queued record and every open batch is sent
    /// (or, past `deadline`, counted as failed).
    pub(crate) async fn shutdown(&self, deadline: Duration) -> StreamShutdown {
        let mut report = StreamShutdown {
            stream: self.stream.to_string(),
            unfinished: 0,
            start_error: None,
        };
        let Some(task) = self.topology.lock().await.take() else {
            return report; // shut down already
        };
        match task.await {
            Ok(Ok(topology)) => {
                report.unfinished = topology.drain(deadline).await.unfinished;
                Counters::add(&self.counters.records_failed, report.unfinished);
            }
            Ok(Err(e)) => report.start_error = Some(e.to_string()),
            Err(e) => report.start_error = Some(e.to_string()),
        }
        report
    }
}

/// The batch handler: encodes a batch and sends it, retrying with back-off.
struct SendBatches<S> {
    stream: Arc<str>,
    sink: Arc<S>,
    retries: u32,
    backoff: Duration,
    max_backoff: Duration,
    counters: Arc<Counters>,
}

impl<E: Event, S: Sink> MessageHandler<E> for SendBatches<S> {
    async fn handle_message(&self, _: &mut Message<E>) {}

    async fn handle_batch(&self, mut batch: Vec<Message<E>>, _: &BatchInfo) -> Vec<Message<E>> {
        let n = batch.len() as u64;
        // Encoded before any await, so the events need not be `Sync`. User
        // code: a panicking encoder fails the batch, not the pipeline.
        let sent = match catch_call(|| batch.iter().map(|m| Record::of(&m.data)).collect()) {
            Ok(records) => self.send(records).await,
            Err(panic) => Err(format!("encoding panicked: {panic}")),
        };
        match sent {
            Ok(()) => {
                Counters::add(&self.counters.batches_sent, 1);
                Counters::add(&self.counters.records_sent, n);
            }
            Err(error) => {
                Counters::add(&self.counters.batches_failed, 1);
                Counters::add(&self.counters.records_failed, n);
                tracing::error!(stream = %self.stream, %error, records = n,
                    "analytics: batch given up; its records are lost");
                for message in &mut batch {
                    message.fail(error.clone());
                }
            }
        }
        batch
    }
}

impl<S: Sink> SendBatches<S> {
    /// Sends `records`, retrying a failed send (an error or a panic of the
    /// sink) with back-off; the last error when it gives up.
    async fn send(&self, records: Vec<Record>) -> Result<(), String> {
        let mut delay = self.backoff;
        let mut attempt = 0;
        loop {
            let error = match catch_panic(self.sink.send(&self.stream, &records)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(panic) => format!("sink panicked: {panic}"),
            };
            if attempt == self.retries {
                return Err(format!("{error} (after {} attempts)", attempt + 1));
            }
            attempt += 1;
            Counters::add(&self.counters.send_retries, 1);
            tracing::warn!(stream = %self.stream, %error, attempt,
                retry_in_ms = delay.as_millis() as u64, "analytics: send failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.max_backoff);
        }
    }
}

/// What the pushers of a pipeline are, to the registry: something to shut down.
pub(crate) trait Running: Send + Sync + 'static {
    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;
    fn shutdown(
        self: Arc<Self>,
        deadline: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = StreamShutdown> + Send>>;
}

impl<E: Event> Running for Pipeline<E> {
    fn as_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }

    fn shutdown(
        self: Arc<Self>,
        deadline: Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = StreamShutdown> + Send>> {
        Box::pin(async move { Pipeline::shutdown(&self, deadline).await })
    }
}
