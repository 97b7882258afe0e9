//! kvs-scenarios: the deterministic simulator of kvs clusters.
//!
//! A scenario file ([`Scenario`], format in `scenarios/README.md`) describes a cluster of
//! sans-IO protocol nodes ([`Protocol`]), a network ([`Fabric`]: latency, loss, bursts,
//! duplication, reordering, MTU, partitions, clogs), a timeline of faults (crash, restart,
//! pause) and the properties that must hold (`properties/`, one per file). [`run_file`]
//! plays it on virtual time with one seed and returns a [`RunReport`] whose trace digest
//! is the same for the same file and seed, in any process. `kvs-sim` is the command line.

mod checks;
mod duration;
mod engine;
mod error;
mod fabric;
mod full;
mod link;
mod properties;
mod protocol;
pub mod protocols;
mod queue;
mod report;
pub mod simnet;
mod slot;
mod spec;
mod timeline;
mod trace;

pub use engine::{RunOptions, RunReport};
pub use error::SimError;
pub use fabric::{Fabric, NetCounts};
pub use link::{Burst, Latency, LinkPatch, LinkSpec};
pub use properties::{Phase, Property, Violation, World};
pub use protocol::{NodeCtx, Protocol, ProtocolFactory, Transmit, addr_index, node_addr};
pub use report::{Summary, failure_report, measurement_line, result_line, vacuity};
pub use slot::{NodeState, Slot};
pub use spec::{
    Action, Cluster, Engine, LinkRule, Network, Properties, PropertyEntry, Repeat, Scenario,
    Selector, SlowSpec, Step, node_name,
};
pub use trace::{DropReason, Event, Record};

use std::path::Path;

/// Loads and plays a scenario file with `opts`.
pub fn run_file(path: &Path, opts: RunOptions<'_>) -> Result<RunReport, SimError> {
    let scenario = Scenario::load(path)?;
    run_scenario(&scenario, opts)
}

/// Checks everything a run of `scenario` would check before it starts (protocol and
/// its options, node names, the timeline, the network, the workload, the properties
/// and their arguments, the limits), without running it: `kvs-sim run` checks every
/// file given this way before it plays the first.
pub fn check_scenario(scenario: &Scenario) -> Result<(), SimError> {
    match scenario.engine {
        Engine::Model => protocols::check_protocol(scenario),
        Engine::Full => full::check(scenario),
    }
}

/// Plays a parsed scenario with `opts`.
pub fn run_scenario(scenario: &Scenario, opts: RunOptions<'_>) -> Result<RunReport, SimError> {
    match scenario.engine {
        Engine::Model => protocols::run_protocol(scenario, opts),
        Engine::Full => full::run(scenario, opts),
    }
}
