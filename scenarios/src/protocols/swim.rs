//! The SWIM adapter: runs `kvs_membership::Swim` (the sans-IO SWIM + Lifeguard core) on
//! every node of a `protocol: swim` cluster.
//!
//! Node `n<k>` (index `k-1`) gets the id `n<k>` (padded to `id_len`), a fixed `joined_at`
//! (so a restart keeps it), and joins through the configured seeds at `index ·
//! join_stagger`; a restarted node starts one incarnation above its previous life and
//! joins at once. After every input the node drains the core's events into the run's
//! [`SharedLog`], which the membership properties judge against the ground truth.

mod config;
mod log;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use kvs_membership::{LocalMember, Swim};
use kvs_net::NodeId;
use rand::RngCore;
use serde_yaml::Value;

use crate::SimError;
use crate::properties::{self, Phase, Property};
use crate::protocol::{NodeCtx, Protocol, ProtocolFactory, Transmit};
pub(crate) use config::Settings;

pub(crate) use log::index_of;
pub use log::{Life, Observation, Observations, Seen, SharedLog};

/// The most nodes a `protocol: swim` cluster may have: every node holds every member,
/// so memory grows with the square of N (about 300 MB at 1,000 nodes, 1.2 GB at 2,000).
pub const MAX_SWIM_NODES: usize = 2_000;

/// `joined_at` of node index 0 (unix ms); node `i` joined `i` ms later.
const JOINED_AT_BASE: u64 = 1_700_000_000_000;

/// The SWIM adapter of one run.
#[derive(Debug)]
pub struct SwimFactory {
    settings: Settings,
    /// How many nodes the cluster has (properties name nodes).
    nodes: usize,
    /// How long the run is (properties' times must fall within it).
    duration: Duration,
    log: SharedLog,
}

/// One SWIM node.
#[derive(Debug)]
pub struct SwimNode {
    index: usize,
    core: Swim,
    log: SharedLog,
    seeds: Vec<SocketAddr>,
    join_at: Option<Duration>,
}

impl SwimNode {
    /// The core (for views: `members()`, `metrics()`).
    pub fn core(&self) -> &Swim {
        &self.core
    }

    /// Drains the core's events into the log and notes its incarnation.
    fn after(&mut self, now: Duration) {
        let mut log = self.log.borrow_mut();
        while let Some(event) = self.core.poll_event() {
            log.record(self.index, now, event);
        }
        if let Some(life) = log.nodes.get_mut(self.index) {
            life.incarnation = life.incarnation.max(self.core.incarnation());
        }
    }
}

impl Drop for SwimNode {
    /// A node is dropped when it crashes (or when the run ends): its life is over.
    fn drop(&mut self) {
        if let Ok(mut log) = self.log.try_borrow_mut()
            && let Some(life) = log.nodes.get_mut(self.index)
        {
            life.up = false;
        }
    }
}

impl Protocol for SwimNode {
    fn handle_datagram(&mut self, now: Duration, from: SocketAddr, payload: &[u8]) {
        self.core.handle_datagram(from, payload, now);
        self.after(now);
    }

    fn handle_timeout(&mut self, now: Duration) {
        if self.join_at.is_some_and(|at| at <= now) {
            self.join_at = None;
            self.core.join(&self.seeds, now);
        }
        self.core.handle_timeout(now);
        self.after(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.core.poll_transmit().map(|t| Transmit {
            to: t.dst,
            payload: t.payload,
        })
    }

    fn poll_timeout(&self) -> Option<Duration> {
        match (self.core.poll_timeout(), self.join_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl SwimFactory {
    fn id(&self, index: usize) -> NodeId {
        let mut id = format!("n{}", index + 1);
        while id.len() < self.settings.id_len {
            id.push('.');
        }
        NodeId::new(id)
    }
}

impl ProtocolFactory for SwimFactory {
    type Node = SwimNode;

    fn from_config(config: &Value, nodes: usize, duration: Duration) -> Result<Self, SimError> {
        if nodes > MAX_SWIM_NODES {
            return Err(SimError::invalid(format!(
                "cluster.nodes: {nodes} with protocol: swim (at most {MAX_SWIM_NODES})"
            )));
        }
        Ok(Self {
            settings: Settings::parse(config, nodes, duration, "cluster.config")?,
            nodes,
            duration,
            log: SharedLog::default(),
        })
    }

    fn create(&self, mut ctx: NodeCtx) -> SwimNode {
        let incarnation = self.log.borrow_mut().start(ctx.index, ctx.now);
        let local = LocalMember {
            id: self.id(ctx.index),
            gossip_addr: ctx.addr,
            meta: Vec::new(),
            incarnation,
            joined_at: JOINED_AT_BASE + ctx.index as u64,
        };
        let core = Swim::new(
            local,
            self.settings.swim.clone(),
            ctx.rng.next_u64(),
            ctx.now,
        )
        .unwrap_or_else(|e| unreachable!("settings and ids are validated: {e}"));
        let seeds = self
            .settings
            .seeds
            .iter()
            .filter(|&&s| s != ctx.index)
            .filter_map(|&s| ctx.peers.get(s).copied())
            .collect();
        let join_at = if ctx.incarnation == 0 {
            ctx.now + self.settings.join_stagger * u32::try_from(ctx.index).unwrap_or(u32::MAX)
        } else {
            ctx.now
        };
        SwimNode {
            index: ctx.index,
            core,
            log: Rc::clone(&self.log),
            seeds,
            join_at: Some(join_at),
        }
    }

    fn property(
        &self,
        name: &str,
        phase: Phase,
        args: &Value,
    ) -> Result<Option<Box<dyn Property<SwimNode>>>, SimError> {
        properties::membership(
            name,
            phase,
            args,
            &self.log,
            &self.settings.swim,
            self.nodes,
            self.duration,
        )
    }
}
