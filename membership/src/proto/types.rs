//! The public values the core takes and gives: the local identity, member snapshots,
//! events, outgoing datagrams and counters.

use std::net::SocketAddr;
use std::time::Duration;

use kvs_net::NodeId;

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMember {
    /// Stable identity (the config's `node_id`).
    pub id: NodeId,
    /// Address other members send datagrams to.
    pub gossip_addr: SocketAddr,
    /// Opaque data carried with the membership entry (e.g. the HTTP and sync addresses).
    pub meta: Vec<u8>,
    /// Starting incarnation: 0 for a fresh node, or a persisted value. A restarted node that
    /// finds an older life of itself in the cluster rises above it on its own.
    pub incarnation: u64,
    /// Unix milliseconds when this node first joined (persisted by the caller, or the wall
    /// clock at first start). If the cluster remembers an earlier value, that one is kept.
    pub joined_at: u64,
}

/// A member's state as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; dead unless it refutes before the suspicion timeout.
    Suspect,
    /// Declared failed.
    Dead,
    /// Left gracefully.
    Left,
}

impl MemberState {
    /// The lowercase name used by `/members`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Left => "left",
        }
    }
}

/// A snapshot of one member (this node included).
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Identity.
    pub id: NodeId,
    /// Gossip address.
    pub addr: SocketAddr,
    /// Opaque metadata.
    pub meta: Vec<u8>,
    /// State.
    pub state: MemberState,
    /// Incarnation number of the state.
    pub incarnation: u64,
    /// Unix milliseconds of the member's first join.
    pub joined_at: u64,
    /// Decayed count of recent alive ↔ suspect/dead changes.
    pub flap_score: f64,
    /// Smoothed round-trip time of direct probes, once measured.
    pub rtt: Option<Duration>,
}

/// A change in the member list, for the node to act on (e.g. start or stop syncing).
#[derive(Debug, Clone, PartialEq)]
pub enum MembershipEvent {
    /// A member joined, or came back (refuted a suspicion, or rejoined after death).
    Alive(Member),
    /// A member is suspected.
    Suspect(Member),
    /// A member was declared dead.
    Dead(Member),
    /// A member left gracefully.
    Left(Member),
    /// An alive member changed its address or metadata.
    Updated(Member),
    /// A long-dead or left member was forgotten.
    Removed(NodeId),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination gossip address.
    pub dst: SocketAddr,
    /// Payload, at most `max_payload` bytes.
    pub payload: Vec<u8>,
}

/// Counters since start (monotonic), plus the current local health score.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Direct probes started.
    pub probes: u64,
    /// Probes answered (directly or through a relay).
    pub acks: u64,
    /// Nacks received from relays.
    pub nacks: u64,
    /// Probes that went indirect (`ping-req`).
    pub indirect_probes: u64,
    /// Members this node marked suspect (its own accusations and learned ones).
    pub suspicions: u64,
    /// Suspicions of this node that it refuted.
    pub refutations: u64,
    /// Signs that another process uses this node's id (see [`crate::Swim::id_conflict`]).
    pub id_conflicts: u64,
    /// Members this node marked dead.
    pub deaths: u64,
    /// Full-state exchanges started (push-pull, join, re-announce).
    pub push_pulls: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams received (valid or not).
    pub datagrams_received: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Datagrams dropped because they did not decode.
    pub malformed: u64,
    /// Datagrams dropped for an unknown protocol version.
    pub bad_version: u64,
    /// Current Lifeguard local health score (0 = healthy).
    pub health_score: u32,
}
