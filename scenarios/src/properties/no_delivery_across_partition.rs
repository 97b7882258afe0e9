//! `no_delivery_across_partition` (always): no datagram reaches a handler over a link a
//! partition blocks at that moment (datagrams in flight when a partition starts are lost).

use super::{Property, World};
use crate::{Event, Record};

/// The property.
pub(crate) struct NoDeliveryAcrossPartition;

impl<P> Property<P> for NoDeliveryAcrossPartition {
    fn on_event(&mut self, world: &World<'_, P>, rec: &Record) -> Result<(), String> {
        match rec.event {
            Event::Deliver { from, to, .. } if world.fabric.blocked(from, to) => Err(format!(
                "n{} received from n{} across a partition",
                to + 1,
                from + 1
            )),
            _ => Ok(()),
        }
    }
}
