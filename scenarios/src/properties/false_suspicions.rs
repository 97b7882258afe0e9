//! `false_suspicions_at_most: {count}` / `false_suspicions_at_least: {count}` (final):
//! the number of suspicion events (any node's `suspect` verdict) about members that were
//! running in the life concerned is within the bound. The pair compares a run with
//! Lifeguard against the same run without it: a slow node makes classic SWIM accuse
//! healthy members, Lifeguard should not.

use super::membership::Cursor;
use super::{Property, World};
use crate::protocols::{Seen, SharedLog, SwimNode};

/// The property.
pub(crate) struct FalseSuspicions {
    cursor: Cursor,
    bound: u64,
    at_most: bool,
    count: u64,
}

impl FalseSuspicions {
    pub(crate) fn new(log: &SharedLog, bound: u64, at_most: bool) -> Self {
        Self {
            cursor: Cursor::new(log),
            bound,
            at_most,
            count: 0,
        }
    }
}

impl Property<SwimNode> for FalseSuspicions {
    fn check(&mut self, _: &World<'_, SwimNode>) -> Result<(), String> {
        let mut count = 0;
        self.cursor.drain(|o| {
            if o.seen == Seen::Suspect && o.about_running_life() {
                count += 1;
            }
            Ok(())
        })?;
        self.count += count;
        let ok = if self.at_most {
            self.count <= self.bound
        } else {
            self.count >= self.bound
        };
        if ok {
            return Ok(());
        }
        let (word, bound) = (
            if self.at_most { "at most" } else { "at least" },
            self.bound,
        );
        Err(format!(
            "{} false suspicion event(s), expected {word} {bound}",
            self.count
        ))
    }

    fn measurements(&self) -> Vec<(String, f64)> {
        vec![("false_suspicions".into(), self.count as f64)]
    }
}
