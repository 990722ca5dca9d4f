//! Counters of a source, for a metrics backend to poll.

demandflow_messages::source_counters! {
    /// The live counters of a [`KafkaSource`](crate::KafkaSource), shared by its copies.
    pub(crate) struct Counters;

    /// A snapshot of a source's counters ([`KafkaSource::metrics`](crate::KafkaSource::metrics)).
    #[non_exhaustive]
    pub struct SourceMetrics {
        /// Records fetched from the brokers.
        pub received: u64,
        /// Messages acknowledged as successful.
        pub acked: u64,
        /// Messages acknowledged as failed (malformed ones included).
        pub failed: u64,
        /// Failed messages that stopped their partition's commit (see
        /// [`FailurePolicy`](crate::FailurePolicy)).
        pub held: u64,
        /// Acknowledgements that arrived after their partition was revoked (their
        /// records are delivered again to the partition's next owner).
        pub stale: u64,
        /// Records the decoder rejected.
        pub malformed: u64,
        /// Offset commits handed to the client (one per partition and commit).
        pub commits: u64,
        /// Commits the group coordinator refused or that failed.
        pub commit_errors: u64,
        /// Partitions given up in a rebalance or at close.
        pub revoked: u64,
        /// Revocations that stopped waiting for in-flight messages at the timeout.
        pub revoke_timeouts: u64,
        /// Errors the client reported while fetching (it retries on its own).
        pub client_errors: u64,
        /// Times a copy paused its partitions because it was full and its
        /// demand stalled.
        pub pauses: u64,
        /// Copies whose consumer has left the group and closed.
        pub closed: u64,
    }
}
