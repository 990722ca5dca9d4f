//! Acknowledgement: how a source learns which of its messages succeeded.

use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::message::{Failure, Status};

/// Told how the messages of a source ended, in groups.
///
/// A source gives every message an [`AckRef`]: this acknowledger plus a `u64`
/// token of the source's choosing (an offset, a delivery tag, an index into a
/// table of receipt handles). The layer then calls [`ack`](Self::ack) with the
/// tokens of finished messages.
///
/// What the layer guarantees to you:
/// - every token is passed **exactly once**, in `successful` or in `failed`,
///   never both: after a handler's success or explicit failure, a panic in any
///   handler, a batch handler that drops messages, a drain or a shutdown;
/// - tokens come in groups, one call per group of messages finished together
///   (a processor's chunk, a batch), not one call per message. The one
///   exception is a message dropped outside the layer's hands (a stage
///   stopped with it in its mailbox): it is reported alone, as
///   [`Failure::Dropped`], when it is dropped;
/// - a call never has both lists empty.
///
/// What you must guarantee back: `ack` returns quickly and does not block (it
/// runs on a stage's task). Hand slow work, such as a network call to a broker,
/// to a task of your own.
pub trait Acknowledger: Send + Sync + 'static {
    /// The messages with tokens `successful` succeeded and those in `failed` failed.
    fn ack(&self, successful: Vec<u64>, failed: Vec<(u64, Failure)>);
}

/// An acknowledger that ignores every acknowledgement.
///
/// [`AckRef::noop`] is cheaper still: it holds no acknowledger at all.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopAcknowledger;

impl Acknowledger for NoopAcknowledger {
    fn ack(&self, _: Vec<u64>, _: Vec<(u64, Failure)>) {}
}

/// One acknowledgement call, as a [`ChannelAcknowledger`] delivers it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ack {
    /// Tokens of the messages that succeeded.
    pub successful: Vec<u64>,
    /// Tokens of the messages that failed, with why.
    pub failed: Vec<(u64, Failure)>,
}

/// An acknowledger that sends each acknowledgement call to a channel whose
/// receiver the caller holds: for tests, and for sources that settle
/// acknowledgements on a task of their own.
///
/// # Examples
///
/// ```
/// use demandflow_messages::{Ack, Acknowledger, ChannelAcknowledger};
///
/// let (acknowledger, mut acks) = ChannelAcknowledger::new();
/// acknowledger.ack(vec![1, 2], vec![]);
/// assert_eq!(acks.try_recv().unwrap(), Ack { successful: vec![1, 2], failed: vec![] });
/// ```
#[derive(Clone, Debug)]
pub struct ChannelAcknowledger {
    tx: mpsc::UnboundedSender<Ack>,
}

impl ChannelAcknowledger {
    /// An acknowledger and the receiver its acknowledgements arrive on.
    pub fn new() -> (Arc<ChannelAcknowledger>, mpsc::UnboundedReceiver<Ack>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(ChannelAcknowledger { tx }), rx)
    }
}

impl Acknowledger for ChannelAcknowledger {
    fn ack(&self, successful: Vec<u64>, failed: Vec<(u64, Failure)>) {
        // A receiver that is gone no longer wants acknowledgements.
        let _ = self.tx.send(Ack { successful, failed });
    }
}

/// A message's link to its source's [`Acknowledger`]: the acknowledger and the
/// message's token.
///
/// It is pending until the layer acknowledges the message. If it is dropped
/// while still pending, because the message was lost outside the layer's hands,
/// it acknowledges the message as failed ([`Failure::Dropped`]) on its own, so
/// no message goes unacknowledged.
pub struct AckRef {
    to: Option<Arc<dyn Acknowledger>>,
    token: u64,
    pending: bool,
}

impl AckRef {
    /// Acknowledges through `acknowledger` with `token`.
    pub fn new(acknowledger: Arc<dyn Acknowledger>, token: u64) -> Self {
        AckRef {
            to: Some(acknowledger),
            token,
            pending: true,
        }
    }

    /// Acknowledges nowhere (for messages nobody needs to hear about).
    pub fn noop() -> Self {
        AckRef {
            to: None,
            token: 0,
            pending: true,
        }
    }

    /// A reference with nothing left to acknowledge.
    pub(crate) fn done() -> Self {
        AckRef {
            to: None,
            token: 0,
            pending: false,
        }
    }

    /// The token given to the acknowledger.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// `true` until the message has been acknowledged.
    pub fn is_pending(&self) -> bool {
        self.pending
    }
}

impl Drop for AckRef {
    // Inlined: every message is dropped, nearly always already acknowledged,
    // and then this is one test of a flag.
    #[inline]
    fn drop(&mut self) {
        if self.pending
            && let Some(to) = self.to.take()
        {
            to.ack(Vec::new(), vec![(self.token, Failure::Dropped)]);
        }
    }
}

impl fmt::Debug for AckRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckRef")
            .field("token", &self.token)
            .field("pending", &self.pending)
            .field("noop", &self.to.is_none())
            .finish()
    }
}

/// Messages of one acknowledger finished together.
struct Group {
    to: Arc<dyn Acknowledger>,
    successful: Vec<u64>,
    failed: Vec<(u64, Failure)>,
}

/// Collects acknowledgements and sends them per acknowledger, one call each.
#[derive(Default)]
pub(crate) struct AckSet {
    groups: Vec<Group>,
    /// How many tokens a new group's `successful` is sized for: the messages
    /// expected, so that a batch's tokens are collected without regrowing.
    expected: usize,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) shutdown: u64,
}

impl AckSet {
    /// An empty set expecting about `messages` acknowledgements.
    pub(crate) fn expecting(messages: usize) -> Self {
        AckSet {
            expected: messages,
            ..AckSet::default()
        }
    }

    /// Records `ack` as ended with `status`, unless it was acknowledged already.
    pub(crate) fn add(&mut self, ack: &mut AckRef, status: Status) {
        if !ack.pending {
            return;
        }
        ack.pending = false;
        let group = ack.to.take().map(|to| self.group(to));
        self.record(group, ack.token, status);
    }

    /// [`add`](Self::add) with [`Status::Ok`], the common case, in fewer steps.
    #[inline]
    pub(crate) fn add_ok(&mut self, ack: &mut AckRef) {
        if !ack.pending {
            return;
        }
        ack.pending = false;
        self.ok += 1;
        if let Some(to) = ack.to.take() {
            let group = self.group(to);
            self.groups[group].successful.push(ack.token);
        }
    }

    /// Counts `token` as ended with `status` and, unless it belongs to no
    /// acknowledger (`None`), adds it to group `group`.
    fn record(&mut self, group: Option<usize>, token: u64, status: Status) {
        match &status {
            Status::Ok => self.ok += 1,
            Status::Failed(Failure::Shutdown) => {
                self.failed += 1;
                self.shutdown += 1;
            }
            Status::Failed(_) => self.failed += 1,
        }
        let Some(group) = group else {
            return;
        };
        let group = &mut self.groups[group];
        match status {
            Status::Ok => group.successful.push(token),
            Status::Failed(failure) => group.failed.push((token, failure)),
        }
    }

    /// The index of the group of `to`, created if needed. Messages of one
    /// source come in runs, so the last group is tried first, without a loop.
    #[inline]
    fn group(&mut self, to: Arc<dyn Acknowledger>) -> usize {
        let last = self.groups.len().wrapping_sub(1);
        if let Some(group) = self.groups.get(last)
            && std::ptr::addr_eq(Arc::as_ptr(&group.to), Arc::as_ptr(&to))
        {
            return last;
        }
        self.other_group(to)
    }

    /// [`group`](Self::group) when `to` is not the last group's acknowledger.
    #[cold]
    fn other_group(&mut self, to: Arc<dyn Acknowledger>) -> usize {
        let same = |g: &Group| std::ptr::addr_eq(Arc::as_ptr(&g.to), Arc::as_ptr(&to));
        match self.groups.iter().rposition(same) {
            Some(i) => i,
            None => {
                self.groups.push(Group {
                    to,
                    successful: Vec::with_capacity(self.expected),
                    failed: Vec::new(),
                });
                self.groups.len() - 1
            }
        }
    }

    /// `true` when nothing has been recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.ok == 0 && self.failed == 0
    }

    /// Calls each acknowledger once with what was recorded for it.
    pub(crate) fn send(&mut self) {
        for group in self.groups.drain(..) {
            // A group opened by `HeldAcks::hold` whose messages all went
            // elsewhere has nothing to say, and an acknowledger is never
            // called with two empty lists.
            if !group.successful.is_empty() || !group.failed.is_empty() {
                group.to.ack(group.successful, group.failed);
            }
        }
    }
}

/// Where a held acknowledgement goes: the index of its group in the
/// [`AckSet`], or one of these two markers.
const HELD_NOOP: u32 = u32::MAX - 1;
const HELD_DONE: u32 = u32::MAX;

/// One message's acknowledgement while a batch handler holds the message.
#[derive(Clone, Copy)]
struct Held {
    token: u64,
    group: u32,
}

/// The acknowledgements of a batch, taken out of its messages while its
/// handler has them, so that a message the handler drops, or a panic, cannot
/// lose one.
///
/// A message's place here is its slot, which is all it keeps. The
/// acknowledger of each held message goes straight into the [`AckSet`] the
/// batch is acknowledged through (one `Arc` per acknowledger, not one per
/// message), so finishing a message later is a push of its token.
pub(crate) struct HeldAcks {
    held: Vec<Held>,
    /// How many of `held` are still to be finished: when none is left, the
    /// batch is done without another pass over it.
    unfinished: usize,
    acks: AckSet,
}

impl HeldAcks {
    /// Room for a batch of `messages`.
    pub(crate) fn new(messages: usize) -> Self {
        HeldAcks {
            held: Vec::with_capacity(messages),
            unfinished: 0,
            acks: AckSet::expecting(messages),
        }
    }

    /// Takes over `ack` (leaving it acknowledged) and returns its slot.
    #[inline]
    pub(crate) fn hold(&mut self, ack: &mut AckRef) -> u32 {
        // A batch holds fewer than 2^32 messages (the slot is a `u32`).
        let slot = self.held.len() as u32;
        let group = if !ack.pending {
            HELD_DONE
        } else {
            ack.pending = false;
            self.unfinished += 1;
            match ack.to.take() {
                None => HELD_NOOP,
                // Far fewer acknowledgers than HELD_NOOP.
                Some(to) => self.acks.group(to) as u32,
            }
        };
        self.held.push(Held {
            token: ack.token,
            group,
        });
        slot
    }

    /// Records the message of `slot` as successful; `false` when nothing is
    /// held there (not a message of this batch, or finished already).
    #[inline]
    pub(crate) fn ok(&mut self, slot: u32) -> bool {
        let Some(held) = self.held.get_mut(slot as usize) else {
            return false;
        };
        match std::mem::replace(&mut held.group, HELD_DONE) {
            HELD_DONE => return false,
            HELD_NOOP => {}
            group => self.acks.groups[group as usize].successful.push(held.token),
        }
        self.acks.ok += 1;
        self.unfinished -= 1;
        true
    }

    /// Gives back the acknowledgement of `slot`, still pending, for a message
    /// to be acknowledged by its own status; `None` when nothing is held there.
    pub(crate) fn release(&mut self, slot: u32) -> Option<AckRef> {
        let held = self.held.get_mut(slot as usize)?;
        let to = match std::mem::replace(&mut held.group, HELD_DONE) {
            HELD_DONE => return None,
            HELD_NOOP => None,
            group => Some(self.acks.groups[group as usize].to.clone()),
        };
        self.unfinished -= 1;
        Some(AckRef {
            to,
            token: held.token,
            pending: true,
        })
    }

    /// Records every message still held as failed with `failure()`.
    pub(crate) fn fail_rest(&mut self, failure: impl Fn() -> Failure) {
        if self.unfinished == 0 {
            return;
        }
        self.unfinished = 0;
        for held in &mut self.held {
            let group = match std::mem::replace(&mut held.group, HELD_DONE) {
                HELD_DONE => continue,
                HELD_NOOP => None,
                group => Some(group as usize),
            };
            self.acks
                .record(group, held.token, Status::Failed(failure()));
        }
    }

    /// The set the batch is acknowledged through.
    pub(crate) fn acks(&mut self) -> &mut AckSet {
        &mut self.acks
    }
}
