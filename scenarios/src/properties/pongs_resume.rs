//! `pongs_resume: {within}` (eventually, ping-pong): every live node has received a pong
//! after `quiesce_at`, i.e. the fabric carries traffic both ways again once faults stop.

use super::{Property, World};
use crate::NodeState;
use crate::protocols::PingPongNode;

/// The property.
pub(crate) struct PongsResume;

impl Property<PingPongNode> for PongsResume {
    fn check(&mut self, world: &World<'_, PingPongNode>) -> Result<(), String> {
        let waiting: Vec<String> = world
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.state() == NodeState::Up)
            .filter(|(_, slot)| {
                slot.protocol()
                    .and_then(PingPongNode::last_pong)
                    .is_none_or(|t| t < world.quiesce_at)
            })
            .map(|(i, _)| format!("n{}", i + 1))
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let shown = waiting
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        Err(format!(
            "{} live node(s) got no pong since quiesce: {shown}{}",
            waiting.len(),
            if waiting.len() > 10 { ", ..." } else { "" }
        ))
    }
}
