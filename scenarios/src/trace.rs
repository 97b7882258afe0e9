//! The event trace of a run: every event is fed to a SHA-256 digest (the run's
//! fingerprint), the last ones are kept for the failure report, and all of them can be
//! written as JSONL (`--trace FILE`).

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::duration;
use crate::spec::node_name;

/// How many of the last events a failure report shows.
pub(crate) const TAIL: usize = 30;

/// Why the network dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    /// Random or burst loss.
    Loss,
    /// Larger than the link's MTU.
    Mtu,
    /// A partition blocks the link.
    Partition,
    /// The receiver is crashed.
    Down,
    /// The destination is no node.
    NoRoute,
    /// A paused receiver's queue was full.
    Overflow,
}

/// A trace event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A node handed a datagram to the network.
    Send {
        /// Sender index.
        from: usize,
        /// Receiver index (`usize::MAX` when the address is no node).
        to: usize,
        /// Payload length.
        len: usize,
    },
    /// The network dropped a datagram.
    Drop {
        /// Sender index.
        from: usize,
        /// Receiver index.
        to: usize,
        /// Why.
        reason: DropReason,
    },
    /// A datagram reached its receiver's handler.
    Deliver {
        /// Sender index.
        from: usize,
        /// Receiver index.
        to: usize,
        /// Payload length.
        len: usize,
    },
    /// A node's timer fired.
    Timer {
        /// Node index.
        node: usize,
    },
    /// A timeline step was applied (its description).
    Step(String),
    /// Something a whole node did (`engine: full`): a client operation and its outcome, a
    /// membership change it saw.
    Note {
        /// Node index.
        node: usize,
        /// What happened.
        what: String,
    },
}

/// An event at a virtual time.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When.
    pub at: Duration,
    /// What.
    pub event: Event,
}

/// The running trace.
pub(crate) struct Trace<'a> {
    hasher: Sha256,
    tail: VecDeque<Record>,
    writer: Option<&'a mut dyn Write>,
    count: u64,
}

impl<'a> Trace<'a> {
    /// A trace that also writes JSONL to `writer` when given.
    pub(crate) fn new(writer: Option<&'a mut dyn Write>) -> Self {
        Self {
            hasher: Sha256::new(),
            tail: VecDeque::with_capacity(TAIL + 1),
            writer,
            count: 0,
        }
    }

    /// Records an event; `payload` (for deliveries) is folded into the digest too.
    pub(crate) fn record(&mut self, rec: Record, payload: &[u8]) -> std::io::Result<()> {
        self.hasher.update(
            u64::try_from(rec.at.as_micros())
                .unwrap_or(u64::MAX)
                .to_le_bytes(),
        );
        rec.event.digest_into(&mut self.hasher);
        self.hasher.update(payload);
        if let Some(w) = self.writer.as_mut() {
            writeln!(w, "{}", rec.to_json())?;
        }
        self.count += 1;
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(rec);
        Ok(())
    }

    /// The digest so far and the last events.
    pub(crate) fn finish(mut self) -> std::io::Result<(String, Vec<Record>, u64)> {
        if let Some(w) = self.writer.as_mut() {
            w.flush()?;
        }
        let digest = self.hasher.finalize();
        Ok((
            hex::encode(digest),
            self.tail.into_iter().collect(),
            self.count,
        ))
    }
}

impl Event {
    fn digest_into(&self, h: &mut Sha256) {
        let word = |h: &mut Sha256, v: usize| h.update((v as u64).to_le_bytes());
        match self {
            Event::Send { from, to, len } | Event::Deliver { from, to, len } => {
                h.update([if matches!(self, Event::Send { .. }) {
                    1
                } else {
                    3
                }]);
                [*from, *to, *len].into_iter().for_each(|v| word(h, v));
            }
            Event::Drop { from, to, reason } => {
                h.update([2, *reason as u8]);
                [*from, *to].into_iter().for_each(|v| word(h, v));
            }
            Event::Timer { node } => {
                h.update([4]);
                word(h, *node);
            }
            Event::Step(text) => {
                h.update([5]);
                word(h, text.len());
                h.update(text.as_bytes());
            }
            Event::Note { node, what } => {
                h.update([6]);
                word(h, *node);
                word(h, what.len());
                h.update(what.as_bytes());
            }
        }
    }
}

/// A node's name, or `-` for an address that is no node.
fn name(i: usize) -> String {
    if i == usize::MAX {
        "-".into()
    } else {
        node_name(i)
    }
}

impl Record {
    /// One JSON object (a JSONL line).
    pub fn to_json(&self) -> serde_json::Value {
        let t = self.at.as_micros() as u64;
        match &self.event {
            Event::Send { from, to, len } => {
                serde_json::json!({"t_us": t, "ev": "send", "from": name(*from), "to": name(*to), "len": len})
            }
            Event::Drop { from, to, reason } => {
                serde_json::json!({"t_us": t, "ev": "drop", "from": name(*from), "to": name(*to), "reason": format!("{reason:?}").to_lowercase()})
            }
            Event::Deliver { from, to, len } => {
                serde_json::json!({"t_us": t, "ev": "deliver", "from": name(*from), "to": name(*to), "len": len})
            }
            Event::Timer { node } => {
                serde_json::json!({"t_us": t, "ev": "timer", "node": name(*node)})
            }
            Event::Step(text) => serde_json::json!({"t_us": t, "ev": "step", "what": text}),
            Event::Note { node, what } => {
                serde_json::json!({"t_us": t, "ev": "note", "node": name(*node), "what": what})
            }
        }
    }
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = duration::show(self.at);
        match &self.event {
            Event::Send { from, to, len } => {
                write!(f, "{at} send {} -> {} ({len} B)", name(*from), name(*to))
            }
            Event::Drop { from, to, reason } => {
                write!(f, "{at} drop {} -> {} ({reason:?})", name(*from), name(*to))
            }
            Event::Deliver { from, to, len } => {
                write!(f, "{at} deliver {} -> {} ({len} B)", name(*from), name(*to))
            }
            Event::Timer { node } => write!(f, "{at} timer {}", name(*node)),
            Event::Step(text) => write!(f, "{at} step {text}"),
            Event::Note { node, what } => write!(f, "{at} {} {what}", name(*node)),
        }
    }
}
