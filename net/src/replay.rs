//! The replay window: refuses a datagram whose stamp was already seen from the same peer,
//! is older than the peer's recent window, or is too far from the receiver's clock.
//!
//! Per peer it keeps the last [`REPLAY_WINDOW`] stamps, so datagrams reordered by up to
//! that many still pass. The freshness bound (`max_age`) covers a receiver that has no
//! window for the peer yet (first contact, or after a restart); it must exceed the clock
//! skew tolerated between nodes (the node takes twice its `max_clock_skew`, at least
//! [`DEFAULT_MAX_AGE`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::AuthError;

/// How many recent stamps are remembered per peer.
pub const REPLAY_WINDOW: usize = 64;
/// The default freshness bound: a stamp more than this far from our clock is stale.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);
/// The default peer limit (also bounds the boot ids a guard remembers by address).
pub(crate) const DEFAULT_MAX_PEERS: usize = 4096;

/// Per-peer recent stamps, keyed by the peer's address `K`. Bounded in peers: when full,
/// the peer heard from least recently is forgotten.
#[derive(Debug, Clone)]
pub struct ReplayWindow<K: Ord> {
    peers: BTreeMap<K, BTreeSet<u64>>,
    max_age_us: u64,
    max_peers: usize,
}

impl<K: Ord> Default for ReplayWindow<K> {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_AGE, DEFAULT_MAX_PEERS)
    }
}

impl<K: Ord> ReplayWindow<K> {
    /// A window with the freshness bound `max_age` and the default peer limit.
    pub fn with_max_age(max_age: Duration) -> Self {
        Self::new(max_age, DEFAULT_MAX_PEERS)
    }

    /// A window with a freshness bound and a peer limit (at least 1).
    pub fn new(max_age: Duration, max_peers: usize) -> Self {
        Self {
            peers: BTreeMap::new(),
            max_age_us: u64::try_from(max_age.as_micros()).unwrap_or(u64::MAX),
            max_peers: max_peers.max(1),
        }
    }
}

impl<K: Ord + Clone> ReplayWindow<K> {
    /// Accepts and records `stamp` from `peer` at wall time `now_us`, or refuses it.
    pub fn check(&mut self, peer: &K, stamp: u64, now_us: u64) -> Result<(), AuthError> {
        if stamp.abs_diff(now_us) > self.max_age_us {
            return Err(AuthError::Stale {
                stamp_us: stamp,
                now_us,
            });
        }
        if !self.peers.contains_key(peer) && self.peers.len() >= self.max_peers {
            self.forget_least_recent();
        }
        let seen = self.peers.entry(peer.clone()).or_default();
        if seen.contains(&stamp) {
            return Err(AuthError::Replayed);
        }
        if seen.len() >= REPLAY_WINDOW && seen.first().is_some_and(|&oldest| stamp < oldest) {
            return Err(AuthError::Replayed);
        }
        seen.insert(stamp);
        if seen.len() > REPLAY_WINDOW {
            seen.pop_first();
        }
        Ok(())
    }

    /// Drops the peer whose newest stamp is the oldest.
    fn forget_least_recent(&mut self) {
        let victim = self
            .peers
            .iter()
            .min_by_key(|(_, seen)| seen.last().copied().unwrap_or(0))
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.peers.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000_000;

    #[test]
    fn duplicates_and_too_old_are_refused_reordering_passes() {
        let mut w: ReplayWindow<u8> = ReplayWindow::default();
        w.check(&1, NOW + 5, NOW).expect("first");
        w.check(&1, NOW + 3, NOW).expect("reordered");
        assert_eq!(w.check(&1, NOW + 5, NOW), Err(AuthError::Replayed));
        w.check(&2, NOW + 5, NOW).expect("another peer");
        for i in 0..REPLAY_WINDOW as u64 {
            w.check(&1, NOW + 100 + i, NOW).expect("fresh");
        }
        assert_eq!(w.check(&1, NOW + 4, NOW), Err(AuthError::Replayed));
    }

    #[test]
    fn stamps_beyond_the_freshness_bound_are_refused_those_at_it_accepted() {
        let mut w: ReplayWindow<u8> = ReplayWindow::new(Duration::from_secs(1), 8);
        let stale = |r| matches!(r, Err(AuthError::Stale { .. }));
        assert!(stale(w.check(&1, NOW - 1_000_001, NOW)));
        assert!(stale(w.check(&1, NOW + 1_000_001, NOW)));
        assert_eq!(w.check(&1, NOW - 1_000_000, NOW), Ok(()));
        assert_eq!(w.check(&1, NOW + 1_000_000, NOW), Ok(()));
    }

    #[test]
    fn peer_count_is_bounded() {
        let mut w: ReplayWindow<u32> = ReplayWindow::new(DEFAULT_MAX_AGE, 2);
        for p in 0..10 {
            w.check(&p, NOW + u64::from(p), NOW).expect("fresh");
        }
        assert_eq!(w.peers.len(), 2);
    }

    #[test]
    fn when_full_the_peer_heard_from_least_recently_is_forgotten() {
        let mut w: ReplayWindow<u8> = ReplayWindow::new(DEFAULT_MAX_AGE, 2);
        w.check(&1, NOW + 10, NOW).expect("fresh");
        w.check(&2, NOW + 20, NOW).expect("fresh");
        // Peer 1 was added first but has the newest stamp now: peer 2 is the one to go.
        w.check(&1, NOW + 30, NOW).expect("fresh");
        w.check(&3, NOW + 40, NOW).expect("a third peer");
        assert_eq!(
            w.check(&1, NOW + 30, NOW),
            Err(AuthError::Replayed),
            "1 kept"
        );
        assert_eq!(
            w.check(&3, NOW + 40, NOW),
            Err(AuthError::Replayed),
            "3 kept"
        );
        // Peer 2's window is gone: its replay is left to the freshness bound and to the
        // boot binding of `DatagramAuth`.
        assert_eq!(w.check(&2, NOW + 20, NOW), Ok(()), "2 forgotten");
        assert_eq!(w.peers.len(), 2);
    }

    #[test]
    fn a_restarted_receiver_refuses_replays_older_than_the_freshness_bound() {
        let max_age = Duration::from_secs(1);
        let mut before: ReplayWindow<u8> = ReplayWindow::new(max_age, 8);
        before.check(&1, NOW, NOW).expect("fresh");
        // The receiver restarts: a new, empty window, a little more than max_age later.
        let mut after: ReplayWindow<u8> = ReplayWindow::new(max_age, 8);
        let later = NOW + 1_000_001;
        assert!(matches!(
            after.check(&1, NOW, later),
            Err(AuthError::Stale { .. })
        ));
        // Fresh traffic from the same peer still passes.
        assert_eq!(after.check(&1, later, later), Ok(()));
    }
}
