//! A replay by time (`since=`, or a `Last-Event-ID` that cannot be resumed exactly):
//! one event per change at or after a time, in the order of the changes, from the time
//! index and each key's kept revisions, the oldest within a bound.

use std::collections::{BinaryHeap, HashSet};

use kvs_sync::Version;

use super::ids::{change_at, change_id};
use super::{Replayed, Watcher};
use crate::{ApiError, Backend};

/// Keys of the backlog read per page.
const BACKLOG_PAGE: usize = 1000;

/// The changes a key's versions stand for, oldest first, as `(time, kind, version)`:
/// `revisions` newest first (the store's [`kvs_sync::Store::revisions`]). A value is a
/// `put` at its timestamp, and an `expire` at its expiry too once that passed before the
/// next version came (a purge's tombstone shares its value's revision); a tombstone is
/// an `expire` when it keeps the expiry of the value it replaced, else a `delete`, at
/// the time the key died. A tombstone over a tombstone changed nothing a reader saw and
/// stands for no change, as the live stream sends none for it.
pub(super) fn changes_of(revisions: &[Version], now_ms: u64) -> Vec<(u64, &'static str, &Version)> {
    let mut changes = Vec::new();
    // Oldest first, each with the time of the version that replaced it, if any.
    for (i, version) in revisions.iter().enumerate().rev() {
        if version.is_tombstone() {
            if revisions.get(i + 1).is_some_and(Version::is_tombstone) {
                continue;
            }
            let kind = match version.expires_at {
                Some(_) => "expire",
                None => "delete",
            };
            changes.push((change_at(version, kind == "expire"), kind, version));
            continue;
        }
        changes.push((version.id.timestamp, "put", version));
        let replaced_at = i.checked_sub(1).map(|newer| revisions[newer].changed_at());
        if let Some(expired_at) = version
            .expires_at
            .map(|_| change_at(version, true))
            .filter(|&at| at <= now_ms && replaced_at.is_none_or(|replaced| at < replaced))
        {
            changes.push((expired_at, "expire", version));
        }
    }
    changes
}

/// How much of a replay one stream holds: its oldest changes up to this many events and
/// about this many bytes (at least one event); the client resumes for the rest.
#[derive(Debug, Clone, Copy)]
pub(in crate::routes) struct BacklogBound {
    pub(in crate::routes) events: usize,
    pub(in crate::routes) bytes: usize,
}

/// The bound of every replay: a node holds at most this much for one watcher.
pub(super) const BACKLOG_BOUND: BacklogBound = BacklogBound {
    events: 100_000,
    bytes: 64 << 20,
};

/// The events of a replay, oldest first, and whether later ones were left out.
#[derive(Default)]
pub(in crate::routes) struct Backlog {
    pub(in crate::routes) events: Vec<Replayed>,
    pub(in crate::routes) cut: bool,
}

/// An event of a replay in the order of the changes: by time, then key, then the order
/// a key's changes came in.
struct Ordered {
    at: u64,
    order: usize,
    bytes: usize,
    replayed: Replayed,
}

impl Ordered {
    fn position(&self) -> (u64, &str, usize) {
        (self.at, &self.replayed.key, self.order)
    }
}

impl PartialEq for Ordered {
    fn eq(&self, other: &Self) -> bool {
        self.position() == other.position()
    }
}

impl Eq for Ordered {}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.position().cmp(&other.position())
    }
}

/// The oldest events offered, within a [`BacklogBound`], each once.
struct Oldest {
    bound: BacklogBound,
    /// A max-heap: the newest held is the first to go.
    held: BinaryHeap<Ordered>,
    /// The ids held: a key written while the replay reads the time index a page at a
    /// time moves to a later page and is read twice, with the changes it had then (found
    /// by an audit: one change sent twice, back to back, under concurrent writes).
    ids: HashSet<String>,
    bytes: usize,
    offered: usize,
    cut: bool,
}

impl Oldest {
    fn new(bound: BacklogBound) -> Self {
        Self {
            bound,
            held: BinaryHeap::new(),
            ids: HashSet::new(),
            bytes: 0,
            offered: 0,
            cut: false,
        }
    }

    /// Takes the change at `at`; a key's changes are offered in their order.
    fn offer(&mut self, at: u64, replayed: Replayed) {
        if !self.ids.insert(replayed.id.clone()) {
            return;
        }
        let bytes = kvs_sync::approximate_size(&replayed.key, &replayed.version);
        self.held.push(Ordered {
            at,
            order: self.offered,
            bytes,
            replayed,
        });
        self.offered += 1;
        self.bytes += bytes;
        while self.held.len() > self.bound.events
            || (self.bytes > self.bound.bytes && self.held.len() > 1)
        {
            if let Some(newest) = self.held.pop() {
                self.bytes -= newest.bytes;
                self.ids.remove(&newest.replayed.id);
            }
            self.cut = true;
        }
    }

    fn into_backlog(self) -> Backlog {
        Backlog {
            events: self
                .held
                .into_sorted_vec()
                .into_iter()
                .map(|ordered| ordered.replayed)
                .collect(),
            cut: self.cut,
        }
    }
}

/// The changes under the watcher's prefix at or after `since` that it may see (under
/// the version's metadata and the key's current one), in the order of the changes (see
/// [`changes_of`]), the oldest within `bound`: the keys that changed since then, from
/// the time index a page at a time, each with its kept revisions.
pub(in crate::routes) fn backlog(
    backend: &impl Backend,
    watcher: &Watcher,
    since: u64,
    bound: BacklogBound,
) -> Result<Backlog, ApiError> {
    let store = backend.store();
    let now_ms = backend.now_ms();
    let mut oldest = Oldest::new(bound);
    let mut after: Option<(u64, String)> = None;
    loop {
        let page = store.changes_since(
            since,
            after.as_ref().map(|(at, key)| (*at, key.as_str())),
            BACKLOG_PAGE,
        )?;
        let full = page.len() == BACKLOG_PAGE;
        let keys: Vec<String> = page
            .iter()
            .map(|(_, key)| key)
            .filter(|key| key.starts_with(&watcher.prefix) && !key.starts_with('_'))
            .cloned()
            .collect();
        let versions = store.get_many(&keys)?;
        for (key, current) in keys.into_iter().zip(versions) {
            // A caller who may no longer read the key gets none of its past either.
            let Some(current) = current.filter(|current| watcher.sees(&key, current)) else {
                continue;
            };
            let mut revisions = store.revisions(&key)?;
            // With history off there are none; a purge's tombstone is its value's entry.
            if revisions
                .first()
                .is_none_or(|newest| newest.id != current.id)
            {
                revisions.insert(0, current);
            }
            for (at, kind, version) in changes_of(&revisions, now_ms) {
                if at >= since && watcher.sees(&key, version) {
                    let replayed = Replayed {
                        key: key.clone(),
                        version: version.clone(),
                        kind,
                        id: change_id(version, kind == "expire"),
                        tag: None,
                    };
                    oldest.offer(at, replayed);
                }
            }
        }
        match page.into_iter().last() {
            Some(last) if full => after = Some(last),
            _ => return Ok(oldest.into_backlog()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::replayed;
    use super::*;

    #[test]
    fn a_tombstone_over_a_tombstone_stands_for_no_change() {
        let version = |at: u64, data: Option<&str>, expires_at: Option<u64>| Version {
            data: data.map(str::to_owned),
            expires_at,
            ..replayed("k", at).version
        };
        // Newest first: a peer's delete merged over this node's own, over a value that
        // was deleted after it had expired, over a put.
        let revisions = [
            version(40, None, None),
            version(30, None, None),
            version(10, Some("2"), Some(20)),
            version(5, Some("1"), None),
        ];
        let changes: Vec<(u64, &str)> = changes_of(&revisions, 100)
            .into_iter()
            .map(|(at, kind, _)| (at, kind))
            .collect();
        assert_eq!(
            changes,
            [(5, "put"), (10, "put"), (20, "expire"), (30, "delete")]
        );
        // The oldest kept revision may have replaced versions no longer kept: a lone
        // tombstone still stands for its delete.
        let lone = changes_of(&revisions[..1], 100);
        assert_eq!(lone.len(), 1);
        assert_eq!(lone[0].1, "delete");
    }

    #[test]
    fn a_change_offered_twice_is_held_once() {
        let mut oldest = Oldest::new(BACKLOG_BOUND);
        for (key, at) in [("b", 2), ("a", 1), ("b", 2), ("c", 3), ("a", 1)] {
            oldest.offer(at, replayed(key, at));
        }
        let backlog = oldest.into_backlog();
        let keys: Vec<&str> = backlog.events.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert!(!backlog.cut);
    }
}
