//! `no_zombie` (always or final): once a node has seen a member dead (or left) at
//! incarnation `i`, it never sees it alive or suspect again at an incarnation `<= i`
//! (a dead identity comes back only with a higher incarnation), until it forgets it.

use std::collections::BTreeMap;

use super::membership::Cursor;
use super::{Property, World};
use crate::duration;
use crate::protocols::{Seen, SharedLog, SwimNode};

/// The property.
pub(crate) struct NoZombie {
    cursor: Cursor,
    /// (observer, observer life, subject) -> incarnation it was declared dead or left at.
    dead: BTreeMap<(usize, u64, usize), u64>,
}

impl NoZombie {
    pub(crate) fn new(log: &SharedLog) -> Self {
        Self {
            cursor: Cursor::new(log),
            dead: BTreeMap::new(),
        }
    }

    fn judge(&mut self) -> Result<(), String> {
        let dead = &mut self.dead;
        self.cursor.drain(|o| {
            let key = (o.observer, o.observer_life, o.subject);
            match o.seen {
                Seen::Removed => {
                    dead.remove(&key);
                }
                Seen::Dead | Seen::Left => {
                    let at = dead.entry(key).or_insert(o.incarnation);
                    *at = (*at).max(o.incarnation);
                }
                Seen::Alive | Seen::Suspect | Seen::Updated => match dead.get(&key) {
                    Some(&d) if o.incarnation <= d => {
                        return Err(format!(
                            "n{} saw n{} {:?} at incarnation {} after it was dead at {} ({})",
                            o.observer + 1,
                            o.subject + 1,
                            o.seen,
                            o.incarnation,
                            d,
                            duration::show(o.at)
                        ));
                    }
                    Some(_) => {
                        dead.remove(&key);
                    }
                    None => {}
                },
            }
            Ok(())
        })
    }
}

impl Property<SwimNode> for NoZombie {
    fn on_event(&mut self, _: &World<'_, SwimNode>, _: &crate::Record) -> Result<(), String> {
        self.judge()
    }

    fn check(&mut self, _: &World<'_, SwimNode>) -> Result<(), String> {
        self.judge()
    }
}
