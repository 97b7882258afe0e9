//! `delivered_at_least: {count}` (final or eventually): coverage, the run did deliver
//! traffic (a run that moved nothing proves nothing).

use serde::Deserialize;

use super::{Property, World};

/// The property.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveredAtLeast {
    count: u64,
}

impl<P> Property<P> for DeliveredAtLeast {
    fn check(&mut self, world: &World<'_, P>) -> Result<(), String> {
        let delivered = world.fabric.counts().delivered;
        if delivered >= self.count {
            Ok(())
        } else {
            Err(format!(
                "only {delivered} datagrams delivered, expected at least {}",
                self.count
            ))
        }
    }
}
