//! The shared state of a simulated network driven by the virtual-time executor: the
//! clock, the [`Fabric`], the pending events (timer wake-ups, datagram and stream-frame
//! deliveries) ordered by `(time, sequence)`, node inboxes and listeners.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use crate::fabric::Fabric;
use crate::protocol::node_addr;
use crate::trace::DropReason;

use super::streams::{Broken, Pipe, SimConnection};

/// Stream data blocked by a partition or a down node is retried this often ...
const RETRY: Duration = Duration::from_millis(100);
/// ... until the connection gives up (as QUIC's idle timeout would).
pub(crate) const STREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Locks a mutex, recovering from poisoning (a panicked task must not hide the state).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A stream frame in flight (`data: None` is the end of the stream).
pub(crate) struct Frame {
    pub(crate) pipe: Arc<Mutex<Pipe>>,
    /// The stream's other direction (broken with `pipe` when the connection is lost).
    pub(crate) reverse: Arc<Mutex<Pipe>>,
    /// The lives of `from` and `to` the stream's connection was made with.
    pub(crate) lives: (u64, u64),
    pub(crate) seq: u64,
    pub(crate) data: Option<Vec<u8>>,
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) first_try: Duration,
    /// Whether a clog holds it until its time (a heal releases it).
    pub(crate) held: bool,
}

/// Names a wake-up scheduled by [`Core::wake_at`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct WakeKey((Duration, u64));

enum CoreEvent {
    Wake(Waker),
    Datagram {
        from: usize,
        to: usize,
        payload: Vec<u8>,
        /// Whether a clog holds it until its time (a heal releases it).
        held: bool,
    },
    Frame(Box<Frame>),
}

/// Where a node's incoming things wait.
#[derive(Default)]
pub(crate) struct Mailbox {
    pub(crate) datagrams: VecDeque<(SocketAddr, Vec<u8>)>,
    pub(crate) datagram_waker: Option<Waker>,
    pub(crate) connections: VecDeque<SimConnection>,
    pub(crate) connection_waker: Option<Waker>,
}

/// The simulated world.
pub(crate) struct Core {
    pub(crate) now: Duration,
    seq: u64,
    pub(crate) fabric: Fabric,
    events: BTreeMap<(Duration, u64), CoreEvent>,
    pub(crate) up: Vec<bool>,
    /// How many times each node crashed: a connection made with one life of a node
    /// leads nowhere once it crashed, even after a restart (as with QUIC, where the new
    /// process does not know the old connection and the peer's idle timeout ends it).
    pub(crate) lives: Vec<u64>,
    pub(crate) mailboxes: Vec<Mailbox>,
    pub(crate) clock_offsets_us: Vec<i64>,
    pub(crate) clock_drift_ppm: Vec<i64>,
}

impl Core {
    pub(crate) fn new(n: usize, fabric: Fabric) -> Self {
        Self {
            now: Duration::ZERO,
            seq: 0,
            fabric,
            events: BTreeMap::new(),
            up: vec![true; n],
            lives: vec![0; n],
            mailboxes: (0..n).map(|_| Mailbox::default()).collect(),
            clock_offsets_us: vec![0; n],
            clock_drift_ppm: vec![0; n],
        }
    }

    fn schedule(&mut self, at: Duration, event: CoreEvent) -> (Duration, u64) {
        self.seq += 1;
        let key = (at.max(self.now), self.seq);
        self.events.insert(key, event);
        key
    }

    /// Wakes `waker` at virtual time `at`; the key [`Core::cancel_wake`] takes.
    pub(crate) fn wake_at(&mut self, at: Duration, waker: Waker) -> WakeKey {
        WakeKey(self.schedule(at, CoreEvent::Wake(waker)))
    }

    /// Forgets a wake-up not due yet (its sleep was dropped: a timeout whose future won,
    /// as every acknowledged push's is, would otherwise wake its task for nothing).
    pub(crate) fn cancel_wake(&mut self, key: WakeKey) {
        // Keys are never reused: one that fired already names nothing.
        self.events.remove(&key.0);
    }

    /// Delivers a datagram at `at` (`held`: by a clog).
    pub(crate) fn send_datagram(
        &mut self,
        (at, held): (Duration, bool),
        from: usize,
        to: usize,
        payload: Vec<u8>,
    ) {
        let datagram = CoreEvent::Datagram {
            from,
            to,
            payload,
            held,
        };
        self.schedule(at, datagram);
    }

    /// A heal: what clogs hold arrives now, in the order it was due, and the streams it
    /// belongs to send on from now.
    pub(crate) fn release_held(&mut self) {
        let now = self.now;
        let held: Vec<(Duration, u64)> = self
            .events
            .iter()
            .filter(|((at, _), event)| {
                *at > now
                    && match event {
                        CoreEvent::Datagram { held, .. } => *held,
                        CoreEvent::Frame(frame) => frame.held,
                        CoreEvent::Wake(_) => false,
                    }
            })
            .map(|(key, _)| *key)
            .collect();
        for key in held {
            let Some(mut event) = self.events.remove(&key) else {
                continue;
            };
            match &mut event {
                CoreEvent::Datagram { held, .. } => *held = false,
                CoreEvent::Frame(frame) => {
                    frame.held = false;
                    lock(&frame.pipe).released(now);
                }
                CoreEvent::Wake(_) => {}
            }
            self.schedule(now, event);
        }
    }

    /// Delivers a stream frame at `at`.
    pub(crate) fn send_frame(&mut self, at: Duration, frame: Frame) {
        self.schedule(at, CoreEvent::Frame(Box::new(frame)));
    }

    /// Whether data can flow `from` -> `to` now.
    pub(crate) fn reachable(&self, from: usize, to: usize) -> bool {
        self.up[from] && self.up[to] && !self.fabric.blocked(from, to)
    }

    /// Handles the next event due no later than `end`; `false` when there is none.
    pub(crate) fn step(&mut self, end: Duration) -> bool {
        let Some(entry) = self.events.first_entry() else {
            return false;
        };
        if entry.key().0 > end {
            return false;
        }
        let ((at, _), event) = entry.remove_entry();
        self.now = at;
        match event {
            CoreEvent::Wake(waker) => waker.wake(),
            CoreEvent::Datagram {
                from, to, payload, ..
            } => self.deliver_datagram(from, to, payload),
            CoreEvent::Frame(frame) => self.deliver_frame(*frame),
        }
        true
    }

    fn deliver_datagram(&mut self, from: usize, to: usize, payload: Vec<u8>) {
        if self.fabric.blocked(from, to) {
            self.fabric.dropped(DropReason::Partition);
        } else if !self.up[to] {
            self.fabric.dropped(DropReason::Down);
        } else {
            self.fabric.delivered();
            let mailbox = &mut self.mailboxes[to];
            mailbox.datagrams.push_back((node_addr(from), payload));
            if let Some(w) = mailbox.datagram_waker.take() {
                w.wake();
            }
        }
    }

    /// A crash of `node`: its connections lead nowhere from now on, and connections
    /// made to it that it had not accepted yet are gone with it.
    pub(crate) fn crashed(&mut self, node: usize) {
        self.lives[node] += 1;
        self.mailboxes[node].connections.clear();
    }

    fn deliver_frame(&mut self, frame: Frame) {
        let same_lives = (self.lives[frame.from], self.lives[frame.to]) == frame.lives;
        if same_lives && self.reachable(frame.from, frame.to) {
            lock(&frame.pipe).arrive(frame.seq, frame.data);
        } else if self.now.saturating_sub(frame.first_try) >= STREAM_TIMEOUT {
            // The connection is lost: both directions of the stream fail.
            lock(&frame.pipe).break_off(Broken::TimedOut);
            lock(&frame.reverse).break_off(Broken::TimedOut);
        } else {
            let at = self.now + RETRY;
            self.send_frame(
                at,
                Frame {
                    held: false,
                    ..frame
                },
            );
        }
    }
}
