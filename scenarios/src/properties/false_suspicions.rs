//! `false_suspicions_at_most: {count}` / `false_suspicions_at_least: {count}` (final):
//! the number of suspicion events (any node's `suspect` verdict) about members that were
//! running in the life concerned is within the bound. The pair compares a run with
//! Lifeguard against the same run without it: a slow node makes classic SWIM accuse
//! healthy members, Lifeguard should not. `exclude: [n1]` leaves out suspicions about
//! the listed members (e.g. the slow node itself, which is suspected with or without
//! Lifeguard), so that the count is of accusations against healthy members.

use serde::Deserialize;

use super::membership::Cursor;
use super::{Property, World};
use crate::protocols::{Seen, SharedLog, SwimNode};

/// The arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Args {
    count: u64,
    #[serde(default)]
    exclude: Vec<String>,
}

/// The property.
pub(crate) struct FalseSuspicions {
    cursor: Cursor,
    bound: u64,
    at_most: bool,
    exclude: Vec<usize>,
    count: u64,
}

impl FalseSuspicions {
    pub(crate) fn new(
        log: &SharedLog,
        args: Args,
        at_most: bool,
        nodes: usize,
    ) -> Result<Self, String> {
        let exclude = args
            .exclude
            .iter()
            .map(|name| {
                crate::spec::node_index(name, nodes).map_err(|e| match e {
                    crate::SimError::Invalid(m) => format!("exclude: {m}"),
                    other => format!("exclude: {other}"),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            cursor: Cursor::new(log),
            bound: args.count,
            at_most,
            exclude,
            count: 0,
        })
    }
}

impl Property<SwimNode> for FalseSuspicions {
    fn check(&mut self, _: &World<'_, SwimNode>) -> Result<(), String> {
        let (mut count, exclude) = (0, &self.exclude);
        self.cursor.drain(|o| {
            if o.seen == Seen::Suspect && o.about_running_life() && !exclude.contains(&o.subject) {
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
