//! `no_false_deaths` (always or final; `{max: K}`, default 0): no node declares dead a
//! member that is running (not crashed) in the life the verdict is about. A verdict about
//! an earlier life of a restarted node is a true death, not a false one; a paused node
//! counts as running (only a crash makes a death true). `max` allows a
//! documented number of false deaths where the network is extreme.

use serde::Deserialize;

use super::membership::Cursor;
use super::{Property, World};
use crate::duration;
use crate::protocols::{Seen, SharedLog, SwimNode};

/// The arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Args {
    #[serde(default)]
    max: u64,
}

/// The property.
pub(crate) struct NoFalseDeaths {
    cursor: Cursor,
    max: u64,
    count: u64,
    first: Vec<String>,
}

impl NoFalseDeaths {
    pub(crate) fn new(log: &SharedLog, args: Args) -> Self {
        Self {
            cursor: Cursor::new(log),
            max: args.max,
            count: 0,
            first: Vec::new(),
        }
    }

    fn judge(&mut self) -> Result<(), String> {
        let (count, first) = (&mut self.count, &mut self.first);
        self.cursor.drain(|o| {
            if o.seen == Seen::Dead && o.about_running_life() {
                *count += 1;
                if first.len() < 5 {
                    first.push(format!(
                        "n{} declared n{} dead (incarnation {}) at {} while it was running",
                        o.observer + 1,
                        o.subject + 1,
                        o.incarnation,
                        duration::show(o.at)
                    ));
                }
            }
            Ok(())
        })?;
        if self.count <= self.max {
            return Ok(());
        }
        Err(format!(
            "{} false death(s), at most {} allowed: {}",
            self.count,
            self.max,
            self.first.join("; ")
        ))
    }
}

impl Property<SwimNode> for NoFalseDeaths {
    fn on_event(&mut self, _: &World<'_, SwimNode>, _: &crate::Record) -> Result<(), String> {
        self.judge()
    }

    fn check(&mut self, _: &World<'_, SwimNode>) -> Result<(), String> {
        self.judge()
    }

    fn measurements(&self) -> Vec<(String, f64)> {
        vec![("false_deaths".into(), self.count as f64)]
    }
}
