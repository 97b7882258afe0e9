//! The protocols the model engine can run, and the registry that picks one by the
//! scenario's `cluster.protocol`. To add one: a file here implementing
//! [`crate::ProtocolFactory`], and one arm in `run_protocol` below. A protocol whose core
//! emits events (e.g. membership changes) drains them in its node after every input and
//! keeps what its properties need.

mod ping_pong;
mod swim;

pub use ping_pong::{PingPong, PingPongNode};
pub use swim::{
    Life, MAX_SWIM_NODES, Observation, Observations, Seen, SharedLog, SwimFactory, SwimNode,
};
pub(crate) use swim::{Settings as SwimSettings, index_of};

use crate::engine::{RunOptions, RunReport};
use crate::{Scenario, SimError};

/// Checks `scenario` as a run with the protocol it names would, without running it.
pub(crate) fn check_protocol(scenario: &Scenario) -> Result<(), SimError> {
    match scenario.cluster.protocol.as_str() {
        "ping_pong" => crate::engine::check::<PingPong>(scenario),
        "swim" => crate::engine::check::<SwimFactory>(scenario),
        other => Err(unknown_protocol(other)),
    }
}

fn unknown_protocol(name: &str) -> SimError {
    SimError::invalid(format!(
        "cluster.protocol: unknown protocol `{name}` (known: ping_pong, swim)"
    ))
}

/// Runs `scenario` with the protocol it names.
pub(crate) fn run_protocol(
    scenario: &Scenario,
    opts: RunOptions<'_>,
) -> Result<RunReport, SimError> {
    match scenario.cluster.protocol.as_str() {
        "ping_pong" => crate::engine::run::<PingPong>(scenario, opts),
        "swim" => crate::engine::run::<SwimFactory>(scenario, opts),
        other => Err(unknown_protocol(other)),
    }
}
