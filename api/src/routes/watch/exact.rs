//! An exact resume: the changes this node sent after the event a `Last-Event-ID` names,
//! from its recent changes in their order ([`kvs_sync::Arrivals`]).

use std::collections::HashSet;
use std::sync::Arc;

use kvs_sync::Change;

use super::ids::{LastEvent, change_at, change_id};
use super::{Replayed, Watcher};
use crate::{ApiError, Backend};

impl LastEvent {
    /// Every change this node sent after the event, in their order: the event was sent
    /// in arrival order by this node's store life and is still among its recent changes.
    fn arrivals_after(&self, arrivals: &kvs_sync::Arrivals) -> Option<Vec<Arc<Change>>> {
        let (uuid, tag) = (self.uuid?, self.tag?);
        arrivals.after(tag, |change| {
            change.version.id.uuid == uuid
                && change_at(&change.version, change.is_expiry()) == self.at
        })
    }
}

/// An exact resume: the events the watcher sees, and the names of every change read
/// (the live stream drops them, seen or not).
pub(super) struct Arrived {
    pub(super) events: Vec<Replayed>,
    pub(super) names: HashSet<String>,
}

/// The changes this node sent after the event `resume` names, if it still holds that
/// one ([`kvs_sync::Arrivals`]), as the events the watcher sees, in arrival order: under
/// each version's metadata, and of keys it may read now, as a replay by time (a key
/// made private while the client was away does not leak its earlier values; found by
/// an audit).
pub(super) fn arrived(
    backend: &impl Backend,
    resume: &LastEvent,
    watcher: &Watcher,
) -> Result<Option<Arrived>, ApiError> {
    let Some(arrivals) = backend.arrivals() else {
        return Ok(None);
    };
    let Some(changes) = resume.arrivals_after(arrivals) else {
        return Ok(None);
    };
    let tag = arrivals.tag();
    let named: Vec<(String, Arc<Change>)> = changes
        .into_iter()
        .map(|change| (change_id(&change.version, change.is_expiry()), change))
        .collect();
    let names = named.iter().map(|(name, _)| name.clone()).collect();
    let seen: Vec<(String, Arc<Change>)> = named
        .into_iter()
        .filter(|(_, change)| watcher.sees(&change.key, &change.version))
        .collect();
    let keys: Vec<String> = seen
        .iter()
        .map(|(_, change)| change.key.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let current = backend.store().get_many(&keys)?;
    let readable: HashSet<String> = keys
        .into_iter()
        .zip(current)
        .filter(|(key, current)| current.as_ref().is_some_and(|now| watcher.sees(key, now)))
        .map(|(key, _)| key)
        .collect();
    let events = seen
        .into_iter()
        .filter(|(_, change)| readable.contains(&change.key))
        .map(|(id, change)| Replayed {
            id,
            kind: change.kind(),
            key: change.key.clone(),
            version: change.version.clone(),
            tag: Some(tag),
        })
        .collect();
    Ok(Some(Arrived { events, names }))
}
