//! What goes into `Versions` messages and what comes out of them: the held versions a
//! side sends (in messages of about [`VERSIONS_BUDGET`] bytes, deletions past keeping
//! only where the peer holds the key, what a stale side finds deleted meanwhile buried
//! instead, or withheld, by the standings and floors both sides tell), and the checks
//! and merge of what the peer sends.

use super::{Session, SessionError, State, VERSIONS_BUDGET};
use crate::protocol::{Message, Standing, VERSION_SIZE_FLOOR};
use crate::{Store, Undelivered, Version};

/// The standing a session runs under: this side's, and the peer's once it said it.
impl Session {
    /// This side's standing (by default [`Standing::Established`]). A stale side does
    /// not send the peer a version the peer lacks when the peer's lack may mean that the
    /// key was deleted meanwhile and the tombstone is forgotten: where the peer vouches
    /// that it held the version, it buries it, under a tombstone already past keeping
    /// (purged soon; sent only where a peer holds the key, which weighs it by its own
    /// rules: see `Session::bury_superseded`), so that it cannot come back; where the peer cannot
    /// tell (it is joining), it withholds it. See `Session::fate` for the rule, and
    /// [`Session::writing_as`].
    pub fn with_standing(mut self, standing: Standing) -> Self {
        self.standing = standing;
        self
    }

    /// This side's floor (Unix ms; by default 0): its copy vouches only for versions
    /// stamped at or after it, whatever its standing. A node that began a cluster with
    /// other new nodes takes their earliest start less `max_clock_skew`, so that a stale node of another,
    /// older cluster does not take their lack of its older versions for deletions (it
    /// sends them instead).
    pub fn with_floor(mut self, floor: u64) -> Self {
        self.floor = floor;
        self
    }

    /// The `origin_joined_at` of this node's own writes, and the time before which they
    /// had all reached every live peer (`delivered_before`, Unix ms; 0 if unknown). A
    /// stale side that knows it sends a peer that lacks them only its own writes newer
    /// than its last complete session and than `delivered_before` (those it may have
    /// taken while cut off), and buries the newer versions it received from other nodes
    /// as well, if they are older than the peer's last complete session (any, for an
    /// established peer): the cluster had those, so a peer without them deleted them
    /// meanwhile and has forgotten the tombstone. (Without it, every version newer than
    /// the last session is sent, and a key pushed to or by this node shortly before it
    /// went away came back.)
    pub fn writing_as(mut self, own_origin: u64, delivered_before: u64) -> Self {
        self.own_origin = Some((own_origin, delivered_before));
        self
    }

    /// The peer's standing, once it said it (every session that completes says it).
    pub fn peer_standing(&self) -> Option<Standing> {
        self.peer_standing
    }

    /// The peer's floor (0 until it said its standing).
    pub fn peer_floor(&self) -> u64 {
        self.peer_floor
    }

    /// Responder, as the opening arrives and before [`Self::handle`] takes it: its
    /// `Standing`, which needs no store work, to send at once, so that the initiator
    /// hears from a live peer within moments however long this side's store takes for
    /// the tree (it waits for the writes not yet applied). Once; `None` otherwise.
    pub fn early_standing(&mut self) -> Option<Message> {
        if self.initiator || self.state != State::Start {
            return None;
        }
        self.tell_standing()
    }

    /// This side's `Standing`, the first time only.
    pub(super) fn tell_standing(&mut self) -> Option<Message> {
        (!std::mem::replace(&mut self.standing_told, true)).then_some(Message::Standing {
            standing: self.standing,
            floor: self.floor,
        })
    }
}

impl Session {
    /// The held versions of `keys` in `Versions` messages of about [`VERSIONS_BUDGET`]
    /// bytes; deletions past keeping go only where the peer holds the key.
    pub(super) fn versions_of(
        &mut self,
        keys: Vec<String>,
        peer_lacks: impl Fn(&str) -> bool,
        store: &dyn Store,
    ) -> Result<Vec<Message>, SessionError> {
        let held = store.get_many(&keys)?;
        let held = keys
            .into_iter()
            .zip(held)
            .filter_map(|(key, version)| Some((key, version?)))
            .collect();
        self.pack_versions(held, peer_lacks, store)
    }

    /// `held` in `Versions` messages of about [`VERSIONS_BUDGET`] bytes; deletions past
    /// keeping go only where the peer holds the key, and what was deleted while a stale
    /// side was away is buried instead of sent.
    pub(super) fn pack_versions(
        &mut self,
        held: Vec<(String, Version)>,
        peer_lacks: impl Fn(&str) -> bool,
        store: &dyn Store,
    ) -> Result<Vec<Message>, SessionError> {
        let mut out = Vec::new();
        let mut batch = Vec::new();
        let mut buried = Vec::new();
        let mut bytes = 0;
        for (key, version) in held {
            let version = self.as_delivered_now(version);
            if peer_lacks(&key) {
                // A deletion past keeping goes only where the peer holds the key: it is
                // not taken there, but it buries the older value it superseded (see
                // `bury_superseded`), which would otherwise outlive this side's purge.
                if version.is_past_keeping(self.rules.now_ms, self.rules.tombstone_ttl_ms) {
                    continue;
                }
                match self.fate(&version) {
                    Fate::Send => {}
                    Fate::Bury => {
                        buried.push((key, burial(&version)));
                        continue;
                    }
                    Fate::Withhold => {
                        self.stats.withheld += 1;
                        continue;
                    }
                }
            }
            // A message holds at most the budget, or one version alone: a large value
            // added to a nearly full message would take its frame past the transport's
            // limit (found by an audit: a 16 MB value after 3.5 MB of others failed
            // every round that carried it, for good).
            let size = approximate_size(&key, &version);
            if !batch.is_empty() && bytes + size > VERSIONS_BUDGET {
                out.push(Message::Versions(std::mem::take(&mut batch)));
                bytes = 0;
            }
            bytes += size;
            batch.push((key, version));
            self.stats.versions_sent += 1;
        }
        if !batch.is_empty() {
            out.push(Message::Versions(batch));
        }
        if !buried.is_empty() {
            self.stats.buried += store.merge(&buried)? as u64;
        }
        Ok(out)
    }

    /// `version` as it goes to the peer: this side's own delete older than
    /// `tombstone_ttl` that may not have reached every peer yet (kept by its purges, see
    /// [`crate::Undelivered`]) goes as dead from now, so that the peer takes it as a fresh
    /// delete and keeps it `tombstone_ttl` from its delivery: a node down meanwhile and
    /// back within `tombstone_ttl` still finds it, and none past keeping (not kept yet,
    /// or kept just less than `tombstone_ttl` ago) only buries the value on the peer,
    /// which could take it back from a peer not reached yet.
    fn as_delivered_now(&self, version: Version) -> Version {
        let Some((origin_joined_at, since_ms)) = self.own_origin else {
            return version;
        };
        let undelivered = Undelivered {
            origin_joined_at,
            since_ms,
        };
        let now = self.rules.now_ms;
        let old = version
            .id
            .timestamp
            .saturating_add(self.rules.tombstone_ttl_ms)
            <= now;
        match version.is_tombstone() && old && undelivered.holds(&version) {
            true => Undelivered::kept(&version, now),
            false => version,
        }
    }

    /// What becomes of `version`, which the peer lacks, in this session (see
    /// [`Session::with_standing`] and [`Session::writing_as`]). Only a stale side ever
    /// keeps a version back, and only one older than `tombstone_ttl` (a deletion the
    /// peer could have forgotten is younger than the value it deleted, and past keeping)
    /// that the cluster had when this side left: one older than its last complete
    /// session, or one from another node, or an own write older than the time all of
    /// them had reached every peer. It is buried if the peer held it then, which a peer
    /// that vouches for that time did (an established one; a stale or joining one,
    /// before its own last session; either, and one caught up blind, outside its blind
    /// time; and any only at or after its floor), and withheld from a new peer, which
    /// vouches for nothing.
    fn fate(&self, version: &Version) -> Fate {
        let Standing::Stale { since, .. } = self.standing else {
            return Fate::Send;
        };
        let stamped = version.id.timestamp;
        let forgettable = stamped.saturating_add(self.rules.tombstone_ttl_ms)
            < self
                .rules
                .now_ms
                .saturating_add(self.rules.max_clock_skew_ms);
        let (received, delivered_before) = match self.own_origin {
            Some((own, delivered)) => (version.id.origin_joined_at != own, delivered),
            None => (false, 0),
        };
        let cluster_had = stamped < since.max(delivered_before) || received;
        if !forgettable || !cluster_had {
            return Fate::Send;
        }
        let peer_held = match self.peer_standing {
            Some(Standing::Established) => true,
            Some(Standing::Stale { since, blind } | Standing::Joining { since, blind })
                if since > 0 =>
            {
                stamped < since && !blind.is_some_and(|(from, to)| (from..to).contains(&stamped))
            }
            Some(Standing::Blind { from, to }) => !(from..to).contains(&stamped),
            Some(Standing::Stale { .. } | Standing::Joining { .. }) | None => {
                return Fate::Withhold;
            }
        };
        match peer_held && stamped >= self.peer_floor {
            true => Fate::Bury,
            false => Fate::Send,
        }
    }

    /// Checks and merges versions from the peer.
    pub(super) fn merge(
        &mut self,
        versions: Vec<(String, Version)>,
        store: &dyn Store,
    ) -> Result<(), SessionError> {
        self.stats.versions_received += versions.len() as u64;
        let sorted = self.rules.sort(versions);
        self.stats.refused.merge(sorted.counts);
        // A burial passes the checks like any deletion (taken, or past keeping).
        let (burials, past_keeping): (Vec<_>, Vec<_>) = sorted
            .past_keeping
            .into_iter()
            .partition(|(_, version)| is_burial(version));
        let (more_burials, taken): (Vec<_>, Vec<_>) = sorted
            .taken
            .into_iter()
            .partition(|(_, version)| is_burial(version));
        self.bury_superseded(past_keeping, store, false)?;
        self.bury_superseded([burials, more_burials].concat(), store, true)?;
        if !taken.is_empty() {
            self.stats.versions_stored += store.merge_from_session(taken)? as u64;
        }
        Ok(())
    }

    /// Buries the held values that the peer's deletions or burials supersede.
    ///
    /// A deletion (or expiry) past keeping that the peer sends (it has not purged it
    /// yet, and this side holds the key, or the peer's clock is behind, within
    /// `max_clock_skew`) is not taken, but it still supersedes what it deleted: a held
    /// value it supersedes is buried, so that this side never sends it on to peers that
    /// have forgotten the deletion. (Found by a spec audit: a node back after
    /// `tombstone_ttl`, whose first session was with a peer 15 s behind, kept the deleted
    /// value and spread it to the others; and by `data-cold-restart`: a node met a peer
    /// that had not purged such a deletion yet, caught up, and later sent the value.)
    ///
    /// A peer's burial (`weighed`) says that the peer, stale, took its lack of a key for
    /// a deletion, not that the key was deleted: this side weighs its own copy by its own
    /// rules, as that of a key the peer lacks ([`Session::fate`]), and buries it only
    /// where they say so. (Taken as a deletion, a wrong burial, of writes only a group
    /// that went away together had, buried the writer's copy, and the writes were gone
    /// everywhere: `data-burial-not-sent`. Not sent at all, a right one left a second
    /// stale node, caught up through the first, with the deleted value, which it sent
    /// back once the burial was purged: `data-stale-pair-burials`.)
    fn bury_superseded(
        &mut self,
        deletions: Vec<(String, Version)>,
        store: &dyn Store,
        weighed: bool,
    ) -> Result<(), SessionError> {
        if deletions.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = deletions.iter().map(|(key, _)| key.clone()).collect();
        let held = store.get_many(&keys)?;
        let buried: Vec<(String, Version)> = deletions
            .into_iter()
            .zip(held)
            .filter_map(|((key, deletion), held)| {
                let held = held.filter(|held| !held.is_tombstone() && deletion.supersedes(held))?;
                let buries = !weighed || matches!(self.fate(&held), Fate::Bury);
                buries.then(|| (key, burial(&held)))
            })
            .collect();
        if !buried.is_empty() {
            self.stats.buried += store.merge(&buried)? as u64;
        }
        Ok(())
    }
}

/// What a stale side does with a version the peer lacks ([`Session::fate`]).
enum Fate {
    Send,
    /// Deleted meanwhile: hidden locally under a burial.
    Bury,
    /// Maybe deleted meanwhile, and the peer cannot tell: kept, and not sent.
    Withhold,
}

/// A tombstone just above `version`, already past keeping wherever `version` was deleted
/// meanwhile (it is older than the last complete session, itself older than
/// `tombstone_ttl`, or older than a deletion past keeping): it hides `version` locally,
/// and is purged. It goes, like a deletion past keeping, only where the peer holds the
/// key, and is known there by the nil uuid, which no write has ([`is_burial`]): a
/// burial is a guess, which the peer weighs by its own rules
/// ([`Session::bury_superseded`]).
fn burial(version: &Version) -> Version {
    Version {
        id: crate::VersionId {
            timestamp: version.id.timestamp.saturating_add(1),
            uuid: uuid::Uuid::nil(),
            ..version.id
        },
        data: None,
        expires_at: None,
        ..version.clone()
    }
}

/// Whether `version` is a burial ([`burial`]): never a write's, whose uuids are random.
fn is_burial(version: &Version) -> bool {
    version.is_tombstone() && version.id.uuid.is_nil()
}

/// About how many bytes `version` of `key` takes on the wire.
pub fn approximate_size(key: &str, version: &Version) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    VERSION_SIZE_FLOOR
        + key.len()
        + text(&version.data)
        + text(&version.owner)
        + text(&version.group)
}
