//! The counters in memory: absolute values in a sharded map, each key marked
//! dirty from its first change after a write until the write-behind pipeline
//! takes it.

use std::collections::HashMap;

use parking_lot::Mutex;

/// How many shards the map has (a power of two): enough that 2 cores (or 16)
/// rarely meet on one lock, few enough that a snapshot stays cheap.
const SHARDS: usize = 64;

#[derive(Clone, Copy, Debug)]
struct Slot {
    value: i64,
    /// Changed since the write-behind pipeline last took this key.
    dirty: bool,
}

/// One lock's share of the counters.
type Shard = Mutex<HashMap<Box<str>, Slot>>;

/// What an increment did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Added {
    /// The counter's value after the increment.
    pub value: i64,
    /// The key was clean and is dirty now: its first change since it was last
    /// taken, so the caller hands it to the write-behind pipeline (once).
    pub newly_dirty: bool,
}

/// The increment would take the counter past `i64`'s range; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("counter would overflow")]
pub struct Overflow;

/// Counters held in memory: key → absolute value.
///
/// A sharded map (64 `parking_lot` mutexes over `HashMap`s, chosen by the
/// key's hash) rather than one lock: an increment holds its shard's lock for
/// one hash-map update, so concurrent requests on different keys almost never
/// wait for each other, and requests on one key are serialised by its shard,
/// which makes every increment atomic. `counters-bench` measures it against a
/// single `Mutex<HashMap>` in the same run.
pub struct Counters {
    shards: Box<[Shard]>,
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl Counters {
    /// No counters.
    pub fn new() -> Self {
        Counters {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: &str) -> &Shard {
        // FNV-1a picks the shard: the map inside hashes the key again with its
        // own (DoS-resistant) hasher, so this one only needs to be cheap.
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for byte in key.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        &self.shards[(hash ^ (hash >> 32)) as usize & (SHARDS - 1)]
    }

    /// Sets counters to stored values (clean: the store already has them).
    pub fn load(&self, rows: impl IntoIterator<Item = (String, i64)>) {
        for (key, value) in rows {
            self.shard(&key).lock().insert(
                key.into_boxed_str(),
                Slot {
                    value,
                    dirty: false,
                },
            );
        }
    }

    /// Adds `delta` to `key`'s counter (an unknown key starts at 0) and marks it
    /// dirty.
    ///
    /// # Errors
    ///
    /// [`Overflow`] if the sum leaves `i64`'s range; the counter keeps its value.
    pub fn add(&self, key: &str, delta: i64) -> Result<Added, Overflow> {
        let mut shard = self.shard(key).lock();
        match shard.get_mut(key) {
            Some(slot) => {
                slot.value = slot.value.checked_add(delta).ok_or(Overflow)?;
                let newly_dirty = !slot.dirty;
                slot.dirty = true;
                Ok(Added {
                    value: slot.value,
                    newly_dirty,
                })
            }
            None => {
                shard.insert(
                    key.into(),
                    Slot {
                        value: delta,
                        dirty: true,
                    },
                );
                Ok(Added {
                    value: delta,
                    newly_dirty: true,
                })
            }
        }
    }

    /// `key`'s value, 0 if unknown.
    pub fn get(&self, key: &str) -> i64 {
        self.shard(key).lock().get(key).map_or(0, |slot| slot.value)
    }

    /// Takes `key` for writing: returns its current value and marks it clean,
    /// so its next change marks it dirty (and enqueues it) again.
    pub fn take(&self, key: &str) -> Option<i64> {
        let mut shard = self.shard(key).lock();
        let slot = shard.get_mut(key)?;
        slot.dirty = false;
        Some(slot.value)
    }

    /// Every counter, one shard locked at a time.
    pub fn snapshot(&self) -> HashMap<String, i64> {
        let mut all = HashMap::new();
        for shard in &self.shards {
            all.extend(
                shard
                    .lock()
                    .iter()
                    .map(|(key, slot)| (key.to_string(), slot.value)),
            );
        }
        all
    }
}
