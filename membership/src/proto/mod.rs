//! The sans-IO SWIM + Lifeguard core: a state machine fed with datagrams and timeouts,
//! whose outputs (datagrams, the next wake-up, membership events) are polled.
//!
//! Nothing here reads a clock, touches a socket or draws from a global random source:
//! time comes in as a monotonic `Duration` since an arbitrary epoch, randomness from a
//! ChaCha8 generator seeded at construction, and every decision iterates `BTreeMap`s or
//! `Vec`s, so that the same inputs always give the same outputs. A driver loop:
//!
//! ```text
//! loop {
//!     while let Some(t) = swim.poll_transmit() { socket.send_to(t.payload, t.dst) }
//!     while let Some(e) = swim.poll_event() { node.on_membership(e) }
//!     select {
//!         (from, bytes) = socket.recv() => swim.handle_datagram(from, bytes, now()),
//!         _ = sleep_until(swim.poll_timeout()) => swim.handle_timeout(now()),
//!     }
//! }
//! ```
//!
//! Split by concern: `probe.rs` (failure detection), `gossip.rs` (the update rules,
//! suspicion and refutation), `sync.rs` (join, push-pull, re-announce, leave, reaping).

mod broadcast;
mod codec;
mod gossip;
mod health;
mod members;
mod probe;
mod sync;
mod timers;
mod types;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use kvs_net::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use crate::config::{ConfigError, SwimConfig};
use broadcast::Broadcasts;
use codec::{DecodeError, Header, Kind, Message, Update};
use gossip::Source;
use health::LocalHealth;
use members::{Members, Record};
use probe::{Probe, Relay};
use timers::{Timer, Timers};
pub use types::{LocalMember, Member, MemberState, MembershipEvent, Metrics, Transmit};

/// Longest member id accepted (from the local identity or the network), in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Largest member metadata accepted.
const MAX_META_LEN: usize = 256;

/// Why a [`Swim`] could not be built or changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SwimError {
    /// The configuration is inconsistent.
    #[error("invalid membership config: {0}")]
    Config(#[from] ConfigError),
    /// The id (max 128 bytes) or metadata (max 256 bytes) is too long for a datagram.
    #[error("node id or metadata too long (id <= {MAX_ID_LEN} bytes, meta <= {MAX_META_LEN})")]
    IdentityTooLarge,
}

/// This node as the protocol sees it.
#[derive(Debug, Clone)]
struct Me {
    id: NodeId,
    addr: SocketAddr,
    meta: Vec<u8>,
    incarnation: u64,
    joined_at: u64,
    leaving: bool,
}

/// One SWIM + Lifeguard node. See the module documentation for the driving loop.
#[derive(Debug)]
pub struct Swim {
    cfg: SwimConfig,
    me: Me,
    members: Members,
    timers: Timers,
    broadcasts: Broadcasts,
    gossip_armed: bool,
    rng: ChaCha8Rng,
    health: LocalHealth,
    probe: Option<Probe>,
    relays: BTreeMap<u32, Relay>,
    next_seq: u32,
    next_token: u64,
    seeds: Vec<SocketAddr>,
    replied: VecDeque<(NodeId, u32)>,
    introduced: BTreeMap<NodeId, Duration>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MembershipEvent>,
    metrics: Metrics,
    /// The address of the last `alive` about this node from elsewhere at its incarnation
    /// or above, which it refuted; and of the last sign that another process uses its id.
    claimed_from: Option<SocketAddr>,
    id_conflict: Option<SocketAddr>,
    now: Duration,
}

impl Swim {
    /// A node that knows only itself; it starts probing as soon as it learns of others
    /// (through [`Swim::join`] or because others join through it).
    pub fn new(
        local: LocalMember,
        config: SwimConfig,
        rng_seed: u64,
        now: Duration,
    ) -> Result<Self, SwimError> {
        config.validate()?;
        if local.id.as_str().len() > MAX_ID_LEN || local.meta.len() > MAX_META_LEN {
            return Err(SwimError::IdentityTooLarge);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
        // Numbers start at random in each life: a peer remembers the push-pull exchanges
        // it answered by sender and number, and would ignore a restarted node's join
        // that reused a number of an earlier life.
        let next_seq = rng.r#gen();
        let mut swim = Self {
            health: LocalHealth::new(&config),
            me: Me {
                id: local.id,
                addr: local.gossip_addr,
                meta: local.meta,
                incarnation: local.incarnation,
                joined_at: local.joined_at,
                leaving: false,
            },
            cfg: config,
            members: Members::default(),
            timers: Timers::default(),
            broadcasts: Broadcasts::default(),
            gossip_armed: false,
            rng,
            probe: None,
            relays: BTreeMap::new(),
            next_seq,
            next_token: 0,
            seeds: Vec::new(),
            replied: VecDeque::new(),
            introduced: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            metrics: Metrics::default(),
            claimed_from: None,
            id_conflict: None,
            now,
        };
        swim.start_timers(now);
        Ok(swim)
    }

    /// Schedules the periodic timers, each at a random phase so that nodes started
    /// together do not probe in lockstep.
    fn start_timers(&mut self, now: Duration) {
        let jitter = |rng: &mut ChaCha8Rng, d: Duration| d.mul_f64(rng.gen_range(0.0..1.0));
        let probe = now + jitter(&mut self.rng, self.cfg.probe_interval);
        self.timers.schedule(probe, Timer::ProbeRound);
        let pp = now + jitter(&mut self.rng, self.cfg.push_pull_interval);
        self.timers.schedule(pp, Timer::PushPull);
        let re = now + self.cfg.reannounce_interval;
        self.timers.schedule(re, Timer::Reannounce);
    }

    /// Joins the cluster through `seeds` (gossip addresses): offers each a push-pull, and
    /// retries every `join_retry_interval` while no member is known. The seeds are also
    /// re-announced to later if they are not live members (partition healing).
    pub fn join(&mut self, seeds: &[SocketAddr], now: Duration) {
        self.now = now;
        for &seed in seeds {
            if seed != self.me.addr && !self.seeds.contains(&seed) {
                self.seeds.push(seed);
            }
        }
        self.contact_seeds();
        self.timers
            .schedule(now + self.cfg.join_retry_interval, Timer::JoinRetry);
    }

    /// Leaves gracefully: announces `left` to a few members and then only gossips until
    /// the announcement has been retransmitted enough; [`Swim::poll_timeout`] returns
    /// `None` once there is nothing left to do, and the driver can stop.
    pub fn leave(&mut self, now: Duration) {
        self.now = now;
        if self.me.leaving {
            return;
        }
        self.me.leaving = true;
        self.timers.clear();
        self.relays.clear();
        self.probe = None;
        self.gossip_armed = false;
        let update = self.local_update();
        self.queue(&update);
        self.gossip_round(now);
    }

    /// Changes this node's metadata and announces it with a higher incarnation.
    pub fn set_meta(&mut self, meta: Vec<u8>, now: Duration) -> Result<(), SwimError> {
        if meta.len() > MAX_META_LEN {
            return Err(SwimError::IdentityTooLarge);
        }
        self.now = now;
        self.me.meta = meta;
        self.me.incarnation = self.me.incarnation.saturating_add(1);
        let update = self.local_update();
        self.queue(&update);
        Ok(())
    }

    /// Feeds one received datagram payload (already authenticated by the transport).
    /// Garbage is dropped and counted in [`Metrics::malformed`] / [`Metrics::bad_version`].
    pub fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8], now: Duration) {
        self.now = now;
        self.metrics.datagrams_received += 1;
        self.metrics.bytes_received += bytes.len() as u64;
        let packet = match codec::decode(bytes) {
            Ok(packet) => packet,
            Err(DecodeError::Version) => return self.metrics.bad_version += 1,
            Err(DecodeError::Malformed) => return self.metrics.malformed += 1,
        };
        let Header { sender, msg } = packet.header;
        if sender == self.me.id {
            // This node never sends to itself: another process sends under its id.
            return self.note_id_conflict(from);
        }
        if sender.as_str().len() > MAX_ID_LEN {
            return;
        }
        let source = match msg {
            Message::PushPull { .. } => Source::PushPull(sender.clone()),
            _ => Source::Gossip,
        };
        let mut corrections = Vec::new();
        for update in packet.updates {
            corrections.extend(self.apply(update, &source, now));
        }
        if self.members.get(&sender).is_none() {
            self.introduce(sender.clone(), from, now);
        }
        match msg {
            Message::Ping { seq, target } if target == codec::fingerprint(&self.me.id) => {
                let mut first = self.buddy(&sender);
                first.extend(corrections);
                return self.send(from, Message::Ack { seq }, first);
            }
            Message::Ping { .. } | Message::Gossip => {}
            Message::Ack { seq } => self.on_ack(seq, &sender, now),
            Message::Nack { seq } => self.on_nack(seq),
            Message::PingReq {
                seq,
                target,
                target_addr,
            } => {
                self.on_ping_req(from, seq, target, target_addr, now);
            }
            Message::PushPull { exchange, reply } => {
                self.on_push_pull(from, sender, exchange, reply);
            }
        }
        if !corrections.is_empty() && source == Source::Gossip {
            self.send(from, Message::Gossip, corrections);
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = now;
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::ProbeRound => self.probe_round(now),
                Timer::ProbeTimeout { seq } => self.probe_timeout(seq),
                Timer::ProbeEnd { seq } => self.probe_end(seq, now),
                Timer::RelayNack { seq } => self.relay_nack(seq),
                Timer::Suspicion { id, token } => self.suspicion_expired(&id, token, now),
                Timer::Gossip => self.gossip_round(now),
                Timer::PushPull => self.push_pull_round(now),
                Timer::Reannounce => self.reannounce(now),
                Timer::JoinRetry => self.join_retry(now),
                Timer::Reap { id, since } => self.reap(&id, since),
            }
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`Swim::handle_timeout`] should next be called; `None` after a completed leave.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.timers.next_deadline()
    }

    /// The next membership event.
    pub fn poll_event(&mut self) -> Option<MembershipEvent> {
        self.events.pop_front()
    }

    /// Every known member, this node included, ordered by id.
    pub fn members(&self) -> Vec<Member> {
        let mut all: Vec<Member> = self
            .members
            .iter()
            .map(|(id, r)| self.snapshot(id, r))
            .collect();
        let at = all.partition_point(|m| m.id < self.me.id);
        all.insert(at, self.local_snapshot());
        all
    }

    /// One member by id (this node included).
    pub fn member(&self, id: &NodeId) -> Option<Member> {
        if *id == self.me.id {
            return Some(self.local_snapshot());
        }
        self.members.get(id).map(|r| self.snapshot(id, r))
    }

    /// Alive and suspect members, this node included (the `/health` member count).
    pub fn live_members(&self) -> usize {
        self.members.live() + 1
    }

    /// Counters and the local health score.
    pub fn metrics(&self) -> Metrics {
        Metrics {
            health_score: self.health.score(),
            ..self.metrics.clone()
        }
    }

    /// The address of the last process seen using this node's id, if any: a datagram
    /// that came with this node's id as its sender, or a second `alive` about this node
    /// from one other address after this node refuted the first. (A node restarted on
    /// another address sees its earlier life's entry once; a copied config keeps two
    /// processes refuting each other for ever, and the cluster sees one member flap
    /// between their addresses.)
    pub fn id_conflict(&self) -> Option<SocketAddr> {
        self.id_conflict
    }

    fn note_id_conflict(&mut self, addr: SocketAddr) {
        self.metrics.id_conflicts += 1;
        self.id_conflict = Some(addr);
    }

    /// This node's id.
    pub fn local_id(&self) -> &NodeId {
        &self.me.id
    }

    /// This node's current incarnation.
    pub fn incarnation(&self) -> u64 {
        self.me.incarnation
    }

    fn local_snapshot(&self) -> Member {
        Member {
            id: self.me.id.clone(),
            addr: self.me.addr,
            meta: self.me.meta.clone(),
            state: if self.me.leaving {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            incarnation: self.me.incarnation,
            joined_at: self.me.joined_at,
            flap_score: 0.0,
            rtt: None,
        }
    }

    fn snapshot(&self, id: &NodeId, r: &Record) -> Member {
        Member {
            id: id.clone(),
            addr: r.addr,
            meta: r.meta.clone(),
            state: r.state,
            incarnation: r.incarnation,
            joined_at: r.joined_at,
            flap_score: r.flap.value(self.now, self.cfg.flap_half_life),
            rtt: r.rtt.srtt(),
        }
    }

    /// This node's own entry, as gossiped.
    fn local_update(&self) -> Update {
        Update {
            id: self.me.id.clone(),
            incarnation: self.me.incarnation,
            addr: self.me.addr,
            meta: self.me.meta.clone(),
            joined_at: self.me.joined_at,
            kind: if self.me.leaving {
                Kind::Left
            } else {
                Kind::Alive
            },
        }
    }

    /// `λ·log N`: how many times each update is sent.
    fn retransmit_limit(&self) -> u32 {
        let n = (self.members.live() + 2) as f64;
        self.cfg.retransmit_mult * (n.log10().ceil() as u32).max(1)
    }

    /// Queues an update for dissemination and arms the gossip timer.
    fn queue(&mut self, update: &Update) {
        self.broadcasts
            .push(update.id.clone(), codec::encode_update(update));
        if !self.gossip_armed {
            self.gossip_armed = true;
            self.timers
                .schedule(self.now + self.cfg.gossip_interval, Timer::Gossip);
        }
    }

    /// Sends `msg` to `dst`, with the `first` updates (those that fit) and then queued
    /// updates piggy-backed up to the byte budget.
    fn send(&mut self, dst: SocketAddr, msg: Message, first: Vec<Update>) {
        let mut payload = codec::encode_header(&Header {
            sender: self.me.id.clone(),
            msg,
        });
        let mut skip = Vec::with_capacity(first.len());
        for update in first {
            let bytes = codec::encode_update(&update);
            if payload.len() + bytes.len() <= self.cfg.max_payload {
                payload.extend(bytes);
                skip.push(update.id);
            }
        }
        let limit = self.retransmit_limit();
        self.broadcasts
            .fill(&mut payload, self.cfg.max_payload, limit, &skip);
        self.emit_transmit(dst, payload);
    }

    fn emit_transmit(&mut self, dst: SocketAddr, payload: Vec<u8>) {
        debug_assert!(payload.len() <= self.cfg.max_payload);
        self.metrics.datagrams_sent += 1;
        self.metrics.bytes_sent += payload.len() as u64;
        self.transmits.push_back(Transmit { dst, payload });
    }

    fn next_seq(&mut self) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }
}
