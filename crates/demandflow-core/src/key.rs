//! Keys and the one key hash: how a key picks its partition, everywhere.
//!
//! Three parts of demandflow route by key: the partition dispatcher's
//! [`by_key`](crate::PartitionDispatcher::by_key), the partition supervisor and
//! the keyed scheduler's hashed index. They all ask the key itself, through the
//! [`Key`] trait, so a key lands on the same partition in every part of one
//! pipeline, in every run, process and platform.
//!
//! Reach for this module when you need that partition yourself (to subscribe a
//! consumer to the partition of a given key, say: [`key_partition`]), or when a
//! key type of your own should route: implement [`Key`] for it, or wrap it in
//! [`Hashed`] to route by its `Hash` implementation.
//!
//! # The hash
//!
//! The hash is 64-bit FNV-1a ([`KeyHasher`]), with integers written as
//! little-endian bytes and `usize`/`isize` as 64 bits. It has no random key and
//! is our own code, not std's `DefaultHasher`, whose output may change between
//! Rust releases. A key's partition among `n` is its hash modulo `n`, except for
//! integers, which are their own hash: an integer key goes to `key mod n` (the
//! Euclidean remainder, so `-1` goes to the last partition) and consecutive
//! keys take turns.

use std::hash::{Hash, Hasher};

/// A type that routes to a partition: the one notion of "key" shared by the
/// partition dispatcher, the partition supervisor and the keyed scheduler.
///
/// Implemented for the integer types (a key is its own hash; see
/// [`partition`](Key::partition)), `str`, `String`, `[u8]`, `Vec<u8>`,
/// references to keys, and [`Hashed`], which routes any `Hash` type.
///
/// # For implementers
///
/// [`key_hash`](Key::key_hash) must depend only on the key's value: equal keys
/// give equal hashes, in every run and on every platform. Feed the key's bytes
/// to a [`KeyHasher`] to get the shared hash; the provided `partition` then
/// agrees with every other key type.
///
/// # Examples
///
/// ```
/// use demandflow_core::{Hashed, Key, key_partition};
///
/// assert_eq!(7_u64.partition(3), 1);
/// assert_eq!((-1_i32).partition(3), 2);
/// assert_eq!("user-42".partition(3), key_partition("user-42", 3));
/// assert_eq!(String::from("user-42").partition(3), "user-42".partition(3));
/// assert_eq!(Hashed(('a', 7)).partition(3), key_partition(&Hashed(('a', 7)), 3));
/// ```
pub trait Key {
    /// The stable 64-bit hash of this key. For integers, the key's own bits
    /// (two's complement, truncated to 64 bits).
    fn key_hash(&self) -> u64;

    /// The partition of this key among `partitions`, in `0..partitions`.
    ///
    /// The hash modulo `partitions`; integers override it with the exact
    /// (Euclidean) remainder of their value, so `u128` and negative keys
    /// spread like the others.
    ///
    /// # Panics
    ///
    /// When `partitions` is 0.
    fn partition(&self, partitions: usize) -> usize {
        // The remainder is below `partitions`, so it fits in a usize.
        (self.key_hash() % partitions as u64) as usize
    }
}

macro_rules! unsigned_keys {
    ($($t:ty),*) => {$(
        impl Key for $t {
            fn key_hash(&self) -> u64 {
                *self as u64
            }

            fn partition(&self, partitions: usize) -> usize {
                // The remainder is below `partitions`, so it fits in a usize.
                (*self as u128 % partitions as u128) as usize
            }
        }
    )*};
}

macro_rules! signed_keys {
    ($($t:ty),*) => {$(
        impl Key for $t {
            fn key_hash(&self) -> u64 {
                *self as u64
            }

            fn partition(&self, partitions: usize) -> usize {
                // The Euclidean remainder is in 0..partitions, so it fits in a usize.
                (*self as i128).rem_euclid(partitions as i128) as usize
            }
        }
    )*};
}

unsigned_keys!(u8, u16, u32, u64, u128, usize);
signed_keys!(i8, i16, i32, i64, i128, isize);

impl Key for str {
    /// FNV-1a over the UTF-8 bytes, then one `0xff` byte (which keeps
    /// `("ab", "c")` and `("a", "bc")` apart when strings are combined).
    fn key_hash(&self) -> u64 {
        let mut hasher = KeyHasher::new();
        hasher.write(self.as_bytes());
        hasher.write_u8(0xff);
        hasher.finish()
    }
}

impl Key for String {
    fn key_hash(&self) -> u64 {
        self.as_str().key_hash()
    }
}

impl Key for [u8] {
    /// FNV-1a over the length (as 64 bits) and then the bytes.
    fn key_hash(&self) -> u64 {
        let mut hasher = KeyHasher::new();
        hasher.write_usize(self.len());
        hasher.write(self);
        hasher.finish()
    }
}

impl Key for Vec<u8> {
    fn key_hash(&self) -> u64 {
        self.as_slice().key_hash()
    }
}

impl<K: Key + ?Sized> Key for &K {
    fn key_hash(&self) -> u64 {
        (**self).key_hash()
    }

    fn partition(&self, partitions: usize) -> usize {
        (**self).partition(partitions)
    }
}

/// Routes any `Hash` type as a [`Key`]: its hash is what its `Hash`
/// implementation writes, fed to a [`KeyHasher`].
///
/// Stable as long as the type's `Hash` implementation writes the same values;
/// derived implementations of structs and tuples of integers do. `Hashed` is
/// itself `Hash`, `Eq` and `Clone` when the key is, so it can serve as a key
/// type of the keyed scheduler too.
///
/// # Examples
///
/// ```
/// use demandflow_core::{Hashed, Key, KeyHasher};
/// use std::hash::{Hash, Hasher};
///
/// let key = Hashed(("eu", 7_u32));
/// let mut hasher = KeyHasher::new();
/// ("eu", 7_u32).hash(&mut hasher);
/// assert_eq!(key.key_hash(), hasher.finish());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hashed<K>(pub K);

impl<K: Hash> Key for Hashed<K> {
    fn key_hash(&self) -> u64 {
        let mut hasher = KeyHasher::new();
        self.0.hash(&mut hasher);
        hasher.finish()
    }
}

/// The partition of `key` among `partitions`: [`Key::partition`], as the
/// partition dispatcher, the partition supervisor and the keyed scheduler all
/// compute it.
///
/// # Panics
///
/// When `partitions` is 0.
///
/// # Examples
///
/// ```
/// use demandflow_core::key_partition;
///
/// assert_eq!(key_partition("alice", 4), 0);
/// assert_eq!(key_partition("bob", 4), 1);
/// assert_eq!(key_partition(&42_u64, 4), 2);
/// assert_eq!(key_partition(&42_u64, 1), 0);
/// ```
pub fn key_partition<K: Key + ?Sized>(key: &K, partitions: usize) -> usize {
    assert!(partitions > 0, "key_partition needs at least one partition");
    key.partition(partitions)
}

/// The key hash: 64-bit FNV-1a, with integers written in a
/// platform-independent way (little-endian; `usize` and `isize` as 64 bits).
///
/// FNV-1a is simple, fast on short keys and fixed: the same bytes give the same
/// hash in every run, process, platform and Rust release. It is not meant to
/// resist keys chosen by an attacker to collide.
///
/// # Examples
///
/// ```
/// use demandflow_core::KeyHasher;
/// use std::hash::Hasher;
///
/// let mut hasher = KeyHasher::new();
/// hasher.write(b"a");
/// assert_eq!(hasher.finish(), 0xaf63_dc4c_8601_ec8c);
/// ```
#[derive(Clone, Debug)]
pub struct KeyHasher(u64);

impl KeyHasher {
    /// A hasher at FNV-1a's offset basis.
    pub const fn new() -> Self {
        KeyHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher::new()
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u16(&mut self, i: u16) {
        self.write(&i.to_le_bytes());
    }

    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_le_bytes());
    }

    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }

    fn write_u128(&mut self, i: u128) {
        self.write(&i.to_le_bytes());
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn write_i16(&mut self, i: i16) {
        self.write_u16(i as u16);
    }

    fn write_i32(&mut self, i: i32) {
        self.write_u32(i as u32);
    }

    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }

    fn write_i128(&mut self, i: i128) {
        self.write_u128(i as u128);
    }

    fn write_isize(&mut self, i: isize) {
        self.write_u64(i as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fnv(bytes: &[u8]) -> u64 {
        let mut h = KeyHasher::new();
        h.write(bytes);
        h.finish()
    }

    #[test]
    fn the_hasher_matches_the_fnv1a_reference_test_vectors() {
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv(b"foobar"), 0x8594_4171_f739_67e8);
    }

    /// Pinned (the values were computed with an independent FNV-1a): a change
    /// here moves keys between partitions in running systems.
    #[test]
    fn key_hashes_and_partitions_are_pinned() {
        assert_eq!("alice".key_hash(), 0x7cb3_946d_af42_8068);
        assert_eq!("".key_hash(), 0xaf64_724c_8602_eb6e);
        assert_eq!(b"alice"[..].key_hash(), 0x99b5_02fa_3458_6d68);
        assert_eq!(Hashed((3_u32, 'x')).key_hash(), 0xc543_6323_9c39_e7de);
        assert_eq!(key_partition("alice", 4), 0);
        assert_eq!(key_partition("bob", 4), 1);
        assert_eq!(key_partition(&42_u64, 8), 2);
        assert_eq!(key_partition(&-1_i64, 3), 2);
        assert_eq!(key_partition(&u128::MAX, 4), 3);
        // usize is hashed as 64 bits on every platform.
        assert_eq!(Hashed(42_usize).key_hash(), Hashed(42_u64).key_hash());
    }

    #[test]
    fn a_string_and_its_str_and_references_agree() {
        for n in 1..20 {
            let owned = format!("key-{n}");
            let p = owned.partition(7);
            assert_eq!(owned.as_str().partition(7), p);
            assert_eq!(Key::partition(&&owned, 7), p);
            assert_eq!(key_partition(owned.as_str(), 7), p);
            assert!(p < 7);
        }
    }

    #[test]
    #[should_panic(expected = "at least one partition")]
    fn zero_partitions_is_a_bug() {
        key_partition("x", 0);
    }
}
