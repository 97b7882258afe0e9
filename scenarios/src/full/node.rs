//! One whole node on the simulator, wired as `src/node.rs` and `src/cluster.rs` wire the
//! real one (it publishes the node's `MemberMeta` and maps membership events with the
//! node's own `kvs::cluster::peer_event`): the membership driver (`kvs_membership::Membership`) over simulated
//! datagrams, the replication driver (`kvs_sync::driver::Replication`) over simulated
//! streams, membership events turned into replication's peers up and down, the facts and
//! live peers a node keeps across a crash (which a restart joins through), a purge
//! task, and the write path (`Store::write_batch`, then a push) that clients call. The
//! store is a [`MemoryStore`] without history (no property reads it), or with
//! `store: lmdb` the node's own [`DurableStore`] in a temporary directory (closed at a
//! crash, reopened with its write-ahead log replayed at the restart; disk faults are
//! injected under its log). Either outlives a crash (what a node acknowledged is on its
//! disk) unless the node is wiped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvs::cluster::{MemberMeta, peer_event};
use kvs::node::KEEP_NODE_FACTS_EVERY;
use kvs::store::DurableStore;
use kvs::store::faults::{Fault, Faults};
use kvs_membership::{DriverConfig, LocalMember, Membership, MembershipEvent};
use kvs_net::{Clock, NodeId, Runtime, seeded_rng};
use kvs_sync::driver::{KeptFacts, PeerEvent, Replication, ReplicationConfig};
use kvs_sync::{
    MemoryStore, Store, StoreError, StoreOptions, Version, WriteOp, WriteOutcome, WriteRejected,
};
use rand::Rng;
use tokio::sync::watch;

use super::config::{NodeSettings, StoreKind};
use crate::SimError;
use crate::protocol::node_addr;
use crate::simnet::{SimClock, SimNet, SimStreams};
use crate::spec::{DiskFault, node_name};

/// The nodes' store options: no history kept.
const STORE: StoreOptions = StoreOptions {
    max_revisions: 0,
    compression_min_bytes: None,
};

/// Membership changes seen by nodes, with when: the engine traces them in order.
pub(crate) type Notes = Arc<Mutex<Vec<(Duration, usize, String)>>>;

/// A node's running drivers (gone while it is crashed).
struct Running {
    replication: Arc<Replication<SimStreams>>,
    _membership: Membership,
    _stop: watch::Sender<bool>,
}

/// Where a node's data lives across its lives.
enum Disk {
    Memory(Arc<MemoryStore>),
    Lmdb {
        dir: tempfile::TempDir,
        faults: Arc<Faults>,
    },
}

impl Disk {
    fn new(kind: StoreKind) -> Result<Self, SimError> {
        Ok(match kind {
            StoreKind::Memory => Self::Memory(Arc::new(MemoryStore::new(STORE))),
            StoreKind::Lmdb => Self::Lmdb {
                dir: tempfile::Builder::new()
                    .prefix("kvs-sim-")
                    .tempdir()
                    .map_err(|e| SimError::invalid(format!("store: lmdb: temporary dir: {e}")))?,
                faults: Arc::default(),
            },
        })
    }

    /// The store over this disk (for LMDB: opened, replaying the log).
    fn open(&self) -> Result<Arc<dyn Store>, SimError> {
        Ok(match self {
            Self::Memory(store) => Arc::clone(store) as Arc<dyn Store>,
            Self::Lmdb { dir, faults } => Arc::new(
                DurableStore::open_with_faults(dir.path(), STORE, None, Arc::clone(faults))
                    .map_err(|e| SimError::invalid(format!("store: lmdb: {e}")))?,
            ),
        })
    }
}

/// A node across its lives.
pub(crate) struct FullNode {
    index: usize,
    kind: StoreKind,
    disk: Disk,
    /// The open store (reopened at each start).
    pub(crate) store: Arc<dyn Store>,
    clock: SimClock,
    /// Set at the first start on a disk (0 after a wipe, until the next start).
    joined_at: u64,
    incarnation: u64,
    /// What its lives kept of their replication, as the real node keeps it in its data
    /// dir: at start and every [`KEEP_NODE_FACTS_EVERY`] (and at shutdown, which the
    /// simulator has none of); a crash loses what changed since.
    kept: Arc<Mutex<KeptFacts>>,
    /// The live peers' gossip addresses as its lives last kept them (when it had any),
    /// which a restart joins through besides its seeds, as the real node's `KNOWN_PEERS`.
    known_peers: Arc<Mutex<Vec<SocketAddr>>>,
    running: Option<Running>,
    pub(crate) paused: bool,
}

/// Wall-clock milliseconds of `clock`.
pub(crate) fn now_ms(clock: &dyn Clock) -> u64 {
    clock.unix_micros() / 1000
}

impl FullNode {
    /// A node that has not started yet, with an empty store.
    pub(crate) fn new(index: usize, net: &SimNet, kind: StoreKind) -> Result<Self, SimError> {
        let clock = net.clock(index);
        // Distinct per node, as real `joined_at`s are: they break timestamp ties.
        let joined_at = now_ms(&clock) + index as u64;
        let disk = Disk::new(kind)?;
        Ok(Self {
            index,
            kind,
            store: disk.open()?,
            disk,
            clock,
            joined_at,
            incarnation: 0,
            kept: Arc::default(),
            known_peers: Arc::default(),
            running: None,
            paused: false,
        })
    }

    /// Whether it is running (not crashed).
    pub(crate) fn is_up(&self) -> bool {
        self.running.is_some()
    }

    /// Whether clients get answers from it.
    pub(crate) fn serves(&self) -> bool {
        self.is_up() && !self.paused
    }

    /// Starts the drivers (first start or restart).
    pub(crate) fn start(
        &mut self,
        net: &SimNet,
        settings: &NodeSettings,
        seed: u64,
        notes: &Notes,
    ) -> Result<(), SimError> {
        let i = self.index;
        let name = node_name(i);
        let runtime: Arc<dyn Runtime> = Arc::new(net.runtime(i));
        let clock: Arc<dyn Clock> = Arc::new(self.clock.clone());
        let life = format!("{i}/{}", self.incarnation);
        if self.incarnation > 0 {
            self.store = self.disk.open()?;
        }
        if self.joined_at == 0 {
            // A new disk: the real node notes its `joined_at` at its first start on it.
            self.joined_at = now_ms(&self.clock) + i as u64;
        }
        let (stop, shutdown) = watch::channel(false);
        let mut seeds: Vec<_> = settings
            .membership
            .seeds
            .iter()
            .filter(|&&s| s != i)
            .map(|&s| node_addr(s))
            .collect();
        for &peer in lock(&self.known_peers).iter() {
            if peer != node_addr(i) && !seeds.contains(&peer) {
                seeds.push(peer);
            }
        }
        let kept = *lock(&self.kept);
        let config = ReplicationConfig {
            node_id: name.clone(),
            sync_interval: settings.sync_interval,
            max_clock_skew: settings.max_clock_skew,
            tombstone_ttl: settings.tombstone_ttl,
            seed: seeded_rng(seed, &format!("sync/{life}")).r#gen(),
            expect_peers: !seeds.is_empty(),
            last_sync_ms: kept.last_sync_ms,
            joined_at: self.joined_at,
            own_writes_delivered_ms: kept.own_writes_delivered_ms,
            blind_ms: kept.blind_ms,
            floor_ms: kept.floor_ms,
            ..ReplicationConfig::default()
        };
        let replication = Arc::new(Replication::start(
            Arc::clone(&runtime),
            Arc::new(net.streams(i)),
            Arc::clone(&self.store) as Arc<dyn Store>,
            Arc::clone(&clock),
            config,
            shutdown.clone(),
        ));
        let sink = Arc::clone(&replication);
        let (notes, seen_at) = (Arc::clone(notes), self.clock.clone());
        let live = Arc::new(Mutex::new(BTreeMap::new()));
        let seen = Arc::clone(&live);
        let events = move |event: &MembershipEvent| {
            notes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((seen_at.now(), i, describe(event)));
            if let Some(change) = peer_event(event) {
                match &change {
                    PeerEvent::Up { node_id, addr, .. } => {
                        lock(&seen).insert(node_id.clone(), *addr);
                    }
                    PeerEvent::Down { node_id } => {
                        lock(&seen).remove(node_id);
                    }
                }
                sink.peer_event(change);
            }
        };
        let local = LocalMember {
            id: NodeId::new(name),
            gossip_addr: node_addr(i),
            meta: MemberMeta {
                http: String::new(),
                sync: node_addr(i).to_string(),
                life: seeded_rng(seed, &format!("meta/{life}")).r#gen(),
                jwt_fingerprint: String::new(),
            }
            .encode(),
            incarnation: self.incarnation,
            joined_at: self.joined_at,
        };
        let driver = DriverConfig {
            local,
            swim: settings.membership.swim.clone(),
            seeds,
            rng_seed: seeded_rng(seed, &format!("swim/{life}")).r#gen(),
        };
        let membership = Membership::start(
            Arc::clone(&runtime),
            Arc::new(net.datagrams(i)),
            Arc::clone(&clock),
            driver,
            events,
            shutdown,
        )
        .map_err(|e| SimError::invalid(format!("membership: {e}")))?;
        drop(runtime.spawn(Box::pin(keep_facts_loop(
            Arc::clone(&runtime),
            Arc::clone(&replication),
            live,
            Arc::clone(&self.kept),
            Arc::clone(&self.known_peers),
        ))));
        drop(runtime.spawn(Box::pin(purge_loop(
            Arc::clone(&replication),
            Arc::clone(&runtime),
            Arc::clone(&self.store),
            clock,
            settings.purge_interval,
            settings.tombstone_ttl,
        ))));
        self.running = Some(Running {
            replication,
            _membership: membership,
            _stop: stop,
        });
        Ok(())
    }

    /// A crash: every task of the node is gone (the caller crashed it on the net), an
    /// LMDB store is closed; the disk stays, unless `wipe`.
    pub(crate) fn crash(&mut self, wipe: bool) -> Result<(), SimError> {
        // What it kept last stays (the loop that kept it is gone with the node's tasks).
        self.running = None;
        self.incarnation += 1;
        self.paused = false;
        if wipe {
            self.disk = Disk::new(self.kind)?;
            *lock(&self.kept) = KeptFacts::default();
            lock(&self.known_peers).clear();
            self.joined_at = 0;
        }
        // The dropped tasks held the only other handles: this closes an LMDB store.
        self.store = Arc::new(MemoryStore::new(STORE));
        Ok(())
    }

    /// Makes the next operation of the node's write-ahead log fail.
    pub(crate) fn disk_fault(&self, fault: DiskFault) -> Result<(), SimError> {
        let Disk::Lmdb { faults, .. } = &self.disk else {
            return Err(SimError::invalid("disk_fault needs `store: lmdb`"));
        };
        faults.inject(match fault {
            DiskFault::Write => Fault::Write,
            DiskFault::TornWrite => Fault::TornWrite,
            DiskFault::Sync => Fault::Sync,
        });
        Ok(())
    }

    /// A client's write through this node: the write path, then the push to peers.
    /// Returns the version held before and the outcome.
    #[allow(clippy::type_complexity)]
    pub(crate) fn write(
        &self,
        op: WriteOp,
    ) -> Result<(Option<Version>, Result<WriteOutcome, WriteRejected>), StoreError> {
        let held = self.store.get(&op.key)?;
        let key = op.key.clone();
        let mut outcomes = self.store.write_batch(&[op], now_ms(&self.clock))?;
        let outcome = outcomes
            .pop()
            .ok_or_else(|| StoreError::Backend("no outcome for the write".into()))?;
        if let (Some(running), Ok(done)) = (&self.running, &outcome) {
            running.replication.push(&key, &done.version);
        }
        Ok((held, outcome))
    }

    /// The node's `joined_at` (the `origin_joined_at` of its writes).
    pub(crate) fn joined_at(&self) -> u64 {
        self.joined_at
    }

    /// Its wall clock now, in ms.
    pub(crate) fn now_ms(&self) -> u64 {
        now_ms(&self.clock)
    }
}

/// Keeps `replication`'s facts in `kept`, and the `live` peers' addresses in
/// `known_peers` when there are any (a node left alone keeps those it last saw), at once,
/// then every [`KEEP_NODE_FACTS_EVERY`].
async fn keep_facts_loop(
    runtime: Arc<dyn Runtime>,
    replication: Arc<Replication<SimStreams>>,
    live: Arc<Mutex<BTreeMap<String, SocketAddr>>>,
    kept: Arc<Mutex<KeptFacts>>,
    known_peers: Arc<Mutex<Vec<SocketAddr>>>,
) {
    loop {
        *lock(&kept) = replication.kept_facts();
        let mut peers: Vec<SocketAddr> = lock(&live).values().copied().collect();
        if !peers.is_empty() {
            peers.sort_unstable();
            *lock(&known_peers) = peers;
        }
        runtime.sleep(KEEP_NODE_FACTS_EVERY).await;
    }
}

fn lock<T>(held: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    held.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Purges expired keys and old tombstones every `every`, keeping those of the node's
/// undelivered writes, as the node's purge loop does.
async fn purge_loop(
    replication: Arc<Replication<SimStreams>>,
    runtime: Arc<dyn Runtime>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    every: Duration,
    tombstone_ttl: Duration,
) {
    let ttl_ms = u64::try_from(tombstone_ttl.as_millis()).unwrap_or(u64::MAX);
    loop {
        runtime.sleep(every).await;
        let _ = store.purge(now_ms(clock.as_ref()), ttl_ms, replication.undelivered());
    }
}

fn describe(event: &MembershipEvent) -> String {
    match event {
        MembershipEvent::Alive(m) => format!("sees {} alive #{}", m.id, m.incarnation),
        MembershipEvent::Suspect(m) => format!("suspects {}", m.id),
        MembershipEvent::Dead(m) => format!("sees {} dead", m.id),
        MembershipEvent::Left(m) => format!("sees {} left", m.id),
        MembershipEvent::Updated(m) => format!("sees {} updated", m.id),
        MembershipEvent::Removed(id) => format!("forgets {id}"),
    }
}
