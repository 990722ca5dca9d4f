//! Test helpers: receive the acknowledgements of messages pushed into a topology.

use tokio::sync::mpsc;

use crate::ack::Ack;
use crate::message::Failure;

/// The acknowledgements of messages pushed by
/// [`Topology::test_messages`](crate::Topology::test_messages) or
/// [`Topology::test_batch`](crate::Topology::test_batch).
#[derive(Debug)]
pub struct TestAcks {
    rx: mpsc::UnboundedReceiver<Ack>,
    expected: usize,
    outcome: TestOutcome,
}

/// How the pushed messages ended, by token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestOutcome {
    /// Tokens of the messages acknowledged as successful, in arrival order.
    pub successful: Vec<u64>,
    /// Tokens of the messages acknowledged as failed, with why, in arrival order.
    pub failed: Vec<(u64, Failure)>,
    /// The acknowledgement calls, one per group.
    pub calls: usize,
}

impl TestOutcome {
    /// How many messages have been acknowledged.
    pub fn len(&self) -> usize {
        self.successful.len() + self.failed.len()
    }

    /// `true` when nothing has been acknowledged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TestAcks {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<Ack>, expected: usize) -> Self {
        TestAcks {
            rx,
            expected,
            outcome: TestOutcome::default(),
        }
    }

    /// How many messages were pushed.
    pub fn expected(&self) -> usize {
        self.expected
    }

    /// Waits until every pushed message has been acknowledged and returns how
    /// each ended. Returns early if no acknowledgement can come any more.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: acknowledgements received so far are kept.
    pub async fn all(&mut self) -> TestOutcome {
        while self.outcome.len() < self.expected {
            match self.rx.recv().await {
                Some(ack) => self.record(ack),
                None => break,
            }
        }
        self.outcome.clone()
    }

    /// What has been acknowledged so far, without waiting.
    pub fn so_far(&mut self) -> TestOutcome {
        while let Ok(ack) = self.rx.try_recv() {
            self.record(ack);
        }
        self.outcome.clone()
    }

    fn record(&mut self, ack: Ack) {
        self.outcome.calls += 1;
        self.outcome.successful.extend(ack.successful);
        self.outcome.failed.extend(ack.failed);
    }
}
