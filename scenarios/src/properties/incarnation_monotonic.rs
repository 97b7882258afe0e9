//! `incarnation_monotonic` (always or final): the incarnation of a member as seen by any
//! node (in one life of that node) never decreases, until the node forgets the member.

use std::collections::BTreeMap;

use super::membership::Cursor;
use super::{Property, World};
use crate::duration;
use crate::protocols::{Seen, SharedLog, SwimNode};

/// The property.
pub(crate) struct IncarnationMonotonic {
    cursor: Cursor,
    /// (observer, observer life, subject) -> highest incarnation seen.
    seen: BTreeMap<(usize, u64, usize), u64>,
}

impl IncarnationMonotonic {
    pub(crate) fn new(log: &SharedLog) -> Self {
        Self {
            cursor: Cursor::new(log),
            seen: BTreeMap::new(),
        }
    }

    fn judge(&mut self) -> Result<(), String> {
        let seen = &mut self.seen;
        self.cursor.drain(|o| {
            let key = (o.observer, o.observer_life, o.subject);
            if o.seen == Seen::Removed {
                seen.remove(&key);
                return Ok(());
            }
            let high = seen.entry(key).or_insert(o.incarnation);
            if o.incarnation < *high {
                return Err(format!(
                    "n{} saw n{} go from incarnation {} back to {} ({:?}) at {}",
                    o.observer + 1,
                    o.subject + 1,
                    high,
                    o.incarnation,
                    o.seen,
                    duration::show(o.at)
                ));
            }
            *high = o.incarnation;
            Ok(())
        })
    }
}

impl Property<SwimNode> for IncarnationMonotonic {
    fn on_event(&mut self, _: &World<'_, SwimNode>, _: &crate::Record) -> Result<(), String> {
        self.judge()
    }

    fn check(&mut self, _: &World<'_, SwimNode>) -> Result<(), String> {
        self.judge()
    }
}
