//! `no_delivery_to_down_node` (always): a crashed or paused node's handler is never called.

use super::{Property, World};
use crate::NodeState;
use crate::{Event, Record};

/// The property.
pub(crate) struct NoDeliveryToDownNode;

impl<P> Property<P> for NoDeliveryToDownNode {
    fn on_event(&mut self, world: &World<'_, P>, rec: &Record) -> Result<(), String> {
        let node = match rec.event {
            Event::Deliver { to, .. } => to,
            Event::Timer { node } => node,
            _ => return Ok(()),
        };
        match world.nodes.get(node).map(|s| s.state()) {
            Some(NodeState::Up) => Ok(()),
            state => Err(format!("n{} handled an input while {state:?}", node + 1)),
        }
    }
}
