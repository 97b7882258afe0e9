//! The seam between the simulator and the protocols it runs: a sans-IO node
//! ([`Protocol`]) and the adapter that builds nodes and their properties from a scenario
//! file ([`ProtocolFactory`]). A protocol core is plugged in by adding a file under
//! `protocols/` and one line to its registry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kvs_net::{NodeId, SeededRng};
use serde_yaml::Value;

use crate::SimError;
use crate::properties::{Phase, Property};

/// A datagram a node wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The destination's address.
    pub to: SocketAddr,
    /// The payload (the simulator adds [`kvs_net::AUTH_OVERHEAD`] when judging the MTU).
    pub payload: Vec<u8>,
}

/// A sans-IO protocol node: inputs come in with the current virtual time, outputs are
/// polled after every input until `None`.
pub trait Protocol: 'static {
    /// A datagram arrived from `from`.
    fn handle_datagram(&mut self, now: Duration, from: SocketAddr, payload: &[u8]);

    /// The deadline last returned by [`Protocol::poll_timeout`] has passed.
    fn handle_timeout(&mut self, now: Duration);

    /// The next datagram to send, if any.
    fn poll_transmit(&mut self) -> Option<Transmit>;

    /// When the node next wants [`Protocol::handle_timeout`] (absolute virtual time).
    fn poll_timeout(&self) -> Option<Duration>;
}

/// What a node is given when it starts (or restarts after a crash).
#[derive(Debug)]
pub struct NodeCtx {
    /// Index in the cluster (0-based; the node is named `n{index+1}`).
    pub index: usize,
    /// Its identity (`n{index+1}`, with `#incarnation` after a restart).
    pub id: NodeId,
    /// Its address.
    pub addr: SocketAddr,
    /// Every node's address, indexed like the nodes (its own included).
    pub peers: Arc<[SocketAddr]>,
    /// Its own seeded generator (derived from the run seed, the index and incarnation).
    pub rng: SeededRng,
    /// 0 at first start, +1 at each restart.
    pub incarnation: u64,
    /// The virtual time it starts at.
    pub now: Duration,
}

/// Builds nodes of one protocol from a scenario file's `cluster.config`.
pub trait ProtocolFactory: Sized {
    /// The node type.
    type Node: Protocol;

    /// Parses `cluster.config` for a cluster of `nodes` nodes and a run of `duration`
    /// (unknown keys, node names or counts the protocol cannot take, and times past
    /// `duration` must be errors).
    fn from_config(config: &Value, nodes: usize, duration: Duration) -> Result<Self, SimError>;

    /// A fresh node.
    fn create(&self, ctx: NodeCtx) -> Self::Node;

    /// A property specific to this protocol, or `None` if the name is not one of its own
    /// (the generic fabric properties are tried next).
    fn property(
        &self,
        name: &str,
        phase: Phase,
        args: &Value,
    ) -> Result<Option<Box<dyn Property<Self::Node>>>, SimError>;
}

/// The address of node index `i`: `10.a.b.c:7946`.
pub fn node_addr(i: usize) -> SocketAddr {
    let n = u32::try_from(i + 1).unwrap_or(u32::MAX) & 0x00FF_FFFF;
    let [_, a, b, c] = n.to_be_bytes();
    SocketAddr::from(([10, a, b, c], 7946))
}

/// The node index of an address made by [`node_addr`], if it is one of `n` nodes.
pub fn addr_index(addr: SocketAddr, n: usize) -> Option<usize> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    let [ten, a, b, c] = v4.ip().octets();
    if ten != 10 || v4.port() != 7946 {
        return None;
    }
    let i = usize::try_from(u32::from_be_bytes([0, a, b, c]))
        .ok()?
        .checked_sub(1)?;
    (i < n).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for i in [0, 1, 255, 256, 999, 70_000] {
            assert_eq!(addr_index(node_addr(i), 100_000), Some(i));
        }
        assert_eq!(addr_index(node_addr(5), 5), None);
        assert_eq!(addr_index("127.0.0.1:7946".parse().expect("addr"), 5), None);
    }
}
