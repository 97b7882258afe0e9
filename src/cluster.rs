//! Membership in the running node: wiring only. It binds the authenticated UDP
//! transport (`kvs-net`), starts the membership driver (`kvs-membership`, feature
//! `driver`) over it on the system clock, and turns membership events into
//! replication's peers up and down ([`PeerSink`]). The API reads member snapshots through
//! [`Cluster::members`] and metrics through [`Cluster::render_metrics`]; on shutdown the
//! driver announces `left` and gossips it briefly, [`Cluster::stopped`] waits for that.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use kvs_api::MemberInfo;
use kvs_membership::{DriverConfig, LocalMember, Membership, MembershipEvent, SwimConfig};
use kvs_net::{ClusterSecret, Datagrams, NodeId, SystemClock, UdpTransport};
use kvs_sync::driver::PeerEvent;
use tokio::sync::watch;

/// What a node needs to join its cluster.
pub struct ClusterSettings {
    /// This node's id.
    pub node_id: String,
    /// Where the gossip socket binds.
    pub bind: SocketAddr,
    /// The address other nodes reach this node's gossip socket at (its port is taken
    /// from the bound socket when `bind` asks for port 0).
    pub advertise: std::net::IpAddr,
    /// This node's HTTP address, published to the others.
    pub http_addr: SocketAddr,
    /// This node's sync (QUIC) address, published to the others.
    pub sync_addr: SocketAddr,
    /// `host:port` of seed nodes.
    pub seeds: Vec<String>,
    /// The shared secret that authenticates every datagram.
    pub secret: String,
    /// Protocol timing.
    pub swim: SwimConfig,
    /// This start's incarnation (above every earlier start's).
    pub incarnation: u64,
    /// When this node first joined (Unix ms).
    pub joined_at: u64,
}

/// Where membership changes go, as peers up and down.
pub type PeerSink = Arc<dyn Fn(PeerEvent) + Send + Sync>;

/// What a node publishes about itself through membership: its HTTP and sync addresses
/// (the simulator publishes its nodes' the same way, to map their events with
/// [`peer_event`]).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct MemberMeta {
    /// The HTTP API's address.
    pub http: String,
    /// The sync (QUIC) address.
    pub sync: String,
}

impl MemberMeta {
    /// The bytes carried in membership.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Empty fields for metadata that does not decode.
    fn decode(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

/// A running membership.
pub struct Cluster {
    membership: Membership,
    gossip_addr: SocketAddr,
    transport: Arc<UdpTransport>,
}

/// Why membership could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The gossip socket could not be bound.
    #[error("gossip_port: cannot bind {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The protocol refused the settings.
    #[error("membership: {0}")]
    Protocol(String),
}

fn resolve(seeds: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for seed in seeds {
        match seed.to_socket_addrs() {
            Ok(addrs) => out.extend(addrs.filter(SocketAddr::is_ipv4).take(1)),
            Err(error) => tracing::warn!(%seed, %error, "cannot resolve a seed node"),
        }
    }
    out
}

impl Cluster {
    /// Binds the gossip socket, joins through the seeds and starts the driver task.
    pub async fn start(
        settings: ClusterSettings,
        peers: PeerSink,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, ClusterError> {
        let secret = ClusterSecret::new(settings.secret.as_bytes());
        let transport = UdpTransport::bind(settings.bind, &secret)
            .await
            .map_err(|e| ClusterError::Bind {
                addr: settings.bind,
                reason: e.to_string(),
            })?;
        let bound = transport.local_addr().map_err(|e| ClusterError::Bind {
            addr: settings.bind,
            reason: e.to_string(),
        })?;
        let gossip_addr = SocketAddr::new(settings.advertise, bound.port());
        let local = LocalMember {
            id: NodeId::new(settings.node_id.as_str()),
            gossip_addr,
            meta: MemberMeta {
                http: settings.http_addr.to_string(),
                sync: settings.sync_addr.to_string(),
            }
            .encode(),
            incarnation: settings.incarnation,
            joined_at: settings.joined_at,
        };
        let config = DriverConfig {
            local,
            swim: settings.swim,
            seeds: resolve(&settings.seeds),
            rng_seed: kvs_net::random_seed(),
        };
        let transport = Arc::new(transport);
        let membership = Membership::start(
            Arc::new(kvs_net::TokioRuntime),
            Arc::clone(&transport),
            Arc::new(SystemClock::new()),
            config,
            move |event: &MembershipEvent| {
                if let Some(change) = peer_event(event) {
                    peers(change);
                }
            },
            shutdown,
        )
        .map_err(|e| ClusterError::Protocol(e.to_string()))?;
        Ok(Self {
            membership,
            gossip_addr,
            transport,
        })
    }

    /// The address other nodes gossip with this node at.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// Every known member, this node included.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.membership
            .members()
            .into_iter()
            .map(|m| MemberInfo {
                node_id: m.id.to_string(),
                gossip_addr: m.addr.to_string(),
                http_addr: MemberMeta::decode(&m.meta).http,
                state: m.state.as_str().to_owned(),
                incarnation: m.incarnation,
                joined_at: m.joined_at,
                flap_score: m.flap_score,
            })
            .collect()
    }

    /// Membership counters in Prometheus text.
    pub fn render_metrics(&self, out: &mut String) {
        let (metrics, members) = (self.membership.metrics(), self.membership.members());
        let auth = self.transport.counts();
        let mut counter = |name: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP kvs_membership_{name} {help}\n# TYPE kvs_membership_{name} counter\nkvs_membership_{name} {value}\n"
            ));
        };
        counter("probes_total", "Direct probes sent.", metrics.probes);
        counter("acks_total", "Acks received.", metrics.acks);
        counter("nacks_total", "Nacks received.", metrics.nacks);
        counter(
            "indirect_probes_total",
            "Indirect probes requested.",
            metrics.indirect_probes,
        );
        counter(
            "suspicions_total",
            "Members this node suspected.",
            metrics.suspicions,
        );
        counter(
            "refutations_total",
            "Suspicions of this node it refuted.",
            metrics.refutations,
        );
        counter("deaths_total", "Members declared dead.", metrics.deaths);
        counter(
            "sent_bytes_total",
            "Gossip payload bytes sent.",
            metrics.bytes_sent,
        );
        counter(
            "received_bytes_total",
            "Gossip payload bytes received.",
            metrics.bytes_received,
        );
        counter(
            "malformed_total",
            "Authenticated datagrams that did not decode.",
            metrics.malformed,
        );
        counter(
            "rejected_datagrams_total",
            "Datagrams refused by authentication.",
            auth.rejected(),
        );
        out.push_str(
            "# HELP kvs_members Members by state, this node included.\n# TYPE kvs_members gauge\n",
        );
        for state in ["alive", "suspect", "dead", "left"] {
            let n = members.iter().filter(|m| m.state.as_str() == state).count();
            out.push_str(&format!("kvs_members{{state=\"{state}\"}} {n}\n"));
        }
        out.push_str("# HELP kvs_member_flap_score Flap score of each member.\n# TYPE kvs_member_flap_score gauge\n");
        for member in &members {
            out.push_str(&format!(
                "kvs_member_flap_score{{node_id=\"{}\"}} {}\n",
                member.id, member.flap_score
            ));
        }
    }

    /// Waits until the driver has announced `left` and stopped.
    pub async fn stopped(self) {
        self.membership.stopped().await;
    }
}

/// What a membership event means for replication: a live peer at its sync address
/// (alive, or updated), or one gone (dead, left, forgotten). Suspects stay peers.
pub fn peer_event(event: &MembershipEvent) -> Option<PeerEvent> {
    match event {
        MembershipEvent::Alive(m) | MembershipEvent::Updated(m) => {
            let addr = MemberMeta::decode(&m.meta).sync.parse().ok()?;
            Some(PeerEvent::Up {
                node_id: m.id.to_string(),
                addr,
            })
        }
        MembershipEvent::Dead(m) | MembershipEvent::Left(m) => Some(PeerEvent::Down {
            node_id: m.id.to_string(),
        }),
        MembershipEvent::Removed(id) => Some(PeerEvent::Down {
            node_id: id.to_string(),
        }),
        MembershipEvent::Suspect(_) => None,
    }
}
