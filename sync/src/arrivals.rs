//! The changes a store made visible lately, in the order it made them (`GET /watch`'s
//! exact resume).
//!
//! A change's timestamp is not the order a node sees it in: a write replicated late, or an
//! expiry the purge streams up to a second after its time, comes after changes with later
//! timestamps. A watcher that resumes from the timestamp of the last event it got would
//! skip those. So a store records each change it makes visible here, at the moment it
//! hands it to its watchers, and a resume finds the event it names among them and takes
//! every change recorded after it (the route drops those it sends live as well).
//!
//! What is recorded is bounded ([`MAX_CHANGES`], [`MAX_BYTES`]: the oldest go first) and
//! held shared, so that a resume copies pointers, not values. Recording starts with the
//! store life's first watcher (a node nobody ever watched pays nothing) and goes on while
//! the store is open. The reserved `_` keys, which no watcher is sent, are not recorded.
//! Each store life has a random [`Arrivals::tag`], which the ids of its events carry: an
//! id from another node, or from an earlier life of this one, names a place in another
//! order, and finds nothing here.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::{Change, approximate_size};

/// The most changes kept.
pub(crate) const MAX_CHANGES: usize = 100_000;

/// About the most bytes of keys and values kept (at least one change).
pub(crate) const MAX_BYTES: usize = 32 << 20;

/// See the module doc.
#[derive(Debug)]
pub struct Arrivals {
    tag: u32,
    recording: AtomicBool,
    recent: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    changes: VecDeque<(usize, Arc<Change>)>,
    bytes: usize,
}

impl Arrivals {
    /// Nothing recorded yet, under a new random tag.
    pub fn with_random_tag() -> Self {
        Self::with_tag(uuid::Uuid::new_v4().as_fields().0)
    }

    /// Nothing recorded yet, under `tag`.
    pub fn with_tag(tag: u32) -> Self {
        Self {
            tag,
            recording: AtomicBool::new(false),
            recent: Mutex::new(Recent::default()),
        }
    }

    /// The tag of this store life.
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// Records every change from now on (called by the first watcher).
    pub fn start(&self) {
        self.recording.store(true, Ordering::Release);
    }

    /// Whether changes are recorded: a store builds changes only then (or for a watcher).
    pub fn recording(&self) -> bool {
        self.recording.load(Ordering::Acquire)
    }

    /// Records `change` and hands it to `send` (the store's watchers) under one lock, so
    /// that a watcher that subscribed before calling [`Self::after`] finds each change
    /// either there or in what it receives. Drops the oldest changes past the bounds.
    pub fn record(&self, change: Change, send: impl FnOnce(&Change)) {
        if !self.recording() || change.key.starts_with('_') {
            send(&change);
            return;
        }
        let change = Arc::new(change);
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = approximate_size(&change.key, &change.version);
        recent.changes.push_back((bytes, Arc::clone(&change)));
        recent.bytes += bytes;
        while recent.changes.len() > MAX_CHANGES
            || (recent.bytes > MAX_BYTES && recent.changes.len() > 1)
        {
            if let Some((gone, _)) = recent.changes.pop_front() {
                recent.bytes -= gone;
            }
        }
        send(&change);
    }

    /// Every change recorded after the newest one `is_last` picks, oldest first; `None`
    /// when `tag` is another life's or none is picked (it was never recorded here, or
    /// was dropped past the bounds).
    pub fn after(&self, tag: u32, is_last: impl Fn(&Change) -> bool) -> Option<Vec<Arc<Change>>> {
        if tag != self.tag {
            return None;
        }
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let last = recent
            .changes
            .iter()
            .rposition(|(_, change)| is_last(change))?;
        Some(
            recent
                .changes
                .iter()
                .skip(last + 1)
                .map(|(_, change)| Arc::clone(change))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Version, VersionId};

    fn change(key: &str, timestamp: u64, data: &str) -> Change {
        Change {
            key: key.into(),
            version: Version {
                id: VersionId {
                    timestamp,
                    origin_joined_at: 1,
                    uuid: uuid::Uuid::from_u128(u128::from(timestamp)),
                },
                data: Some(data.into()),
                owner: None,
                group: None,
                permissions: 0,
                expires_at: None,
            },
            expired: false,
        }
    }

    fn keys<C: std::ops::Deref<Target = Change>>(changes: &[C]) -> Vec<&str> {
        changes.iter().map(|change| change.key.as_str()).collect()
    }

    #[test]
    fn a_resume_takes_every_change_recorded_after_the_one_it_names_in_their_order() {
        let arrivals = Arrivals::with_tag(7);
        let mut sent = Vec::new();
        arrivals.record(change("before", 1, "x"), |c| sent.push(c.clone()));
        arrivals.start();
        // `late` has the oldest timestamp but came last: it is still after `a`.
        for (key, timestamp) in [("a", 20), ("b", 30), ("late", 10)] {
            arrivals.record(change(key, timestamp, "x"), |c| sent.push(c.clone()));
        }
        arrivals.record(change("_auth/x", 40, "x"), |c| sent.push(c.clone()));
        let sent: Vec<&Change> = sent.iter().collect();
        assert_eq!(keys(&sent), ["before", "a", "b", "late", "_auth/x"]);
        let after_a = arrivals.after(7, |c| c.key == "a").unwrap();
        assert_eq!(keys(&after_a), ["b", "late"]);
        // Reserved keys are handed to the watchers (who drop them) but not recorded.
        assert!(arrivals.after(7, |c| c.key == "late").unwrap().is_empty());
        assert_eq!(arrivals.after(7, |c| c.key == "_auth/x"), None);
        // Not recorded (before the first watcher), another life's tag: nothing to go on.
        assert_eq!(arrivals.after(7, |c| c.key == "before"), None);
        assert_eq!(arrivals.after(8, |c| c.key == "a"), None);
    }

    #[test]
    fn the_oldest_changes_go_past_the_bounds() {
        let arrivals = Arrivals::with_tag(1);
        arrivals.start();
        for i in 0..MAX_CHANGES as u64 + 2 {
            arrivals.record(change(&format!("k{i}"), i, ""), |_| {});
        }
        assert_eq!(arrivals.after(1, |c| c.key == "k1"), None);
        assert_eq!(
            arrivals.after(1, |c| c.key == "k2").unwrap().len(),
            MAX_CHANGES - 1
        );

        let big = "v".repeat(MAX_BYTES / 3);
        for i in 0..4 {
            arrivals.record(change(&format!("big{i}"), i, &big), |_| {});
        }
        // Three of them are a little over the bytes: two are kept.
        assert_eq!(arrivals.after(1, |c| c.key == "k99999"), None);
        assert_eq!(arrivals.after(1, |c| c.key == "big1"), None);
        assert_eq!(
            keys(&arrivals.after(1, |c| c.key == "big2").unwrap()),
            ["big3"]
        );
    }
}
