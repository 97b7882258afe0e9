//! The membership properties of `protocol: swim` runs, judged from the run's
//! [`SharedLog`] (every membership event with the ground truth at that instant) and the
//! nodes' views. Each lives in its own file; this one builds them by name and holds the
//! cursor they read the log with.

use std::time::Duration;

use kvs_membership::SwimConfig;
use serde_yaml::Value;

use super::{Phase, Property, args, expect_phase, only_keys};
use super::{
    dissemination, failure_detected, false_suspicions, incarnation_monotonic, membership_converged,
    message_load, no_false_deaths, no_zombie,
};
use crate::SimError;
use crate::protocols::{Observation, SharedLog, SwimNode};

/// A reader of the log that sees each entry once.
pub(crate) struct Cursor {
    log: SharedLog,
    next: usize,
}

impl Cursor {
    pub(crate) fn new(log: &SharedLog) -> Self {
        Self {
            log: SharedLog::clone(log),
            next: 0,
        }
    }

    /// Calls `f` on every entry not seen yet; stops at the first error.
    pub(crate) fn drain(
        &mut self,
        mut f: impl FnMut(&Observation) -> Result<(), String>,
    ) -> Result<(), String> {
        let log = self.log.borrow();
        while let Some(entry) = log.entries.get(self.next) {
            self.next += 1;
            f(entry)?;
        }
        Ok(())
    }

    /// The shared log.
    pub(crate) fn log(&self) -> &SharedLog {
        &self.log
    }
}

/// A `{within}` argument parsed as a duration.
pub(crate) fn duration_arg(name: &str, a: &Value, key: &str) -> Result<Option<Duration>, SimError> {
    match a.get(key) {
        None => Ok(None),
        Some(Value::String(text)) => crate::duration::parse(text)
            .map(Some)
            .map_err(|e| SimError::invalid(format!("property `{name}`: {e}"))),
        Some(_) => Err(SimError::invalid(format!(
            "property `{name}`: `{key}` is a duration such as `3s`"
        ))),
    }
}

type Built = Result<Option<Box<dyn Property<SwimNode>>>, SimError>;

/// A membership property by name (`None`: not one of them).
pub(crate) fn membership(
    name: &str,
    phase: Phase,
    a: &Value,
    log: &SharedLog,
    cfg: &SwimConfig,
    nodes: usize,
    duration: Duration,
) -> Built {
    use Phase::{Always, Eventually, Final};
    let p: Box<dyn Property<SwimNode>> = match name {
        "no_false_deaths" => {
            expect_phase(name, phase, &[Always, Final])?;
            Box::new(no_false_deaths::NoFalseDeaths::new(log, args(name, a)?))
        }
        "failure_detected" => {
            expect_phase(name, phase, &[Always])?;
            only_keys(name, a, &["within"])?;
            Box::new(failure_detected::FailureDetected::new(name, log, a)?)
        }
        "incarnation_monotonic" => {
            expect_phase(name, phase, &[Always, Final])?;
            only_keys(name, a, &[])?;
            Box::new(incarnation_monotonic::IncarnationMonotonic::new(log))
        }
        "no_zombie" => {
            expect_phase(name, phase, &[Always, Final])?;
            only_keys(name, a, &[])?;
            Box::new(no_zombie::NoZombie::new(log))
        }
        "membership_converged" => {
            expect_phase(name, phase, &[Eventually, Final])?;
            // `within` is the runner's, and taken off, in phase eventually.
            only_keys(name, a, &[])?;
            Box::new(membership_converged::MembershipConverged::default())
        }
        "dissemination" => {
            expect_phase(name, phase, &[Final])?;
            only_keys(name, a, &["node", "rounds", "within"])?;
            Box::new(dissemination::Dissemination::new(name, log, a, cfg, nodes)?)
        }
        "false_suspicions_at_most" | "false_suspicions_at_least" => {
            expect_phase(name, phase, &[Final])?;
            let at_most = name.ends_with("most");
            let parsed = args::<false_suspicions::Args>(name, a)?;
            Box::new(
                false_suspicions::FalseSuspicions::new(log, parsed, at_most, nodes)
                    .map_err(|e| SimError::invalid(format!("property `{name}`: {e}")))?,
            )
        }
        "message_load" => {
            expect_phase(name, phase, &[Always])?;
            only_keys(name, a, &["max_bytes_per_node_s", "from"])?;
            Box::new(message_load::MessageLoad::new(name, a, duration)?)
        }
        _ => return Ok(None),
    };
    Ok(Some(p))
}
