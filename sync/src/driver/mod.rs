//! The replication driver (feature `driver`): pushes and anti-entropy over any
//! [`StreamTransport`] of `kvs-net`, so that the node runs it over QUIC and the simulator
//! over its own streams. The protocol logic is the sans-IO [`crate::Session`]; this
//! module moves frames, keeps one queue and sender per live peer (`push.rs`) in its
//! table of peers (`peers.rs`), runs the rounds (`anti_entropy.rs`), keeps the number of
//! sessions down (`sessions.rs`), and serves what peers open. Membership feeds the peer set through
//! [`Replication::peer_event`]; nothing here polls the member list.
//!
//! Every stream starts with a frame naming its kind: [`KIND_SYNC`] (one diff session) or
//! [`KIND_PUSH`] (a stream of push batches); anything else is dropped and counted.

mod anti_entropy;
mod config;
mod peers;
mod push;
mod sessions;
mod standing;
mod stats;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kvs_net::{
    BiStream, Clock, Connection, NetError, Runtime, StreamTransport, TaskHandle, TaskSet,
};
use tokio::sync::{mpsc, watch};

pub use self::config::{KeptFacts, ReplicationConfig};
use self::peers::Peer;
use self::push::{PeerQueue, Pushed};
use self::sessions::Sessions;
use self::stats::Counters;
pub use self::stats::register_unreplicated_metrics;
use crate::{Admission, PeerStatus, Store, StoreError, SyncStatus, Undelivered, Version};

/// The first frame of a diff-session stream.
pub const KIND_SYNC: &[u8] = b"kvs-sync/1";
/// The first frame of a push stream.
pub const KIND_PUSH: &[u8] = b"kvs-push/1";

// The protocol's messages are sized for the streams' frames.
const _: () = assert!(crate::protocol::MAX_MESSAGE_BYTES == kvs_net::MAX_FRAME);

/// A change in the set of live peers, from membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A peer is live (joined, rejoined, or came back) at this sync address.
    Up {
        /// Its `node_id`.
        node_id: String,
        /// Its sync (stream transport) address.
        addr: SocketAddr,
        /// Drawn by the peer at each start: the same life at the same address is the
        /// same run of the peer (a suspicion it refuted), not a restart.
        life: u32,
    },
    /// A peer died or left.
    Down {
        /// Its `node_id`.
        node_id: String,
    },
}

/// State shared by the driver's tasks.
pub(crate) struct Shared<T: StreamTransport> {
    transport: Arc<T>,
    runtime: Arc<dyn Runtime>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: ReplicationConfig,
    connections: Mutex<BTreeMap<SocketAddr, T::Conn>>,
    peers: Mutex<BTreeMap<String, Peer>>,
    counters: Counters,
    synced_once: AtomicBool,
    /// When the last complete session started (Unix ms; 0: never).
    last_sync: AtomicU64,
    /// While stale, the `last_sync` it had when it became stale (0: not stale).
    stale_since: AtomicU64,
    /// While stale, the latest last complete session among itself and the stale peers it
    /// synced with: the start of its blind time if it catches up without an established
    /// peer.
    stale_horizon: AtomicU64,
    /// Whether its copy vouches for what the cluster holds: it completed a session with
    /// a peer that was not stale since it started (see [`Shared::completed`]), or it
    /// expects no peers and has a past (see `standing::vouches_alone`).
    vouches: AtomicBool,
    /// The time it may lack versions of, `[from, to)` Unix ms, once it caught up blind
    /// ([`Standing::Blind`]; `to` 0: none).
    blind_from: AtomicU64,
    blind_to: AtomicU64,
    /// Its copy vouches only for versions stamped at or after this (Unix ms; see
    /// [`crate::Session::with_floor`] and `standing::initial_floor`).
    floor: AtomicU64,
    /// The time (Unix ms) before which this node's writes had all reached every live
    /// peer, as far as it knows (0: unknown): only grows.
    own_writes_delivered: AtomicU64,
    /// Whether a peer's own-writes time rose, or a live peer left, since
    /// `own_writes_delivered` was last worked out from the peers.
    delivered_dirty: AtomicBool,
    /// When the set of live peers last changed (Unix ms).
    peers_changed: AtomicU64,
    /// When this node was last seen in touch with a peer (Unix ms; 0: never), by
    /// [`Shared::note_staleness`].
    in_touch: AtomicU64,
    /// The sessions this node takes part in.
    sessions: Sessions,
    /// Counts changes of the peer set (a peer down, or back): a running round checks
    /// whether its peer is still the life it started with.
    peer_changes: watch::Sender<u64>,
    /// The last generation given to a peer.
    generations: AtomicU64,
    /// The tasks serving peers' connections and streams (stopped by `drain`).
    serving: TaskSet,
    wake: mpsc::UnboundedSender<String>,
}

fn lock<U>(mutex: &Mutex<U>) -> MutexGuard<'_, U> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl<T: StreamTransport> Shared<T> {
    /// Runs blocking store work off the async workers.
    pub(crate) async fn blocking<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        kvs_net::run_blocking(self.runtime.as_ref(), work)
            .await
            .ok_or_else(|| StoreError::Backend("a store task failed".into()))?
    }

    /// Starts a task on the runtime.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> TaskHandle {
        self.runtime.spawn(Box::pin(task))
    }

    fn now_ms(&self) -> u64 {
        self.clock.unix_micros() / 1000
    }

    /// The checks versions from peers pass, as of now.
    fn admission(&self) -> Admission {
        Admission {
            now_ms: self.now_ms(),
            max_clock_skew_ms: millis(self.config.max_clock_skew),
            tombstone_ttl_ms: millis(self.config.tombstone_ttl),
        }
    }

    /// The connection to `addr`, made if there is none.
    async fn connection(&self, addr: SocketAddr) -> Result<T::Conn, NetError> {
        if let Some(connection) = lock(&self.connections).get(&addr) {
            return Ok(connection.clone());
        }
        let connection = self.transport.connect(addr).await?;
        lock(&self.connections).insert(addr, connection.clone());
        Ok(connection)
    }

    fn forget_connection(&self, addr: SocketAddr) {
        if let Some(connection) = lock(&self.connections).remove(&addr) {
            connection.close();
        }
    }
}

/// The running replication of one node; see the module doc.
pub struct Replication<T: StreamTransport> {
    shared: Arc<Shared<T>>,
    tasks: Mutex<Vec<TaskHandle>>,
}

impl<T: StreamTransport> Replication<T> {
    /// Starts serving peers and running rounds on `runtime`.
    pub fn start(
        runtime: Arc<dyn Runtime>,
        transport: Arc<T>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: ReplicationConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let (wake, woken) = mpsc::unbounded_channel();
        let holds_data = store.merkle().is_ok_and(|tree| tree.root() != 0);
        let vouches = standing::vouches_alone(&config, holds_data);
        let shared = Arc::new(Shared {
            transport,
            runtime,
            store,
            clock,
            connections: Mutex::new(BTreeMap::new()),
            peers: Mutex::new(BTreeMap::new()),
            counters: Counters::default(),
            synced_once: AtomicBool::new(false),
            last_sync: AtomicU64::new(config.last_sync_ms.unwrap_or(0)),
            stale_since: AtomicU64::new(0),
            stale_horizon: AtomicU64::new(0),
            vouches: AtomicBool::new(vouches),
            blind_from: AtomicU64::new(config.blind_ms.map_or(0, |(from, _)| from)),
            blind_to: AtomicU64::new(config.blind_ms.map_or(0, |(_, to)| to)),
            floor: AtomicU64::new(standing::initial_floor(&config)),
            in_touch: AtomicU64::new(standing::initial_touch(&config, holds_data)),
            peers_changed: AtomicU64::new(0),
            own_writes_delivered: AtomicU64::new(config.own_writes_delivered_ms.unwrap_or(0)),
            delivered_dirty: AtomicBool::new(false),
            sessions: Sessions::new(config.node_id.clone()),
            peer_changes: watch::Sender::new(0),
            generations: AtomicU64::new(0),
            serving: TaskSet::default(),
            config,
            wake,
        });
        shared.note_staleness();
        let tasks = vec![
            shared.spawn(accept_loop(Arc::clone(&shared), shutdown.clone())),
            shared.spawn(anti_entropy::staleness_watch(
                Arc::clone(&shared),
                shutdown.clone(),
            )),
            shared.spawn(anti_entropy::round_loop(
                Arc::clone(&shared),
                woken,
                shutdown,
            )),
        ];
        Self {
            shared,
            tasks: Mutex::new(tasks),
        }
    }

    /// Takes a change of the live peer set; a peer that comes up is synced at once. A
    /// peer live again in the same life (it refuted a suspicion) is only synced: its
    /// rounds, connection and delivery record stand.
    pub fn peer_event(&self, event: PeerEvent) {
        let shared = &self.shared;
        match event {
            PeerEvent::Up {
                node_id,
                addr,
                life,
            } => {
                let mut peers = lock(&shared.peers);
                let same_run = peers
                    .get(&node_id)
                    .is_some_and(|peer| peer.addr == addr && peer.life == life);
                if same_run {
                    drop(peers);
                    let _ = shared.wake.send(node_id);
                    return;
                }
                shared
                    .peers_changed
                    .store(shared.now_ms(), Ordering::Relaxed);
                let generation = shared.generations.fetch_add(1, Ordering::Relaxed) + 1;
                shared.peer_changes.send_modify(|n| *n += 1);
                // A cached connection to this address predates this life of the peer and
                // may lead to a process that is gone (a connect begun before the peer went
                // down can finish while an earlier restart of it runs): the next push or
                // round makes a new one. Found by the simulator (data-nemesis seed 22).
                shared.forget_connection(addr);
                shared.settle_delivered(&peers);
                if let Some(peer) = peers.get_mut(&node_id).filter(|peer| peer.addr == addr) {
                    // Back (restarted on the same address).
                    peer.life = life;
                    peer.generation = generation;
                    peer.synced_while_stale = false;
                    peer.own_writes_through = 0;
                    peer.failed_rounds = 0;
                } else {
                    let queue = Arc::new(PeerQueue::default());
                    let span = tracing::info_span!("push", peer = %node_id, %addr);
                    let sender = shared.spawn(tracing::Instrument::instrument(
                        push::send_loop(
                            Arc::clone(shared),
                            node_id.clone(),
                            addr,
                            Arc::clone(&queue),
                        ),
                        span,
                    ));
                    let old = peers.insert(
                        node_id.clone(),
                        Peer {
                            addr,
                            life,
                            generation,
                            queue,
                            last_sync: None,
                            behind: true,
                            behind_at: 0,
                            failed_rounds: 0,
                            roots_agreed: false,
                            synced_while_stale: false,
                            own_writes_through: 0,
                            sender,
                        },
                    );
                    if let Some(old) = old {
                        old.queue.close();
                    }
                }
                drop(peers);
                let _ = shared.wake.send(node_id);
            }
            PeerEvent::Down { node_id } => {
                shared
                    .peers_changed
                    .store(shared.now_ms(), Ordering::Relaxed);
                if let Some(peer) = lock(&shared.peers).remove(&node_id) {
                    shared.delivered_dirty.store(true, Ordering::Relaxed);
                    peer.queue.close();
                    shared.forget_connection(peer.addr);
                }
                shared.peer_changes.send_modify(|n| *n += 1);
            }
        }
    }

    /// Queues an accepted local write for every live peer.
    pub fn push(&self, key: &str, version: &Version) {
        let limit = self.shared.config.queue_bytes;
        let mut peers = lock(&self.shared.peers);
        if peers.is_empty() {
            // A node alone: nothing to encode the write for.
            return;
        }
        let now = self.shared.now_ms();
        let pushed = Pushed::new(key, version, now);
        let mut overflowed = Vec::new();
        for (id, peer) in peers.iter_mut() {
            if !peer.queue.push(pushed.clone(), limit) {
                peer.fall_behind(now);
                overflowed.push(id.clone());
            }
        }
        drop(peers);
        for id in overflowed {
            self.shared
                .counters
                .push_overflows
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node_id = %id, "push queue full; the peer is left to anti-entropy");
        }
    }

    /// What the node keeps of this replication for its next start, as things stand.
    pub fn kept_facts(&self) -> KeptFacts {
        KeptFacts {
            last_sync_ms: self.last_sync_ms(),
            own_writes_delivered_ms: self.own_writes_delivered_ms(),
            blind_ms: self.blind_ms(),
            floor_ms: self.floor_ms(),
        }
    }

    /// When this node's last complete session started (Unix ms), for the node to keep.
    pub fn last_sync_ms(&self) -> Option<u64> {
        Some(self.shared.last_sync.load(Ordering::Relaxed)).filter(|&at| at > 0)
    }

    /// The time (Unix ms) before which every write of this node had reached every live
    /// peer (by a complete session or an acknowledged push), for the node to keep: a
    /// stale node takes a peer's lack of an own write older than that for a deletion.
    pub fn own_writes_delivered_ms(&self) -> Option<u64> {
        Some(self.shared.own_writes_delivered()).filter(|&at| at > 0)
    }

    /// This node's writes that may not have reached every live peer yet, whose
    /// tombstones a purge keeps ([`crate::Store::purge`]): a node cut off from every
    /// peer longer than `tombstone_ttl` keeps the deletes it took meanwhile until its
    /// peers have them. `None` for a node alone from its start (no seeds, no peer seen),
    /// which has nobody to deliver to, or whose `joined_at` is unknown.
    pub fn undelivered(&self) -> Option<Undelivered> {
        let had_peers = self.shared.config.expect_peers
            || self.shared.peers_changed.load(Ordering::Relaxed) > 0;
        let (origin_joined_at, since_ms) = self.shared.writer().filter(|_| had_peers)?;
        Some(Undelivered {
            origin_joined_at,
            since_ms,
        })
    }

    /// The time `[from, to)` (Unix ms) this node may lack versions of, if it caught up
    /// without an established peer, or through one that did ([`crate::Standing::Blind`]), for
    /// the node to keep.
    pub fn blind_ms(&self) -> Option<(u64, u64)> {
        let to = self.shared.blind_to.load(Ordering::Relaxed);
        (to > 0).then(|| (self.shared.blind_from.load(Ordering::Relaxed), to))
    }

    /// This node's floor (Unix ms; `None`: 0), for the node to keep: its copy vouches
    /// only for versions stamped at or after it (see [`crate::Session::with_floor`]).
    pub fn floor_ms(&self) -> Option<u64> {
        Some(self.shared.floor()).filter(|&floor| floor > 0)
    }

    /// Whether this node expects peers (it has seeds) and has not completed a session
    /// since it started that made it established (a node that becomes stale as it runs
    /// is not syncing again: `kvs_sync_stale` says that).
    pub fn syncing(&self) -> bool {
        !self.shared.synced_since_start()
    }

    fn peer_statuses(&self) -> BTreeMap<String, PeerStatus> {
        lock(&self.shared.peers)
            .iter()
            .map(|(id, peer)| {
                let status = PeerStatus {
                    node_id: id.clone(),
                    last_sync: peer.last_sync,
                    queue_bytes: peer.queue.bytes(),
                    behind: peer.behind,
                    roots_agreed: peer.roots_agreed,
                };
                (id.clone(), status)
            })
            .collect()
    }

    /// This node's view of sync (blocking: reads the store's tree).
    pub fn status(&self) -> Result<SyncStatus, StoreError> {
        let tree = self.shared.store.merkle()?;
        Ok(SyncStatus {
            merkle_root: format!("{:016x}", tree.root()),
            keys: self.shared.store.stats()?.keys,
            syncing: self.syncing(),
            peers: self.peer_statuses().into_values().collect(),
        })
    }

    /// Tasks serving peers that are still running (none after [`Self::drain`]).
    pub fn serving_tasks(&self) -> usize {
        self.shared.serving.running()
    }

    /// For a node that takes no more writes: waits (at most `within`) for every queue to
    /// be sent and acknowledged, then stops every task, those serving peers' connections
    /// and streams included. If every queue was, the writes stamped before the call have
    /// all reached every live peer that is not behind, and the own-writes time rises to
    /// the call (a push's acknowledgement alone credits writes up to a second before its
    /// queueing, since later ones may still be on their way to the queue; here none is).
    pub async fn drain(&self, within: Duration) {
        let began = self.shared.now_ms();
        let deadline = self.shared.clock.now() + within;
        let idle = || {
            lock(&self.shared.peers)
                .values()
                .all(|peer| peer.queue.is_idle())
        };
        let mut all_sent = idle();
        while !all_sent && self.shared.clock.now() < deadline {
            self.shared.runtime.sleep(Duration::from_millis(10)).await;
            all_sent = idle();
        }
        if all_sent {
            self.shared.all_pushed(began);
        }
        let peers = std::mem::take(&mut *lock(&self.shared.peers));
        for peer in peers.into_values() {
            peer.queue.close();
            let _ = peer.sender.await;
        }
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            task.abort();
            task.await;
        }
        self.shared.serving.shutdown().await;
    }
}

/// Accepts connections from peers and serves each stream by its kind.
async fn accept_loop<T: StreamTransport>(
    shared: Arc<Shared<T>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        // Biased everywhere in this driver: the same inputs are handled in the same order,
        // so that a run on the simulator's virtual time replays exactly.
        let accepted = tokio::select! {
            biased;
            accepted = shared.transport.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok(connection) => {
                let serving = shared.spawn(serve_connection(Arc::clone(&shared), connection));
                shared.serving.push(serving);
            }
            Err(NetError::Closed) => return,
            Err(error) => tracing::debug!(%error, "a sync connection was refused"),
        }
    }
}

async fn serve_connection<T: StreamTransport>(shared: Arc<Shared<T>>, connection: T::Conn) {
    let from = connection.remote_addr();
    while let Ok(mut stream) = connection.accept_stream().await {
        let serving = Arc::clone(&shared);
        let task = shared.spawn(async move {
            let shared = serving;
            match stream.recv_frame().await {
                Ok(Some(kind)) if kind == KIND_SYNC => {
                    let span = tracing::info_span!("serve sync", %from);
                    // Boxed: a session's state is about 10 KB, which every push stream
                    // (one per peer, for as long as the peer lives) would carry too.
                    let serving = Box::pin(anti_entropy::serve(shared, stream, from));
                    tracing::Instrument::instrument(serving, span).await;
                }
                Ok(Some(kind)) if kind == KIND_PUSH => {
                    let span = tracing::info_span!("serve push", %from);
                    tracing::Instrument::instrument(push::serve(shared, stream), span).await;
                }
                Ok(Some(_)) => {
                    shared
                        .counters
                        .malformed_frames
                        .fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        });
        shared.serving.push(task);
    }
}
