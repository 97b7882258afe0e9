//! The scenario file format (documented in `scenarios/README.md`): parsed strictly, so an
//! unknown key or engine is a clear error naming it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

use crate::link::LinkPatch;
use crate::{SimError, duration};

mod steps;

pub(crate) use steps::DiskFault;
pub use steps::{Action, Repeat, SlowSpec, Step};
use steps::{de_timeline, expand};

/// The most nodes an `engine: model` cluster may have (the fabric's addresses hold
/// 24 bits; ping-pong with 100,000 nodes takes about 100 MB). A protocol may allow fewer
/// (`swim`: [`crate::protocols::MAX_SWIM_NODES`]).
pub(crate) const MAX_MODEL_NODES: usize = 100_000;

/// The most nodes an `engine: full` cluster may have (whole nodes; the benchmarks run 100).
/// Memory and time grow about as the square: 10 s of 400 idle nodes take 0.8 GB and 17 s
/// of wall time; 1,000 took more than 4.6 GB and did not end in 150 s.
pub(crate) const MAX_FULL_NODES: usize = 400;

/// The longest `duration`: a day of virtual time (the longest shipped file plays 1,060 s).
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The name printed in result lines.
    pub name: String,
    /// The simulation level; only `model` exists for now.
    pub engine: Engine,
    /// The default seed (else 1).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Virtual time to play.
    #[serde(deserialize_with = "de_duration")]
    pub duration: Duration,
    /// The nodes and the protocol they run.
    pub cluster: Cluster,
    /// Per-node wall-clock offset and drift (`engine: full`), e.g.
    /// `{n2: {offset: +10s, drift_ppm: 200}}`; parsed by the full engine.
    #[serde(default)]
    pub clocks: Value,
    /// Client load (`engine: full`); parsed by the full engine.
    #[serde(default)]
    pub workload: Value,
    /// Faults drawn from the seed (`engine: full`); parsed by the full engine.
    #[serde(default)]
    pub nemesis: Value,
    /// Link behaviour.
    #[serde(default)]
    pub network: Network,
    /// Faults, in time order.
    #[serde(default, deserialize_with = "de_timeline")]
    pub timeline: Vec<Step>,
    /// When faults have stopped: `eventually` properties are judged from here (default:
    /// the time of the last timeline step).
    #[serde(default, deserialize_with = "de_quiesce_at")]
    pub quiesce_at: Option<Duration>,
    /// What must hold.
    #[serde(default)]
    pub properties: Properties,
}

/// `duration`, an error naming it (serde names no key at the top of the file).
fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration::de(d).map_err(|e| serde::de::Error::custom(format!("duration: {e}")))
}

/// `quiesce_at`, an error naming it.
fn de_quiesce_at<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration::de_opt(d).map_err(|e| serde::de::Error::custom(format!("quiesce_at: {e}")))
}

/// The simulation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// Sans-IO protocol cores on the discrete-event network.
    Model,
    /// Whole nodes (membership and replication drivers, write path, store) over the
    /// simulated transports.
    Full,
}

/// The nodes (`n1` .. `nN`) and their protocol.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// How many nodes.
    pub nodes: usize,
    /// Which protocol adapter runs on each node (see `protocols/`; `engine: model` only).
    #[serde(default)]
    pub protocol: String,
    /// The protocol's own options, parsed by its adapter.
    #[serde(default)]
    pub config: Value,
}

/// The network: default link behaviour plus per-link overrides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Applied to every directed link.
    #[serde(default)]
    pub default: LinkPatch,
    /// Overrides for some directed links, applied in order.
    #[serde(default)]
    pub links: Vec<LinkRule>,
}

/// Link settings for the directed links `from` -> `to`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRule {
    /// Senders.
    pub from: Selector,
    /// Receivers.
    pub to: Selector,
    /// The settings changed.
    pub set: LinkPatch,
}

/// A set of nodes: `all`, or a list of names and ranges (`[n1, n4..n9]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Selector {
    /// `all`, written as a string.
    Keyword(String),
    /// Names and ranges.
    List(Vec<String>),
}

/// The properties, by phase.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Properties {
    /// Checked after every event.
    #[serde(default)]
    pub always: Vec<PropertyEntry>,
    /// Must become true within `within` after `quiesce_at`.
    #[serde(default)]
    pub eventually: Vec<PropertyEntry>,
    /// Checked once at the end.
    #[serde(default, rename = "final")]
    pub at_end: Vec<PropertyEntry>,
}

/// A property: a bare name, or `{name: {args}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PropertyEntry {
    /// A property without arguments.
    Name(String),
    /// A property with arguments.
    WithArgs(BTreeMap<String, Value>),
}

impl PropertyEntry {
    /// The property's name and its arguments (`Null` when none).
    pub fn parts(&self) -> Result<(String, Value), SimError> {
        match self {
            Self::Name(name) => Ok((name.clone(), Value::Null)),
            Self::WithArgs(map) if map.len() == 1 => {
                let (name, args) = map
                    .iter()
                    .next()
                    .ok_or_else(|| SimError::invalid("empty"))?;
                Ok((name.clone(), args.clone()))
            }
            Self::WithArgs(_) => Err(SimError::invalid(
                "a property entry is `name` or `{name: {args}}`",
            )),
        }
    }
}

impl Scenario {
    /// Reads and parses a scenario file (structure only; see [`Scenario::validate`]).
    pub fn load(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| SimError::Format {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses scenario YAML (and expands `repeat` steps, checking the timeline's order
    /// and bounds first).
    pub fn parse(text: &str) -> Result<Self, String> {
        // A UTF-8 byte order mark, as some editors write, is not part of the YAML.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut scenario: Self = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        scenario.timeline = expand(std::mem::take(&mut scenario.timeline), scenario.duration)?;
        Ok(scenario)
    }

    /// Checks relations between fields that the format alone cannot.
    pub fn validate(&self) -> Result<(), SimError> {
        let (engine, most) = match self.engine {
            Engine::Model => ("model", MAX_MODEL_NODES),
            Engine::Full => ("full", MAX_FULL_NODES),
        };
        if !valid_name(&self.name) {
            return Err(SimError::invalid(format!(
                "name: {:?} must be one word, without spaces or control characters",
                self.name
            )));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(SimError::invalid(format!(
                "duration: {}, must be above zero and at most {}",
                duration::show(self.duration),
                duration::show(MAX_DURATION)
            )));
        }
        if let Some(at) = self.quiesce_at.filter(|&at| at > self.duration) {
            return Err(SimError::invalid(format!(
                "quiesce_at: {} is after duration ({})",
                duration::show(at),
                duration::show(self.duration)
            )));
        }
        if self.cluster.nodes == 0 || self.cluster.nodes > most {
            return Err(SimError::invalid(format!(
                "cluster.nodes: {} with engine: {engine} (1..={most})",
                self.cluster.nodes
            )));
        }
        if self.engine == Engine::Model
            && !(self.clocks.is_null() && self.workload.is_null() && self.nemesis.is_null())
        {
            return Err(SimError::invalid(
                "`clocks`, `workload` and `nemesis` need `engine: full`",
            ));
        }
        if !self.properties.eventually.is_empty() {
            self.faults_stop_by_quiesce()?;
        }
        Ok(())
    }

    /// Refuses a timeline whose faults have not stopped at `quiesce_at`, from which the
    /// `eventually` properties are judged: a step after it, or a partition it does not heal
    /// by then (judged at the partition's first instant, a property passed at once).
    fn faults_stop_by_quiesce(&self) -> Result<(), SimError> {
        let quiesce_at = self.quiesce_at();
        let why = "`eventually` properties are judged from quiesce_at, once faults have stopped";
        if let Some(until) = self.nemesis_until().filter(|&until| until > quiesce_at) {
            return Err(SimError::invalid(format!(
                "nemesis.until: {}, after quiesce_at ({}): {why}",
                duration::show(until),
                duration::show(quiesce_at)
            )));
        }
        let mut standing: Option<&Step> = None;
        for step in &self.timeline {
            if step.at > quiesce_at {
                return Err(SimError::invalid(format!(
                    "{}: at {}, after quiesce_at ({}): {why}",
                    step.place,
                    duration::show(step.at),
                    duration::show(quiesce_at)
                )));
            }
            match &step.action {
                Action::Partition(_) | Action::PartitionOneway { .. } => standing = Some(step),
                Action::Heal(_) => standing = None,
                _ => {}
            }
        }
        match standing {
            Some(step) => Err(SimError::invalid(format!(
                "{}: a partition not healed by quiesce_at ({}): {why}",
                step.place,
                duration::show(quiesce_at)
            ))),
            None => Ok(()),
        }
    }

    /// When faults have stopped: `quiesce_at`, by default the last timeline step or the
    /// nemesis's end, whichever is later.
    pub fn quiesce_at(&self) -> Duration {
        self.quiesce_at.unwrap_or_else(|| {
            let last_step = self.timeline.last().map_or(Duration::ZERO, |s| s.at);
            last_step.max(self.nemesis_until().unwrap_or_default())
        })
    }

    /// When the nemesis (`engine: full`) stops drawing faults, if the file has one.
    fn nemesis_until(&self) -> Option<Duration> {
        let until = self.nemesis.get("until")?.as_str()?;
        duration::parse(until).ok()
    }
}

impl Selector {
    /// The node indexes (0-based) selected among `n` nodes.
    pub fn resolve(&self, n: usize) -> Result<Vec<usize>, SimError> {
        match self {
            Self::Keyword(k) if k == "all" => Ok((0..n).collect()),
            Self::Keyword(k) => Self::List(vec![k.clone()]).resolve(n),
            Self::List(items) => {
                let mut out = std::collections::BTreeSet::new();
                for item in items {
                    let (lo, hi) = match item.split_once("..") {
                        Some((a, b)) => (node_index(a, n)?, node_index(b, n)?),
                        None => (node_index(item, n)?, node_index(item, n)?),
                    };
                    if lo > hi {
                        return Err(SimError::invalid(format!("empty range `{item}`")));
                    }
                    out.extend(lo..=hi);
                }
                Ok(out.into_iter().collect())
            }
        }
    }
}

/// `n7` -> 6, checked against the node count. Only the canonical name is taken (`n7`,
/// not `n07`, `n+7` or ` n7`), so that one node has one name.
pub(crate) fn node_index(name: &str, n: usize) -> Result<usize, SimError> {
    let bad = || SimError::invalid(format!("unknown node `{name}` (nodes are n1..n{n})"));
    let number: usize = name
        .strip_prefix('n')
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())?;
    if number == 0 || number > n || node_name(number - 1) != name {
        return Err(bad());
    }
    Ok(number - 1)
}

/// Whether `name` fits the result line `scenario <name> seed ...`: one word, not empty,
/// without whitespace or control characters.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The name of node index `i`.
pub fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}
