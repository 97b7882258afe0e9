//! The simulated network between nodes: per directed link settings, burst states,
//! partitions (also one-way), clogs, and the seeded draw of each datagram's fate.
//! Node states (crashed, paused) live in the engine; this is only the wires.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kvs_net::SeededRng;

use crate::link::{Fate, LinkPatch, LinkSpec};
use crate::trace::DropReason;
use crate::{Network, SimError};

/// The most directed links one link rule may name (each gets settings of its own);
/// `from: all, to: all` in the timeline changes the default instead and names none.
const MAX_RULE_LINKS: usize = 4_000_000;

/// Refuses a link rule over more than [`MAX_RULE_LINKS`] links.
pub(crate) fn check_rule_size(from: &[usize], to: &[usize]) -> Result<(), SimError> {
    let links = from.len().saturating_mul(to.len());
    if links > MAX_RULE_LINKS {
        return Err(SimError::invalid(format!(
            "a link rule covers {links} links, at most {MAX_RULE_LINKS}; for every link, \
             set `network.default` (or, in the timeline, a `link` from `all` to `all`)"
        )));
    }
    Ok(())
}

/// A network change, resolved to node indexes.
#[derive(Debug, Clone)]
pub(crate) enum NetOp {
    /// The partition group of every node (equal groups reach each other).
    Partition(Vec<u32>),
    /// `from` cannot reach `to`.
    Oneway(BTreeSet<usize>, BTreeSet<usize>),
    /// Remove partitions and clogs; what a clog held arrives at once (the engines
    /// release it).
    Heal,
    /// Patch links `from` x `to` (`None`: every link, and the default).
    Link(Option<(Vec<usize>, Vec<usize>)>, LinkPatch),
    /// Hold datagrams on `from` x `to` for a duration.
    Clog(BTreeSet<usize>, BTreeSet<usize>, Duration),
}

#[derive(Debug, Clone)]
struct Clog {
    from: BTreeSet<usize>,
    to: BTreeSet<usize>,
    until: Duration,
}

/// The arrival of something due at `at` on a link a clog holds until `held` (if any):
/// the later of the two, and whether the clog holds it.
fn hold(at: Duration, held: Option<Duration>) -> (Duration, bool) {
    match held {
        Some(until) if until > at => (until, true),
        _ => (at, false),
    }
}

/// Counts of what the network did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetCounts {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Datagrams delivered to a handler.
    pub delivered: u64,
    /// Datagrams dropped, by reason.
    pub dropped: BTreeMap<DropReason, u64>,
}

/// The network state.
pub struct Fabric {
    default: LinkSpec,
    overrides: BTreeMap<(usize, usize), LinkSpec>,
    burst_bad: BTreeMap<(usize, usize), bool>,
    groups: Vec<u32>,
    oneway: Vec<(BTreeSet<usize>, BTreeSet<usize>)>,
    clogs: Vec<Clog>,
    counts: NetCounts,
    rng: SeededRng,
}

impl Fabric {
    /// The network of `n` nodes described by `network`, drawing from `rng`.
    pub(crate) fn new(n: usize, network: &Network, rng: SeededRng) -> Result<Self, SimError> {
        let mut fabric = Self {
            default: LinkSpec::default()
                .patched(&network.default)
                .map_err(|e| e.at("network.default"))?,
            overrides: BTreeMap::new(),
            burst_bad: BTreeMap::new(),
            groups: vec![0; n],
            oneway: Vec::new(),
            clogs: Vec::new(),
            counts: NetCounts::default(),
            rng,
        };
        for (i, rule) in network.links.iter().enumerate() {
            let key = format!("network.links[{i}]");
            let from = rule
                .from
                .resolve(n)
                .map_err(|e| e.at(&format!("{key}.from")))?;
            let to = rule.to.resolve(n).map_err(|e| e.at(&format!("{key}.to")))?;
            fabric
                .patch_links(Some((from, to)), &rule.set)
                .map_err(|e| e.at(&format!("{key}.set")))?;
        }
        Ok(fabric)
    }

    /// The settings of the link `from` -> `to`.
    pub fn link(&self, from: usize, to: usize) -> &LinkSpec {
        self.overrides.get(&(from, to)).unwrap_or(&self.default)
    }

    /// Whether a partition blocks `from` -> `to` now.
    pub fn blocked(&self, from: usize, to: usize) -> bool {
        let group = |i: usize| self.groups.get(i).copied().unwrap_or(0);
        group(from) != group(to)
            || self
                .oneway
                .iter()
                .any(|(f, t)| f.contains(&from) && t.contains(&to))
    }

    /// What the network did so far.
    pub fn counts(&self) -> &NetCounts {
        &self.counts
    }

    /// Counts a datagram handed over and draws its delivery times (or why it is dropped),
    /// each with whether a clog holds it (until the clog's end, or a heal).
    pub(crate) fn route(
        &mut self,
        now: Duration,
        from: usize,
        to: usize,
        wire_len: usize,
    ) -> Result<Vec<(Duration, bool)>, DropReason> {
        self.counts.sent += 1;
        let link = self.overrides.get(&(from, to)).unwrap_or(&self.default);
        if wire_len > link.mtu {
            return Err(self.dropped(DropReason::Mtu));
        }
        if self.blocked(from, to) {
            return Err(self.dropped(DropReason::Partition));
        }
        // Burst state is kept only for links that have bursts (a map of every pair of a
        // large cluster would dominate the cost of routing).
        let mut no_burst = false;
        let bad = match link.burst {
            Some(_) => self.burst_bad.entry((from, to)).or_insert(false),
            None => &mut no_burst,
        };
        let delays = match link.draw(&mut self.rng, bad) {
            Fate::Lost => return Err(self.dropped(DropReason::Loss)),
            Fate::Delayed(delays) => delays,
        };
        self.clogs.retain(|c| c.until > now);
        let held = self
            .clogs
            .iter()
            .filter(|c| c.from.contains(&from) && c.to.contains(&to))
            .map(|c| c.until)
            .max();
        Ok(delays.into_iter().map(|d| hold(now + d, held)).collect())
    }

    /// When reliable stream data sent on `from` -> `to` now arrives (no loss: streams
    /// retransmit), and whether a clog holds it.
    pub(crate) fn stream_arrival(
        &mut self,
        now: Duration,
        from: usize,
        to: usize,
    ) -> (Duration, bool) {
        let link = self.overrides.get(&(from, to)).unwrap_or(&self.default);
        let at = now + link.delay(&mut self.rng);
        let held = self
            .clogs
            .iter()
            .filter(|c| c.until > now && c.from.contains(&from) && c.to.contains(&to))
            .map(|c| c.until)
            .max();
        hold(at, held)
    }

    /// Counts a drop and returns its reason.
    pub(crate) fn dropped(&mut self, reason: DropReason) -> DropReason {
        *self.counts.dropped.entry(reason).or_default() += 1;
        reason
    }

    /// Counts a delivery.
    pub(crate) fn delivered(&mut self) {
        self.counts.delivered += 1;
    }

    /// Applies a network change at `now`.
    pub(crate) fn apply(&mut self, now: Duration, op: &NetOp) -> Result<(), SimError> {
        match op {
            NetOp::Partition(groups) => self.groups.clone_from(groups),
            NetOp::Oneway(from, to) => self.oneway.push((from.clone(), to.clone())),
            NetOp::Heal => {
                self.groups.iter_mut().for_each(|g| *g = 0);
                self.oneway.clear();
                self.clogs.clear();
            }
            NetOp::Link(pairs, patch) => self.patch_links(pairs.clone(), patch)?,
            NetOp::Clog(from, to, hold) => self.clogs.push(Clog {
                from: from.clone(),
                to: to.clone(),
                until: now + *hold,
            }),
        }
        Ok(())
    }

    fn patch_links(
        &mut self,
        pairs: Option<(Vec<usize>, Vec<usize>)>,
        patch: &LinkPatch,
    ) -> Result<(), SimError> {
        let Some((from, to)) = pairs else {
            self.default = self.default.patched(patch)?;
            for spec in self.overrides.values_mut() {
                *spec = spec.patched(patch)?;
            }
            return Ok(());
        };
        check_rule_size(&from, &to)?;
        for &f in &from {
            for &t in to.iter().filter(|&&t| t != f) {
                let spec = self.link(f, t).patched(patch)?;
                self.overrides.insert((f, t), spec);
            }
        }
        Ok(())
    }
}
