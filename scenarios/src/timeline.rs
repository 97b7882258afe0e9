//! Timeline steps resolved to node indexes before the run, so a bad node name or link
//! setting is an error at load time, not halfway through.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::fabric::NetOp;
use crate::link::{Latency, LinkSpec};
use crate::spec::{Action, DiskFault, Selector};
use crate::{Scenario, SimError};

/// A change to node states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeOp {
    /// Stop, losing state.
    Crash,
    /// Start a crashed node with fresh state.
    Restart,
    /// Crash, losing the disk too (`engine: full`; the model engine keeps nothing anyway).
    Wipe,
    /// Freeze.
    Pause,
    /// Unfreeze.
    Resume,
    /// Stop delaying handlers.
    Unslow,
}

/// A resolved step.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// A network change.
    Net(NetOp),
    /// A change to some nodes.
    Node(NodeOp, Vec<usize>),
    /// Delay the handling of datagrams on some nodes.
    Slow(Vec<usize>, Latency),
    /// Fail the next write-ahead-log operation of some nodes (`engine: full`).
    Disk(Vec<usize>, DiskFault),
}

/// A resolved step with its time and description (the trace shows the description).
#[derive(Debug, Clone)]
pub(crate) struct TimedOp {
    pub(crate) at: Duration,
    pub(crate) what: String,
    pub(crate) op: Op,
}

/// Resolves every timeline step of `scenario`.
pub(crate) fn compile(scenario: &Scenario) -> Result<Vec<TimedOp>, SimError> {
    let n = scenario.cluster.nodes;
    scenario
        .timeline
        .iter()
        .map(|step| {
            let op = resolve(&step.action, n).map_err(|e| match e {
                SimError::Invalid(m) => SimError::invalid(format!("{}: {m}", step.place)),
                other => other,
            })?;
            Ok(TimedOp {
                at: step.at,
                what: format!("{:?}", step.action),
                op,
            })
        })
        .collect()
}

fn set(sel: &Selector, n: usize) -> Result<BTreeSet<usize>, SimError> {
    Ok(sel.resolve(n)?.into_iter().collect())
}

fn resolve(action: &Action, n: usize) -> Result<Op, SimError> {
    Ok(match action {
        Action::Partition(groups) => {
            let mut label = vec![u32::try_from(groups.len() + 1).unwrap_or(u32::MAX); n];
            for (g, sel) in groups.iter().enumerate() {
                for i in sel.resolve(n)? {
                    label[i] = u32::try_from(g + 1).unwrap_or(u32::MAX);
                }
            }
            Op::Net(NetOp::Partition(label))
        }
        Action::PartitionOneway { from, to } => Op::Net(NetOp::Oneway(set(from, n)?, set(to, n)?)),
        Action::Heal(what) if what == "all" => Op::Net(NetOp::Heal),
        Action::Heal(what) => {
            return Err(SimError::invalid(format!("heal takes `all`, not `{what}`")));
        }
        Action::Link(rule) => {
            // Checked now against the defaults so a bad value fails at load time.
            LinkSpec::default().patched(&rule.set)?;
            let all = |s: &Selector| matches!(s, Selector::Keyword(k) if k == "all");
            let pairs = if all(&rule.from) && all(&rule.to) {
                None
            } else {
                let (from, to) = (rule.from.resolve(n)?, rule.to.resolve(n)?);
                crate::fabric::check_rule_size(&from, &to)?;
                Some((from, to))
            };
            Op::Net(NetOp::Link(pairs, rule.set.clone()))
        }
        Action::Clog { from, to, hold } => Op::Net(NetOp::Clog(set(from, n)?, set(to, n)?, *hold)),
        Action::Crash(s) => Op::Node(NodeOp::Crash, s.resolve(n)?),
        Action::Restart(s) => Op::Node(NodeOp::Restart, s.resolve(n)?),
        Action::Wipe(s) => Op::Node(NodeOp::Wipe, s.resolve(n)?),
        Action::Pause(s) => Op::Node(NodeOp::Pause, s.resolve(n)?),
        Action::Resume(s) => Op::Node(NodeOp::Resume, s.resolve(n)?),
        Action::Slow(spec) => {
            spec.delay.validate()?;
            Op::Slow(spec.nodes.resolve(n)?, spec.delay)
        }
        Action::Unslow(s) => Op::Node(NodeOp::Unslow, s.resolve(n)?),
        Action::DiskFault(spec) => Op::Disk(spec.nodes.resolve(n)?, spec.fault),
        Action::Repeat(_) => {
            return Err(SimError::invalid(
                "`repeat` is expanded when the file is parsed",
            ));
        }
    })
}
