//! Identifiers: [`SubscriptionId`] names one subscription, [`StageId`] one
//! stage. Both are plain numbers handed out fresh for the life of the process,
//! cheap to copy and compare; `from_raw` builds predictable ones for tests.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Identifies one subscription between a consumer and a producer.
///
/// Ids are unique within a process for its whole life, so an id that has been
/// cancelled is never handed out again: a late message naming it is simply ignored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(u64);

/// Identifies one stage (a producer, a consumer or a producer-consumer).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageId(u64);

static NEXT_SUBSCRIPTION: AtomicU64 = AtomicU64::new(1);
static NEXT_STAGE: AtomicU64 = AtomicU64::new(1);

impl SubscriptionId {
    /// Returns a fresh id, different from every id returned before in this process.
    pub fn next() -> Self {
        SubscriptionId(NEXT_SUBSCRIPTION.fetch_add(1, Ordering::Relaxed))
    }

    /// Builds an id from a raw number.
    ///
    /// Meant for tests of dispatchers, which need predictable ids; the runtime
    /// always uses [`SubscriptionId::next`].
    pub const fn from_raw(raw: u64) -> Self {
        SubscriptionId(raw)
    }

    /// The raw number behind this id.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl StageId {
    /// Returns a fresh id, different from every id returned before in this process.
    pub fn next() -> Self {
        StageId(NEXT_STAGE.fetch_add(1, Ordering::Relaxed))
    }

    /// Builds an id from a raw number (for tests).
    pub const fn from_raw(raw: u64) -> Self {
        StageId(raw)
    }

    /// The raw number behind this id.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

/// Debug output is the short display form (`sub#3`), easy to read in
/// assertion failures and logs.
impl fmt::Debug for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sub#{}", self.0)
    }
}

/// Debug output is the short display form (`stage#3`), easy to read in
/// assertion failures and logs.
impl fmt::Debug for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stage#{}", self.0)
    }
}
