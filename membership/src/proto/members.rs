//! The member table: one record per known member (this node excluded), kept in a
//! `BTreeMap` so that every iteration is deterministic, plus the randomised round-robin
//! probe order and random peer selection.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use kvs_net::NodeId;
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::health::{Flap, Rtt};
use super::types::MemberState;

/// A running suspicion of a member.
#[derive(Debug, Clone)]
pub(crate) struct Suspicion {
    /// When this node started suspecting.
    pub(crate) started: Duration,
    /// The first accuser, named when this node passes the suspicion on.
    pub(crate) accuser: NodeId,
    /// Distinct accusers heard for the current incarnation (the first one included).
    pub(crate) accusers: BTreeSet<NodeId>,
    /// Token of the pending suspicion timer.
    pub(crate) token: u64,
}

/// What this node knows about one member.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) addr: SocketAddr,
    pub(crate) meta: Vec<u8>,
    pub(crate) incarnation: u64,
    pub(crate) joined_at: u64,
    pub(crate) state: MemberState,
    /// When the state last changed.
    pub(crate) since: Duration,
    pub(crate) suspicion: Option<Suspicion>,
    pub(crate) rtt: Rtt,
    pub(crate) flap: Flap,
}

impl Record {
    /// Alive or suspect: worth probing and gossiping to.
    pub(crate) fn is_live(&self) -> bool {
        matches!(self.state, MemberState::Alive | MemberState::Suspect)
    }
}

/// All known members but this node.
#[derive(Debug, Default)]
pub(crate) struct Members {
    map: BTreeMap<NodeId, Record>,
    order: Vec<NodeId>,
    cursor: usize,
    live: usize,
    suspects: BTreeSet<NodeId>,
}

impl Members {
    pub(crate) fn get(&self, id: &NodeId) -> Option<&Record> {
        self.map.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &NodeId) -> Option<&mut Record> {
        self.map.get_mut(id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Record)> {
        self.map.iter()
    }

    /// Alive and suspect members, this node excluded.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Adds a new member at a random place of the probe order.
    pub(crate) fn insert(&mut self, id: NodeId, record: Record, rng: &mut ChaCha8Rng) {
        if record.is_live() {
            self.live += 1;
        }
        let at = rng.gen_range(0..=self.order.len());
        self.order.insert(at, id.clone());
        if at < self.cursor {
            self.cursor += 1;
        }
        self.map.insert(id, record);
    }

    /// Changes a member's state, keeping the live count.
    pub(crate) fn set_state(&mut self, id: &NodeId, state: MemberState, now: Duration) {
        let Some(record) = self.map.get_mut(id) else {
            return;
        };
        let was_live = record.is_live();
        record.state = state;
        record.since = now;
        if state == MemberState::Suspect {
            self.suspects.insert(id.clone());
        } else {
            self.suspects.remove(id);
        }
        match (was_live, record.is_live()) {
            (true, false) => self.live -= 1,
            (false, true) => self.live += 1,
            _ => {}
        }
    }

    /// Forgets a member.
    pub(crate) fn remove(&mut self, id: &NodeId) {
        self.suspects.remove(id);
        if self.map.remove(id).is_some_and(|record| record.is_live()) {
            self.live -= 1;
        }
        if let Some(at) = self.order.iter().position(|x| x == id) {
            self.order.remove(at);
            if at < self.cursor {
                self.cursor -= 1;
            }
        }
    }

    /// The next live member in randomised round-robin order (reshuffled after each pass).
    pub(crate) fn next_probe_target(&mut self, rng: &mut ChaCha8Rng) -> Option<NodeId> {
        if self.live == 0 {
            return None;
        }
        loop {
            if self.cursor >= self.order.len() {
                self.order.shuffle(rng);
                self.cursor = 0;
            }
            let id = &self.order[self.cursor];
            self.cursor += 1;
            if self.map.get(id).is_some_and(Record::is_live) {
                return Some(id.clone());
            }
        }
    }

    /// Up to `k` distinct random live members, none of them in `exclude`.
    pub(crate) fn random_live(
        &self,
        rng: &mut ChaCha8Rng,
        k: usize,
        exclude: &[&NodeId],
    ) -> Vec<NodeId> {
        let eligible =
            |id: &NodeId| !exclude.contains(&id) && self.map.get(id).is_some_and(Record::is_live);
        if self.live <= 4 * k + 16 {
            let mut all: Vec<NodeId> = self
                .order
                .iter()
                .filter(|id| eligible(id))
                .cloned()
                .collect();
            all.shuffle(rng);
            all.truncate(k);
            return all;
        }
        // Large cluster, mostly live: rejection sampling avoids a full scan.
        let mut out = Vec::with_capacity(k);
        for _ in 0..(8 * k + 32) {
            if out.len() == k {
                break;
            }
            let id = &self.order[rng.gen_range(0..self.order.len())];
            if eligible(id) && !out.contains(id) {
                out.push(id.clone());
            }
        }
        out
    }

    /// Members currently suspected, by id.
    pub(crate) fn suspects(&self) -> impl Iterator<Item = &NodeId> {
        self.suspects.iter()
    }

    /// Dead (not left) members, candidates for re-announcement.
    pub(crate) fn dead(&self) -> impl Iterator<Item = (&NodeId, &Record)> {
        self.map
            .iter()
            .filter(|(_, r)| r.state == MemberState::Dead)
    }
}
