//! One simulated node as the engine holds it: its state (up, crashed, paused), the
//! protocol node, its timer and, while paused or slow, what waits for it.

use std::collections::VecDeque;
use std::time::Duration;

use crate::link::Latency;

/// A node's state as the simulator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Running.
    Up,
    /// Crashed: no state, drops everything.
    Down,
    /// Frozen: datagrams queue, timers wait.
    Paused,
}

/// One node of the simulation.
pub struct Slot<P> {
    pub(crate) state: NodeState,
    pub(crate) proto: Option<P>,
    pub(crate) incarnation: u64,
    /// The deadline the engine has scheduled for the node.
    pub(crate) timer: Option<Duration>,
    /// Bumped whenever `timer` changes; stale timer events carry an older one.
    pub(crate) timer_gen: u64,
    pub(crate) due_while_paused: bool,
    /// Datagrams that reached the node while paused.
    pub(crate) inbox: VecDeque<(usize, Box<[u8]>)>,
    /// The extra handling delay of a slow node.
    pub(crate) slow: Option<Latency>,
}

impl<P> Slot<P> {
    /// Running, crashed or paused.
    pub fn state(&self) -> NodeState {
        self.state
    }

    /// The protocol node (absent while crashed).
    pub fn protocol(&self) -> Option<&P> {
        self.proto.as_ref()
    }

    /// How many times the node restarted.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }
}
