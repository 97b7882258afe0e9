//! `membership_converged` (eventually `{within}`, or final): every running node sees
//! exactly the running nodes as `alive` — itself included, nobody suspected, every
//! crashed node dead, left or forgotten. Measures `converged_after_s` (from `quiesce_at`).

use std::collections::BTreeSet;

use super::{Property, World};
use crate::NodeState;
use crate::protocols::{SwimNode, index_of};

use kvs_membership::MemberState;

/// The property.
#[derive(Default)]
pub(crate) struct MembershipConverged {
    after: Option<f64>,
}

impl Property<SwimNode> for MembershipConverged {
    fn check(&mut self, world: &World<'_, SwimNode>) -> Result<(), String> {
        let running: BTreeSet<usize> = (0..world.nodes.len())
            .filter(|&i| world.nodes[i].state() == NodeState::Up)
            .collect();
        for &i in &running {
            let Some(node) = world.nodes[i].protocol() else {
                continue;
            };
            let members = node.core().members();
            let state = |k: usize| {
                members
                    .iter()
                    .find(|m| index_of(&m.id) == Some(k))
                    .map_or("unknown", |m| m.state.as_str())
            };
            let alive: BTreeSet<usize> = members
                .iter()
                .filter(|m| m.state == MemberState::Alive)
                .filter_map(|m| index_of(&m.id))
                .collect();
            if alive != running {
                let missing: Vec<String> = running
                    .difference(&alive)
                    .take(5)
                    .map(|&k| format!("n{} ({})", k + 1, state(k)))
                    .collect();
                let extra: Vec<String> = alive
                    .difference(&running)
                    .take(5)
                    .map(|k| format!("n{}", k + 1))
                    .collect();
                return Err(format!(
                    "n{} does not see alive: [{}]; sees alive but not running: [{}]",
                    i + 1,
                    missing.join(", "),
                    extra.join(", ")
                ));
            }
        }
        let after = world.now.saturating_sub(world.quiesce_at).as_secs_f64();
        self.after.get_or_insert(after);
        Ok(())
    }

    fn measurements(&self) -> Vec<(String, f64)> {
        self.after
            .map(|a| ("converged_after_s".to_string(), a))
            .into_iter()
            .collect()
    }
}
