//! The sink: batches of messages written to a stream with pipelined XADD.

use std::fmt;
use std::time::Duration;

use demandflow_messages::Message;
use redis::aio::MultiplexedConnection;
use redis::{Client, RedisError};
use tokio::sync::Mutex;

use crate::conn::{Backoff, connect};

/// Writes messages to a Redis stream, one entry per message, a batch per
/// pipelined round trip of `XADD`s (optionally `MAXLEN ~ n`).
///
/// Call [`write`](Self::write) from
/// [`MessageHandler::handle_batch`](demandflow_messages::MessageHandler::handle_batch)
/// and return what it returns: a message comes back ok only once Redis
/// confirmed its entry, so it is acknowledged to its source only after its
/// write. When the write fails after the retries, every message of the
/// batch comes back failed (its source delivers it again: the entries that
/// were written before the failure are then written twice — make what reads
/// the stream idempotent, see the guide).
pub struct RedisSink {
    client: Client,
    stream: String,
    maxlen: Option<usize>,
    retries: u32,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSink")
            .field("stream", &self.stream)
            .field("maxlen", &self.maxlen)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

/// Why [`RedisSink::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[error("redis sink for {stream:?} could not connect: {source}")]
pub struct ConnectSinkError {
    /// The stream the sink was for.
    pub stream: String,
    /// Why.
    #[source]
    pub source: RedisError,
}

impl RedisSink {
    /// Connects to `url` to write to `stream`.
    ///
    /// # Errors
    ///
    /// [`ConnectSinkError`] when the URL is invalid or the server does not
    /// answer within 3 seconds.
    pub async fn connect(
        url: &str,
        stream: impl Into<String>,
    ) -> Result<RedisSink, ConnectSinkError> {
        let stream = stream.into();
        let client = Client::open(url).map_err(|source| ConnectSinkError {
            stream: stream.clone(),
            source,
        })?;
        let conn = connect(&client, Duration::from_secs(10))
            .await
            .map_err(|source| ConnectSinkError {
                stream: stream.clone(),
                source,
            })?;
        Ok(RedisSink {
            client,
            stream,
            maxlen: None,
            retries: 3,
            conn: Mutex::new(Some(conn)),
        })
    }

    /// Trims the stream to about `maxlen` entries as it writes (`MAXLEN ~`).
    #[must_use]
    pub fn maxlen_approx(mut self, maxlen: usize) -> Self {
        self.maxlen = Some(maxlen);
        self
    }

    /// How often a failed write is retried, on a new connection, before the
    /// batch fails (default 3).
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Writes one entry per ok message (fields from `fields`) and returns the
    /// messages: ok once written, failed if the write failed. Messages that
    /// had failed already are returned untouched and not written.
    pub async fn write<T, F>(&self, mut messages: Vec<Message<T>>, fields: F) -> Vec<Message<T>>
    where
        F: Fn(&T) -> Vec<(String, Vec<u8>)>,
    {
        let mut pipe = redis::pipe();
        let mut written = 0;
        for message in messages.iter().filter(|m| m.is_ok()) {
            let add = pipe.cmd("XADD").arg(&self.stream);
            if let Some(maxlen) = self.maxlen {
                add.arg("MAXLEN").arg("~").arg(maxlen);
            }
            add.arg("*");
            for (name, value) in fields(&message.data) {
                add.arg(name).arg(value);
            }
            add.ignore();
            written += 1;
        }
        if written == 0 {
            return messages;
        }
        let mut backoff = Backoff::new();
        let mut attempt = 0;
        let error = loop {
            let result = {
                let mut conn = self.conn.lock().await;
                let c = match conn.as_mut() {
                    Some(c) => Ok(c),
                    None => match connect(&self.client, Duration::from_secs(10)).await {
                        Ok(c) => Ok(conn.insert(c)),
                        Err(e) => Err(e),
                    },
                };
                match c {
                    Ok(c) => {
                        let r = pipe.query_async::<()>(c).await;
                        if r.is_err() {
                            *conn = None;
                        }
                        r
                    }
                    Err(e) => Err(e),
                }
            };
            match result {
                Ok(()) => return messages,
                Err(e) if attempt < self.retries => {
                    attempt += 1;
                    let delay = backoff.next_delay();
                    tracing::warn!(stream = %self.stream, error = %e, attempt,
                        retry_in_ms = delay.as_millis() as u64, "redis sink: write failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => break e,
            }
        };
        tracing::error!(stream = %self.stream, error = %error, "redis sink: write failed; failing the batch");
        for message in messages.iter_mut().filter(|m| m.is_ok()) {
            message.fail(format!("redis write failed: {error}"));
        }
        messages
    }
}
