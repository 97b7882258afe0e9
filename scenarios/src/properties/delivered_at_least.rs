//! `delivered_at_least: {count}` (final or eventually): coverage, the run did deliver
//! traffic (a run that moved nothing proves nothing). Measures `delivered`, the count
//! when last checked.

use serde::Deserialize;

use super::{Property, World};

/// The property.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveredAtLeast {
    count: u64,
    /// The datagrams delivered when last checked.
    #[serde(skip)]
    delivered: Option<u64>,
}

impl<P> Property<P> for DeliveredAtLeast {
    fn check(&mut self, world: &World<'_, P>) -> Result<(), String> {
        let delivered = world.fabric.counts().delivered;
        self.delivered = Some(delivered);
        if delivered >= self.count {
            Ok(())
        } else {
            Err(format!(
                "only {delivered} datagrams delivered, expected at least {}",
                self.count
            ))
        }
    }

    fn measurements(&self) -> Vec<(String, f64)> {
        self.delivered
            .map(|delivered| ("delivered".to_string(), delivered as f64))
            .into_iter()
            .collect()
    }
}
