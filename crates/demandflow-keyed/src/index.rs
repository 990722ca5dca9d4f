//! How a keyed scheduler finds a key's partition and its slot in that partition.

use std::collections::HashMap;
use std::hash::Hash;

use demandflow_core::Key;
use std::num::NonZeroUsize;

/// Maps keys to partitions, and within one partition to dense slot numbers.
///
/// A [`KeyedQueue`](crate::KeyedQueue) keeps its per-key state in vectors
/// indexed by slot, so it never hashes or allocates per key itself: the index
/// decides how a key becomes a slot. Two indexes are provided:
///
/// - [`DenseKeys`]: keys are small integers (`u64` ids allocated densely from 0).
///   Partition and slot are computed arithmetically (`key % partitions`,
///   `key / partitions`); nothing is hashed, nothing is allocated per key.
/// - [`HashedKeys`]: any [`Key`] that is also `Hash + Eq + Clone` (strings,
///   integers, [`Hashed`](demandflow_core::Hashed) tuples…). A hash map gives each key a
///   slot while it has events queued or in flight; the slot is recycled when the
///   key goes idle, so memory follows the keys that are active, not every key
///   ever seen.
///
/// # For implementers
///
/// The scheduler guarantees that it calls [`slot`](KeyIndex::slot) only for
/// keys whose [`partition_of`](KeyIndex::partition_of) is this index's
/// partition, that it calls [`release`](KeyIndex::release) only for a slot that
/// holds nothing (no queued event, nothing in flight), and never uses a slot
/// again after releasing it until `slot` hands it out anew. You guarantee that
/// `partition_of` gives the same answer for a key from every index of the same
/// scheduler, and that `slot` gives the same slot for the same key until it is
/// released.
pub trait KeyIndex: Send + Sync + 'static {
    /// The key type.
    type Key: Clone + Send + Sync + 'static;

    /// The index of partition `partition` (in `0..partitions`).
    fn new(partition: usize, partitions: NonZeroUsize) -> Self
    where
        Self: Sized;

    /// The partition `key` belongs to, in `0..partitions`.
    fn partition_of(&self, key: &Self::Key) -> usize;

    /// The slot of `key` in this partition, assigning one if it has none.
    fn slot(&mut self, key: &Self::Key) -> usize;

    /// The key that slot `slot` holds.
    fn key(&self, slot: usize) -> Self::Key;

    /// `slot` holds nothing any more; the index may forget its key.
    fn release(&mut self, slot: usize);
}

/// Division by a fixed divisor with a multiplication (Lemire, Kaser and Kurz,
/// "Faster remainder by direct computation", 2019): exact for numerators below
/// 2^32, which is where dense keys live; larger ones fall back to `/`.
#[derive(Clone, Copy, Debug)]
struct Divisor {
    d: u64,
    /// `ceil(2^64 / d)`; unused when `d` is 1.
    m: u64,
}

impl Divisor {
    fn new(d: NonZeroUsize) -> Divisor {
        let d = d.get() as u64;
        let m = if d == 1 { 0 } else { u64::MAX / d + 1 };
        Divisor { d, m }
    }

    /// `(n / d, n % d)`.
    #[inline]
    fn div_rem(self, n: u64) -> (u64, u64) {
        if self.d == 1 {
            (n, 0)
        } else if n <= u64::from(u32::MAX) {
            let q = ((u128::from(self.m) * u128::from(n)) >> 64) as u64;
            (q, n - q * self.d)
        } else {
            (n / self.d, n % self.d)
        }
    }
}

/// Small dense integer keys (`u64`), indexed arithmetically: no hashing and no
/// allocation per key.
///
/// Key `k` goes to partition `k % partitions`, slot `k / partitions`. The
/// per-key state of a partition is a vector as long as its largest slot, about
/// 13 bytes per key in total, so use it for ids allocated densely from 0 (entity
/// ids, row numbers), not for sparse or random 64-bit ids (use [`HashedKeys`]).
///
/// # Examples
///
/// ```
/// use std::num::NonZeroUsize;
/// use demandflow_keyed::{DenseKeys, KeyIndex};
///
/// let mut second = DenseKeys::new(1, NonZeroUsize::new(4).unwrap());
/// assert_eq!(second.partition_of(&9), 1);
/// assert_eq!(second.slot(&9), 2); // 9 = 2 * 4 + 1
/// assert_eq!(second.key(2), 9);
/// ```
#[derive(Clone, Debug)]
pub struct DenseKeys {
    partitions: Divisor,
    partition: u64,
}

impl KeyIndex for DenseKeys {
    type Key = u64;

    fn new(partition: usize, partitions: NonZeroUsize) -> DenseKeys {
        DenseKeys {
            partitions: Divisor::new(partitions),
            partition: partition as u64,
        }
    }

    #[inline]
    fn partition_of(&self, key: &u64) -> usize {
        self.partitions.div_rem(*key).1 as usize
    }

    #[inline]
    fn slot(&mut self, key: &u64) -> usize {
        let (slot, partition) = self.partitions.div_rem(*key);
        debug_assert_eq!(
            partition, self.partition,
            "key routed to the wrong partition"
        );
        usize::try_from(slot).unwrap_or(usize::MAX)
    }

    #[inline]
    fn key(&self, slot: usize) -> u64 {
        slot as u64 * self.partitions.d + self.partition
    }

    #[inline]
    fn release(&mut self, _slot: usize) {}
}

/// Any hashable key, given a slot while it has events queued or in flight.
///
/// Partitions are chosen by the key itself ([`Key::partition`], the stable key
/// hash of `demandflow-core`), so a key always lands in the same partition, the
/// one the partition dispatcher and the partition supervisor pick for it; slots
/// are found with a hash map (only this process sees them, so it uses
/// `foldhash`'s fast, randomly seeded hasher rather than SipHash, which cost
/// more than half of the `million_objects` bench's hashed-key row) and
/// recycled when a key goes idle.
///
/// # Examples
///
/// ```
/// use std::num::NonZeroUsize;
/// use demandflow_keyed::{HashedKeys, KeyIndex};
///
/// let partitions = NonZeroUsize::new(2).unwrap();
/// let router = HashedKeys::<String>::new(0, partitions);
/// let p = router.partition_of(&"alice".to_owned());
/// let mut index = HashedKeys::<String>::new(p, partitions);
/// let slot = index.slot(&"alice".to_owned());
/// assert_eq!(index.slot(&"alice".to_owned()), slot);
/// assert_eq!(index.key(slot), "alice");
/// index.release(slot);
/// assert_eq!(index.slot(&"bob".to_owned()), slot); // recycled
/// ```
pub struct HashedKeys<K> {
    partitions: u64,
    slots: HashMap<K, u32, foldhash::fast::RandomState>,
    keys: Vec<Option<K>>,
    free: Vec<u32>,
}

impl<K> std::fmt::Debug for HashedKeys<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashedKeys")
            .field("partitions", &self.partitions)
            .field("keys", &self.slots.len())
            .finish()
    }
}

impl<K> KeyIndex for HashedKeys<K>
where
    K: Key + Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = K;

    fn new(_partition: usize, partitions: NonZeroUsize) -> HashedKeys<K> {
        HashedKeys {
            partitions: partitions.get() as u64,
            slots: HashMap::default(),
            keys: Vec::new(),
            free: Vec::new(),
        }
    }

    fn partition_of(&self, key: &K) -> usize {
        if self.partitions == 1 {
            return 0;
        }
        key.partition(self.partitions as usize)
    }

    fn slot(&mut self, key: &K) -> usize {
        if let Some(&slot) = self.slots.get(key) {
            return slot as usize;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.keys[slot as usize] = Some(key.clone());
                slot
            }
            None => {
                let slot = u32::try_from(self.keys.len()).expect("more than 2^32 keys active");
                self.keys.push(Some(key.clone()));
                slot
            }
        };
        self.slots.insert(key.clone(), slot);
        slot as usize
    }

    fn key(&self, slot: usize) -> K {
        self.keys[slot].clone().expect("a slot in use holds a key")
    }

    fn release(&mut self, slot: usize) {
        if let Some(key) = self.keys[slot].take() {
            self.slots.remove(&key);
            self.free.push(slot as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn division_by_multiplication_is_exact_for_32_bit_numerators() {
        let numerators = (0..100_000_u64).chain((0..64).map(|s| 1_u64 << s)).chain([
            u64::from(u32::MAX),
            u64::from(u32::MAX) - 1,
            u64::MAX,
            1 << 40,
        ]);
        for d in (1..=70).chain([127, 1000, 65_537, (1 << 31) + 3, u32::MAX as usize]) {
            let div = Divisor::new(nz(d));
            for n in numerators.clone() {
                assert_eq!(div.div_rem(n), (n / d as u64, n % d as u64), "{n} / {d}");
            }
        }
    }

    #[test]
    fn dense_keys_round_trip_through_partition_and_slot() {
        for partitions in [1, 2, 3, 8] {
            let mut indexes: Vec<DenseKeys> = (0..partitions)
                .map(|p| DenseKeys::new(p, nz(partitions)))
                .collect();
            for key in 0..1000_u64 {
                let p = indexes[0].partition_of(&key);
                assert_eq!(p, key as usize % partitions);
                let slot = indexes[p].slot(&key);
                assert_eq!(slot, key as usize / partitions);
                assert_eq!(indexes[p].key(slot), key);
            }
        }
    }

    #[test]
    fn hashed_keys_give_stable_partitions_and_recycle_slots() {
        let a = HashedKeys::<&'static str>::new(0, nz(3));
        let b = HashedKeys::<&'static str>::new(2, nz(3));
        for key in ["a", "b", "c", "dd", "eee"] {
            assert_eq!(a.partition_of(&key), b.partition_of(&key));
            assert!(a.partition_of(&key) < 3);
        }
        let mut index = HashedKeys::<&'static str>::new(0, nz(1));
        assert_eq!(index.slot(&"x"), 0);
        assert_eq!(index.slot(&"y"), 1);
        assert_eq!(index.slot(&"x"), 0);
        index.release(0);
        index.release(0); // releasing twice is harmless
        assert_eq!(index.slot(&"z"), 0);
        assert_eq!(index.key(0), "z");
        assert_eq!(index.key(1), "y");
    }
}
