//! Maps keyed by subscription id, with a hasher made for those ids.

use std::collections::HashMap;

use demandflow_core::SubscriptionId;

/// A fast hasher for maps keyed by [`SubscriptionId`]: ids are unique counters,
/// so one multiplication spreads them well, and SipHash's flood resistance buys
/// nothing here.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type IdMap<V> = HashMap<SubscriptionId, V, std::hash::BuildHasherDefault<IdHasher>>;
