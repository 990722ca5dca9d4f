//! Acknowledgement: XACK for messages that succeeded, the failure policy for
//! the others, on a task of its own so that the stages never wait for Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use demandflow_messages::{Acknowledger, Failure};
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{Client, RedisResult, Value};
use tokio::sync::mpsc;

use crate::conn::{Backoff, connect};
use crate::metrics::Counters;

/// What happens to an entry whose message failed.
///
/// Failures that are not the message's fault ([`Failure::Shutdown`],
/// [`Failure::Dropped`]: the topology stopped with it in hand) always leave it
/// pending, whatever the policy: another consumer claims it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Leave the entry in the group's pending list. It is delivered again, to
    /// this consumer or another, once it has been idle for the claim's
    /// min-idle time.
    LeavePending,
    /// Leave the entry pending until it has been delivered `max_deliveries`
    /// times; then copy it to the stream `stream` (with fields `source_id`,
    /// `error` and `deliveries` added) and acknowledge it.
    DeadLetter {
        /// The dead-letter stream's key.
        stream: String,
        /// Deliveries after which a failing entry is moved (1 moves it at its
        /// first failure).
        max_deliveries: u64,
    },
}

impl FailurePolicy {
    /// Moves an entry to `stream` after `max_deliveries` failed deliveries.
    pub fn dead_letter(stream: impl Into<String>, max_deliveries: u64) -> Self {
        FailurePolicy::DeadLetter {
            stream: stream.into(),
            max_deliveries: max_deliveries.max(1),
        }
    }
}

/// One acknowledgement call, as it travels to the settling task.
struct Settle {
    successful: Vec<u64>,
    failed: Vec<(u64, Failure)>,
}

/// The acknowledger of a source's messages: maps each message's token to its
/// entry id and hands finished groups to the settling task.
pub(crate) struct StreamAcknowledger {
    next: AtomicU64,
    ids: Ids,
    tx: mpsc::UnboundedSender<Settle>,
}

/// Entry ids by token, shared by the acknowledger and the settling task (which
/// outlives the acknowledger to settle what was sent before it was dropped).
type Ids = Arc<Mutex<HashMap<u64, String>>>;

impl StreamAcknowledger {
    /// Gives `ids` consecutive tokens; returns the first.
    pub(crate) fn register(&self, ids: impl ExactSizeIterator<Item = String>) -> u64 {
        let first = self.next.fetch_add(ids.len() as u64, Ordering::Relaxed);
        let mut map = self.ids.lock();
        map.extend(ids.enumerate().map(|(i, id)| (first + i as u64, id)));
        first
    }
}

impl Acknowledger for StreamAcknowledger {
    fn ack(&self, successful: Vec<u64>, failed: Vec<(u64, Failure)>) {
        // The task is gone only once the runtime shuts down; the entries then
        // stay pending and are claimed by another consumer.
        let _ = self.tx.send(Settle { successful, failed });
    }
}

/// Where the settling task acknowledges.
pub(crate) struct Target {
    pub(crate) client: Client,
    pub(crate) stream: String,
    pub(crate) group: String,
    pub(crate) policy: FailurePolicy,
    pub(crate) counters: Arc<Counters>,
}

/// Starts the settling task; it ends when every acknowledger is dropped and
/// everything sent to it is settled.
pub(crate) fn start(target: Target, conn: MultiplexedConnection) -> Arc<StreamAcknowledger> {
    let (tx, rx) = mpsc::unbounded_channel();
    let ids = Ids::default();
    tokio::spawn(settle(target, conn, rx, ids.clone()));
    Arc::new(StreamAcknowledger {
        next: AtomicU64::new(0),
        ids,
        tx,
    })
}

/// At most this many ids per XACK command.
const XACK_CHUNK: usize = 10_000;

async fn settle(
    target: Target,
    conn: MultiplexedConnection,
    mut rx: mpsc::UnboundedReceiver<Settle>,
    ids: Ids,
) {
    let mut conn = Some(conn);
    let mut backoff = Backoff::new();
    let mut ok_tokens = Vec::new();
    let mut failed_tokens = Vec::new();
    while let Some(first) = rx.recv().await {
        // Take everything that is waiting: one XACK for many groups.
        ok_tokens.extend(first.successful);
        failed_tokens.extend(first.failed);
        while ok_tokens.len() < XACK_CHUNK * 4 {
            match rx.try_recv() {
                Ok(more) => {
                    ok_tokens.extend(more.successful);
                    failed_tokens.extend(more.failed);
                }
                Err(_) => break,
            }
        }
        let (ok_ids, failed_ids) = {
            let mut ids = ids.lock();
            let ok: Vec<String> = ok_tokens.drain(..).filter_map(|t| ids.remove(&t)).collect();
            let failed: Vec<(String, Failure)> = failed_tokens
                .drain(..)
                .filter_map(|(t, f)| ids.remove(&t).map(|id| (id, f)))
                .collect();
            (ok, failed)
        };

        // XACK is idempotent, so retrying after a reply was lost acknowledges
        // nothing twice: Redis counts an id only while it is pending.
        loop {
            let result = match conn.as_mut() {
                Some(c) => settle_once(&target, c, &ok_ids, &failed_ids).await,
                None => match connect(&target.client, Duration::from_secs(10)).await {
                    Ok(c) => {
                        Counters::add(&target.counters.reconnects, 1);
                        conn = Some(c);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => {
                    backoff.reset();
                    break;
                }
                Err(e) => {
                    Counters::add(&target.counters.connection_errors, 1);
                    let delay = backoff.next_delay();
                    tracing::warn!(stream = %target.stream, group = %target.group, error = %e,
                        retry_in_ms = delay.as_millis() as u64, "redis: acknowledging failed; retrying");
                    if e.is_unrecoverable_error()
                        || e.is_io_error()
                        || e.is_timeout()
                        || e.is_connection_dropped()
                    {
                        conn = None;
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

async fn settle_once(
    target: &Target,
    conn: &mut MultiplexedConnection,
    ok_ids: &[String],
    failed: &[(String, Failure)],
) -> RedisResult<()> {
    if !ok_ids.is_empty() {
        let mut pipe = redis::pipe();
        for chunk in ok_ids.chunks(XACK_CHUNK) {
            pipe.cmd("XACK")
                .arg(&target.stream)
                .arg(&target.group)
                .arg(chunk);
        }
        let acked: Vec<u64> = pipe.query_async(conn).await?;
        Counters::add(&target.counters.acked, acked.iter().sum());
    }
    if failed.is_empty() {
        return Ok(());
    }
    let FailurePolicy::DeadLetter {
        stream: dead,
        max_deliveries,
    } = &target.policy
    else {
        Counters::add(&target.counters.left_pending, failed.len() as u64);
        return Ok(());
    };
    for (id, failure) in failed {
        if matches!(failure, Failure::Shutdown | Failure::Dropped) {
            Counters::add(&target.counters.left_pending, 1);
            continue;
        }
        // How often has it been delivered? (XPENDING for exactly this id.)
        let pending: Value = redis::cmd("XPENDING")
            .arg(&target.stream)
            .arg(&target.group)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(conn)
            .await?;
        let deliveries = deliveries_of(pending);
        let Some(deliveries) = deliveries else {
            continue; // no longer pending: claimed and settled elsewhere
        };
        if deliveries < *max_deliveries {
            Counters::add(&target.counters.left_pending, 1);
            continue;
        }
        let range: Value = redis::cmd("XRANGE")
            .arg(&target.stream)
            .arg(id)
            .arg(id)
            .query_async(conn)
            .await?;
        let mut entries = Vec::new();
        crate::entry::read_range(range, &mut entries);
        let mut pipe = redis::pipe();
        pipe.atomic();
        let add = pipe.cmd("XADD").arg(dead).arg("*");
        if let Some(entry) = entries.first() {
            for (name, value) in &entry.fields {
                add.arg(name).arg(value);
            }
        }
        add.arg("source_id")
            .arg(id)
            .arg("error")
            .arg(failure.to_string())
            .arg("deliveries")
            .arg(deliveries);
        pipe.cmd("XACK")
            .arg(&target.stream)
            .arg(&target.group)
            .arg(id)
            .ignore();
        pipe.query_async::<()>(conn).await?;
        Counters::add(&target.counters.dead_lettered, 1);
        Counters::add(&target.counters.acked, 1);
    }
    Ok(())
}

/// The delivery count in an XPENDING reply for one id (`[[id, consumer, idle, deliveries]]`).
fn deliveries_of(value: Value) -> Option<u64> {
    let Value::Array(rows) = value else {
        return None;
    };
    let Value::Array(row) = rows.into_iter().next()? else {
        return None;
    };
    match row.into_iter().nth(3)? {
        Value::Int(n) => u64::try_from(n).ok(),
        _ => None,
    }
}
