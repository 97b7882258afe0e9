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

/// The most node indexes all resolved steps may hold together (a step over 2,000 nodes
/// holds 2,000): 80 MB.
const MAX_RESOLVED_NODES: usize = 10_000_000;

/// The most directed links all `link` steps may name together (each is set when its step
/// plays): ten rules over every link of 2,000 nodes.
const MAX_LINKS_NAMED: usize = 40_000_000;

/// How many node indexes `op` holds, and how many links it names.
fn size_of(op: &Op) -> (usize, usize) {
    match op {
        Op::Net(NetOp::Partition(label)) => (label.len(), 0),
        Op::Net(NetOp::Oneway(from, to) | NetOp::Clog(from, to, _)) => (from.len() + to.len(), 0),
        Op::Net(NetOp::Link(Some((from, to)), _)) => {
            (from.len() + to.len(), from.len().saturating_mul(to.len()))
        }
        Op::Net(NetOp::Link(None, _) | NetOp::Heal) => (0, 0),
        Op::Node(_, nodes) | Op::Slow(nodes, _) | Op::Disk(nodes, _) => (nodes.len(), 0),
    }
}

/// Resolves every timeline step of `scenario`, within [`MAX_RESOLVED_NODES`] and
/// [`MAX_LINKS_NAMED`] (each step alone within its own limits, many together could take
/// all memory: 90,000 `link` steps over 2,000 nodes did).
pub(crate) fn compile(scenario: &Scenario) -> Result<Vec<TimedOp>, SimError> {
    let n = scenario.cluster.nodes;
    let (mut resolved, mut named) = (0usize, 0usize);
    let mut ops = Vec::with_capacity(scenario.timeline.len());
    for step in &scenario.timeline {
        let op = resolve(&step.action, n).map_err(|e| e.at(&step.place))?;
        let (nodes, links) = size_of(&op);
        resolved = resolved.saturating_add(nodes);
        named = named.saturating_add(links);
        if resolved > MAX_RESOLVED_NODES || named > MAX_LINKS_NAMED {
            return Err(SimError::invalid(format!(
                "timeline: its steps name more than {MAX_RESOLVED_NODES} nodes or \
                 {MAX_LINKS_NAMED} links in all (by {}); use fewer steps, or `all` to `all`",
                step.place
            )));
        }
        ops.push(TimedOp {
            at: step.at,
            what: format!("{:?}", step.action),
            op,
        });
    }
    Ok(ops)
}

/// The nodes `sel` selects among `n`, an error naming `key`.
fn nodes(sel: &Selector, n: usize, key: &str) -> Result<Vec<usize>, SimError> {
    sel.resolve(n).map_err(|e| e.at(key))
}

fn set(sel: &Selector, n: usize, key: &str) -> Result<BTreeSet<usize>, SimError> {
    Ok(nodes(sel, n, key)?.into_iter().collect())
}

fn resolve(action: &Action, n: usize) -> Result<Op, SimError> {
    Ok(match action {
        Action::Partition(groups) => {
            let mut label = vec![u32::try_from(groups.len() + 1).unwrap_or(u32::MAX); n];
            let mut group_of: Vec<Option<usize>> = vec![None; n];
            for (g, sel) in groups.iter().enumerate() {
                for i in nodes(sel, n, &format!("partition[{g}]"))? {
                    if let Some(other) = group_of[i] {
                        return Err(SimError::invalid(format!(
                            "partition: {} is in groups {other} and {g}; a node is in one group",
                            crate::node_name(i)
                        )));
                    }
                    group_of[i] = Some(g);
                    label[i] = u32::try_from(g + 1).unwrap_or(u32::MAX);
                }
            }
            Op::Net(NetOp::Partition(label))
        }
        Action::PartitionOneway { from, to } => Op::Net(NetOp::Oneway(
            set(from, n, "partition_oneway.from")?,
            set(to, n, "partition_oneway.to")?,
        )),
        Action::Heal(what) if what == "all" => Op::Net(NetOp::Heal),
        Action::Heal(what) => {
            return Err(SimError::invalid(format!("heal takes `all`, not `{what}`")));
        }
        Action::Link(rule) => {
            // Checked now against the defaults so a bad value fails at load time.
            LinkSpec::default()
                .patched(&rule.set)
                .map_err(|e| e.at("link.set"))?;
            let all = |s: &Selector| matches!(s, Selector::Keyword(k) if k == "all");
            let pairs = if all(&rule.from) && all(&rule.to) {
                None
            } else {
                let (from, to) = (
                    nodes(&rule.from, n, "link.from")?,
                    nodes(&rule.to, n, "link.to")?,
                );
                crate::fabric::check_rule_size(&from, &to).map_err(|e| e.at("link"))?;
                Some((from, to))
            };
            Op::Net(NetOp::Link(pairs, rule.set.clone()))
        }
        Action::Clog { from, to, hold } => Op::Net(NetOp::Clog(
            set(from, n, "clog.from")?,
            set(to, n, "clog.to")?,
            *hold,
        )),
        Action::Crash(s) => Op::Node(NodeOp::Crash, nodes(s, n, "crash")?),
        Action::Restart(s) => Op::Node(NodeOp::Restart, nodes(s, n, "restart")?),
        Action::Wipe(s) => Op::Node(NodeOp::Wipe, nodes(s, n, "wipe")?),
        Action::Pause(s) => Op::Node(NodeOp::Pause, nodes(s, n, "pause")?),
        Action::Resume(s) => Op::Node(NodeOp::Resume, nodes(s, n, "resume")?),
        Action::Slow(spec) => {
            spec.delay.validate().map_err(|e| e.at("slow.delay"))?;
            Op::Slow(nodes(&spec.nodes, n, "slow.nodes")?, spec.delay)
        }
        Action::Unslow(s) => Op::Node(NodeOp::Unslow, nodes(s, n, "unslow")?),
        Action::DiskFault(spec) => Op::Disk(nodes(&spec.nodes, n, "disk_fault.nodes")?, spec.fault),
        Action::Repeat(_) => {
            return Err(SimError::invalid(
                "`repeat` is expanded when the file is parsed",
            ));
        }
    })
}
