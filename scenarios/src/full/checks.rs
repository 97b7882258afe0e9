//! The data properties of `engine: full` runs, judged on the nodes' stores against the
//! clients' acknowledgements ([`AckLog`]). Every check looks at the nodes that are up.
//! - `data_converged` (eventually, `{within}` after `quiesce_at`; or final): every node
//!   has the same merkle root; the evidence names a key whose versions differ.
//! - `no_lost_acked_writes` (final): for every key, every node holds the newest
//!   acknowledged version or one that supersedes it under the conflict rule; holding
//!   nothing is fine only when that newest version is dead (deleted or expired, and so
//!   may have been purged). A run with no acknowledged write fails as vacuous.
//! - `no_resurrection` (final): a key whose newest acknowledged version is dead is live
//!   nowhere under another version.
//! - `one_winner` (final): every node holds the same version of every key.
//! - `causal_overwrite` (final): every acknowledged write superseded what its node held
//!   when it wrote, whatever the clocks said.
//! - `faulty_disks_refuse_writes` (final): a node acknowledged no write from a
//!   `disk_fault` on it to its next restart (its store refuses writes once its disk
//!   failed one); a run with no disk fault fails as vacuous.

use std::collections::BTreeMap;
use std::time::Duration;

use kvs_sync::Version;
use serde_yaml::Value;

use super::node::FullNode;
use super::workload::{Ack, AckLog};
use crate::properties::{Violation, only_keys};
use crate::spec::node_name;
use crate::{Scenario, SimError, duration};

/// How often `eventually` properties are polled after `quiesce_at`.
pub(crate) const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Final {
    Converged,
    NoLostAckedWrites,
    NoResurrection,
    OneWinner,
    CausalOverwrite,
    FaultyDisksRefuseWrites,
}

/// The properties of a full run.
#[derive(Debug, Default)]
pub(crate) struct DataChecks {
    /// `data_converged` within this long after `quiesce_at`.
    pub(crate) converge_within: Option<Duration>,
    finals: Vec<Final>,
}

fn within(args: &Value, name: &str) -> Result<Duration, SimError> {
    let text = args
        .get("within")
        .and_then(Value::as_str)
        .ok_or_else(|| SimError::invalid(format!("{name}: needs `{{within: <duration>}}`")))?;
    duration::parse(text).map_err(|e| SimError::invalid(format!("{name}.within: {e}")))
}

impl DataChecks {
    pub(crate) fn parse(scenario: &Scenario) -> Result<Self, SimError> {
        let p = &scenario.properties;
        if let Some(entry) = p.always.first() {
            let (name, _) = entry.parts()?;
            return Err(SimError::invalid(format!(
                "property `{name}`: engine: full has no `always` properties yet (data properties are eventually or final)"
            )));
        }
        let mut checks = Self::default();
        for entry in &p.eventually {
            match entry.parts()? {
                (name, args) if name == "data_converged" => {
                    only_keys(&name, &args, &["within"])?;
                    if checks.converge_within.is_some() {
                        return Err(SimError::invalid(format!(
                            "property `{name}`: listed twice under eventually"
                        )));
                    }
                    let within = within(&args, &name)?;
                    let deadline = scenario.quiesce_at() + within;
                    if deadline > scenario.duration {
                        return Err(SimError::invalid(format!(
                            "eventually `{name}`: quiesce_at + within ({}) is after duration",
                            duration::show(deadline)
                        )));
                    }
                    checks.converge_within = Some(within);
                }
                (name, _) => {
                    return Err(SimError::invalid(format!(
                        "unknown eventually property `{name}` for engine: full (known: data_converged)"
                    )));
                }
            }
        }
        for entry in &p.at_end {
            let (name, args) = entry.parts()?;
            checks.finals.push(match name.as_str() {
                "data_converged" => Final::Converged,
                "no_lost_acked_writes" => Final::NoLostAckedWrites,
                "no_resurrection" => Final::NoResurrection,
                "one_winner" => Final::OneWinner,
                "causal_overwrite" => Final::CausalOverwrite,
                "faulty_disks_refuse_writes" => Final::FaultyDisksRefuseWrites,
                other => {
                    return Err(SimError::invalid(format!(
                        "unknown final property `{other}` for engine: full (known: data_converged, no_lost_acked_writes, no_resurrection, one_winner, causal_overwrite, faulty_disks_refuse_writes)"
                    )));
                }
            });
            // Final properties are judged at the end: none takes arguments (`within` is
            // for eventually).
            only_keys(&name, &args, &[])?;
        }
        Ok(checks)
    }

    /// The final properties, in file order; the first that fails.
    pub(crate) fn at_end(&self, nodes: &[FullNode], log: &AckLog) -> Result<(), Violation> {
        let view = View::read(nodes, log).map_err(|e| violation("store", e))?;
        for check in &self.finals {
            let (name, result) = match check {
                Final::Converged => ("data_converged", view.converged()),
                Final::NoLostAckedWrites => ("no_lost_acked_writes", view.no_lost(log)),
                Final::NoResurrection => ("no_resurrection", view.no_resurrection(log)),
                Final::OneWinner => ("one_winner", view.one_winner()),
                Final::CausalOverwrite => ("causal_overwrite", causal(log)),
                Final::FaultyDisksRefuseWrites => {
                    ("faulty_disks_refuse_writes", faulty_disks_refused(log))
                }
            };
            result.map_err(|evidence| violation(name, evidence))?;
        }
        Ok(())
    }
}

fn violation(property: &str, evidence: String) -> Violation {
    Violation {
        property: property.into(),
        evidence,
    }
}

/// Whether the nodes that are up have converged: `Err` says how they differ (roots are
/// compared first; keys are read only to name one that differs, if `name_a_key`: a poll
/// before the deadline needs no evidence, and reading every node's keys is most of a
/// poll's cost at 100 nodes).
pub(crate) fn converged(nodes: &[FullNode], log: &AckLog, name_a_key: bool) -> Result<(), String> {
    let mut roots = nodes
        .iter()
        .filter(|n| n.is_up())
        .map(|n| n.store.merkle().map(|tree| tree.root()));
    let first = roots.next().transpose().map_err(|e| e.to_string())?;
    let mut same = true;
    for root in roots {
        same &= root.map_err(|e| e.to_string())? == first.unwrap_or_default();
    }
    if same {
        return Ok(());
    }
    if !name_a_key {
        return Err("merkle roots differ".into());
    }
    View::read(nodes, log)?.converged()
}

/// What one up node holds.
struct NodeView {
    index: usize,
    /// Its wall clock, in ms.
    now_ms: u64,
    root: u64,
    /// What it holds of each of the view's keys, in the same order.
    held: Vec<Option<Version>>,
}

/// What every up node holds for every key clients touched.
struct View {
    /// The keys clients touched, in order.
    keys: Vec<String>,
    nodes: Vec<NodeView>,
}

fn show(version: Option<&Version>) -> String {
    match version {
        None => "nothing".into(),
        Some(v) => {
            let state = if v.is_tombstone() {
                "deleted".to_string()
            } else if let Some(at) = v.expires_at {
                format!("live until {at}")
            } else {
                "live".into()
            };
            format!("{}@{} ({state})", v.id.uuid, v.id.timestamp)
        }
    }
}

fn describe_ack(ack: &Ack) -> String {
    format!(
        "acknowledged by {} at {}: {}",
        node_name(ack.node),
        duration::show(ack.at),
        show(Some(&ack.version))
    )
}

fn is_dead(version: &Version, now_ms: u64) -> bool {
    version.is_tombstone() || version.is_expired(now_ms)
}

/// The newest acknowledged write of each key, under the conflict rule.
fn newest_acks(log: &AckLog) -> BTreeMap<&str, &Ack> {
    let mut newest: BTreeMap<&str, &Ack> = BTreeMap::new();
    for ack in &log.acks {
        let entry = newest.entry(ack.key.as_str()).or_insert(ack);
        if ack.version.supersedes(&entry.version) {
            *entry = ack;
        }
    }
    newest
}

impl View {
    fn read(nodes: &[FullNode], log: &AckLog) -> Result<Self, String> {
        let keys: Vec<String> = log.keys.iter().cloned().collect();
        let mut out = Vec::new();
        for (i, node) in nodes.iter().enumerate().filter(|(_, n)| n.is_up()) {
            let store = node.store.as_ref();
            let root = store.merkle().map_err(|e| e.to_string())?.root();
            let held = store.get_many(&keys).map_err(|e| e.to_string())?;
            out.push(NodeView {
                index: i,
                now_ms: node.now_ms(),
                root,
                held,
            });
        }
        Ok(Self { keys, nodes: out })
    }

    /// Where `key` is in [`Self::keys`] (every acknowledged key is).
    fn position(&self, key: &str) -> Option<usize> {
        self.keys.binary_search_by(|k| k.as_str().cmp(key)).ok()
    }

    fn one_winner(&self) -> Result<(), String> {
        let Some(first) = self.nodes.first() else {
            return Ok(());
        };
        for (at, (key, version)) in self.keys.iter().zip(&first.held).enumerate() {
            let id = version.as_ref().map(|v| v.id);
            if let Some(other) = self
                .nodes
                .iter()
                .find(|other| other.held[at].as_ref().map(|v| v.id) != id)
            {
                return Err(format!(
                    "key {key}: {} holds {}, {} holds {}",
                    node_name(first.index),
                    show(version.as_ref()),
                    node_name(other.index),
                    show(other.held[at].as_ref())
                ));
            }
        }
        Ok(())
    }

    fn converged(&self) -> Result<(), String> {
        let roots: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("{}={:016x}", node_name(node.index), node.root))
            .collect();
        if self.nodes.windows(2).all(|w| w[0].root == w[1].root) {
            return Ok(());
        }
        let differing = self.one_winner().err().unwrap_or_else(|| {
            "no key clients touched differs (the difference is elsewhere)".into()
        });
        Err(format!(
            "merkle roots differ: {}; {differing}",
            roots.join(" ")
        ))
    }

    fn no_lost(&self, log: &AckLog) -> Result<(), String> {
        if log.acks.is_empty() {
            return Err("vacuous: no write was acknowledged".into());
        }
        for (key, ack) in newest_acks(log) {
            let at = self
                .position(key)
                .ok_or_else(|| format!("key {key} was not read"))?;
            for node in &self.nodes {
                let ok = match &node.held[at] {
                    None => is_dead(&ack.version, node.now_ms),
                    Some(h) => h.id == ack.version.id || h.supersedes(&ack.version),
                };
                if !ok {
                    return Err(format!(
                        "key {key}: {} holds {}; the newest write was {}",
                        node_name(node.index),
                        show(node.held[at].as_ref()),
                        describe_ack(ack)
                    ));
                }
            }
        }
        Ok(())
    }

    fn no_resurrection(&self, log: &AckLog) -> Result<(), String> {
        for (key, ack) in newest_acks(log) {
            let at = self
                .position(key)
                .ok_or_else(|| format!("key {key} was not read"))?;
            for node in &self.nodes {
                if !is_dead(&ack.version, node.now_ms) {
                    continue;
                }
                if let Some(h) = &node.held[at]
                    && h.id != ack.version.id
                    && h.is_live(node.now_ms)
                {
                    return Err(format!(
                        "key {key}: {} holds {} live; the newest write was {}",
                        node_name(node.index),
                        show(Some(h)),
                        describe_ack(ack)
                    ));
                }
            }
        }
        Ok(())
    }
}

fn causal(log: &AckLog) -> Result<(), String> {
    for ack in &log.acks {
        if let Some(held) = &ack.held
            && !ack.version.supersedes(held)
        {
            return Err(format!(
                "key {}: the write {} does not supersede {} which its node held",
                ack.key,
                describe_ack(ack),
                show(Some(held))
            ));
        }
    }
    Ok(())
}

/// Whether every node refused writes from a disk fault on it to its next restart.
fn faulty_disks_refused(log: &AckLog) -> Result<(), String> {
    if log.faulty_disks.is_empty() {
        return Err("no disk fault was injected: nothing to judge".into());
    }
    for disk in &log.faulty_disks {
        let faulty = |ack: &&Ack| {
            ack.node == disk.node
                && ack.at >= disk.from
                && disk.until.is_none_or(|until| ack.at < until)
        };
        if let Some(ack) = log.acks.iter().find(faulty) {
            return Err(format!(
                "{}'s disk failed at {}, and a write of `{}` was still {}",
                node_name(disk.node),
                duration::show(disk.from),
                ack.key,
                describe_ack(ack)
            ));
        }
    }
    Ok(())
}
