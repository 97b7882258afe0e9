//! The sessions a node takes part in, as the side that opened them or the side that
//! answers, and the rules that keep their number down, since one session carries both
//! directions:
//! - two nodes that open a session with each other at once (as when each sees the other
//!   come up) keep one: the node with the smaller id keeps its own and refuses the other's;
//! - a node answering a session a peer opened runs no round of its own with that peer
//!   meanwhile;
//! - a node not yet established (new, empty or restarted, with seeds) takes part in one
//!   session at a time, since each would stream it all that it lacks: a node joining a
//!   cluster of N would otherwise be sent the store by every member that sees it join.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Mutex;

use super::lock;

/// The sessions of one node; see the module doc.
pub(super) struct Sessions {
    /// This node's id, which settles crossing sessions.
    node_id: String,
    /// The peers this node is running a round with (as the initiator).
    initiating: Mutex<BTreeSet<String>>,
    /// The sessions this node is answering, counted by the address they come from.
    answering: Mutex<BTreeMap<SocketAddr, usize>>,
}

impl Sessions {
    pub(super) fn new(node_id: String) -> Self {
        Self {
            node_id,
            initiating: Mutex::new(BTreeSet::new()),
            answering: Mutex::new(BTreeMap::new()),
        }
    }

    /// Marks a round with `node_id` as running until the returned guard drops.
    pub(super) fn initiate(&self, node_id: &str) -> Initiating<'_> {
        lock(&self.initiating).insert(node_id.to_owned());
        Initiating {
            sessions: self,
            node_id: node_id.to_owned(),
        }
    }

    /// Whether a session `node_id` opens is one too many: this node is running a round
    /// with it already and keeps its own (it has the smaller id).
    pub(super) fn crosses_own_round(&self, node_id: &str) -> bool {
        self.node_id.as_str() < node_id && lock(&self.initiating).contains(node_id)
    }

    /// Marks a session the peer at `from` (`peer`, if known) opened as answered until the
    /// returned guard drops; `None` if `one_at_a_time` (this node is not established) and
    /// it takes part in another session already. A round this node runs with the same
    /// peer does not count: the peer refuses it as crossing this one.
    pub(super) fn answer(
        &self,
        from: SocketAddr,
        peer: Option<&str>,
        one_at_a_time: bool,
    ) -> Option<Answering<'_>> {
        let mut answering = lock(&self.answering);
        let in_session = !answering.is_empty()
            || lock(&self.initiating)
                .iter()
                .any(|node_id| Some(node_id.as_str()) != peer);
        if in_session && one_at_a_time {
            return None;
        }
        *answering.entry(from).or_default() += 1;
        Some(Answering {
            sessions: self,
            from,
        })
    }

    /// Why this node runs no round of its own with the peer at `addr` now, if so: it is
    /// answering a session that peer opened, or, `one_at_a_time`, any session.
    pub(super) fn no_round_with(
        &self,
        addr: SocketAddr,
        one_at_a_time: bool,
    ) -> Option<&'static str> {
        let answering = lock(&self.answering);
        if answering.contains_key(&addr) {
            Some("this node is answering a session the peer opened")
        } else if one_at_a_time && !answering.is_empty() {
            Some("this node is not established and in a session already")
        } else {
            None
        }
    }
}

/// A round this node runs with a peer, for as long as it lives.
pub(super) struct Initiating<'a> {
    sessions: &'a Sessions,
    node_id: String,
}

impl Drop for Initiating<'_> {
    fn drop(&mut self) {
        lock(&self.sessions.initiating).remove(&self.node_id);
    }
}

/// A session a peer opened, for as long as this node answers it.
pub(super) struct Answering<'a> {
    sessions: &'a Sessions,
    from: SocketAddr,
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        let mut answering = lock(&self.sessions.answering);
        if let Some(count) = answering.get_mut(&self.from) {
            *count -= 1;
            if *count == 0 {
                answering.remove(&self.from);
            }
        }
    }
}
