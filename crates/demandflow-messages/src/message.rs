//! The message: the user's data plus what the layer needs to route and acknowledge it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::ack::AckRef;

/// The name of the batcher a message goes to when none is set.
pub const DEFAULT_BATCHER: &str = "default";

/// Why a message failed. Shown to [`Acknowledger`](crate::Acknowledger)s and to
/// [`MessageHandler::handle_failed`](crate::MessageHandler::handle_failed).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// A handler marked the message failed with [`Message::fail`].
    Failed(String),
    /// A handler panicked while the message was in its hands; the panic's message.
    Panicked(String),
    /// A batch handler did not return the message, or the message was dropped
    /// outside the layer (a stage stopped holding it in its mailbox).
    Dropped,
    /// The topology stopped, or a drain's deadline passed, before the message was finished.
    Shutdown,
    /// The message named a batcher the topology does not have.
    UnknownBatcher(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Failed(reason) => write!(f, "failed: {reason}"),
            Failure::Panicked(message) => write!(f, "handler panicked: {message}"),
            Failure::Dropped => f.write_str("dropped before it was acknowledged"),
            Failure::Shutdown => f.write_str("not finished before shutdown"),
            Failure::UnknownBatcher(name) => write!(f, "no batcher named {name:?}"),
        }
    }
}

/// Whether a message has succeeded so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Status {
    /// Nothing has gone wrong (the initial status).
    #[default]
    Ok,
    /// The message failed; it is acknowledged as failed and goes no further.
    Failed(Failure),
}

impl Status {
    /// `true` for [`Status::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, Status::Ok)
    }
}

/// The key that groups messages of one batcher into batches: messages with
/// different keys never share a batch.
///
/// Integers and strings convert into it with `From`; messages without a key
/// share [`BatchKey::Default`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BatchKey {
    /// The key of messages that set none.
    #[default]
    Default,
    /// An integer key.
    Int(u64),
    /// A string key.
    Str(Arc<str>),
}

/// Batch keys route by the workspace's one key hash, so a processor
/// partitioned by batch key puts a key where a partition dispatcher or a keyed
/// scheduler keyed by the same integer or string would.
impl demandflow_core::Key for BatchKey {
    fn key_hash(&self) -> u64 {
        match self {
            BatchKey::Default => 0,
            BatchKey::Int(key) => key.key_hash(),
            BatchKey::Str(key) => (**key).key_hash(),
        }
    }

    fn partition(&self, partitions: usize) -> usize {
        match self {
            BatchKey::Default => 0,
            BatchKey::Int(key) => key.partition(partitions),
            BatchKey::Str(key) => (**key).partition(partitions),
        }
    }
}

impl From<u64> for BatchKey {
    fn from(key: u64) -> Self {
        BatchKey::Int(key)
    }
}

impl From<&str> for BatchKey {
    fn from(key: &str) -> Self {
        BatchKey::Str(key.into())
    }
}

impl From<String> for BatchKey {
    fn from(key: String) -> Self {
        BatchKey::Str(key.into())
    }
}

const FLAG_ACK_IMMEDIATELY: u8 = 1;
const FLAG_FLUSH: u8 = 2;

/// One unit of work flowing through a topology: the user's `data`, string
/// metadata, a [`Status`], the batcher and [`BatchKey`] it goes to, and the
/// [`AckRef`] that tells its source how it ended.
///
/// A source creates messages; a processor's handler reads and changes them
/// (data, status, batcher, key); the layer acknowledges each exactly once.
///
/// # Examples
///
/// ```
/// use demandflow_messages::{AckRef, BatchKey, Failure, Message, Status};
///
/// let mut message = Message::new(42_u32, AckRef::noop())
///     .with_batcher("sql")
///     .with_batch_key("customer-7");
/// message.metadata_mut().insert("topic".into(), "orders".into());
/// assert_eq!(message.batcher(), "sql");
/// assert_eq!(message.batch_key(), &BatchKey::from("customer-7"));
///
/// message.fail("bad row");
/// assert_eq!(message.status(), Status::Failed(Failure::Failed("bad row".into())));
/// ```
pub struct Message<T> {
    /// The user's data.
    pub data: T,
    /// Boxed, so that a message without metadata stays small (a map is three
    /// words; the box one, and none is allocated until metadata is written).
    #[expect(
        clippy::box_collection,
        reason = "keeps messages without metadata two words smaller"
    )]
    metadata: Option<Box<BTreeMap<String, String>>>,
    /// Boxed, so that a message that has not failed stays small.
    failure: Option<Box<Failure>>,
    /// `None` for [`DEFAULT_BATCHER`], so that the processors recognise the
    /// default without comparing strings.
    batcher: Option<Cow<'static, str>>,
    batch_key: BatchKey,
    pub(crate) ack: AckRef,
    flags: u8,
    /// Position in the batch being handled, to match returned messages to their acks.
    pub(crate) slot: u32,
}

impl<T> Message<T> {
    /// A message carrying `data`, acknowledged through `ack`.
    pub fn new(data: T, ack: AckRef) -> Self {
        Message {
            data,
            metadata: None,
            failure: None,
            batcher: None,
            batch_key: BatchKey::Default,
            ack,
            flags: 0,
            slot: u32::MAX,
        }
    }

    /// Sends the message to batcher `name` (builder style).
    #[must_use]
    pub fn with_batcher(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.batcher = Some(name.into());
        self
    }

    /// Sets the batch key (builder style).
    #[must_use]
    pub fn with_batch_key(mut self, key: impl Into<BatchKey>) -> Self {
        self.batch_key = key.into();
        self
    }

    /// The metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.metadata.as_deref().unwrap_or(&EMPTY)
    }

    /// The metadata, to change.
    pub fn metadata_mut(&mut self) -> &mut BTreeMap<String, String> {
        self.metadata.get_or_insert_with(Box::default)
    }

    /// The status.
    pub fn status(&self) -> Status {
        match &self.failure {
            None => Status::Ok,
            Some(failure) => Status::Failed((**failure).clone()),
        }
    }

    /// Why the message failed, if it did.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_deref()
    }

    /// `true` while the message has not failed.
    pub fn is_ok(&self) -> bool {
        self.failure.is_none()
    }

    /// Marks the message failed with `reason`. A message failed in a processor
    /// never reaches a batcher.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.failure = Some(Box::new(Failure::Failed(reason.into())));
    }

    /// Sets the status (for example to [`Status::Ok`] again in
    /// [`handle_failed`](crate::MessageHandler::handle_failed)).
    pub fn set_status(&mut self, status: Status) {
        self.failure = match status {
            Status::Ok => None,
            Status::Failed(failure) => Some(Box::new(failure)),
        };
    }

    /// The batcher the message goes to ([`DEFAULT_BATCHER`] unless set).
    pub fn batcher(&self) -> &str {
        self.batcher.as_deref().unwrap_or(DEFAULT_BATCHER)
    }

    /// Sends the message to batcher `name`.
    pub fn put_batcher(&mut self, name: impl Into<Cow<'static, str>>) {
        self.batcher = Some(name.into());
    }

    /// The batch key.
    pub fn batch_key(&self) -> &BatchKey {
        &self.batch_key
    }

    /// Sets the batch key.
    pub fn put_batch_key(&mut self, key: impl Into<BatchKey>) {
        self.batch_key = key.into();
    }

    /// Asks the processor to acknowledge this message as soon as its handler
    /// returns, with the status it has then; later stages still see it but
    /// acknowledge nothing for it.
    pub fn ack_immediately(&mut self) {
        self.flags |= FLAG_ACK_IMMEDIATELY;
    }

    /// Asks the batcher to emit this message's batch as soon as the message is
    /// added to it (trigger [`BatchTrigger::Flush`](crate::BatchTrigger::Flush)).
    pub fn flush_batch(&mut self) {
        self.flags |= FLAG_FLUSH;
    }

    /// `true` once the message's acknowledgement has been sent (see
    /// [`ack_immediately`](Self::ack_immediately)).
    pub fn is_acknowledged(&self) -> bool {
        !self.ack.is_pending()
    }

    /// `true` when no batcher was ever named, so it is [`DEFAULT_BATCHER`]
    /// (a check of a field, not a comparison of strings).
    pub(crate) fn has_default_batcher(&self) -> bool {
        self.batcher.is_none()
    }

    /// Ok, bound for the default batcher, and asking for nothing special.
    #[inline]
    pub(crate) fn is_plain(&self) -> bool {
        self.flags == 0 && self.failure.is_none() && self.batcher.is_none()
    }

    pub(crate) fn wants_ack_now(&self) -> bool {
        self.flags & FLAG_ACK_IMMEDIATELY != 0
    }

    pub(crate) fn wants_flush(&self) -> bool {
        self.flags & FLAG_FLUSH != 0
    }

    pub(crate) fn take_status(&mut self) -> Status {
        match self.failure.take() {
            None => Status::Ok,
            Some(failure) => Status::Failed(*failure),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Message<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("data", &self.data)
            .field("status", &self.status())
            .field("batcher", &self.batcher())
            .field("batch_key", &self.batch_key)
            .field("ack", &self.ack)
            .finish_non_exhaustive()
    }
}
