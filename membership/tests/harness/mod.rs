//! An in-process network of `Swim` nodes on virtual time (design.md practice 5): seeded
//! latency, loss, one-way partitions, slow receivers, crashes, restarts and leaves, with
//! every datagram checked against the byte budget and every membership event logged with
//! the ground truth (was the subject really down?).
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use kvs_membership::{LocalMember, MemberState, MembershipEvent, Swim, SwimConfig};
use kvs_net::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What an observer saw about a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Alive,
    Suspect,
    Dead,
    Left,
    Updated,
    Removed,
}

/// One logged membership event.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Duration,
    pub observer: usize,
    pub subject: usize,
    pub seen: Seen,
    pub incarnation: u64,
    /// The subject was actually running at the time.
    pub subject_up: bool,
}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: usize,
        from: SocketAddr,
        payload: Vec<u8>,
    },
    Wake {
        node: usize,
        at: Duration,
    },
}

pub struct Node {
    pub swim: Option<Swim>,
    pub id: NodeId,
    pub addr: SocketAddr,
    wake: Option<Duration>,
    /// Extra delay, uniform in `0..slow`, before this node handles a datagram.
    pub slow: Duration,
    restarts: u64,
    /// The metadata this node publishes.
    pub meta: Vec<u8>,
}

/// The simulated network.
pub struct Sim {
    pub now: Duration,
    pub nodes: Vec<Node>,
    pub cfg: SwimConfig,
    pub loss: f64,
    pub latency: (Duration, Duration),
    pub log: Vec<Logged>,
    pub bytes: u64,
    pub datagrams: u64,
    pub max_datagram: usize,
    seed: u64,
    by_addr: BTreeMap<SocketAddr, usize>,
    by_id: BTreeMap<NodeId, usize>,
    queue: BTreeMap<(Duration, u64), Ev>,
    seq: u64,
    rng: ChaCha8Rng,
    blocked: BTreeSet<(usize, usize)>,
}

pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Sim {
    /// `n` nodes, none joined yet; LAN-like links (0.2–1 ms, no loss).
    pub fn new(seed: u64, n: usize, cfg: SwimConfig) -> Self {
        let mut sim = Sim {
            now: Duration::ZERO,
            nodes: Vec::new(),
            cfg,
            loss: 0.0,
            latency: (Duration::from_micros(200), ms(1)),
            log: Vec::new(),
            bytes: 0,
            datagrams: 0,
            max_datagram: 0,
            seed,
            by_addr: BTreeMap::new(),
            by_id: BTreeMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            blocked: BTreeSet::new(),
        };
        for i in 0..n {
            // UUID-sized ids, as the node binary uses, so that byte counts are realistic.
            let id = NodeId::new(format!("00000000-0000-4000-8000-{i:012}"));
            let addr = SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 7946));
            sim.by_addr.insert(addr, i);
            sim.by_id.insert(id.clone(), i);
            sim.nodes.push(Node {
                swim: None,
                id,
                addr,
                wake: None,
                slow: Duration::ZERO,
                restarts: 0,
                meta: format!("http://{}:8080", addr.ip()).into_bytes(),
            });
            sim.boot(i);
        }
        sim
    }

    fn boot(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let local = LocalMember {
            id: node.id.clone(),
            gossip_addr: node.addr,
            meta: node.meta.clone(),
            incarnation: 0,
            joined_at: 1_700_000_000_000 + self.now.as_millis() as u64,
        };
        let seed = self.seed.wrapping_mul(1_000_003) ^ ((i as u64) << 20) ^ node.restarts;
        node.swim = Some(Swim::new(local, self.cfg.clone(), seed, self.now).expect("valid"));
        node.wake = None;
        self.flush(i);
    }

    /// A datagram payload injected as if `from` had sent it to node `to`.
    pub fn inject(&mut self, to: usize, from: SocketAddr, payload: Vec<u8>) {
        let key = (self.now, self.next_seq());
        self.queue.insert(key, Ev::Deliver { to, from, payload });
    }

    pub fn swim(&self, i: usize) -> &Swim {
        self.nodes[i].swim.as_ref().expect("node is up")
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].swim.is_some()
    }

    /// Node `i` joins through the given nodes.
    pub fn join(&mut self, i: usize, seeds: &[usize]) {
        let addrs: Vec<SocketAddr> = seeds.iter().map(|&s| self.nodes[s].addr).collect();
        let now = self.now;
        if let Some(swim) = self.nodes[i].swim.as_mut() {
            swim.join(&addrs, now);
        }
        self.flush(i);
    }

    /// Every node joins through node 0, `stagger` apart, then the run goes on to `settle`.
    pub fn form(&mut self, stagger: Duration, settle: Duration) {
        self.form_first(self.nodes.len(), stagger, settle);
    }

    /// Nodes `1..count` join through node 0, `stagger` apart; then the run goes on for
    /// `settle`. The others stay alone until told to join.
    pub fn form_first(&mut self, count: usize, stagger: Duration, settle: Duration) {
        for i in 1..count {
            self.join(i, &[0]);
            let next = self.now + stagger;
            self.run_until(next);
        }
        let end = self.now + settle;
        self.run_until(end);
    }

    pub fn crash(&mut self, i: usize) {
        self.nodes[i].swim = None;
        self.nodes[i].wake = None;
    }

    /// Restarts node `i` from scratch (incarnation 0) and joins it through `seeds`.
    pub fn restart(&mut self, i: usize, seeds: &[usize]) {
        self.nodes[i].restarts += 1;
        self.boot(i);
        self.join(i, seeds);
    }

    pub fn leave(&mut self, i: usize) {
        let now = self.now;
        if let Some(swim) = self.nodes[i].swim.as_mut() {
            swim.leave(now);
        }
        self.flush(i);
    }

    /// Drops everything from `a` to `b` (one way).
    pub fn block(&mut self, a: usize, b: usize) {
        self.blocked.insert((a, b));
    }

    /// Splits the nodes into two sides that cannot talk.
    pub fn partition(&mut self, left: &[usize], right: &[usize]) {
        for &a in left {
            for &b in right {
                self.block(a, b);
                self.block(b, a);
            }
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Drains node `i`'s outputs into the network and the log, and re-arms its wake-up.
    fn flush(&mut self, i: usize) {
        let Some(swim) = self.nodes[i].swim.as_mut() else {
            return;
        };
        let mut sends = Vec::new();
        while let Some(t) = swim.poll_transmit() {
            sends.push(t);
        }
        let mut events = Vec::new();
        while let Some(e) = swim.poll_event() {
            events.push(e);
        }
        let wake = swim.poll_timeout();
        for t in sends {
            assert!(
                t.payload.len() <= self.cfg.max_payload,
                "datagram over budget"
            );
            self.max_datagram = self.max_datagram.max(t.payload.len());
            self.bytes += t.payload.len() as u64;
            self.datagrams += 1;
            self.route(i, t.dst, t.payload);
        }
        for e in events {
            self.record(i, e);
        }
        if wake != self.nodes[i].wake {
            self.nodes[i].wake = wake;
            if let Some(at) = wake {
                let key = (at.max(self.now), self.next_seq());
                self.queue.insert(key, Ev::Wake { node: i, at });
            }
        }
    }

    fn route(&mut self, from: usize, dst: SocketAddr, payload: Vec<u8>) {
        let Some(&to) = self.by_addr.get(&dst) else {
            return;
        };
        if self.blocked.contains(&(from, to)) || self.rng.gen_bool(self.loss) {
            return;
        }
        let (lo, hi) = self.latency;
        let mut delay = lo + (hi - lo).mul_f64(self.rng.gen_range(0.0..1.0));
        let slow = self.nodes[to].slow;
        if !slow.is_zero() {
            delay += slow.mul_f64(self.rng.gen_range(0.0..1.0));
        }
        let key = (self.now + delay, self.next_seq());
        let src = self.nodes[from].addr;
        self.queue.insert(
            key,
            Ev::Deliver {
                to,
                from: src,
                payload,
            },
        );
    }

    fn record(&mut self, observer: usize, e: MembershipEvent) {
        let (seen, member) = match e {
            MembershipEvent::Alive(m) => (Seen::Alive, m),
            MembershipEvent::Suspect(m) => (Seen::Suspect, m),
            MembershipEvent::Dead(m) => (Seen::Dead, m),
            MembershipEvent::Left(m) => (Seen::Left, m),
            MembershipEvent::Updated(m) => (Seen::Updated, m),
            MembershipEvent::Removed(id) => {
                let subject = self.by_id[&id];
                let subject_up = self.is_up(subject);
                let at = self.now;
                let l = Logged {
                    at,
                    observer,
                    subject,
                    seen: Seen::Removed,
                    incarnation: 0,
                    subject_up,
                };
                return self.log.push(l);
            }
        };
        let subject = self.by_id[&member.id];
        let subject_up = self.is_up(subject);
        let at = self.now;
        let incarnation = member.incarnation;
        self.log.push(Logged {
            at,
            observer,
            subject,
            seen,
            incarnation,
            subject_up,
        });
    }

    /// Processes every event up to `t`.
    pub fn run_until(&mut self, t: Duration) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > t {
                break;
            }
            let ((at, _), ev) = entry.remove_entry();
            self.now = at;
            self.step(ev);
        }
        self.now = t;
    }

    /// Runs until `done` holds (checked every `every`) or `deadline`; returns when it held.
    pub fn run_until_cond(
        &mut self,
        deadline: Duration,
        every: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        while self.now < deadline {
            if done(self) {
                return Some(self.now);
            }
            let next = (self.now + every).min(deadline);
            self.run_until(next);
        }
        done(self).then_some(self.now)
    }

    fn step(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Deliver { to, from, payload } => {
                let Some(swim) = self.nodes[to].swim.as_mut() else {
                    return;
                };
                swim.handle_datagram(from, &payload, now);
                self.flush(to);
            }
            Ev::Wake { node, at } => {
                if self.nodes[node].wake != Some(at) {
                    return;
                }
                self.nodes[node].wake = None;
                let Some(swim) = self.nodes[node].swim.as_mut() else {
                    return;
                };
                swim.handle_timeout(now);
                self.flush(node);
            }
        }
    }

    /// What `observer` thinks of `subject` (`None`: unknown).
    pub fn view(&self, observer: usize, subject: usize) -> Option<MemberState> {
        let swim = self.nodes[observer].swim.as_ref()?;
        swim.member(&self.nodes[subject].id).map(|m| m.state)
    }

    /// Every running node other than `subject` sees it in `state`.
    pub fn all_see(&self, subject: usize, state: MemberState) -> bool {
        (0..self.nodes.len())
            .filter(|&o| o != subject && self.is_up(o))
            .all(|o| self.view(o, subject) == Some(state))
    }

    /// Dead verdicts about nodes that were running.
    pub fn false_deaths(&self) -> usize {
        self.log
            .iter()
            .filter(|l| l.seen == Seen::Dead && l.subject_up)
            .count()
    }

    /// Suspicions about nodes that were running.
    pub fn false_suspicions(&self) -> usize {
        self.log
            .iter()
            .filter(|l| l.seen == Seen::Suspect && l.subject_up)
            .count()
    }

    /// When the last running observer first saw `subject` in `seen` after `since`.
    pub fn last_to_see(&self, subject: usize, seen: Seen, since: Duration) -> Option<Duration> {
        let mut first: BTreeMap<usize, Duration> = BTreeMap::new();
        for l in &self.log {
            if l.subject == subject && l.seen == seen && l.at >= since {
                first.entry(l.observer).or_insert(l.at);
            }
        }
        let observers: Vec<usize> = (0..self.nodes.len())
            .filter(|&o| o != subject && self.is_up(o))
            .collect();
        observers
            .iter()
            .map(|o| first.get(o).copied())
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }
}
