//! What a node's copy of the data vouches for ([`Standing`], and its floor): whether it
//! is established, joining or stale, how it becomes stale (out of touch with every peer
//! for longer than `tombstone_ttl`) and how it catches up (a session with an established
//! peer, or with every live peer when none is), since when its copy speaks for the
//! cluster (a cluster begun by new nodes, from their start), and how far its own writes
//! have reached its peers. Sessions use all of it to tell a peer's lack of a key that was
//! deleted from one it never had (see [`crate::Session::with_standing`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use kvs_net::StreamTransport;

use super::anti_entropy::RoundError;
use super::{Peer, ReplicationConfig, Shared, lock, millis};
use crate::Standing;

impl<T: StreamTransport> Shared<T> {
    /// An acknowledged push shows this node's writes before `through` (Unix ms) at
    /// `node_id`; it counts only while the peer is not behind (a lost push is for
    /// anti-entropy to make good). The time everywhere is worked out when it is read
    /// (working it out on every acknowledgement, over every peer, took 3-5 % of 100
    /// simulated nodes).
    pub(super) fn pushed(&self, node_id: &str, through: u64) {
        let mut peers = lock(&self.peers);
        if let Some(peer) = peers.get_mut(node_id).filter(|peer| !peer.behind)
            && peer.own_writes_through < through
        {
            peer.own_writes_through = through;
            self.delivered_dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Every write of this node stamped before `before` reached every live peer that is
    /// not behind: its pushes are all acknowledged, and the caller takes no more writes
    /// (see [`super::Replication::drain`]). A peer behind keeps what it had.
    pub(super) fn all_pushed(&self, before: u64) {
        let mut peers = lock(&self.peers);
        for peer in peers.values_mut().filter(|peer| !peer.behind) {
            peer.own_writes_through = peer.own_writes_through.max(before);
        }
        self.note_delivered(&peers);
    }

    /// Raises the time before which this node's writes reached every live peer to what
    /// `peers` (the live peers, locked) show.
    fn note_delivered(&self, peers: &BTreeMap<String, Peer>) {
        self.delivered_dirty.store(false, Ordering::Relaxed);
        if let Some(everywhere) = peers.values().map(|peer| peer.own_writes_through).min() {
            self.own_writes_delivered
                .fetch_max(everywhere, Ordering::Relaxed);
        }
    }

    /// [`Shared::note_delivered`] if a peer's own-writes time rose or a peer left since it
    /// was last worked out: before a peer's time is lowered (a new or restarted peer), so
    /// that the time everywhere is never lower than the lowest of the peers' was.
    pub(super) fn settle_delivered(&self, peers: &BTreeMap<String, Peer>) {
        if self.delivered_dirty.load(Ordering::Relaxed) {
            self.note_delivered(peers);
        }
    }

    /// The time (Unix ms) before which this node's writes had all reached every live
    /// peer, as far as it knows (0: unknown).
    pub(super) fn own_writes_delivered(&self) -> u64 {
        if self.delivered_dirty.load(Ordering::Relaxed) {
            self.note_delivered(&lock(&self.peers));
        }
        self.own_writes_delivered.load(Ordering::Relaxed)
    }

    /// Whether the set of live peers has not changed for a `sync_interval`: a node that
    /// has just started may not know every live peer yet.
    fn peers_settled(&self) -> bool {
        let changed = self.peers_changed.load(Ordering::Relaxed);
        changed.saturating_add(millis(self.config.sync_interval)) <= self.now_ms()
    }

    /// This node's `joined_at` and the time before which its writes reached every live
    /// peer, for [`crate::Session::writing_as`] (`None` if its `joined_at` is unknown).
    pub(super) fn writer(&self) -> Option<(u64, u64)> {
        let delivered = self.own_writes_delivered();
        Some((self.config.joined_at, delivered)).filter(|&(origin, _)| origin > 0)
    }

    /// Whether this node is established: it is not stale, and its copy vouches for
    /// what the cluster holds (see [`Shared::completed`] and [`vouches_alone`]).
    pub(super) fn established(&self) -> bool {
        self.stale_since().is_none() && self.vouches.load(Ordering::Relaxed)
    }

    /// Whether this node completed a session since it started (with a peer that was not
    /// stale, or catching up), or expects no peers: `/health` says `syncing` until then.
    pub(super) fn synced_since_start(&self) -> bool {
        !self.config.expect_peers || self.synced_once.load(Ordering::Relaxed)
    }

    /// What this node's copy vouches for, as it tells its peers.
    pub(super) fn standing(&self) -> Standing {
        // A node blind over a time vouches, while it joins or is stale, only for what
        // came before its last session outside that time. (Found by
        // `data-stale-after-blind`: a stale node's word for all before its last sync
        // buried the writes of its blind time on a peer.)
        let blind = self.cover().blind;
        match (self.stale_since(), blind) {
            (Some(since), _) => Standing::Stale { since, blind },
            (None, _) if !self.established() => Standing::Joining {
                since: self.last_sync.load(Ordering::Relaxed),
                blind,
            },
            (None, Some((from, to))) => Standing::Blind { from, to },
            (None, None) => Standing::Established,
        }
    }

    /// This node's floor: its copy vouches only for versions stamped at or after it.
    pub(super) fn floor(&self) -> u64 {
        self.floor.load(Ordering::Relaxed)
    }

    /// What this node's copy speaks for now, as a [`Cover`].
    fn cover(&self) -> Cover {
        let blind_to = self.blind_to.load(Ordering::Relaxed);
        Cover {
            floor: self.floor(),
            blind: (blind_to > 0).then(|| (self.blind_from.load(Ordering::Relaxed), blind_to)),
        }
    }

    /// Takes `cover` as what this node's copy speaks for (the blind span first: a
    /// session reading both meanwhile sees a lower floor only with it).
    fn take_cover(&self, cover: Cover) {
        match cover.blind {
            Some((from, to)) => self.set_blind(from, to),
            None => self.blind_to.store(0, Ordering::Relaxed),
        }
        self.floor.store(cover.floor, Ordering::Relaxed);
    }

    /// When this node's last complete session started, if it is stale.
    pub(super) fn stale_since(&self) -> Option<u64> {
        Some(self.stale_since.load(Ordering::Relaxed)).filter(|&since| since > 0)
    }

    /// Marks this node stale if it has been out of touch with every peer for longer than
    /// `tombstone_ttl` (stopped, paused, or without a live peer), or if its last complete
    /// session started longer ago than that (cut off from its peers while they were only
    /// suspect, or with sessions failing: pushes may have failed as well, and a deletion
    /// it missed may be purged by now; this only where `tombstone_ttl` is at least two
    /// `sync_interval`s, so that a node in touch has completed a session within it),
    /// then notes that it
    /// is in touch now if it has a live peer. At start, the last touch is the last
    /// complete session, or the first start of a node that holds data without one kept
    /// (see [`initial_touch`]).
    ///
    /// (The last session's age was not checked before: a node cut off from the others for
    /// `tombstone_ttl` and healed before it had declared them dead (Lifeguard stretches an
    /// isolated node's suspicions to 9 s and more), or back from a shorter cut but in its
    /// first session only after the tombstones of what was deleted meanwhile were purged,
    /// took itself for established and sent the deleted keys back. Found by a chaos test
    /// of real processes with network partitions; `data-isolated-short-of-suspicion`.)
    pub(super) fn note_staleness(&self) {
        let now = self.now_ms();
        let ttl = millis(self.config.tombstone_ttl);
        let touched = self.in_touch.load(Ordering::Relaxed);
        let synced = self.last_sync.load(Ordering::Relaxed);
        let out_of_touch = touched > 0 && touched.saturating_add(ttl) < now;
        let sessions_expected = ttl >= millis(self.config.sync_interval).saturating_mul(2);
        let unsynced = sessions_expected && synced > 0 && synced.saturating_add(ttl) < now;
        if (out_of_touch || unsynced) && self.stale_since().is_none() {
            let last_sync = synced.max(1);
            for peer in lock(&self.peers).values_mut() {
                peer.synced_while_stale = false;
            }
            self.stale_horizon.store(last_sync, Ordering::Relaxed);
            self.stale_since.store(last_sync, Ordering::Relaxed);
            tracing::warn!(
                last_sync_ms = last_sync,
                "out of touch with every peer for longer than tombstone_ttl: this node buries what was deleted meanwhile until it has caught up"
            );
        }
        if !lock(&self.peers).is_empty() {
            self.in_touch.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// A session with `node_id` (if it is known as a live peer yet), started at
    /// `started_ms`, completed: each side has what the other held then (this node's
    /// writes before `own_writes_before` included); `found_equal` if there was nothing to repair. The
    /// peer's standing decides whether this node has caught up, or vouches now:
    /// - a stale node catches up with a peer that vouches (established, or blind, whose
    ///   blind time it takes on), or, when no live peer does, once it has synced with
    ///   every live peer and the peer set has been still a `sync_interval`: then it is
    ///   blind from the latest last session among them to now;
    /// - a node that does not vouch yet does after a session with a peer that is not
    ///   stale (a stale peer vouches for nothing): new nodes that meet only each other (a
    ///   new cluster) from the earliest start among them on; a node whose floor differs
    ///   from the peer's for what its own copy held before its last session and what
    ///   the peer's speaks for ([`Cover::joined`]); otherwise as the peer does;
    /// - a node that vouches takes in what an established or blind peer speaks for;
    /// - a stale node that catches up without a peer that vouches keeps the blind time
    ///   it had, and adds the new one (one span over both).
    ///
    /// A session that began before this node became stale counts for nothing (an
    /// error): it was paused longer than `tombstone_ttl` after the peer's last message,
    /// and what the peer held then says nothing of what was deleted meanwhile.
    pub(super) fn completed(
        &self,
        node_id: Option<&str>,
        session: Completed,
    ) -> Result<(), RoundError> {
        let Completed {
            started_ms,
            own_writes_before,
            found_equal,
            peer,
            peer_floor,
            began_stale,
        } = session;
        // A pause since the peer's last message shows as a gap until the session counts
        // as a touch, so the gap is checked first, and the touch is the time read before
        // the check (a pause after it is a gap at the next check). Before, a node paused
        // just before a session completed took the session for a touch as it resumed,
        // never became stale, and sent the keys deleted meanwhile back to its peers; or
        // its watch found the gap first, and the session counted as its catch-up.
        let now = self.now_ms();
        self.note_staleness();
        if !began_stale && self.stale_since().is_some() {
            return Err(RoundError::BecameStale);
        }
        self.counters.rounds.fetch_add(1, Ordering::Relaxed);
        self.in_touch.fetch_max(now, Ordering::Relaxed);
        let all_synced_while_stale = {
            let mut peers = lock(&self.peers);
            if let Some(peer) = node_id.and_then(|id| peers.get_mut(id)) {
                peer.last_sync = Some(started_ms);
                if peer.behind_at <= started_ms {
                    peer.behind = false;
                }
                peer.roots_agreed = found_equal;
                peer.synced_while_stale = true;
                peer.own_writes_through = peer.own_writes_through.max(own_writes_before);
                self.delivered_dirty.store(true, Ordering::Relaxed);
            }
            peers.values().all(|peer| peer.synced_while_stale)
        };
        if let Some(since) = self.stale_since() {
            // The peer's copy holds what the cluster held before its last sync, and
            // before its blind time if that began earlier. (Found by a review: a stale
            // peer's later last sync alone left this node claiming a blind time neither
            // copy held, and keys written then were buried on its word.)
            if let Standing::Stale { since, blind } | Standing::Joining { since, blind } = peer {
                let held_before = blind.map_or(since, |(from, _)| from.min(since));
                self.stale_horizon.fetch_max(held_before, Ordering::Relaxed);
            }
            match peer {
                Standing::Established | Standing::Blind { .. } => {
                    tracing::info!(
                        node_id = node_id.unwrap_or("?"),
                        ?peer,
                        "caught up after a long absence, through a peer that vouches"
                    );
                    // Its own copy speaks for what came before its last session, less
                    // what it may have lacked already.
                    let own = self.cover();
                    let away = (since, u64::MAX);
                    let own = Cover {
                        blind: hull([own.blind, Some(away)]),
                        ..own
                    };
                    self.take_cover(own.joined(Cover::of(peer, peer_floor, started_ms)));
                }
                Standing::Stale { .. } | Standing::Joining { .. }
                    if all_synced_while_stale && node_id.is_some() && self.peers_settled() =>
                {
                    let from = self.stale_horizon.load(Ordering::Relaxed).max(since);
                    tracing::warn!(
                        node_id = node_id.unwrap_or("?"),
                        "no live peer is established (the whole cluster was away longer than tombstone_ttl): caught up with every live peer; a key deleted elsewhere longer than tombstone_ttl ago may come back"
                    );
                    // What it may have lacked before stays lacking (a blind span from an
                    // earlier catch-up, or the merge of two clusters).
                    let blind = hull([self.cover().blind, Some((from, self.now_ms()))]);
                    self.take_cover(Cover {
                        blind,
                        ..self.cover()
                    });
                }
                Standing::Stale { .. } | Standing::Joining { .. } => return Ok(()),
            }
            self.stale_since.store(0, Ordering::Relaxed);
        } else {
            let (vouches, own) = (self.vouches.load(Ordering::Relaxed), self.cover());
            let last_sync = self.last_sync.load(Ordering::Relaxed);
            match peer {
                // A stale peer vouches for nothing (not even for what it held before its
                // last sync: it may have been blind over some of it).
                Standing::Stale { .. } => return Ok(()),
                Standing::Established | Standing::Blind { .. } if vouches => {
                    self.take_cover(own.joined(Cover::of(peer, peer_floor, started_ms)));
                }
                _ if vouches => {}
                // New nodes that met only each other: a new cluster, whole from the
                // earliest start among them on.
                Standing::Joining { since: 0, .. } if last_sync == 0 => {
                    self.floor.fetch_min(peer_floor, Ordering::Relaxed);
                }
                // A copy of another cluster, or from further back: this node's own copy
                // speaks for what came before its last session (nothing, if new), and
                // for nothing after it.
                _ if peer_floor != own.floor => {
                    let own = Cover {
                        blind: hull([own.blind, Some((last_sync, started_ms))]),
                        ..own
                    };
                    self.take_cover(own.joined(Cover::of(peer, peer_floor, started_ms)));
                }
                Standing::Blind { from, to } => self.set_blind(from, to),
                _ => {}
            }
        }
        self.vouches.store(true, Ordering::Relaxed);
        self.last_sync.fetch_max(started_ms, Ordering::Relaxed);
        self.synced_once.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Notes that this node may lack versions stamped in `[from, to)`.
    fn set_blind(&self, from: u64, to: u64) {
        self.blind_from.store(from, Ordering::Relaxed);
        self.blind_to.store(to.max(1), Ordering::Relaxed);
    }
}

/// Whether a node that expects no peers vouches for what the cluster holds from the
/// start: if it has synced before or holds data (a cluster's first node). A new one with
/// nothing, such as a first node whose disk was replaced, vouches for nothing until its
/// first session: a stale node would take its lack of every key for deletions.
pub(super) fn vouches_alone(config: &ReplicationConfig, holds_data: bool) -> bool {
    !config.expect_peers && (config.last_sync_ms.is_some() || holds_data)
}

/// When a starting node was last in touch with a peer, as far as it knows (0: never, or
/// unknown): its last complete session; without one kept, if it expects peers and holds
/// data, its first start. That is a node that took in its peers' data (a first session,
/// or pushes) and went down before it kept the session's time (the node writes it every
/// few seconds): what it holds came after its first start, so if that is longer than
/// `tombstone_ttl` ago it is stale, and buries what was deleted meanwhile instead of
/// sending it back. A new node with nothing, or one alone, holds nothing a peer deleted.
pub(super) fn initial_touch(config: &ReplicationConfig, holds_data: bool) -> u64 {
    match config.last_sync_ms {
        Some(at) => at,
        None if config.expect_peers && holds_data => config.joined_at,
        None => 0,
    }
}

/// The floor a node starts with: the one it kept; 0 for a node with a past from before
/// floors were kept (it speaks for all time); otherwise (a new node, a first one with
/// its own writes included) its start less `max_clock_skew`, which is its floor once it
/// has met only new nodes (see [`Shared::completed`]).
pub(super) fn initial_floor(config: &ReplicationConfig) -> u64 {
    match config.floor_ms {
        Some(floor) => floor,
        None if config.last_sync_ms.is_some() => 0,
        None => config
            .joined_at
            .saturating_sub(millis(config.max_clock_skew)),
    }
}

/// What a copy speaks for: the versions stamped at or after `floor`, except those
/// stamped in `blind` (`[from, to)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cover {
    pub(super) floor: u64,
    pub(super) blind: Option<(u64, u64)>,
}

impl Cover {
    /// What a peer of standing `peer` and floor `floor` speaks for once a session with it
    /// that started at `started_ms` completed (what came later reaches both as pushes).
    fn of(peer: Standing, floor: u64, started_ms: u64) -> Self {
        let blind = match peer {
            Standing::Established => None,
            Standing::Blind { from, to } => Some((from, to)),
            Standing::Joining { since, blind } | Standing::Stale { since, blind } => {
                hull([Some((since, started_ms)), blind])
            }
        };
        Self { floor, blind }
    }

    /// What a copy that holds everything `self` and `other` held speaks for: from the
    /// lower floor on, except where neither does (as one span: where that is two spans,
    /// the time between them is given up too).
    pub(super) fn joined(self, other: Self) -> Self {
        let (low, high) = match self.floor <= other.floor {
            true => (self, other),
            false => (other, self),
        };
        // Above the lower floor, `low` lacks its blind span, and `high` what is below
        // its floor and its blind span.
        let below_high = Some((low.floor, high.floor));
        let blind = hull([
            overlap(low.blind, below_high),
            overlap(low.blind, high.blind),
        ]);
        match blind {
            // Blind from the floor on: a later floor (a new node's copy, which spoke for
            // nothing, takes the peer's).
            Some((from, to)) if from <= low.floor => Self {
                floor: to,
                blind: None,
            },
            _ => Self {
                floor: low.floor,
                blind,
            },
        }
    }
}

/// The span two spans share, if any.
fn overlap(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<(u64, u64)> {
    let ((a_from, a_to), (b_from, b_to)) = (a?, b?);
    let (from, to) = (a_from.max(b_from), a_to.min(b_to));
    (from < to).then_some((from, to))
}

/// The smallest span that holds every given span, if any.
fn hull<const N: usize>(spans: [Option<(u64, u64)>; N]) -> Option<(u64, u64)> {
    spans
        .into_iter()
        .flatten()
        .filter(|(from, to)| from < to)
        .reduce(|(a_from, a_to), (b_from, b_to)| (a_from.min(b_from), a_to.max(b_to)))
}

/// What a complete session tells [`Shared::completed`].
pub(super) struct Completed {
    /// When it started (Unix ms).
    pub(super) started_ms: u64,
    /// The time before which this node's own writes were all in the store's view when
    /// it started: `started_ms`, or earlier if writes stamped before then were still
    /// being made durable (see [`crate::Store::unsettled_since`]). The session carried
    /// only those to the peer.
    pub(super) own_writes_before: u64,
    /// Whether it found nothing to repair.
    pub(super) found_equal: bool,
    /// The peer's standing.
    pub(super) peer: Standing,
    /// The peer's floor.
    pub(super) peer_floor: u64,
    /// Whether this node was stale when it began (and told the peer so).
    pub(super) began_stale: bool,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Cover, initial_floor, initial_touch, vouches_alone};
    use crate::Standing;
    use crate::driver::ReplicationConfig;

    #[test]
    fn a_new_node_starts_with_its_start_as_floor_and_a_node_with_a_past_with_none() {
        let new = ReplicationConfig {
            expect_peers: true,
            joined_at: 100_000,
            max_clock_skew: Duration::from_secs(30),
            ..ReplicationConfig::default()
        };
        assert_eq!(initial_floor(&new), 70_000);
        let kept = ReplicationConfig {
            floor_ms: Some(5),
            last_sync_ms: Some(9),
            ..new.clone()
        };
        assert_eq!(initial_floor(&kept), 5);
        let from_before_floors = ReplicationConfig {
            last_sync_ms: Some(9),
            ..new.clone()
        };
        assert_eq!(initial_floor(&from_before_floors), 0);
        let first_with_own_writes = ReplicationConfig {
            expect_peers: false,
            ..new.clone()
        };
        assert_eq!(initial_floor(&first_with_own_writes), 70_000);
    }

    #[test]
    fn a_joined_copy_speaks_for_what_either_spoke_for() {
        let established = |floor| Cover { floor, blind: None };
        let blind = |floor, from, to| Cover {
            floor,
            blind: Some((from, to)),
        };
        assert_eq!(established(10).joined(established(4)), established(4));
        assert_eq!(established(4).joined(established(10)), established(4));
        // A new cluster (floor 50) took in a stale node's copy of an older cluster, blind
        // between that node's last session (20) and the new cluster's start.
        assert_eq!(established(50).joined(blind(0, 20, 50)), blind(0, 20, 50));
        // A stale node (last session at 20) catching up through the new cluster.
        let stale = blind(0, 20, u64::MAX);
        assert_eq!(stale.joined(established(50)), blind(0, 20, 50));
        assert_eq!(stale.joined(established(0)), established(0));
        assert_eq!(stale.joined(blind(0, 10, 30)), blind(0, 20, 30));
        assert_eq!(blind(40, 60, 70).joined(blind(0, 10, 20)), blind(0, 10, 20));
        // Two spans neither speaks for ([10, 30) and [45, 50)), and the time between
        // them given up.
        assert_eq!(blind(30, 45, 70).joined(blind(0, 10, 50)), blind(0, 10, 50));
        assert_eq!(blind(0, 10, 20).joined(blind(0, 30, 40)), established(0));
        // A new node's copy (nothing of its own) takes a later floor as its own.
        assert_eq!(blind(4, 0, u64::MAX).joined(established(9)), established(9));
    }

    #[test]
    fn a_joining_or_stale_peers_blind_time_ends_where_the_session_began() {
        let blind = |floor, from, to| Cover {
            floor,
            blind: Some((from, to)),
        };
        let (since, started) = (40, 60);
        for peer in [
            Standing::Joining { since, blind: None },
            Standing::Stale { since, blind: None },
        ] {
            assert_eq!(Cover::of(peer, 50, started), blind(50, since, started));
        }
        assert_eq!(
            Cover::of(Standing::Blind { from: 10, to: 20 }, 0, started),
            blind(0, 10, 20)
        );
        // A stale node (floor 0, last session at 20) completes a session begun at 60 with
        // a joining node of a new cluster (floor 50): blind from 20 to 60, not for ever
        // (what came after reaches both as pushes).
        let own = blind(0, 20, started);
        let joined = own.joined(Cover::of(
            Standing::Joining { since, blind: None },
            50,
            started,
        ));
        assert_eq!(joined, blind(0, 20, started));
    }

    #[test]
    fn a_first_node_vouches_alone_only_with_data_or_a_past() {
        let first = ReplicationConfig::default();
        assert!(vouches_alone(&first, true));
        assert!(!vouches_alone(&first, false), "a new disk");
        let synced_before = ReplicationConfig {
            last_sync_ms: Some(5),
            ..ReplicationConfig::default()
        };
        assert!(vouches_alone(&synced_before, false));
        let joining = ReplicationConfig {
            expect_peers: true,
            last_sync_ms: Some(5),
            ..ReplicationConfig::default()
        };
        assert!(
            !vouches_alone(&joining, true),
            "it vouches once it has synced"
        );
    }

    #[test]
    fn a_node_with_data_but_no_kept_session_was_last_in_touch_at_its_first_start() {
        let joining = ReplicationConfig {
            expect_peers: true,
            joined_at: 1_000,
            ..ReplicationConfig::default()
        };
        assert_eq!(initial_touch(&joining, true), 1_000);
        assert_eq!(initial_touch(&joining, false), 0, "a new node with nothing");
        let kept = ReplicationConfig {
            last_sync_ms: Some(5_000),
            ..joining.clone()
        };
        assert_eq!(initial_touch(&kept, true), 5_000);
        let alone = ReplicationConfig {
            expect_peers: false,
            ..joining
        };
        assert_eq!(initial_touch(&alone, true), 0, "a node alone");
    }
}
