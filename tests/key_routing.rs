//! One key, one partition: the partition dispatcher's `by_key`, the partition
//! supervisor and the keyed scheduler route every key the same way, for many
//! keys and partition counts.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use demandflow::dispatcher::{Dispatcher, PartitionDispatcher};
use demandflow::keyed::{HashedKeys, KeyedBatch, KeyedBuilder, KeyedHandler};
use demandflow::supervisor::{PartitionSupervisor, PartitionWorker};
use demandflow::{Hashed, Key, StageId, SubscribeOptions, SubscriptionId, key_partition};

/// Where the partition dispatcher, built with `by_key` over `n` partitions,
/// delivers each of `keys`: one partition index per key, in order.
fn dispatcher_partitions<K: Key + Clone + PartialEq + Send + 'static>(
    keys: &[K],
    n: usize,
) -> Vec<usize> {
    let mut dispatcher = PartitionDispatcher::by_key(nz(n), |k: &K| k.clone())
        .build()
        .unwrap();
    let mut out = Vec::new();
    for p in 0..n {
        let sub = SubscriptionId::from_raw(p as u64);
        dispatcher
            .subscribe(
                sub,
                StageId::from_raw(p as u64),
                &SubscribeOptions::new().partition(p),
            )
            .unwrap();
        dispatcher.ask(sub, keys.len() as u64, &mut out);
    }
    let leftover = dispatcher.dispatch(keys.to_vec(), &mut out).leftover;
    assert!(leftover.is_empty());
    keys.iter()
        .map(|key| {
            let (sub, _) = out
                .iter()
                .find(|(_, batch)| batch.contains(key))
                .expect("every key is delivered");
            sub.as_u64() as usize
        })
        .collect()
}

/// Answers a call with the index of the partition that handled it.
struct Whoami(usize);

impl PartitionWorker for Whoami {
    type Message = ();
    type Reply = usize;

    async fn handle(&mut self, (): ()) -> usize {
        self.0
    }
}

/// Records which partition each key's events were handled on.
struct Where<K>(Mutex<Vec<(K, usize)>>);

impl<K: Clone + Send + Sync + 'static> KeyedHandler for Where<K> {
    type Key = K;
    type Event = ();

    async fn handle(&self, batch: &mut KeyedBatch<K, ()>) {
        let mut seen = self.0.lock().unwrap();
        for (key, _) in batch.iter() {
            seen.push((key.clone(), batch.partition()));
        }
    }
}

/// Checks that the three routes agree with `key_partition` on `keys` for 1 to
/// 12 partitions, through each one's public routing (a call answered by the
/// partition's worker, a batch handled on the key's partition, a delivery).
async fn all_three_agree<K>(keys: Vec<K>)
where
    K: Key + Clone + Eq + std::hash::Hash + std::fmt::Debug + Send + Sync + 'static,
{
    for n in 1..=12 {
        let expected: Vec<usize> = keys.iter().map(|k| key_partition(k, n)).collect();
        assert!(expected.iter().all(|&p| p < n));

        assert_eq!(
            dispatcher_partitions(&keys, n),
            expected,
            "dispatcher, n = {n}"
        );

        let supervisor =
            PartitionSupervisor::start(std::num::NonZeroUsize::new(n).unwrap(), Whoami).unwrap();
        for (key, &p) in keys.iter().zip(&expected) {
            assert_eq!(
                supervisor.partition_of(key),
                p,
                "supervisor, {key:?}, n = {n}"
            );
            assert_eq!(supervisor.call(key.clone(), ()).await.unwrap(), p);
        }
        supervisor.stop().await;

        let keyed: demandflow::keyed::Keyed<HashedKeys<K>, _> =
            KeyedBuilder::hashed(Where(Mutex::new(Vec::new())))
                .partitions(NonZeroUsize::new(n).unwrap())
                .start()
                .unwrap();
        keyed
            .send_all(keys.iter().map(|k| (k.clone(), ())))
            .await
            .unwrap();
        keyed.shutdown().await;
        for (key, &p) in keys.iter().zip(&expected) {
            assert_eq!(keyed.partition_of(key), p, "keyed, {key:?}, n = {n}");
        }
        let seen = keyed.handler().0.lock().unwrap();
        assert_eq!(seen.len(), keys.len());
        for (key, p) in seen.iter() {
            assert_eq!(*p, key_partition(key, n), "keyed handled {key:?} elsewhere");
        }
    }
}

#[tokio::test]
async fn string_keys_land_on_the_same_partition_everywhere() {
    all_three_agree((0..200).map(|i| format!("user-{i}")).collect()).await;
}

#[tokio::test]
async fn integer_keys_land_on_the_same_partition_everywhere() {
    all_three_agree((0..200_u64).map(|i| i * 7919).collect()).await;
    all_three_agree((-100..100_i64).collect()).await;
}

#[tokio::test]
async fn hashed_keys_land_on_the_same_partition_everywhere() {
    all_three_agree(
        (0..200_u32)
            .map(|i| Hashed((i, char::from(b'a' + (i % 26) as u8))))
            .collect(),
    )
    .await;
}

/// A count that is not zero, for the APIs that take `NonZeroUsize`.
fn nz(n: usize) -> std::num::NonZeroUsize {
    std::num::NonZeroUsize::new(n).expect("counts here are not zero")
}
