//! `dissemination: {node: nK, rounds: R}` or `{node: nK, within: 2s}` (final): the latest
//! life of node `nK` (started by a `restart`, e.g. a node crashed at 0 s and started late
//! is a join; a crash and restart is a rejoin) has reached every other running node:
//! each has seen it `alive` at that life's incarnation within `R` protocol periods (or
//! `within`) of its start. Measures `seconds` and `rounds` (the last node to learn it).

use std::collections::BTreeMap;
use std::time::Duration;

use kvs_membership::SwimConfig;
use serde_yaml::Value;

use super::membership::{Cursor, duration_arg};
use super::{Property, World};
use crate::NodeState;
use crate::protocols::{Seen, SharedLog, SwimNode};
use crate::{SimError, duration};

/// The property.
pub(crate) struct Dissemination {
    cursor: Cursor,
    node: usize,
    bound: Duration,
    period: Duration,
    took: Option<Duration>,
}

fn node_arg(name: &str, a: &Value, nodes: usize) -> Result<usize, SimError> {
    let node = a
        .get("node")
        .and_then(Value::as_str)
        .ok_or_else(|| SimError::invalid(format!("property `{name}` needs `node: n<k>`")))?;
    crate::spec::node_index(node, nodes).map_err(|e| match e {
        SimError::Invalid(m) => SimError::invalid(format!("property `{name}`: node: {m}")),
        other => other,
    })
}

impl Dissemination {
    pub(crate) fn new(
        name: &str,
        log: &SharedLog,
        a: &Value,
        cfg: &SwimConfig,
        nodes: usize,
    ) -> Result<Self, SimError> {
        let node = node_arg(name, a, nodes)?;
        let rounds = a.get("rounds").and_then(Value::as_u64);
        let bound = match (rounds, duration_arg(name, a, "within")?) {
            (Some(r), None) => cfg.probe_interval * u32::try_from(r).unwrap_or(u32::MAX),
            (None, Some(w)) => w,
            _ => {
                return Err(SimError::invalid(format!(
                    "`{name}` needs one of `rounds: <count>` or `within: <duration>`"
                )));
            }
        };
        Ok(Self {
            cursor: Cursor::new(log),
            node,
            bound,
            period: cfg.probe_interval,
            took: None,
        })
    }
}

impl Property<SwimNode> for Dissemination {
    fn check(&mut self, world: &World<'_, SwimNode>) -> Result<(), String> {
        let life = self.cursor.log().borrow().nodes.get(self.node).cloned();
        let Some(life) = life.filter(|l| l.up) else {
            return Err(format!("n{} is not running", self.node + 1));
        };
        let (target, mut first) = (self.node, BTreeMap::new());
        self.cursor.drain(|o| {
            if o.subject == target
                && o.seen == Seen::Alive
                && o.at >= life.started
                && o.incarnation >= life.first_incarnation
            {
                first.entry(o.observer).or_insert(o.at);
            }
            Ok(())
        })?;
        let mut last = Duration::ZERO;
        let mut missing = Vec::new();
        for o in (0..world.nodes.len()).filter(|&o| o != target) {
            if world.nodes[o].state() != NodeState::Up {
                continue;
            }
            match first.get(&o) {
                Some(&t) => last = last.max(t - life.started),
                None => missing.push(format!("n{}", o + 1)),
            }
        }
        self.took = Some(last);
        if !missing.is_empty() {
            let count = missing.len();
            missing.truncate(10);
            return Err(format!(
                "n{} (started {}) never reached {count} node(s): {}",
                target + 1,
                duration::show(life.started),
                missing.join(", ")
            ));
        }
        if last > self.bound {
            return Err(format!(
                "n{} took {} to reach every node, bound {}",
                target + 1,
                duration::show(last),
                duration::show(self.bound)
            ));
        }
        Ok(())
    }

    fn measurements(&self) -> Vec<(String, f64)> {
        let Some(took) = self.took else {
            return Vec::new();
        };
        vec![
            ("seconds".into(), took.as_secs_f64()),
            (
                "rounds".into(),
                took.as_secs_f64() / self.period.as_secs_f64(),
            ),
        ]
    }
}
