//! Wiring of a running node: store, group committer, HTTP API, membership and
//! replication (pushes and anti-entropy, `kvs_sync::driver` over QUIC), the background
//! upkeep (`node/upkeep.rs`: purge, scheduled backups, facts kept for the next start),
//! and graceful shutdown; the API's view of it is `node/backend.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvs_api::{Api, ApiConfig, AuthConfig, RateLimit};
use kvs_sync::driver::{KeptFacts, Replication, ReplicationConfig};
use kvs_sync::{Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backup::DataDirLock;
use crate::cluster::{Cluster, ClusterError, ClusterSettings};
use crate::config::{Config, ConfigError};
use crate::store::{DurableStore, GroupCommitter};
use kvs_net::{ClusterSecret, QuicTransport, StreamTransport, SystemClock};

/// How long a graceful shutdown waits for the push queues to empty.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a graceful shutdown waits for the sync endpoint's tasks once it is closed
/// (they only have to notice: with the endpoint closed, every one of them ends at once).
const JOIN_TIMEOUT: Duration = Duration::from_secs(2);
/// The node fact holding when the last complete sync started (Unix ms; 0: never).
pub(super) const LAST_SYNC: &str = "last_sync_ms";
/// Meta key: the time before which every write of this node had reached every live peer
/// (see `ReplicationConfig::own_writes_delivered_ms`).
pub(super) const OWN_WRITES_DELIVERED: &str = "own_writes_delivered_ms";
/// Meta keys: the time this node may lack versions of after a blind catch-up (see
/// `ReplicationConfig::blind_ms`).
pub(super) const BLIND_FROM: &str = "blind_from_ms";
pub(super) const BLIND_TO: &str = "blind_to_ms";
/// Meta key: the oldest time this node's copy vouches for (see
/// `ReplicationConfig::floor_ms`; 0: none kept).
pub(super) const FLOOR: &str = "vouch_floor_ms";
/// The node fact holding the gossip addresses of the live peers last seen, one per line:
/// a restarted node joins through them as well as its seeds (a first node has none, and
/// would otherwise wait for a peer to happen on it).
pub(super) const KNOWN_PEERS: &str = "known_peers";
/// Meta key: the incarnation of the last start, or the one the node had reached when it
/// last stopped gracefully; each start takes one above it.
const INCARNATION: &str = "incarnation";

/// The wall clock in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why a node could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration or an address/dir it names is unusable (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store failed: opening it, its node facts, closing it (exit code 1).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A system call failed (exit code 1).
    #[error("{what}: {source}")]
    Io {
        /// What the node was doing.
        what: &'static str,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The QUIC transport failed after binding (exit code 1).
    #[error("sync transport: {0}")]
    Net(#[from] kvs_net::NetError),
    /// The membership protocol refused to start (exit code 1).
    #[error(transparent)]
    Cluster(ClusterError),
    /// The first user and token could not be made (exit code 1).
    #[error("auth bootstrap: {0}")]
    AuthBootstrap(kvs_api::ApiError),
}

impl NodeError {
    /// A failed system call, saying what the node was doing.
    pub fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { what, source }
    }
}

/// `port_key`'s error for a socket that could not be bound at `addr`; an address this
/// host does not have is `bind_address`'s fault, not the port's.
fn bind_error(port_key: &'static str, addr: SocketAddr, error: &std::io::Error) -> NodeError {
    let key = match error.kind() {
        std::io::ErrorKind::AddrNotAvailable => "bind_address",
        _ => port_key,
    };
    config_error(key, format!("cannot listen on {addr}: {error}"))
}

fn config_error(key: &'static str, why: impl std::fmt::Display) -> NodeError {
    NodeError::Config(ConfigError::unusable(key, why))
}

/// Opens the data dir and fills in what the config leaves out and the data dir keeps:
/// the node id and the secrets, generated at first start.
fn open_store(config: &mut Config, data_dir: &Path) -> Result<Arc<DurableStore>, NodeError> {
    let store = DurableStore::open(data_dir, config.store_options(), config.audit_key())
        .map_err(|e| config_error("data_dir", format!("{}: {e}", data_dir.display())))?;
    let generated_id = uuid::Uuid::new_v4().to_string();
    for (value, name, fresh) in [
        (&mut config.node_id, "node_id", generated_id),
        (
            &mut config.cluster_secret,
            "cluster_secret",
            crate::config::secret(),
        ),
        (
            &mut config.jwt_secret,
            "jwt_secret",
            crate::config::secret(),
        ),
    ] {
        if value.is_empty() {
            *value = store.lmdb().meta_text_or_init(name, &fresh)?;
        }
    }
    Ok(Arc::new(store))
}

/// Runs a node until `shutdown` turns true, then stops gracefully: in-flight requests
/// finish, queued writes commit, the store is flushed.
pub async fn run(
    mut config: Config,
    config_path: &Path,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    // The ports first: a config whose ports are taken (or whose bind_address this host
    // does not have) is refused before anything is written to the data dir.
    let http_addr = SocketAddr::new(config.bind_address, config.http_port);
    let listener = TcpListener::bind(http_addr)
        .await
        .map_err(|e| bind_error("http_port", http_addr, &e))?;
    if config.clustering_enabled {
        for (key, port) in [
            ("gossip_port", config.gossip_port),
            ("sync_port", config.sync_port),
        ] {
            let addr = SocketAddr::new(config.bind_address, port);
            // Bound again, for good, by membership and QUIC below.
            std::net::UdpSocket::bind(addr).map_err(|e| bind_error(key, addr, &e))?;
        }
    }
    let data_dir: PathBuf = config.data_dir(config_path);
    let _lock = DataDirLock::acquire(&data_dir).map_err(|e| config_error("data_dir", e))?;
    crate::compact::clear_cut_short(&data_dir);
    // Before the data dir fills in the secrets a config leaves out.
    let file_holds_secrets = !config.cluster_secret.is_empty() || !config.jwt_secret.is_empty();
    let store = open_store(&mut config, &data_dir)?;
    let joined_at = store.lmdb().meta_u64_or_init("joined_at", now_ms())?;
    let http_addr = listener
        .local_addr()
        .map_err(NodeError::io("reading the HTTP address"))?;
    std::fs::write(
        crate::backup::http_addr_file(&data_dir),
        format!("{http_addr}\n"),
    )
    .map_err(|e| config_error("data_dir", e))?;
    let advertise = config.advertise_address.unwrap_or(config.bind_address);
    // (An advertised wildcard is refused by the config's checks.)
    if advertise.is_unspecified() && config.clustering_enabled {
        tracing::warn!(
            %advertise,
            "bind_address is a wildcard and advertise_address is not set: peers are told {advertise}, which reaches this node only from its own host; set advertise_address to an address the other hosts reach"
        );
    }
    let committer = GroupCommitter::start(Arc::clone(&store), now_ms)
        .map_err(NodeError::io("starting the commit thread"))?;
    let public_http = SocketAddr::new(advertise, http_addr.port());
    let (cluster, replication, sync_endpoint) = match config.clustering_enabled {
        true => {
            let (cluster, replication, endpoint) = start_clustering(
                &config,
                &store,
                &data_dir,
                public_http,
                joined_at,
                shutdown.clone(),
            )
            .await?;
            (Some(cluster), Some(replication), Some(endpoint))
        }
        false => (None, None, None),
    };
    let gossip_addr = cluster.as_ref().map_or(
        SocketAddr::new(advertise, config.gossip_port),
        Cluster::gossip_addr,
    );
    let backend = Arc::new(NodeBackend {
        node_id: config.node_id.clone(),
        joined_at,
        http_addr: public_http,
        gossip_addr,
        store: Arc::clone(&store),
        committer,
        cluster,
        replication,
        data_dir: data_dir.clone(),
        shutdown: shutdown.clone(),
    });
    let api = Api::new(Arc::clone(&backend), api_config(&config)?);
    api.bootstrap_auth(&data_dir)
        .await
        .map_err(NodeError::AuthBootstrap)?;
    tracing::info!(node_id = %config.node_id, %http_addr, %gossip_addr, data_dir = %data_dir.display(), "node started");
    // Warned only once the node runs, so that a config error stays one line.
    if file_holds_secrets {
        crate::config::warn_if_exposed(config_path);
    }
    crate::config::warn_if_weak(&config);
    let limits = config.http_limits();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let server = crate::http_server::serve(
        Arc::clone(&api),
        listener,
        threads,
        limits,
        shutdown.clone(),
    )
    .map_err(NodeError::io("starting the HTTP threads"))?;
    let purge = upkeep::purge_loop(
        Arc::clone(&backend),
        config.tombstone_ttl.0,
        shutdown.clone(),
    );
    let node_facts =
        upkeep::keep_node_facts(Arc::clone(&store), Arc::clone(&backend), shutdown.clone());
    let backups = upkeep::backup_loop(
        &config,
        Arc::clone(&store),
        data_dir.clone(),
        shutdown.clone(),
    );
    let ((), (), (), ()) = tokio::join!(server, purge, backups, node_facts);
    let _ = shutdown.wait_for(|stop| *stop).await;
    drop(api);
    finish(backend, &store, sync_endpoint).await
}

/// After the server stopped: commits the queued writes, stops clustering, flushes the
/// store.
async fn finish(
    backend: Arc<NodeBackend>,
    store: &DurableStore,
    sync_endpoint: Option<Arc<QuicTransport>>,
) -> Result<(), NodeError> {
    match Arc::try_unwrap(backend) {
        Ok(backend) => {
            backend.committer.shutdown();
            let replication = backend.replication.as_deref();
            let incarnation = stop_clustering(backend.cluster, replication, sync_endpoint).await;
            // The next start's is above it, even when no member remembers this one (a
            // whole cluster restarted).
            if let Some(incarnation) = incarnation
                && let Err(error) = store.lmdb().set_meta_u64s(&[(INCARNATION, incarnation)])
            {
                tracing::warn!(%error, "keeping the incarnation at shutdown failed");
            }
            // Once the pushes drained: the own writes they delivered count (see `drain`).
            if let Some(replication) = replication
                && let Err(error) = upkeep::keep_facts(store, Some(&replication.kept_facts()), None)
            {
                tracing::warn!(%error, "keeping the replication facts at shutdown failed");
            }
        }
        Err(_) => {
            tracing::warn!("requests still hold the node; queued writes finish as they drop");
            let _ = stop_clustering(None, None, sync_endpoint).await;
        }
    }
    store.close()?;
    tracing::info!("node stopped");
    Ok(())
}

/// Stops clustering: the push queues drain (within [`DRAIN_TIMEOUT`]) and replication's
/// tasks stop, membership announces `left`, then the sync endpoint closes and its tasks
/// are joined (within [`JOIN_TIMEOUT`]). The incarnation the node had reached, if it was
/// a member.
async fn stop_clustering(
    cluster: Option<Cluster>,
    replication: Option<&Replication<QuicTransport>>,
    sync_endpoint: Option<Arc<QuicTransport>>,
) -> Option<u64> {
    if let Some(replication) = replication {
        replication.drain(DRAIN_TIMEOUT).await;
    }
    let incarnation = match cluster {
        Some(cluster) => cluster.stopped().await,
        None => None,
    };
    if let Some(endpoint) = sync_endpoint {
        let left = endpoint.shutdown(JOIN_TIMEOUT).await;
        if left > 0 {
            tracing::warn!(
                tasks = left,
                "sync endpoint tasks still running after shutdown"
            );
        }
    }
    incarnation
}

/// The API's settings from the node's config.
fn api_config(config: &Config) -> Result<ApiConfig, NodeError> {
    Ok(ApiConfig {
        max_value_bytes: config.max_value_bytes,
        history_enabled: config.revision_history_enabled,
        default_permissions: config.default_permissions().unwrap_or(0xf31),
        version: env!("CARGO_PKG_VERSION").into(),
        auth: config
            .auth_enabled
            .then(|| {
                AuthConfig::new(
                    &config.jwt_secret,
                    config.allow_anonymous_read,
                    config.allow_anonymous_write,
                )
            })
            .transpose()
            .map_err(|e| config_error("jwt_secret", e))?,
        rate_limit: config.rate_limiting_enabled.then_some(RateLimit {
            requests: config.rate_limit_requests,
            window: config.rate_limit_window.0,
        }),
    })
}

/// Starts membership and replication: the QUIC sync endpoint (returned too, for
/// [`stop_clustering`] to join its tasks) and the replication driver over it, a new
/// incarnation (kept in the store, above every earlier start's), the gossip socket and
/// the join through the seeds, whose member events feed replication.
async fn start_clustering(
    config: &Config,
    store: &Arc<DurableStore>,
    data_dir: &Path,
    http_addr: SocketAddr,
    joined_at: u64,
    shutdown: watch::Receiver<bool>,
) -> Result<(Cluster, Arc<Replication<QuicTransport>>, Arc<QuicTransport>), NodeError> {
    let secret = ClusterSecret::new(config.cluster_secret.as_bytes());
    let sync_bind = SocketAddr::new(config.bind_address, config.sync_port);
    let transport = QuicTransport::bind(sync_bind, data_dir, &secret)
        .map_err(|e| config_error("sync_port", format!("cannot listen on {sync_bind}: {e}")))?;
    let transport = Arc::new(transport);
    let sync_port = transport.local_addr()?.port();
    let advertise = config.advertise_address.unwrap_or(config.bind_address);
    let incarnation = store.lmdb().increment_meta_u64(INCARNATION)?;
    let last_sync_ms = store.lmdb().meta_u64_or_init(LAST_SYNC, 0)?;
    let last_sync_ms = (last_sync_ms > 0).then_some(last_sync_ms);
    let delivered_ms = store.lmdb().meta_u64_or_init(OWN_WRITES_DELIVERED, 0)?;
    let blind_from = store.lmdb().meta_u64_or_init(BLIND_FROM, 0)?;
    let blind_to = store.lmdb().meta_u64_or_init(BLIND_TO, 0)?;
    let floor = store.lmdb().meta_u64_or_init(FLOOR, 0)?;
    let kept = KeptFacts {
        last_sync_ms,
        own_writes_delivered_ms: (delivered_ms > 0).then_some(delivered_ms),
        blind_ms: (blind_to > 0).then_some((blind_from, blind_to)),
        floor_ms: (floor > 0).then_some(floor),
    };
    let mut seeds = config.seed_nodes.clone();
    let known_peers = store.lmdb().meta_text(KNOWN_PEERS)?.unwrap_or_default();
    for peer in known_peers.lines() {
        if !seeds.iter().any(|seed| seed == peer) {
            seeds.push(peer.to_owned());
        }
    }
    let expect_peers = !seeds.is_empty();
    let swim = config
        .swim_config()
        .map_err(|e| config_error("membership", e))?;
    let settings = ClusterSettings {
        node_id: config.node_id.clone(),
        bind: SocketAddr::new(config.bind_address, config.gossip_port),
        advertise,
        http_addr,
        sync_addr: SocketAddr::new(advertise, sync_port),
        seeds,
        secret: config.cluster_secret.clone(),
        freshness: crate::cluster::gossip_freshness(config.max_clock_skew.0),
        swim,
        incarnation,
        joined_at,
        jwt_fingerprint: match config.auth_enabled {
            true => crate::cluster::jwt_fingerprint(&config.cluster_secret, &config.jwt_secret),
            false => String::new(),
        },
    };
    let replication = Arc::new(Replication::start(
        Arc::new(kvs_net::TokioRuntime),
        Arc::clone(&transport),
        Arc::clone(store) as Arc<dyn Store>,
        Arc::new(SystemClock::new()),
        replication_config(config, kept, joined_at, expect_peers),
        shutdown.clone(),
    ));
    let sink = Arc::clone(&replication);
    let own_id = config.node_id.clone();
    let peers: crate::cluster::PeerSink = Arc::new(move |event| {
        let own =
            matches!(&event, kvs_sync::driver::PeerEvent::Up { node_id, .. } if *node_id == own_id);
        if !own {
            sink.peer_event(event);
        }
    });
    let cluster = Cluster::start(settings, peers, shutdown)
        .await
        .map_err(|e| match e {
            ClusterError::Bind { addr, reason } => {
                config_error("gossip_port", format!("cannot bind {addr}: {reason}"))
            }
            ClusterError::Protocol(_) => NodeError::Cluster(e),
        })?;
    Ok((cluster, replication, transport))
}

/// Replication's settings from the node's config.
/// `expect_peers`: the node has seeds, or peers it kept from an earlier start; it reports
/// `syncing` until its first complete session with one.
fn replication_config(
    config: &Config,
    kept: KeptFacts,
    joined_at: u64,
    expect_peers: bool,
) -> ReplicationConfig {
    ReplicationConfig {
        node_id: config.node_id.clone(),
        last_sync_ms: kept.last_sync_ms,
        own_writes_delivered_ms: kept.own_writes_delivered_ms,
        blind_ms: kept.blind_ms,
        floor_ms: kept.floor_ms,
        sync_interval: config.sync_interval.0,
        max_clock_skew: config.max_clock_skew.0,
        tombstone_ttl: config.tombstone_ttl.0,
        seed: kvs_net::random_seed(),
        expect_peers,
        joined_at,
        ..ReplicationConfig::default()
    }
}

mod backend;
mod upkeep;

pub use self::backend::NodeBackend;

pub use upkeep::KEEP_NODE_FACTS_EVERY;

#[cfg(test)]
mod tests;
