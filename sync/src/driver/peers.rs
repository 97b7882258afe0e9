//! The driver's table of live peers: what it knows of each (address, life, push queue,
//! whether it missed pushes, how its rounds went), which peer the next round goes to, and
//! the waits for a peer to go.

use std::net::SocketAddr;
use std::sync::Arc;

use kvs_net::{StreamTransport, TaskHandle};
use rand::seq::IteratorRandom;

use super::push::PeerQueue;
use super::{Shared, lock};

/// A peer that missed pushes is picked first for a round while fewer than this many of
/// the rounds with it have failed in a row; after that, like any other. (One whose
/// sessions keep failing, its sync port blocked, took every round, and the others went
/// without anti-entropy meanwhile: found by a black-box audit.)
const FAILED_ROUNDS_FIRST: u32 = 3;

/// A live peer as this node knows it.
pub(super) struct Peer {
    pub(super) addr: SocketAddr,
    /// The peer's life ([`PeerEvent::Up`](super::PeerEvent::Up)).
    pub(super) life: u32,
    /// Changes when the peer comes back (a restart): a round with an earlier life ends.
    pub(super) generation: u64,
    pub(super) queue: Arc<PeerQueue>,
    pub(super) last_sync: Option<u64>,
    pub(super) behind: bool,
    /// Whether the last complete session found nothing to repair.
    pub(super) roots_agreed: bool,
    /// When `behind` was last set (Unix ms): a session that started earlier does not
    /// clear it.
    pub(super) behind_at: u64,
    /// The rounds this node opened with the peer that failed since the last that
    /// completed (see [`FAILED_ROUNDS_FIRST`]).
    pub(super) failed_rounds: u32,
    /// Whether a session with this life of the peer completed while this node was stale.
    pub(super) synced_while_stale: bool,
    /// The time (Unix ms) before which this node's writes all reached this life of the
    /// peer: the start of the last complete session, then what each push acknowledged
    /// while the peer is not behind shows (`push::delivers_before`; 0: none yet).
    pub(super) own_writes_through: u64,
    pub(super) sender: TaskHandle,
}

impl Peer {
    /// A push to it was lost at `now_ms` (Unix ms): anti-entropy is to make it good.
    pub(super) fn fall_behind(&mut self, now_ms: u64) {
        self.behind = true;
        self.behind_at = now_ms;
    }
}

impl<T: StreamTransport> Shared<T> {
    pub(super) fn mark_behind(&self, node_id: &str) {
        if let Some(peer) = lock(&self.peers).get_mut(node_id) {
            peer.fall_behind(self.now_ms());
        }
    }

    pub(super) fn peer_addr(&self, node_id: &str) -> Option<SocketAddr> {
        lock(&self.peers).get(node_id).map(|peer| peer.addr)
    }

    /// The generation of the live peer `node_id`, if it is live.
    pub(super) fn peer_generation(&self, node_id: &str) -> Option<u64> {
        lock(&self.peers).get(node_id).map(|peer| peer.generation)
    }

    /// Completes once `node_id` is no longer the live peer of `generation` (it died, left
    /// or came back as a new life): a round with it would wait for a reply in vain.
    pub(super) async fn peer_gone(&self, node_id: &str, generation: Option<u64>) {
        self.peers_change_until(|| self.peer_generation(node_id) != generation)
            .await;
    }

    /// Completes once the peer at `addr` (named now, or later by membership) is no longer
    /// the live peer it was: it died, left or came back as a new life. A session it
    /// opened would wait for a reply in vain.
    pub(super) async fn peer_at_gone(&self, addr: SocketAddr) {
        let life_at = || {
            let peers = lock(&self.peers);
            peers
                .iter()
                .find(|(_, peer)| peer.addr == addr)
                .map(|(id, peer)| (id.clone(), peer.generation))
        };
        let mut known = None;
        self.peers_change_until(|| {
            let now = life_at();
            let gone = known.is_some() && now != known;
            known = now;
            gone
        })
        .await;
    }

    /// Completes once `gone` holds, looked at now and after each change of the peers.
    pub(super) async fn peers_change_until(&self, mut gone: impl FnMut() -> bool) {
        let mut changes = self.peer_changes.subscribe();
        while !gone() {
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The peer whose sync address is `addr` (a node connects from its sync endpoint).
    pub(super) fn peer_at(&self, addr: SocketAddr) -> Option<String> {
        let peers = lock(&self.peers);
        peers
            .iter()
            .find(|(_, peer)| peer.addr == addr)
            .map(|(id, _)| id.clone())
    }

    /// The next peer for a round: one that missed pushes (unless its last
    /// [`FAILED_ROUNDS_FIRST`] rounds failed), else a random one. After a failed round
    /// (`after_failure`), only among the peers whose last round did not fail, while there
    /// is one: a peer cut off but still live to membership, or one whose sync port is
    /// blocked, fails every round with it, and each such round takes seconds; the rounds
    /// between them keep the others in sync.
    pub(super) fn pick_peer(
        &self,
        rng: &mut impl rand::Rng,
        after_failure: bool,
    ) -> Option<(String, SocketAddr)> {
        let peers = lock(&self.peers);
        let succeeding = peers.values().any(|peer| peer.failed_rounds == 0);
        let eligible = |peer: &Peer| !(after_failure && succeeding) || peer.failed_rounds == 0;
        let behind = peers
            .iter()
            .filter(|(_, peer)| eligible(peer))
            .filter(|(_, peer)| peer.behind && peer.failed_rounds < FAILED_ROUNDS_FIRST)
            .choose(rng);
        behind
            .or_else(|| peers.iter().filter(|(_, peer)| eligible(peer)).choose(rng))
            .map(|(id, peer)| (id.clone(), peer.addr))
    }

    /// Counts how a round this node opened with `node_id` ended; the rounds with it that
    /// failed in a row.
    pub(super) fn note_round(&self, node_id: &str, completed: bool) -> u32 {
        let mut peers = lock(&self.peers);
        let Some(peer) = peers.get_mut(node_id) else {
            return 0;
        };
        peer.failed_rounds = if completed {
            0
        } else {
            peer.failed_rounds.saturating_add(1)
        };
        peer.failed_rounds
    }
}

/// Whether the rounds with a peer that failed `in_a_row` times are told as a warning: one
/// failure is ordinary (a peer restarting); rounds that keep failing are told at 4, 8,
/// 16, ... in a row, so that an operator sees why a node stays `syncing` without a line
/// per round.
pub(super) fn worth_a_warning(in_a_row: u32) -> bool {
    in_a_row >= 4 && in_a_row.is_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::worth_a_warning;

    #[test]
    fn rounds_that_keep_failing_are_told_less_and_less_often() {
        let told: Vec<u32> = (0..=100).filter(|&n| worth_a_warning(n)).collect();
        assert_eq!(told, [4, 8, 16, 32, 64]);
    }
}
