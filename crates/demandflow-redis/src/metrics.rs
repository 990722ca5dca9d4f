//! Counters of a source, for a metrics backend to poll.

demandflow_messages::source_counters! {
    /// The live counters of a [`RedisSource`](crate::RedisSource), shared by its copies.
    pub(crate) struct Counters;

    /// A snapshot of a source's counters ([`RedisSource::metrics`](crate::RedisSource::metrics)).
    #[non_exhaustive]
    pub struct SourceMetrics {
        /// New entries read with XREADGROUP.
        pub read: u64,
        /// Entries claimed from other (or earlier) consumers with XAUTOCLAIM.
        pub claimed: u64,
        /// Entries acknowledged with XACK (the count Redis confirmed).
        pub acked: u64,
        /// Failed entries left in the pending list for redelivery.
        pub left_pending: u64,
        /// Failed entries moved to the dead-letter stream and acknowledged.
        pub dead_lettered: u64,
        /// Entries the decoder rejected (then handled as failed).
        pub malformed: u64,
        /// Commands that failed for want of a connection (each is retried).
        pub connection_errors: u64,
        /// Connections opened again after an error.
        pub reconnects: u64,
    }
}
