//! Membership in the running node: wiring only. It binds the authenticated UDP
//! transport (`kvs-net`), starts the membership driver (`kvs-membership`, feature
//! `driver`) over it on the system clock, and turns membership events into
//! replication's peers up and down ([`PeerSink`]). The API reads member snapshots through
//! [`Cluster::members`] and metrics through [`Cluster::register_metrics`]; on shutdown the
//! driver announces `left` and gossips it briefly, [`Cluster::stopped`] waits for that.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use kvs_api::MemberInfo;
use kvs_membership::{
    DriverConfig, LocalMember, Membership, MembershipEvent, Metrics as MembershipMetrics,
    SwimConfig,
};
use kvs_net::{
    ClusterSecret, DEFAULT_MAX_AGE, DatagramAuth, Datagrams, NodeId, ReplayWindow, SystemClock,
    UdpTransport,
};
use kvs_sync::driver::PeerEvent;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

mod jwt_check;

pub use self::jwt_check::jwt_fingerprint;
use self::jwt_check::{OtherSecretWarnings, live_with_other_secret, same_jwt_secret};

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
    /// How far a datagram's stamp may be from this node's clock ([`gossip_freshness`]).
    pub freshness: Duration,
    /// Protocol timing.
    pub swim: SwimConfig,
    /// This start's incarnation (above every earlier start's).
    pub incarnation: u64,
    /// When this node first joined (Unix ms).
    pub joined_at: u64,
    /// This node's [`jwt_fingerprint`], published so that members signing tokens with
    /// another `jwt_secret` are told; empty with auth off (no token is checked here).
    pub jwt_fingerprint: String,
}

/// How far a gossip datagram's stamp may be from this node's clock: twice
/// `max_clock_skew`, and at least a minute. Beyond the skew the config tolerates, nodes
/// refuse each other's writes anyway; below it, gossip must not be what fails first.
pub fn gossip_freshness(max_clock_skew: Duration) -> Duration {
    DEFAULT_MAX_AGE.max(max_clock_skew.saturating_mul(2))
}

/// Where membership changes go, as peers up and down.
pub type PeerSink = Arc<dyn Fn(PeerEvent) + Send + Sync>;

/// What a node publishes about itself through membership: its HTTP and sync addresses
/// and which start of the node this is (the simulator publishes its nodes' the same way,
/// to map their events with [`peer_event`]).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct MemberMeta {
    /// The HTTP API's address.
    pub http: String,
    /// The sync (QUIC) address.
    pub sync: String,
    /// Drawn at random at each start. A node restarted before anyone noticed it was gone
    /// comes back with a higher incarnation and the same addresses; the new `life` makes
    /// membership report it (`Updated`) so that its peers drop the connections and sync
    /// rounds of its earlier life at once, instead of waiting out the push acknowledgement
    /// timeout (5 s) and the sync reply timeout (30 s). A member alive again in the same
    /// life refuted a suspicion: its connections and rounds stand.
    #[serde(default)]
    pub life: u32,
    /// The node's [`jwt_fingerprint`]; empty (and left out) where none is published.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwt_fingerprint: String,
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
    node_id: NodeId,
    gossip_addr: SocketAddr,
    transport: Arc<UdpTransport>,
    jwt_fingerprint: String,
}

/// The label of `kvs_members`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// The label of `kvs_member_flap_score`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node_id: String,
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

/// The seeds' addresses of the family the gossip socket bound (the first of each), so
/// that a node on `::1` joins through IPv6 seeds and one on IPv4 through IPv4 ones; a seed
/// without such an address is named in the log.
fn resolve(seeds: &[String], bound: SocketAddr) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for seed in seeds {
        match seed.to_socket_addrs() {
            Ok(mut addrs) => match addrs.find(|a| a.is_ipv4() == bound.is_ipv4()) {
                Some(addr) => out.push(addr),
                None => {
                    tracing::warn!(%seed, %bound, "a seed node has no address of the family this node binds")
                }
            },
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
        let auth = DatagramAuth::with_window(
            &secret,
            kvs_net::random_seed(),
            ReplayWindow::with_max_age(settings.freshness),
        );
        let transport = UdpTransport::bind_with(settings.bind, auth, Arc::new(SystemClock::new()))
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
        let node_id = NodeId::new(settings.node_id.as_str());
        let local = LocalMember {
            id: node_id.clone(),
            gossip_addr,
            meta: MemberMeta {
                http: settings.http_addr.to_string(),
                sync: settings.sync_addr.to_string(),
                life: rand::random(),
                jwt_fingerprint: settings.jwt_fingerprint.clone(),
            }
            .encode(),
            incarnation: settings.incarnation,
            joined_at: settings.joined_at,
        };
        let config = DriverConfig {
            local,
            swim: settings.swim,
            seeds: resolve(&settings.seeds, bound),
            rng_seed: kvs_net::random_seed(),
        };
        let transport = Arc::new(transport);
        let warnings = OtherSecretWarnings::default();
        let own_jwt = settings.jwt_fingerprint.clone();
        let membership = Membership::start(
            Arc::new(kvs_net::TokioRuntime),
            Arc::clone(&transport),
            Arc::new(SystemClock::new()),
            config,
            move |event: &MembershipEvent| {
                warnings.note(&own_jwt, event);
                if let Some(change) = peer_event(event) {
                    peers(change);
                }
            },
            shutdown,
        )
        .map_err(|e| ClusterError::Protocol(e.to_string()))?;
        Ok(Self {
            membership,
            node_id,
            gossip_addr,
            transport,
            jwt_fingerprint: settings.jwt_fingerprint,
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
            .map(|m| {
                let meta = MemberMeta::decode(&m.meta);
                let jwt_secret_matches = match m.id == self.node_id {
                    true => None,
                    false => same_jwt_secret(&self.jwt_fingerprint, &meta.jwt_fingerprint),
                };
                MemberInfo {
                    node_id: m.id.to_string(),
                    gossip_addr: m.addr.to_string(),
                    http_addr: meta.http,
                    state: m.state.as_str().to_owned(),
                    incarnation: m.incarnation,
                    joined_at: m.joined_at,
                    flap_score: m.flap_score,
                    jwt_secret_matches,
                }
            })
            .collect()
    }

    /// Adds the membership counters and the members' gauges to the registry of one
    /// scrape of `/metrics`; each counter's name gets its `_total` there.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let members = self.membership.members();
        let other_jwt_secret = live_with_other_secret(&self.jwt_fingerprint, &members);
        register_membership(
            registry,
            &self.membership.metrics(),
            self.transport.counts().rejected(),
            other_jwt_secret as u64,
            members
                .iter()
                .map(|m| (m.id.to_string(), m.state.as_str(), m.flap_score)),
        );
    }

    /// Waits until the driver has announced `left` and stopped; this node's incarnation
    /// then (refuting a suspicion raises it above the start's).
    pub async fn stopped(self) -> Option<u64> {
        let members = self.membership.stopped().await;
        members
            .into_iter()
            .find(|member| member.id == self.node_id)
            .map(|member| member.incarnation)
    }
}

/// The membership families of `/metrics` for a node with clustering off: the same
/// names as a cluster member's, the node itself alive and nothing probed.
pub fn register_single_node_metrics(registry: &mut Registry, node_id: &str) {
    let itself = (node_id.to_owned(), "alive", 0.0);
    register_membership(registry, &MembershipMetrics::default(), 0, 0, [itself]);
}

/// Registers the membership counters, the rejected datagrams, the live members with
/// another `jwt_secret`, and per member (id, state, flap score) the members by state and
/// the flap scores.
fn register_membership<'a>(
    registry: &mut Registry,
    metrics: &MembershipMetrics,
    rejected_datagrams: u64,
    other_jwt_secret: u64,
    members: impl IntoIterator<Item = (String, &'a str, f64)>,
) {
    let counters = [
        (
            "kvs_membership_probes",
            "Direct probes sent",
            metrics.probes,
        ),
        ("kvs_membership_acks", "Acks received", metrics.acks),
        ("kvs_membership_nacks", "Nacks received", metrics.nacks),
        (
            "kvs_membership_indirect_probes",
            "Indirect probes requested",
            metrics.indirect_probes,
        ),
        (
            "kvs_membership_suspicions",
            "Members this node suspected",
            metrics.suspicions,
        ),
        (
            "kvs_membership_refutations",
            "Suspicions of this node it refuted",
            metrics.refutations,
        ),
        (
            "kvs_membership_id_conflicts",
            "Signs that another node uses this node's node_id",
            metrics.id_conflicts,
        ),
        (
            "kvs_membership_deaths",
            "Members declared dead",
            metrics.deaths,
        ),
        (
            "kvs_membership_sent_bytes",
            "Gossip payload bytes sent",
            metrics.bytes_sent,
        ),
        (
            "kvs_membership_received_bytes",
            "Gossip payload bytes received",
            metrics.bytes_received,
        ),
        (
            "kvs_membership_malformed",
            "Authenticated datagrams that did not decode",
            metrics.malformed,
        ),
        (
            "kvs_membership_rejected_datagrams",
            "Datagrams refused by authentication",
            rejected_datagrams,
        ),
    ];
    for (name, help, value) in counters {
        registry.register(name, help, ConstCounter::new(value));
    }
    let members: Vec<(String, &str, f64)> = members.into_iter().collect();
    let by_state = Family::<StateLabel, Gauge<u64, AtomicU64>>::default();
    for state in ["alive", "suspect", "dead", "left"] {
        let n = members.iter().filter(|(_, s, _)| *s == state).count();
        by_state.get_or_create(&StateLabel { state }).set(n as u64);
    }
    registry.register(
        "kvs_members",
        "Members by state, this node included",
        by_state,
    );
    let other_secret = Gauge::<u64, AtomicU64>::default();
    other_secret.set(other_jwt_secret);
    registry.register(
        "kvs_members_other_jwt_secret",
        "Live members signing tokens with another jwt_secret than this node's",
        other_secret,
    );
    let flap_scores = Family::<NodeLabel, Gauge<f64, AtomicU64>>::default();
    for (node_id, _, flap_score) in members {
        flap_scores
            .get_or_create(&NodeLabel { node_id })
            .set(flap_score);
    }
    registry.register(
        "kvs_member_flap_score",
        "Flap score of each member",
        flap_scores,
    );
}

/// What a membership event means for replication: a live peer at its sync address
/// (alive, or updated), or one gone (dead, left, forgotten). Suspects stay peers.
pub fn peer_event(event: &MembershipEvent) -> Option<PeerEvent> {
    match event {
        MembershipEvent::Alive(m) | MembershipEvent::Updated(m) => {
            let meta = MemberMeta::decode(&m.meta);
            Some(PeerEvent::Up {
                node_id: m.id.to_string(),
                addr: meta.sync.parse().ok()?,
                life: meta.life,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_resolve_to_the_family_the_node_binds() {
        let seeds = ["[::1]:7946".to_owned(), "127.0.0.1:7947".to_owned()];
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(resolve(&seeds, v6), ["[::1]:7946".parse().unwrap()]);
        assert_eq!(resolve(&seeds, v4), ["127.0.0.1:7947".parse().unwrap()]);
    }

    /// Nodes of the previous version (metadata without a fingerprint) and this one read
    /// each other's metadata: a rolling upgrade keeps the cluster whole.
    #[test]
    fn metadata_reads_across_the_previous_version() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct PreviousMeta {
            http: String,
            sync: String,
            life: u32,
        }
        let previous = PreviousMeta {
            http: "127.0.0.1:8080".into(),
            sync: "127.0.0.1:7947".into(),
            life: 7,
        };
        let from_previous = MemberMeta::decode(&serde_json::to_vec(&previous).unwrap());
        assert_eq!(from_previous.sync, previous.sync);
        assert_eq!(from_previous.life, 7);
        assert_eq!(
            from_previous.jwt_fingerprint, "",
            "none published: not compared"
        );
        let current = MemberMeta {
            http: previous.http.clone(),
            sync: previous.sync.clone(),
            life: 7,
            jwt_fingerprint: jwt_fingerprint("c", "j"),
        };
        let read_by_previous: PreviousMeta = serde_json::from_slice(&current.encode()).unwrap();
        assert_eq!(read_by_previous, previous);
        // Without a fingerprint (auth off, the simulator) the bytes are the previous ones.
        let unfingerprinted = MemberMeta {
            jwt_fingerprint: String::new(),
            ..current
        };
        assert_eq!(
            unfingerprinted.encode(),
            serde_json::to_vec(&previous).unwrap()
        );
    }

    #[test]
    fn gossip_tolerates_twice_the_configured_skew_and_at_least_a_minute() {
        let freshness = |s| gossip_freshness(Duration::from_secs(s));
        assert_eq!(freshness(30), Duration::from_secs(60));
        assert_eq!(freshness(5), Duration::from_secs(60));
        assert_eq!(freshness(90), Duration::from_secs(180));
    }
}
