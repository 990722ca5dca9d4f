//! Tests of the keyed queue as a pure state machine: exact batches, holds,
//! releases and the node free list, no runtime.

use std::num::NonZeroUsize;

use super::*;
use crate::index::{DenseKeys, HashedKeys};

fn dense<E>() -> KeyedQueue<DenseKeys, E> {
    KeyedQueue::new(DenseKeys::new(0, NonZeroUsize::MIN))
}

fn runs<K: Clone, E: Clone>(batch: &KeyedBatch<K, E>) -> Vec<(K, Vec<E>)> {
    batch.iter().map(|(k, e)| (k.clone(), e.to_vec())).collect()
}

#[test]
fn an_idle_key_is_ready_at_once_and_comes_out_with_all_its_events() {
    let mut q = dense();
    q.push(&3, 'a');
    q.push(&1, 'b');
    q.push(&3, 'c');
    q.push(&3, 'd');
    assert_eq!((q.queued(), q.ready_keys()), (4, 2));
    let batch = q.take(100).unwrap();
    assert_eq!(runs(&batch), [(3, vec!['a', 'c', 'd']), (1, vec!['b'])]);
    assert_eq!(batch.partition(), 0);
    assert_eq!(
        (
            q.queued(),
            q.in_flight_events(),
            q.in_flight_keys(),
            q.batches_out()
        ),
        (0, 4, 2, 1)
    );
    assert!(q.take(100).is_none());
}

#[test]
fn events_for_a_busy_key_wait_until_its_batch_is_acknowledged() {
    let mut q = dense();
    q.push(&5, 1);
    let mut first = q.take(10).unwrap();
    q.push(&5, 2);
    q.push(&5, 3);
    assert_eq!((q.queued(), q.ready_keys()), (2, 0));
    assert!(q.take(10).is_none(), "key 5 is busy");
    assert_eq!(q.ack(&mut first), 1);
    assert!(first.is_empty());
    assert_eq!(q.ready_keys(), 1);
    let second = q.take(10).unwrap();
    assert_eq!(runs(&second), [(5, vec![2, 3])]);
}

#[test]
fn a_busy_key_never_holds_up_other_keys() {
    let mut q = dense();
    q.push(&0, "slow");
    let _held = q.take(1).unwrap(); // never acknowledged in this test
    for round in 0..3 {
        q.push(&0, "waits");
        q.push(&1, "flows");
        q.push(&2, "flows");
        let mut batch = q.take(100).unwrap();
        assert_eq!(
            runs(&batch),
            [(1, vec!["flows"]), (2, vec!["flows"])],
            "round {round}"
        );
        q.ack(&mut batch);
    }
    assert_eq!((q.queued(), q.in_flight_keys()), (3, 1));
}

#[test]
fn take_stops_once_the_batch_reaches_max_events_without_splitting_a_run() {
    let mut q = dense();
    for key in 0..10 {
        q.push(&key, key);
    }
    q.push(&2, 20);
    let a = q.take(2).unwrap();
    assert_eq!(runs(&a), [(0, vec![0]), (1, vec![1])]);
    let b = q.take(2).unwrap();
    assert_eq!(runs(&b), [(2, vec![2, 20])]);
    let c = q.take(0).unwrap();
    assert_eq!(runs(&c), [(3, vec![3])]);
    let d = q.take(usize::MAX).unwrap();
    assert_eq!(d.len(), 6);
    assert_eq!(d.run_count(), 6);
    assert_eq!(q.batches_out(), 4);
}

#[test]
fn a_key_released_with_waiting_events_goes_behind_keys_already_ready() {
    let mut q = dense();
    q.push(&1, 'a');
    let mut first = q.take(10).unwrap();
    q.push(&1, 'b');
    q.push(&2, 'c');
    q.ack(&mut first);
    q.push(&3, 'd');
    q.push(&1, 'e');
    let batch = q.take(10).unwrap();
    assert_eq!(
        runs(&batch),
        [(2, vec!['c']), (1, vec!['b', 'e']), (3, vec!['d'])]
    );
}

#[test]
fn acknowledging_makes_keys_idle_and_the_queue_reports_idle() {
    let mut q = dense();
    assert!(q.is_idle());
    q.push(&9, ());
    assert!(!q.is_idle());
    let mut batch = q.take(1).unwrap();
    assert!(!q.is_idle());
    assert_eq!(q.ack(&mut batch), 1);
    assert_eq!(
        q.ack(&mut batch),
        0,
        "an emptied batch acknowledges nothing"
    );
    assert!(q.is_idle());
    assert_eq!(
        (
            q.queued(),
            q.in_flight_events(),
            q.in_flight_keys(),
            q.batches_out()
        ),
        (0, 0, 0, 0)
    );
}

#[test]
fn take_into_reuses_the_batch() {
    let mut q = dense();
    let mut batch = KeyedBatch::new();
    assert_eq!(q.take_into(&mut batch, 10), 0);
    for round in 0..3_u64 {
        q.push(&round, round);
        q.push(&(round + 10), round);
        assert_eq!(q.take_into(&mut batch, 10), 2);
        assert_eq!(
            batch.keys().copied().collect::<Vec<_>>(),
            [round, round + 10]
        );
        q.ack(&mut batch);
    }
}

#[test]
#[should_panic(expected = "acknowledged by the queue it was taken from")]
fn a_batch_cannot_be_acknowledged_by_another_queue() {
    let mut a = dense::<u8>();
    let mut b = dense::<u8>();
    a.push(&0, 0);
    let mut batch = a.take(1).unwrap();
    b.ack(&mut batch);
}

#[test]
fn dense_partitions_use_local_slots_and_report_global_keys() {
    let p = NonZeroUsize::new(3).unwrap();
    let mut q = KeyedQueue::with_partition(DenseKeys::new(2, p), 2);
    for key in [2_u64, 5, 8, 3002] {
        q.push(&key, key);
    }
    let batch = q.take(10).unwrap();
    assert_eq!(batch.partition(), 2);
    assert_eq!(batch.keys().copied().collect::<Vec<_>>(), [2, 5, 8, 3002]);
    // Slots are key / 3: the largest is 1000, so 1001 bytes of state.
    assert_eq!(q.state.len(), 1001);
}

#[test]
fn hashed_keys_are_forgotten_when_they_go_idle() {
    let mut q = KeyedQueue::new(HashedKeys::<String>::new(0, NonZeroUsize::MIN));
    q.push(&"a".to_owned(), 1);
    q.push(&"b".to_owned(), 2);
    q.push(&"a".to_owned(), 3);
    let mut batch = q.take(10).unwrap();
    q.push(&"b".to_owned(), 4);
    assert_eq!(
        runs(&batch),
        [("a".to_owned(), vec![1, 3]), ("b".to_owned(), vec![2])]
    );
    q.ack(&mut batch);
    // "a" went idle and was forgotten; "b" is ready again with event 4.
    let mut batch = q.take(10).unwrap();
    assert_eq!(runs(&batch), [("b".to_owned(), vec![4])]);
    q.ack(&mut batch);
    assert!(q.is_idle());
    // Both slots were recycled ("a"'s, then "b"'s): a new key reuses the
    // last one freed.
    q.push(&"c".to_owned(), 5);
    assert_eq!(q.index().key(1), "c");
}

#[test]
fn a_held_key_stays_busy_after_its_batch_is_acknowledged() {
    let mut q = dense();
    for (key, n) in [(1, 10), (2, 20), (3, 30), (2, 21)] {
        q.push(&key, n);
    }
    let mut batch = q.take(10).unwrap();
    let (hold, events) = batch.hold(1);
    assert_eq!((*hold.key(), events), (2, vec![20, 21]));
    assert_eq!(runs(&batch), [(1, vec![10]), (3, vec![30])]);
    assert_eq!(q.ack(&mut batch), 2);
    assert_eq!(
        (q.in_flight_keys(), q.in_flight_events(), q.batches_out()),
        (1, 2, 0)
    );
    assert!(!q.is_idle());
    q.push(&2, 22);
    q.push(&1, 11);
    let mut batch = q.take(10).unwrap();
    assert_eq!(runs(&batch), [(1, vec![11])]);
    q.ack(&mut batch);
    q.release(hold);
    let mut batch = q.take(10).unwrap();
    assert_eq!(runs(&batch), [(2, vec![22])]);
    q.ack(&mut batch);
    assert!(q.is_idle());
}

#[test]
fn a_batch_whose_every_run_is_held_is_still_acknowledged() {
    let mut q = dense();
    q.push(&4, ());
    let mut batch = q.take(10).unwrap();
    let (hold, _) = batch.hold(0);
    assert!(batch.is_empty());
    assert_eq!(q.ack(&mut batch), 0);
    assert_eq!(q.batches_out(), 0);
    assert_eq!(q.ack(&mut batch), 0, "acknowledging twice does nothing");
    q.release(hold);
    assert!(q.is_idle());
}

#[test]
fn a_chunk_of_idle_keys_becomes_the_batch_without_copying() {
    let mut q = dense();
    let mut keys = vec![3, 1, 2];
    let mut events = vec!['a', 'b', 'c'];
    let events_at = events.as_ptr();
    q.push_chunk(&mut keys, &mut events);
    assert!(keys.is_empty() && events.is_empty());
    assert_eq!((q.queued(), q.chunks(), q.ready_keys()), (3, 1, 0));
    assert!(q.has_work());
    let batch = q.take(1).unwrap();
    assert_eq!(
        runs(&batch),
        [(3, vec!['a']), (1, vec!['b']), (2, vec!['c'])]
    );
    assert_eq!(
        batch.events.as_ptr(),
        events_at,
        "the chunk's vector is the batch"
    );
    assert_eq!((q.queued(), q.in_flight_keys(), q.chunks()), (0, 3, 0));
}

#[test]
fn a_chunk_keeps_each_keys_order_behind_busy_and_repeated_keys() {
    let mut q = dense();
    q.push(&1, 10);
    let mut busy = q.take(10).unwrap(); // key 1 is busy
    q.push(&2, 20); // key 2 is ready
    let mut keys = vec![1, 2, 3, 3, 4];
    let mut events = vec![11, 21, 30, 31, 40];
    q.push_chunk(&mut keys, &mut events);
    q.push(&3, 32); // joins the chunk, which is not looked at yet
    assert_eq!((q.queued(), q.chunks()), (7, 1));
    // Ready key 2 first, then the chunk: 3 and 4 are idle; 1 and 2 are
    // busy, and the later events of 3 wait behind its first.
    let mut batch = q.take(100).unwrap();
    assert_eq!(runs(&batch), [(2, vec![20]), (3, vec![30]), (4, vec![40])]);
    assert_eq!((q.queued(), q.chunks(), q.ready_keys()), (4, 0, 0));
    q.ack(&mut batch);
    q.ack(&mut busy);
    let mut batch = q.take(100).unwrap();
    assert_eq!(
        runs(&batch),
        [(2, vec![21]), (3, vec![31, 32]), (1, vec![11])]
    );
    q.ack(&mut batch);
    assert!(q.is_idle());
}

#[test]
fn a_chunk_joins_a_batch_already_holding_ready_keys() {
    let mut q = dense();
    q.push(&9, 90);
    let mut keys = vec![5, 6];
    let mut events = vec![50, 60];
    q.push_chunk(&mut keys, &mut events);
    let mut keys = vec![7];
    let mut events = vec![70];
    q.push_chunk(&mut keys, &mut events);
    // Two events are enough: the ready key and the first chunk.
    let mut batch = q.take(2).unwrap();
    assert_eq!(runs(&batch), [(9, vec![90]), (5, vec![50]), (6, vec![60])]);
    assert_eq!((q.queued(), q.chunks()), (1, 1));
    q.ack(&mut batch);
    let batch = q.take(2).unwrap();
    assert_eq!(runs(&batch), [(7, vec![70])]);
}

#[test]
fn nodes_behind_busy_keys_are_reused() {
    let mut q = dense();
    q.push(&0, 0);
    let mut batch = q.take(1).unwrap();
    for round in 1..=100 {
        q.push(&0, round);
        q.push(&0, round);
        q.ack(&mut batch);
        batch = q.take(10).unwrap();
        assert_eq!(runs(&batch), [(0, vec![round, round])]);
    }
    assert!(q.nodes.len() <= 2, "{} nodes", q.nodes.len());
}
