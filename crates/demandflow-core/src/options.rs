//! Subscription options ([`SubscribeOptions`]: demand bounds, cancel mode,
//! partition, selector) and the defaults they start from. Validated when a
//! consumer subscribes, so a bad combination is an error, not a panic.

use std::fmt;
use std::sync::Arc;

use crate::error::{ConfigError, SubscribeRefused};

/// The default `max_demand` of a subscription.
pub const DEFAULT_MAX_DEMAND: u64 = 1000;

/// The default `buffer_size` of a producer.
pub const DEFAULT_BUFFER_SIZE: usize = 10_000;

/// What a consumer does when one of its subscriptions ends (SEMANTICS.md §6).
///
/// | mode | producer ended normally | producer ended abnormally |
/// |---|---|---|
/// | `Permanent` | consumer stops with the same reason | consumer stops with the same reason |
/// | `Transient` | consumer keeps running | consumer stops with the same reason |
/// | `Temporary` | consumer keeps running | consumer keeps running |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CancelMode {
    /// The consumer always stops with the subscription's reason.
    #[default]
    Permanent,
    /// The consumer stops only when the reason is abnormal.
    Transient,
    /// The consumer never stops because of this subscription.
    Temporary,
}

impl CancelMode {
    /// Whether a consumer with this mode stops when a subscription ends with `reason`.
    pub fn stops_consumer(self, reason: &crate::Reason) -> bool {
        match self {
            CancelMode::Permanent => true,
            CancelMode::Transient => !reason.is_normal(),
            CancelMode::Temporary => false,
        }
    }
}

/// Which overflowing events a producer buffer drops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BufferKeep {
    /// Keep the newest events: on overflow the oldest buffered events are dropped.
    #[default]
    Last,
    /// Keep the oldest events: on overflow the incoming events are dropped.
    First,
}

/// Names one partition of a partition dispatcher.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Partition {
    /// A numbered partition, `0..n`.
    Index(usize),
    /// A named partition.
    Name(Arc<str>),
}

impl From<usize> for Partition {
    fn from(index: usize) -> Self {
        Partition::Index(index)
    }
}

impl From<&str> for Partition {
    fn from(name: &str) -> Self {
        Partition::Name(name.into())
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Index(i) => write!(f, "{i}"),
            Partition::Name(n) => write!(f, "{n:?}"),
        }
    }
}

/// A predicate a broadcast subscription uses to pick the events it wants.
pub type Selector<T> = Arc<dyn Fn(&T) -> bool + Send + Sync>;

/// Options of one subscription (SEMANTICS.md §1).
///
/// Built with chained setters and checked by [`SubscribeOptions::validate`], which
/// the runtime calls before it subscribes, so a bad value is an error returned to
/// the caller, never a panic inside a task.
///
/// # Examples
///
/// ```
/// use demandflow_core::{CancelMode, SubscribeOptions};
///
/// let opts = SubscribeOptions::<u32>::new().max_demand(100).min_demand(80);
/// assert_eq!(opts.demand_bounds(), Ok((100, 80)));
///
/// // min_demand defaults to half of max_demand (integer division).
/// assert_eq!(SubscribeOptions::<u32>::new().max_demand(7).demand_bounds(), Ok((7, 3)));
/// assert_eq!(SubscribeOptions::<u32>::new().cancel_mode(), CancelMode::Permanent);
///
/// // min_demand must stay below max_demand.
/// let err = SubscribeOptions::<u32>::new().max_demand(10).min_demand(10).validate();
/// assert!(err.is_err());
/// ```
pub struct SubscribeOptions<T> {
    max_demand: u64,
    min_demand: Option<u64>,
    cancel: CancelMode,
    partition: Option<Partition>,
    selector: Option<Selector<T>>,
}

impl<T> SubscribeOptions<T> {
    /// The defaults: `max_demand` 1000, `min_demand` 500, permanent.
    pub fn new() -> Self {
        SubscribeOptions {
            max_demand: DEFAULT_MAX_DEMAND,
            min_demand: None,
            cancel: CancelMode::Permanent,
            partition: None,
            selector: None,
        }
    }

    /// Sets the most events the consumer asks for at once (≥ 1).
    #[must_use]
    pub fn max_demand(mut self, max_demand: u64) -> Self {
        self.max_demand = max_demand;
        self
    }

    /// Sets the demand level at which the consumer asks again (`0 ≤ min < max`).
    #[must_use]
    pub fn min_demand(mut self, min_demand: u64) -> Self {
        self.min_demand = Some(min_demand);
        self
    }

    /// Sets what the consumer does when this subscription ends.
    #[must_use]
    pub fn cancel(mut self, mode: CancelMode) -> Self {
        self.cancel = mode;
        self
    }

    /// Names the partition to consume (partition dispatcher only).
    #[must_use]
    pub fn partition(mut self, partition: impl Into<Partition>) -> Self {
        self.partition = Some(partition.into());
        self
    }

    /// Keeps only the events `selector` accepts (broadcast dispatcher only).
    #[must_use]
    pub fn selector(mut self, selector: impl Fn(&T) -> bool + Send + Sync + 'static) -> Self {
        self.selector = Some(Arc::new(selector));
        self
    }

    /// The configured cancel mode.
    pub fn cancel_mode(&self) -> CancelMode {
        self.cancel
    }

    /// The configured partition, if any.
    pub fn partition_name(&self) -> Option<&Partition> {
        self.partition.as_ref()
    }

    /// The configured selector, if any.
    pub fn selector_fn(&self) -> Option<&Selector<T>> {
        self.selector.as_ref()
    }

    /// `(max_demand, min_demand)` after defaults, or the reason they are invalid.
    ///
    /// # Errors
    ///
    /// [`ConfigError::MaxDemandZero`] when `max_demand` is 0 and
    /// [`ConfigError::MinDemandTooLarge`] when `min_demand >= max_demand`.
    pub fn demand_bounds(&self) -> Result<(u64, u64), ConfigError> {
        if self.max_demand == 0 {
            return Err(ConfigError::MaxDemandZero);
        }
        let min = self.min_demand.unwrap_or(self.max_demand / 2);
        if min >= self.max_demand {
            return Err(ConfigError::MinDemandTooLarge {
                min_demand: min,
                max_demand: self.max_demand,
            });
        }
        Ok((self.max_demand, min))
    }

    /// Checks every option.
    ///
    /// # Errors
    ///
    /// The first invalid option, as [`SubscribeOptions::demand_bounds`] reports it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.demand_bounds().map(|_| ())
    }

    /// Refuses the subscription when it sets a dispatcher-specific option
    /// (`partition`, `selector`) that `dispatcher` does not list in `supported`:
    /// the one check the built-in dispatchers share, so an option one of them
    /// does not understand is refused the same way by all, never ignored.
    pub(crate) fn refuse_unsupported(
        &self,
        dispatcher: &'static str,
        supported: &[&str],
    ) -> Result<(), SubscribeRefused> {
        let set = [
            ("partition", self.partition.is_some()),
            ("selector", self.selector.is_some()),
        ];
        match set
            .into_iter()
            .find(|&(option, is_set)| is_set && !supported.contains(&option))
        {
            Some((option, _)) => Err(SubscribeRefused::UnsupportedOption { option, dispatcher }),
            None => Ok(()),
        }
    }
}

impl<T> Default for SubscribeOptions<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for SubscribeOptions<T> {
    fn clone(&self) -> Self {
        SubscribeOptions {
            max_demand: self.max_demand,
            min_demand: self.min_demand,
            cancel: self.cancel,
            partition: self.partition.clone(),
            selector: self.selector.clone(),
        }
    }
}

impl<T> fmt::Debug for SubscribeOptions<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscribeOptions")
            .field("max_demand", &self.max_demand)
            .field("min_demand", &self.min_demand)
            .field("cancel", &self.cancel)
            .field("partition", &self.partition)
            .field("selector", &self.selector.as_ref().map(|_| "<fn>"))
            .finish()
    }
}
