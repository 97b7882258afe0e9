//! The engine's event queue: pending events ordered by `(virtual time, sequence)`, so
//! events at the same time run in the order they were scheduled, in every process.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Something that will happen.
pub(crate) enum Pending {
    /// A datagram arrives (`late`: it already waited out its slow receiver's delay;
    /// `held`: a clog holds it until this time, or a heal).
    Deliver {
        from: u32,
        to: u32,
        late: bool,
        held: bool,
        payload: Box<[u8]>,
    },
    /// A node's timer fires (ignored if the node re-armed it since: `generation`).
    Timer { node: usize, generation: u64 },
    /// Timeline step `i` applies.
    Step(usize),
    /// The `eventually` properties are polled.
    Check,
}

/// Kept small (time in whole µs, not a `Duration`): heap operations move these around.
struct Scheduled {
    key: Reverse<(u64, u64)>,
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
        // Rounded up, so a timer never fires before the time its node asked for.
        let micros = u64::try_from(at.as_nanos().div_ceil(1000)).unwrap_or(u64::MAX);
        self.heap.push(Scheduled {
            key: Reverse((micros, self.seq)),
            what,
        });
    }

    /// The next event if it is due no later than `end`.
    pub(crate) fn pop_until(&mut self, end: Duration) -> Option<(Duration, Pending)> {
        let end = u64::try_from(end.as_micros()).unwrap_or(u64::MAX);
        if self.heap.peek()?.key.0.0 > end {
            return None;
        }
        self.heap
            .pop()
            .map(|s| (Duration::from_micros(s.key.0.0), s.what))
    }

    /// Moves the datagrams clogs hold to `now` (a heal), in the order they were due.
    pub(crate) fn release_held(&mut self, now: Duration) {
        let now = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        // Ascending by `Reverse`: the latest first.
        let mut events = std::mem::take(&mut self.heap).into_sorted_vec();
        events.reverse();
        for event in &mut events {
            if let Pending::Deliver {
                held: held @ true, ..
            } = &mut event.what
                && event.key.0.0 > now
            {
                *held = false;
                self.seq += 1;
                event.key = Reverse((now, self.seq));
            }
        }
        self.heap = BinaryHeap::from(events);
    }

    /// How many events were ever scheduled.
    pub(crate) fn scheduled(&self) -> u64 {
        self.seq
    }
}
