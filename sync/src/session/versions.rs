//! What goes into `Versions` messages and what comes out of them: the held versions a
//! side sends (in messages of about [`VERSIONS_BUDGET`] bytes, deletions past keeping
//! only where the peer holds the key, what a stale side finds deleted meanwhile buried
//! instead), and the checks and merge of what the peer sends.

use super::{Session, SessionError, VERSIONS_BUDGET};
use crate::protocol::{Message, Standing};
use crate::{Store, Version};

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
            // A deletion past keeping goes only where the peer holds the key: it is not
            // taken there, but it buries the older value it superseded (see
            // `bury_superseded`), which would otherwise outlive this side's purge of it.
            if version.is_past_keeping(self.rules.now_ms, self.rules.tombstone_ttl_ms)
                && peer_lacks(&key)
            {
                continue;
            }
            if self.deleted_meanwhile(&version) && peer_lacks(&key) {
                buried.push((key, burial(&version)));
                continue;
            }
            bytes += approximate_size(&key, &version);
            batch.push((key, version));
            self.stats.versions_sent += 1;
            if bytes >= VERSIONS_BUDGET {
                out.push(Message::Versions(std::mem::take(&mut batch)));
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            out.push(Message::Versions(batch));
        }
        if !buried.is_empty() {
            self.stats.buried += store.merge(&buried)? as u64;
        }
        Ok(out)
    }

    /// Whether `version`, which the peer lacks, was deleted while this stale side was
    /// away (see [`Session::with_standing`] and [`Session::writing_as`]): the peer held
    /// every version the cluster had as of its last complete session (now, if it is
    /// established), so it held this one if it is older than that and the cluster had
    /// it by then: it is older than this side's last complete session, or it came from
    /// another node, or it is an own write older than the time all of them had reached
    /// every peer.
    fn deleted_meanwhile(&self, version: &Version) -> bool {
        let Standing::Stale { since } = self.standing else {
            return false;
        };
        let peer_held_all_before = match self.peer_standing {
            Some(Standing::Established) => u64::MAX,
            Some(Standing::Stale { since }) => since,
            Some(Standing::Joining) | None => return false,
        };
        let (received, delivered_before) = match self.own_origin {
            Some((own, delivered)) => (version.id.origin_joined_at != own, delivered),
            None => (false, 0),
        };
        let sent_out = version.id.timestamp < since.max(delivered_before) || received;
        version.id.timestamp < peer_held_all_before && sent_out
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
        self.bury_superseded(sorted.past_keeping, store)?;
        if !sorted.taken.is_empty() {
            self.stats.versions_stored += store.merge_from_session(sorted.taken)? as u64;
        }
        Ok(())
    }

    /// A deletion (or expiry) past keeping that the peer sends (it has not purged it
    /// yet, and this side holds the key, or the peer's clock is behind, within
    /// `max_clock_skew`) is not taken, but it still supersedes what it deleted: a held
    /// value it supersedes is buried, so that this side never sends it on to peers that
    /// have forgotten the deletion. (Found by a spec audit: a node back after
    /// `tombstone_ttl`, whose first session was with a peer 15 s behind, kept the deleted
    /// value and spread it to the others; and by `data-cold-restart`: a node met a peer
    /// that had not purged such a deletion yet, caught up, and later sent the value.)
    fn bury_superseded(
        &mut self,
        past_keeping: Vec<(String, Version)>,
        store: &dyn Store,
    ) -> Result<(), SessionError> {
        if past_keeping.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = past_keeping.iter().map(|(key, _)| key.clone()).collect();
        let held = store.get_many(&keys)?;
        let buried: Vec<(String, Version)> = past_keeping
            .into_iter()
            .zip(held)
            .filter_map(|((key, deletion), held)| {
                let held = held.filter(|held| !held.is_tombstone() && deletion.supersedes(held))?;
                Some((key, burial(&held)))
            })
            .collect();
        if !buried.is_empty() {
            self.stats.buried += store.merge(&buried)? as u64;
        }
        Ok(())
    }
}

/// A tombstone just above `version`, already past keeping wherever `version` was deleted
/// meanwhile (it is older than the last complete session, itself older than
/// `tombstone_ttl`, or older than a deletion past keeping): it hides `version` locally,
/// is never sent, and is purged.
fn burial(version: &Version) -> Version {
    Version {
        id: crate::VersionId {
            timestamp: version.id.timestamp.saturating_add(1),
            ..version.id
        },
        data: None,
        expires_at: None,
        ..version.clone()
    }
}

/// About how many bytes `version` of `key` takes on the wire.
pub fn approximate_size(key: &str, version: &Version) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    64 + key.len() + text(&version.data) + text(&version.owner) + text(&version.group)
}
