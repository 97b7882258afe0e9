//! `loss_rate: {min, max}` (final): the fraction of sent datagrams the network lost at
//! random is within bounds (checks the loss model itself). Measures `rate`.

use serde::Deserialize;

use super::{Property, World};
use crate::{DropReason, SimError};

/// The property.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LossRate {
    #[serde(default)]
    min: f64,
    #[serde(default = "one")]
    max: f64,
    /// The rate when checked.
    #[serde(skip)]
    rate: Option<f64>,
}

fn one() -> f64 {
    1.0
}

impl LossRate {
    /// Refuses bounds that are not `0 <= min <= max <= 1`.
    pub(crate) fn validate(&self, name: &str) -> Result<(), SimError> {
        if (0.0..=1.0).contains(&self.min)
            && (0.0..=1.0).contains(&self.max)
            && self.min <= self.max
        {
            return Ok(());
        }
        Err(SimError::invalid(format!(
            "property `{name}`: min {} and max {} must be 0 <= min <= max <= 1",
            self.min, self.max
        )))
    }
}

impl<P> Property<P> for LossRate {
    fn check(&mut self, world: &World<'_, P>) -> Result<(), String> {
        let counts = world.fabric.counts();
        let lost = counts.dropped.get(&DropReason::Loss).copied().unwrap_or(0);
        let rate = lost as f64 / counts.sent.max(1) as f64;
        self.rate = Some(rate);
        if (self.min..=self.max).contains(&rate) {
            Ok(())
        } else {
            Err(format!(
                "loss rate {rate:.4} ({lost} of {} sent) outside {}..={}",
                counts.sent, self.min, self.max
            ))
        }
    }

    fn measurements(&self) -> Vec<(String, f64)> {
        self.rate
            .map(|rate| ("rate".to_string(), rate))
            .into_iter()
            .collect()
    }
}
