//! The engine's event queue: pending events ordered by `(virtual time, sequence)`, so
//! events at the same time run in the order they were scheduled, in every process.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Something that will happen.
pub(crate) enum Pending {
    /// A datagram arrives.
    Deliver {
        from: usize,
        to: usize,
        payload: Vec<u8>,
    },
    /// A node's timer fires (ignored if the node re-armed it since: `generation`).
    Timer { node: usize, generation: u64 },
    /// Timeline step `i` applies.
    Step(usize),
    /// The `eventually` properties are polled.
    Check,
}

struct Scheduled {
    key: Reverse<(Duration, u64)>,
    what: Pending,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// A min-queue on `(time, sequence)`.
#[derive(Default)]
pub(crate) struct EventQueue {
    heap: BinaryHeap<Scheduled>,
    seq: u64,
}

impl EventQueue {
    /// Schedules `what` at `at`.
    pub(crate) fn push(&mut self, at: Duration, what: Pending) {
        self.seq += 1;
        self.heap.push(Scheduled {
            key: Reverse((at, self.seq)),
            what,
        });
    }

    /// The next event if it is due no later than `end`.
    pub(crate) fn pop_until(&mut self, end: Duration) -> Option<(Duration, Pending)> {
        if self.heap.peek()?.key.0.0 > end {
            return None;
        }
        self.heap.pop().map(|s| (s.key.0.0, s.what))
    }

    /// How many events were ever scheduled.
    pub(crate) fn scheduled(&self) -> u64 {
        self.seq
    }
}
