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
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) shutdown: u64,
}

impl AckSet {
    /// Records `ack` as ended with `status`, unless it was acknowledged already.
    pub(crate) fn add(&mut self, ack: &mut AckRef, status: Status) {
        if !ack.pending {
            return;
        }
        ack.pending = false;
        match &status {
            Status::Ok => self.ok += 1,
            Status::Failed(Failure::Shutdown) => {
                self.failed += 1;
                self.shutdown += 1;
            }
            Status::Failed(_) => self.failed += 1,
        }
        let Some(to) = ack.to.take() else {
            return;
        };
        let group = self.group(to);
        match status {
            Status::Ok => group.successful.push(ack.token),
            Status::Failed(failure) => group.failed.push((ack.token, failure)),
        }
    }

    /// [`add`](Self::add) with [`Status::Ok`], the common case, in fewer steps.
    pub(crate) fn add_ok(&mut self, ack: &mut AckRef) {
        if !ack.pending {
            return;
        }
        ack.pending = false;
        self.ok += 1;
        if let Some(to) = ack.to.take() {
            self.group(to).successful.push(ack.token);
        }
    }

    /// The group of `to`, created if needed. Messages of one source come in
    /// runs, so the last group is tried first.
    fn group(&mut self, to: Arc<dyn Acknowledger>) -> &mut Group {
        let same = |g: &Group| std::ptr::addr_eq(Arc::as_ptr(&g.to), Arc::as_ptr(&to));
        let i = match self.groups.iter().rposition(same) {
            Some(i) => i,
            None => {
                self.groups.push(Group {
                    to,
                    successful: Vec::new(),
                    failed: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[i]
    }

    /// `true` when nothing has been recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.ok == 0 && self.failed == 0
    }

    /// Calls each acknowledger once with what was recorded for it.
    pub(crate) fn send(&mut self) {
        for group in self.groups.drain(..) {
            group.to.ack(group.successful, group.failed);
        }
    }
}
