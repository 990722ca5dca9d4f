//! What a pipeline author implements: the handlers of a topology.

use std::future::Future;
use std::sync::Arc;

use crate::message::{BatchKey, Message};

/// Why a batcher emitted a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchTrigger {
    /// The batch reached its batch size.
    Size,
    /// The batch timeout passed since the batch's first message arrived.
    Timeout,
    /// A message asked for it ([`Message::flush_batch`]), or the topology is
    /// draining or its sources ended.
    Flush,
}

/// What a batch handler is told about its batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// The batcher's name.
    pub batcher: Arc<str>,
    /// The key every message of the batch shares.
    pub batch_key: BatchKey,
    /// How many messages the batch holds.
    pub size: usize,
    /// Why it was emitted.
    pub trigger: BatchTrigger,
}

/// A batch on its way from a batcher to a batch handler.
pub(crate) struct Batch<T> {
    pub(crate) messages: Vec<Message<T>>,
    pub(crate) info: BatchInfo,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl<T> std::fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// The user code of a topology: one handler per message in the processors,
/// one per batch in the batch handlers, and a hook for failed messages.
///
/// One value is shared by every processor and batch handler (behind an `Arc`),
/// so methods take `&self`; keep state that must be per worker in a lock or an
/// atomic, or outside.
///
/// What the layer guarantees to you:
/// - `handle_message` sees each message once; messages of one key are handled
///   in order, one at a time, when the processors are partitioned
///   ([`Processors::partition_by`](crate::Processors::partition_by));
/// - a panic in any method is caught: the messages in hand are failed with
///   [`Failure::Panicked`](crate::Failure::Panicked) and acknowledged, and the
///   topology keeps running;
/// - `handle_batch` gets a non-empty batch whose messages share a batcher and
///   a key, with [`BatchInfo`] saying why it was emitted.
///
/// What you guarantee back: return from `handle_batch` the messages you were
/// given, each marked failed with [`Message::fail`] if it failed. A message you
/// do not return is acknowledged as failed ([`Failure::Dropped`](crate::Failure::Dropped)).
pub trait MessageHandler<T: Send + 'static>: Send + Sync + 'static {
    /// Handles one message in a processor: transform its data, choose its
    /// batcher and key, or fail it.
    fn handle_message(&self, message: &mut Message<T>) -> impl Future<Output = ()> + Send;

    /// Handles a batch in one of batcher `info.batcher`'s batch handlers and
    /// returns its messages. The default returns them unchanged.
    fn handle_batch(
        &self,
        messages: Vec<Message<T>>,
        info: &BatchInfo,
    ) -> impl Future<Output = Vec<Message<T>>> + Send {
        let _ = info;
        async move { messages }
    }

    /// Sees failed messages before they are acknowledged, in the processor or
    /// batch handler where they failed, and may change how they are
    /// acknowledged (their status). The default does nothing.
    fn handle_failed(&self, messages: &mut [Message<T>]) {
        let _ = messages;
    }
}
