//! Who is watching which message: the live timeline's subscriptions.
//!
//! The store consumers [`publish`](Live::publish) each step after its
//! transaction commits; a websocket [`subscribe`](Live::subscribe)s to one
//! message. Only watched messages cost anything: publishing a step of a
//! message nobody watches is one hash lookup.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::store::Upsert;

/// How many steps a slow watcher may fall behind before it misses some.
const WATCHER_BACKLOG: usize = 256;

/// One stored step, as the websocket sends it: `{"event", "time"}`.
pub type StepJson = Arc<str>;

/// The live subscriptions, by message.
#[derive(Debug, Default)]
pub struct Live {
    watchers: Mutex<HashMap<i64, broadcast::Sender<StepJson>>>,
}

/// A subscription to one message's stored steps; dropping it unsubscribes.
#[derive(Debug)]
pub struct Watch {
    live: Arc<Live>,
    message_id: i64,
    /// The steps, as JSON text, in the order they were stored.
    pub steps: broadcast::Receiver<StepJson>,
}

impl Live {
    /// Starts watching `message_id`: every step stored from now on arrives on
    /// [`Watch::steps`].
    pub fn subscribe(self: &Arc<Self>, message_id: i64) -> Watch {
        let steps = self
            .watchers
            .lock()
            .entry(message_id)
            .or_insert_with(|| broadcast::channel(WATCHER_BACKLOG).0)
            .subscribe();
        Watch {
            live: self.clone(),
            message_id,
            steps,
        }
    }

    /// How many messages are watched.
    pub fn watched(&self) -> usize {
        self.watchers.lock().len()
    }

    /// Sends the steps of `rows`, just stored, to their watchers.
    pub fn publish(&self, rows: &[Upsert]) {
        let watchers = self.watchers.lock();
        if watchers.is_empty() {
            return;
        }
        for row in rows {
            if let Some(sender) = watchers.get(&row.message_id) {
                for (event, time) in &row.events {
                    let step = serde_json::json!({ "event": &**event, "time": &**time });
                    // No receiver left means the last watcher is leaving now.
                    let _ = sender.send(step.to_string().into());
                }
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watchers = self.live.watchers.lock();
        // This receiver still counts until it is dropped, after this runs.
        if let Some(sender) = watchers.get(&self.message_id)
            && sender.receiver_count() <= 1
        {
            watchers.remove(&self.message_id);
        }
    }
}
