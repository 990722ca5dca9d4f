//! The core's errors: options that do not validate ([`ConfigError`]) and a
//! dispatcher refusing a subscription ([`SubscribeRefused`]).

use crate::Partition;

/// An invalid option, found when a stage or subscription is configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_demand` was 0.
    #[error("max_demand must be at least 1")]
    MaxDemandZero,
    /// `min_demand` was not below `max_demand`.
    #[error("min_demand ({min_demand}) must be less than max_demand ({max_demand})")]
    MinDemandTooLarge {
        /// The configured min_demand.
        min_demand: u64,
        /// The configured max_demand.
        max_demand: u64,
    },
    /// A count that must be positive was 0.
    #[error("{option} must be at least 1")]
    Zero {
        /// The option's name.
        option: &'static str,
    },
    /// Any other invalid option.
    #[error("invalid option {option}: {message}")]
    Invalid {
        /// The option's name.
        option: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Why a dispatcher refused a new subscription.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeRefused {
    /// The consumer is already subscribed (broadcast dispatcher).
    #[error("consumer is already subscribed to this producer")]
    AlreadySubscribed,
    /// The partition dispatcher needs a `partition` option.
    #[error("the partition dispatcher needs a partition option (one of {available})")]
    MissingPartition {
        /// The partitions that exist, for the message.
        available: String,
    },
    /// No partition has this name.
    #[error("unknown partition {partition} (partitions: {available})")]
    UnknownPartition {
        /// The partition asked for.
        partition: Partition,
        /// The partitions that exist, for the message.
        available: String,
    },
    /// The subscription set an option this dispatcher does not understand (a
    /// `partition` or a `selector` on a demand dispatcher, say): refused rather
    /// than silently ignored.
    #[error("the {dispatcher} dispatcher does not support the {option} option")]
    UnsupportedOption {
        /// The option's name.
        option: &'static str,
        /// Which dispatcher refused it.
        dispatcher: &'static str,
    },
    /// A dispatcher-specific refusal.
    #[error("{0}")]
    Other(String),
}
