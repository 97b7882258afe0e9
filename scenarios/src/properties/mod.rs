//! Properties checked during a run, one per file: `always` ones see every event,
//! `eventually` ones are polled after `quiesce_at` until they hold or their bound passes,
//! `final` ones are judged at the end. Generic fabric properties are built here; a
//! protocol adds its own through [`crate::ProtocolFactory::property`].

mod delivered_at_least;
mod dissemination;
mod failure_detected;
mod false_suspicions;
mod incarnation_monotonic;
mod loss_rate;
mod membership;
mod membership_converged;
mod message_load;
mod no_delivery_across_partition;
mod no_delivery_to_down_node;
mod no_false_deaths;
mod no_zombie;
mod pongs_resume;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::Slot;
use crate::{Fabric, Record, SimError};

pub(crate) use membership::membership;
pub(crate) use pongs_resume::PongsResume;

/// When a property is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// After every event.
    Always,
    /// Polled from `quiesce_at` until it holds, within a bound.
    Eventually,
    /// Once, at the end.
    Final,
}

/// A failed property with its evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The property's name.
    pub property: String,
    /// What was seen (which nodes, on what).
    pub evidence: String,
}

/// A read-only view of the simulation for properties.
pub struct World<'a, P> {
    /// The current virtual time.
    pub now: Duration,
    /// When faults stopped.
    pub quiesce_at: Duration,
    /// The nodes, by index.
    pub nodes: &'a [Slot<P>],
    /// The network.
    pub fabric: &'a Fabric,
}

/// A property. Implement the method of the phases it supports.
pub trait Property<P> {
    /// Judges one event (phase `always`); `Err` is the evidence of a violation.
    fn on_event(&mut self, world: &World<'_, P>, event: &Record) -> Result<(), String> {
        let _ = (world, event);
        Ok(())
    }

    /// Judges the state now (phases `eventually` and `final`; `always` properties are also
    /// asked once at the end, for bounds that only the whole run can judge).
    fn check(&mut self, world: &World<'_, P>) -> Result<(), String> {
        let _ = world;
        Ok(())
    }

    /// Figures measured so far (name, value), shown by `kvs-sim run --report`.
    fn measurements(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
}

/// Parses a property's arguments (`Null` means none) with unknown keys refused.
pub(crate) fn args<T: DeserializeOwned + Default>(name: &str, args: &Value) -> Result<T, SimError> {
    if args.is_null() {
        return Ok(T::default());
    }
    serde_yaml::from_value(args.clone())
        .map_err(|e| SimError::invalid(format!("property `{name}`: {e}")))
}

/// Refuses arguments other than `known` (none when `known` is empty), naming the key.
pub(crate) fn only_keys(name: &str, args: &Value, known: &[&str]) -> Result<(), SimError> {
    let takes = if known.is_empty() {
        "takes no arguments".to_string()
    } else {
        format!("takes {}", known.join(", "))
    };
    let unknown = match args {
        Value::Null => return Ok(()),
        Value::Mapping(map) => map.keys().find_map(|k| match k.as_str() {
            Some(k) if known.contains(&k) => None,
            Some(k) => Some(format!("`{k}`")),
            None => Some(format!("{k:?}")),
        }),
        _ if known.is_empty() => Some("an argument".into()),
        _ => Some("arguments that are not a map".into()),
    };
    match unknown {
        None => Ok(()),
        Some(what) => Err(SimError::invalid(format!(
            "property `{name}`: unknown key {what} (it {takes})"
        ))),
    }
}

/// Refuses a property used in a phase it does not support.
pub(crate) fn expect_phase(name: &str, phase: Phase, allowed: &[Phase]) -> Result<(), SimError> {
    if allowed.contains(&phase) {
        Ok(())
    } else {
        Err(SimError::invalid(format!(
            "property `{name}` cannot be used in phase {phase:?}"
        )))
    }
}

/// A generic (protocol-independent) property by name.
pub(crate) fn generic<P: 'static>(
    name: &str,
    phase: Phase,
    a: &Value,
) -> Result<Box<dyn Property<P>>, SimError> {
    match name {
        "no_delivery_across_partition" => {
            expect_phase(name, phase, &[Phase::Always])?;
            only_keys(name, a, &[])?;
            Ok(Box::new(
                no_delivery_across_partition::NoDeliveryAcrossPartition,
            ))
        }
        "no_delivery_to_down_node" => {
            expect_phase(name, phase, &[Phase::Always])?;
            only_keys(name, a, &[])?;
            Ok(Box::new(no_delivery_to_down_node::NoDeliveryToDownNode))
        }
        "loss_rate" => {
            expect_phase(name, phase, &[Phase::Final])?;
            let rate = args::<loss_rate::LossRate>(name, a)?;
            rate.validate(name)?;
            Ok(Box::new(rate))
        }
        "delivered_at_least" => {
            expect_phase(name, phase, &[Phase::Final, Phase::Eventually])?;
            Ok(Box::new(args::<delivered_at_least::DeliveredAtLeast>(
                name, a,
            )?))
        }
        _ => Err(SimError::invalid(format!("unknown property `{name}`"))),
    }
}

/// The `within` bound of an `eventually` property, parsed from its arguments.
pub(crate) fn within(name: &str, a: &Value) -> Result<Duration, SimError> {
    let text = a.get("within").and_then(Value::as_str).ok_or_else(|| {
        SimError::invalid(format!(
            "eventually property `{name}` needs `within: <duration>`"
        ))
    })?;
    crate::duration::parse(text).map_err(|e| SimError::invalid(format!("property `{name}`: {e}")))
}
