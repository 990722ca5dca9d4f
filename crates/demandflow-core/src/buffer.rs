//! The producer's buffer: a bounded FIFO of events nobody has asked for yet,
//! with markers (info messages, a deferred stop) kept in order behind them
//! (SEMANTICS.md §3). The runtime owns one per producing stage; use it
//! directly to check what an overflow keeps and drops.

use std::collections::VecDeque;

use crate::BufferKeep;

/// The bounded FIFO in which a producer keeps events no consumer has asked for
/// (SEMANTICS.md §3), with markers queued behind them.
///
/// A marker (an info message, a deferred stop) is *released* once every event
/// pushed before it has left the buffer, taken or dropped: this is how an info
/// message is delivered only after the events buffered before it. A marker is
/// also a batch boundary: [`take`](Buffer::take) never takes events from both
/// sides of a marker that is still waiting, so the events before it leave, the
/// marker is released, and only then do the events behind it leave.
///
/// On top of its capacity the buffer can hold a *reserve*: room for events that
/// demand already asked for (an accumulating producer holds them until it
/// forwards, see [`set_reserve`](Buffer::set_reserve)).
///
/// # Examples
///
/// ```
/// use demandflow_core::{Buffer, BufferKeep};
///
/// let mut buffer: Buffer<u32, &str> = Buffer::new(3, BufferKeep::Last);
/// assert_eq!(buffer.push(vec![1, 2, 3, 4]), 1); // the oldest event, 1, is dropped
/// assert_eq!(buffer.push_marker("after 4"), None); // queued behind 2, 3, 4
/// assert_eq!(buffer.take(2), vec![2, 3]);
/// assert_eq!(buffer.pop_ready_marker(), None);
/// assert_eq!(buffer.push(vec![5]), 0);
/// // The marker is a batch boundary: 5 stays until "after 4" is released.
/// assert_eq!(buffer.take(5), vec![4]);
/// assert_eq!(buffer.take(5), vec![]);
/// assert_eq!(buffer.pop_ready_marker(), Some("after 4"));
/// assert_eq!(buffer.take(5), vec![5]);
/// ```
#[derive(Debug)]
pub struct Buffer<T, M = ()> {
    events: VecDeque<T>,
    capacity: usize,
    /// Extra room for events that demand already asked for.
    reserve: usize,
    keep: BufferKeep,
    /// Markers with the absolute position (count of events ever pushed) they wait for.
    markers: VecDeque<(u64, M)>,
    /// Events ever accepted into the buffer.
    pushed: u64,
    /// Events ever removed from the front (taken or dropped as oldest).
    removed: u64,
}

impl<T, M> Buffer<T, M> {
    /// An empty buffer holding at most `capacity` events (`usize::MAX` for no bound).
    pub fn new(capacity: usize, keep: BufferKeep) -> Self {
        Buffer {
            events: VecDeque::new(),
            capacity,
            reserve: 0,
            keep,
            markers: VecDeque::new(),
            pushed: 0,
            removed: 0,
        }
    }

    /// The most events the buffer holds now: its capacity plus its reserve.
    fn limit(&self) -> usize {
        self.capacity.saturating_add(self.reserve)
    }

    /// Appends `events`, returns how many events were dropped to stay within
    /// capacity (plus reserve).
    ///
    /// With [`BufferKeep::Last`] the oldest events are dropped, with
    /// [`BufferKeep::First`] the incoming ones.
    pub fn push(&mut self, events: Vec<T>) -> usize {
        let incoming = events.len();
        let limit = self.limit();
        match self.keep {
            BufferKeep::First => {
                let room = limit.saturating_sub(self.events.len());
                let accepted = incoming.min(room);
                self.events.extend(events.into_iter().take(accepted));
                self.pushed += accepted as u64;
                incoming - accepted
            }
            BufferKeep::Last => {
                let total = self.events.len() + incoming;
                let excess = total.saturating_sub(limit);
                let from_buffer = excess.min(self.events.len());
                self.events.drain(..from_buffer);
                self.removed += from_buffer as u64;
                let from_incoming = excess - from_buffer;
                // Incoming events dropped before they ever sat in the buffer still
                // count as pushed and removed, so markers keep their place.
                self.pushed += incoming as u64;
                self.removed += from_incoming as u64;
                self.events.extend(events.into_iter().skip(from_incoming));
                excess
            }
        }
    }

    /// Puts `events` back at the front, in order (events a dispatcher could not deliver).
    ///
    /// Capacity is not enforced here: these events were already accounted for.
    pub fn push_front(&mut self, events: Vec<T>) {
        self.removed -= events.len() as u64;
        for event in events.into_iter().rev() {
            self.events.push_front(event);
        }
    }

    /// Removes and returns up to `n` events from the front, stopping at the first
    /// marker still queued: events behind a marker are taken only once it has
    /// been popped with [`pop_ready_marker`](Self::pop_ready_marker).
    pub fn take(&mut self, n: usize) -> Vec<T> {
        let mut n = n.min(self.events.len());
        if let Some((position, _)) = self.markers.front() {
            let before =
                usize::try_from(position.saturating_sub(self.removed)).unwrap_or(usize::MAX);
            n = n.min(before);
        }
        self.removed += n as u64;
        self.events.drain(..n).collect()
    }

    /// Queues `marker` behind every buffered event, or returns it at once when the
    /// buffer is empty and no marker is waiting.
    pub fn push_marker(&mut self, marker: M) -> Option<M> {
        if self.events.is_empty() && self.markers.is_empty() {
            Some(marker)
        } else {
            self.markers.push_back((self.pushed, marker));
            None
        }
    }

    /// The next marker whose events have all left the buffer, if any.
    pub fn pop_ready_marker(&mut self) -> Option<M> {
        match self.markers.front() {
            Some((position, _)) if *position <= self.removed => {
                self.markers.pop_front().map(|(_, m)| m)
            }
            _ => None,
        }
    }

    /// Buffered events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// `true` when no event is buffered.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Markers still waiting.
    pub fn markers_len(&self) -> usize {
        self.markers.len()
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Room on top of the capacity, for events that demand already asked for.
    pub fn reserve(&self) -> usize {
        self.reserve
    }

    /// Sets the room held on top of the capacity for events that demand already
    /// asked for. Lowering it drops what no longer fits, as [`push`](Self::push)
    /// would ([`BufferKeep::Last`]: the oldest, [`BufferKeep::First`]: the
    /// newest), and returns how many events were dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use demandflow_core::{Buffer, BufferKeep};
    ///
    /// let mut buffer: Buffer<u32> = Buffer::new(2, BufferKeep::Last);
    /// buffer.set_reserve(3);
    /// assert_eq!(buffer.push(vec![1, 2, 3, 4, 5, 6]), 1); // room for 2 + 3
    /// assert_eq!(buffer.set_reserve(0), 3); // 2, 3, 4 are dropped
    /// assert_eq!(buffer.take(10), vec![5, 6]);
    /// ```
    pub fn set_reserve(&mut self, reserve: usize) -> usize {
        self.reserve = reserve;
        let excess = self.events.len().saturating_sub(self.limit());
        if excess > 0 {
            match self.keep {
                BufferKeep::Last => {
                    self.events.drain(..excess);
                    self.removed += excess as u64;
                }
                BufferKeep::First => {
                    // As if the newest had never been accepted: markers queued
                    // behind them now wait only for the events kept.
                    self.events.truncate(self.events.len() - excess);
                    self.pushed -= excess as u64;
                    for (position, _) in &mut self.markers {
                        *position = (*position).min(self.pushed);
                    }
                }
            }
        }
        excess
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_last_drops_the_oldest_and_counts_them() {
        let mut buffer: Buffer<u32> = Buffer::new(5, BufferKeep::Last);
        assert_eq!(buffer.push((0..4).collect()), 0);
        assert_eq!(buffer.push((4..8).collect()), 3);
        assert_eq!(buffer.take(10), vec![3, 4, 5, 6, 7]);
    }

    #[test]
    fn keep_last_with_a_batch_larger_than_capacity_keeps_its_tail() {
        let mut buffer: Buffer<u32> = Buffer::new(3, BufferKeep::Last);
        buffer.push(vec![100]);
        assert_eq!(buffer.push((0..10).collect()), 8);
        assert_eq!(buffer.take(10), vec![7, 8, 9]);
    }

    #[test]
    fn keep_first_drops_the_incoming_and_counts_them() {
        let mut buffer: Buffer<u32> = Buffer::new(5, BufferKeep::First);
        assert_eq!(buffer.push((0..4).collect()), 0);
        assert_eq!(buffer.push((4..8).collect()), 3);
        assert_eq!(buffer.take(10), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn zero_capacity_drops_everything() {
        let mut buffer: Buffer<u32> = Buffer::new(0, BufferKeep::Last);
        assert_eq!(buffer.push(vec![1, 2]), 2);
        assert!(buffer.is_empty());
        let mut buffer: Buffer<u32> = Buffer::new(0, BufferKeep::First);
        assert_eq!(buffer.push(vec![1, 2]), 2);
        assert!(buffer.is_empty());
    }

    #[test]
    fn marker_on_empty_buffer_is_returned_at_once() {
        let mut buffer: Buffer<u32, char> = Buffer::new(5, BufferKeep::Last);
        assert_eq!(buffer.push_marker('a'), Some('a'));
    }

    #[test]
    fn markers_are_released_in_order_after_their_events() {
        let mut buffer: Buffer<u32, char> = Buffer::new(10, BufferKeep::Last);
        buffer.push(vec![1, 2]);
        assert_eq!(buffer.push_marker('a'), None);
        buffer.push(vec![3]);
        assert_eq!(buffer.push_marker('b'), None);
        assert_eq!(buffer.take(1), vec![1]);
        assert_eq!(buffer.pop_ready_marker(), None);
        assert_eq!(buffer.take(1), vec![2]);
        assert_eq!(buffer.pop_ready_marker(), Some('a'));
        assert_eq!(buffer.pop_ready_marker(), None);
        assert_eq!(buffer.take(1), vec![3]);
        assert_eq!(buffer.pop_ready_marker(), Some('b'));
    }

    #[test]
    fn a_marker_behind_a_waiting_marker_waits_too() {
        let mut buffer: Buffer<u32, char> = Buffer::new(10, BufferKeep::Last);
        buffer.push(vec![1]);
        assert_eq!(buffer.push_marker('a'), None);
        buffer.take(1);
        // 'a' is ready but not yet popped: 'b' must queue behind it.
        assert_eq!(buffer.push_marker('b'), None);
        assert_eq!(buffer.pop_ready_marker(), Some('a'));
        assert_eq!(buffer.pop_ready_marker(), Some('b'));
    }

    #[test]
    fn dropped_oldest_events_release_markers_behind_them() {
        let mut buffer: Buffer<u32, char> = Buffer::new(2, BufferKeep::Last);
        buffer.push(vec![1, 2]);
        buffer.push_marker('a');
        assert_eq!(buffer.push(vec![3, 4]), 2);
        assert_eq!(buffer.pop_ready_marker(), Some('a'));
        assert_eq!(buffer.take(2), vec![3, 4]);
    }

    #[test]
    fn events_put_back_keep_their_order_and_their_markers() {
        let mut buffer: Buffer<u32, char> = Buffer::new(10, BufferKeep::Last);
        buffer.push(vec![1, 2, 3]);
        buffer.push_marker('a');
        let taken = buffer.take(3);
        buffer.push_front(taken[1..].to_vec());
        assert_eq!(buffer.pop_ready_marker(), None);
        assert_eq!(buffer.take(5), vec![2, 3]);
        assert_eq!(buffer.pop_ready_marker(), Some('a'));
    }

    #[test]
    fn a_marker_splits_takes_so_batches_never_span_it() {
        // a b c, markers d e f, g h, marker i; one take of 5.
        let mut buffer: Buffer<char, char> = Buffer::new(100, BufferKeep::Last);
        buffer.push(vec!['a', 'b', 'c']);
        for m in ['d', 'e', 'f'] {
            assert_eq!(buffer.push_marker(m), None);
        }
        buffer.push(vec!['g', 'h']);
        assert_eq!(buffer.push_marker('i'), None);
        assert_eq!(buffer.take(5), vec!['a', 'b', 'c']);
        assert_eq!(buffer.take(2), vec![]);
        assert_eq!(buffer.pop_ready_marker(), Some('d'));
        assert_eq!(buffer.pop_ready_marker(), Some('e'));
        assert_eq!(buffer.pop_ready_marker(), Some('f'));
        assert_eq!(buffer.pop_ready_marker(), None);
        assert_eq!(buffer.take(2), vec!['g', 'h']);
        assert_eq!(buffer.pop_ready_marker(), Some('i'));
        assert!(buffer.is_empty());
    }

    #[test]
    fn the_reserve_holds_events_beyond_capacity_until_it_is_lowered() {
        let mut buffer: Buffer<u32> = Buffer::new(100, BufferKeep::Last);
        buffer.set_reserve(10_000);
        for batch in 0..50 {
            assert_eq!(buffer.push((batch * 100..(batch + 1) * 100).collect()), 0);
        }
        assert_eq!(buffer.len(), 5000);
        assert_eq!(buffer.take(4000).len(), 4000);
        assert_eq!(buffer.set_reserve(0), 900);
        assert_eq!(buffer.take(1000), (4900..5000).collect::<Vec<_>>());
    }

    #[test]
    fn lowering_the_reserve_with_keep_first_drops_the_newest() {
        let mut buffer: Buffer<u32, char> = Buffer::new(100, BufferKeep::First);
        buffer.set_reserve(100);
        assert_eq!(buffer.push((0..150).collect()), 0);
        assert_eq!(buffer.push_marker('m'), None);
        assert_eq!(buffer.push((150..250).collect()), 50);
        assert_eq!(buffer.set_reserve(0), 100);
        assert_eq!(buffer.take(1000), (0..100).collect::<Vec<_>>());
        // The marker behind the dropped events is released with the kept ones.
        assert_eq!(buffer.pop_ready_marker(), Some('m'));
    }
}
