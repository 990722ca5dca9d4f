//! What an application records: event types and their encoded form.

/// A type of analytics event. Each type has a pipeline of its own, started by
/// its first record, and goes to a stream of its own.
///
/// Implement it on a plain Rust type; the sender calls the methods on its own
/// tasks, never on the task that records, so encoding costs the recorder
/// nothing.
///
/// ```
/// use analytics::Event;
///
/// struct PageView {
///     user: u64,
///     path: String,
/// }
///
/// impl Event for PageView {
///     const STREAM: &'static str = "page-views";
///
///     fn partition_key(&self) -> String {
///         self.user.to_string()
///     }
///
///     fn encode(&self, out: &mut Vec<u8>) {
///         out.extend_from_slice(self.path.as_bytes());
///     }
/// }
///
/// let view = PageView { user: 7, path: "/home".into() };
/// let record = analytics::Record::of(&view);
/// assert_eq!((record.partition_key.as_str(), record.data.as_slice()), ("7", &b"/home"[..]));
/// ```
pub trait Event: Send + 'static {
    /// The stream this type is written to (the sender may put a prefix before
    /// it, see [`AnalyticsBuilder::stream_prefix`](crate::AnalyticsBuilder::stream_prefix)).
    const STREAM: &'static str;

    /// The key a partitioned store shards by (a Kinesis partition key, a Redis
    /// Cluster hash tag); records with equal keys stay together.
    fn partition_key(&self) -> String;

    /// Appends the event's bytes to `out` (JSON, protobuf, … your choice).
    fn encode(&self, out: &mut Vec<u8>);
}

/// An encoded event, the form a [`Sink`](crate::Sink) receives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Record {
    /// [`Event::partition_key`].
    pub partition_key: String,
    /// [`Event::encode`]'s bytes.
    pub data: Vec<u8>,
}

impl Record {
    /// Encodes `event`.
    pub fn of<E: Event>(event: &E) -> Record {
        let mut data = Vec::new();
        event.encode(&mut data);
        Record {
            partition_key: event.partition_key(),
            data,
        }
    }
}
