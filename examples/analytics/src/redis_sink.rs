//! The real sink: Redis Streams, through the `demandflow-redis` connector.

use std::collections::HashMap;
use std::sync::Arc;

use demandflow_messages::{AckRef, Message};
use demandflow_redis::RedisSink;
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::event::Record;
use crate::sink::{SendError, Sink};

/// Writes each batch to its Redis stream with one pipelined round trip of
/// `XADD`s, one entry per record with the fields `key` (the partition key)
/// and `data` (the encoded event).
///
/// It opens one connection per stream, on the stream's first send, through the
/// connector's [`RedisSink`]. The connector's own retries are turned off: the
/// sender's retry policy is the only one, so a batch is retried on the same
/// terms whatever the sink. A connection lost mid-send is opened again on the
/// next attempt.
///
/// The connector writes one batch at a time on a stream's connection, so up
/// to `max_in_flight` sends of a stream wait there for their turn: the
/// in-flight bound protects the store, the connection decides the pace.
pub struct RedisStreamsSink {
    url: String,
    maxlen: Option<usize>,
    streams: Mutex<HashMap<String, Arc<OnceCell<RedisSink>>>>,
}

impl std::fmt::Debug for RedisStreamsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamsSink")
            .field("url", &self.url)
            .field("maxlen", &self.maxlen)
            .finish_non_exhaustive()
    }
}

impl RedisStreamsSink {
    /// A sink writing to the server at `url` (`redis://127.0.0.1:6379/`).
    /// Nothing connects until the first send; a server that does not answer
    /// then fails the send, which is retried like any other failure.
    pub fn new(url: impl Into<String>) -> Self {
        RedisStreamsSink {
            url: url.into(),
            maxlen: None,
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// Trims every stream to about `maxlen` entries as it writes (`MAXLEN ~`).
    #[must_use]
    pub fn maxlen_approx(mut self, maxlen: usize) -> Self {
        self.maxlen = Some(maxlen);
        self
    }

    async fn stream(&self, stream: &str) -> Result<Arc<OnceCell<RedisSink>>, SendError> {
        let cell = self
            .streams
            .lock()
            .entry(stream.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let sink = RedisSink::connect(&self.url, stream)
                .await
                .map_err(|e| SendError(e.to_string()))?
                .retries(0);
            Ok::<_, SendError>(match self.maxlen {
                Some(maxlen) => sink.maxlen_approx(maxlen),
                None => sink,
            })
        })
        .await?;
        Ok(cell)
    }
}

impl Sink for RedisStreamsSink {
    async fn send(&self, stream: &str, records: &[Record]) -> Result<(), SendError> {
        let cell = self.stream(stream).await?;
        let sink = cell.get().expect("initialised by `stream`");
        // The connector writes messages; these acknowledge nowhere, the sender
        // only needs to know whether the write succeeded.
        let messages = records
            .iter()
            .map(|record| Message::new(record, AckRef::noop()))
            .collect();
        let written = sink
            .write(messages, |record: &&Record| {
                vec![
                    ("key".to_string(), record.partition_key.clone().into_bytes()),
                    ("data".to_string(), record.data.clone()),
                ]
            })
            .await;
        match written.iter().find_map(|m| m.failure()) {
            None => Ok(()),
            Some(failure) => Err(SendError(failure.to_string())),
        }
    }
}
