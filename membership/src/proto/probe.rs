//! Failure detection: one probe per protocol period in randomised round-robin order;
//! `ping`, then `ping-req` through k members when the RTT-derived timeout passes, then
//! suspicion at the period's end. Relays answer a `ping-req` with the forwarded ack or a
//! `nack` (Lifeguard), and the outcome feeds the local health multiplier.

use std::net::SocketAddr;
use std::time::Duration;

use kvs_net::NodeId;
use rand::Rng;

use super::codec::{self, Kind, Message, Update};
use super::timers::Timer;
use super::types::MemberState;
use super::{Source, Swim};

/// How many of this node's running suspicions each probe or gossip round re-asserts.
const REASSERTED: usize = 2;

/// The probe of the current protocol period.
#[derive(Debug)]
pub(crate) struct Probe {
    seq: u32,
    target: NodeId,
    /// The target's incarnation when the probe started: the life the probe is about.
    incarnation: u64,
    addr: SocketAddr,
    sent: Duration,
    acked: bool,
    expected_nacks: u32,
    nacks: u32,
}

/// A ping sent on behalf of another member's `ping-req`.
#[derive(Debug)]
pub(crate) struct Relay {
    origin: SocketAddr,
    origin_seq: u32,
}

impl Swim {
    /// Starts a protocol period: probes the next member and schedules the period's end.
    pub(super) fn probe_round(&mut self, now: Duration) {
        let period = self.health.scale(self.cfg.probe_interval);
        if let Some(target) = self.members.next_probe_target(&mut self.rng) {
            self.probe_member(target, period, now);
        }
        self.timers.schedule(now + period, Timer::ProbeRound);
    }

    fn probe_member(&mut self, target: NodeId, period: Duration, now: Duration) {
        let Some(record) = self.members.get(&target) else {
            return;
        };
        let (addr, incarnation) = (record.addr, record.incarnation);
        let timeout = self
            .health
            .scale(record.rtt.probe_timeout(&self.cfg))
            .min(period / 2);
        let mut first = self.buddy(&target);
        first.extend(self.reassertions(&target));
        let seq = self.next_seq();
        self.probe = Some(Probe {
            seq,
            target: target.clone(),
            incarnation,
            addr,
            sent: now,
            acked: false,
            expected_nacks: 0,
            nacks: 0,
        });
        self.metrics.probes += 1;
        let ping = Message::Ping {
            seq,
            target: codec::fingerprint(&target),
        };
        self.send(addr, ping, first);
        self.timers
            .schedule(now + timeout, Timer::ProbeTimeout { seq });
        self.timers.schedule(now + period, Timer::ProbeEnd { seq });
    }

    /// No direct ack in time: ask up to k other members to probe the target.
    pub(super) fn probe_timeout(&mut self, seq: u32) {
        let Some(probe) = self.probe.as_ref().filter(|p| p.seq == seq && !p.acked) else {
            return;
        };
        let (target, target_addr) = (probe.target.clone(), probe.addr);
        // A second direct ping alongside the indirect ones: under loss it halves the
        // chance that a live target misses the whole period.
        let buddy = self.buddy(&target);
        let ping = Message::Ping {
            seq,
            target: codec::fingerprint(&target),
        };
        self.send(target_addr, ping, buddy);
        let relays = self
            .members
            .random_live(&mut self.rng, self.cfg.indirect_checks, &[&target]);
        if relays.is_empty() {
            return;
        }
        self.metrics.indirect_probes += 1;
        for relay in &relays {
            let Some(addr) = self.members.get(relay).map(|r| r.addr) else {
                continue;
            };
            let msg = Message::PingReq {
                seq,
                target: target.clone(),
                target_addr,
            };
            self.send(addr, msg, Vec::new());
        }
        if let Some(probe) = self.probe.as_mut() {
            probe.expected_nacks = relays.len() as u32;
        }
    }

    /// The period is over: a silent target becomes suspect, unless it has announced a
    /// higher incarnation meanwhile (a restarted node: the pings went to its earlier
    /// life, and the new one has spoken since), and missing nacks count against this
    /// node's own health (Lifeguard).
    pub(super) fn probe_end(&mut self, seq: u32, now: Duration) {
        if self.probe.as_ref().is_none_or(|p| p.seq != seq) {
            return;
        }
        let Some(probe) = self.probe.take() else {
            return;
        };
        if probe.acked {
            return;
        }
        let delta = if probe.expected_nacks > 0 {
            i64::from(probe.expected_nacks.saturating_sub(probe.nacks))
        } else {
            1
        };
        self.health.apply(delta);
        let same_life = self
            .members
            .get(&probe.target)
            .is_some_and(|r| r.incarnation == probe.incarnation);
        if same_life {
            self.accuse(&probe.target, now);
        }
    }

    /// Suspects `target` on this node's own evidence.
    fn accuse(&mut self, target: &NodeId, now: Duration) {
        if self.members.get(target).is_some_and(|r| r.is_live()) {
            let mut update = self.suspect_update(target);
            update.kind = Kind::Suspect {
                from: self.me.id.clone(),
            };
            self.apply(update, &Source::Gossip, now);
        }
    }

    /// Buddy system (Lifeguard): a ping to a suspect member carries the suspicion, so that
    /// it refutes at once, in its ack. So do acks and gossip sent to it: the suspicion's
    /// own broadcasts are few and may all miss it, and a suspect nobody happens to probe
    /// would otherwise not learn of it before the timeout.
    pub(super) fn buddy(&self, target: &NodeId) -> Vec<Update> {
        let suspect = self
            .members
            .get(target)
            .is_some_and(|r| r.state == MemberState::Suspect);
        if self.cfg.lifeguard && suspect {
            vec![self.suspect_update(target)]
        } else {
            Vec::new()
        }
    }

    /// A few of this node's running suspicions (not of `exclude`), picked at random, to
    /// re-assert in a probe or gossip datagram: a receiver that knows of a refutation we
    /// missed answers with it (see `apply`) before our suspicion timer runs out.
    pub(super) fn reassertions(&mut self, exclude: &NodeId) -> Vec<Update> {
        let ids: Vec<NodeId> = self
            .members
            .suspects()
            .filter(|id| *id != exclude)
            .cloned()
            .collect();
        let mut out = Vec::new();
        for _ in 0..REASSERTED.min(ids.len()) {
            let id = &ids[self.rng.gen_range(0..ids.len())];
            if !out.iter().any(|u: &Update| u.id == *id) {
                out.push(self.suspect_update(id));
            }
        }
        out
    }

    /// "`id` is suspect at its current incarnation", naming the first accuser of a running
    /// suspicion (so that passing it on is no confirmation), else this node.
    fn suspect_update(&self, id: &NodeId) -> Update {
        let record = self.members.get(id).expect("known member");
        let from = match &record.suspicion {
            Some(suspicion) => suspicion.accuser.clone(),
            None => self.me.id.clone(),
        };
        let mut update = self.state_entry(id, record);
        update.kind = Kind::Suspect { from };
        update
    }

    /// An ack: ends our probe, or is forwarded to the origin of a relayed ping.
    pub(super) fn on_ack(&mut self, seq: u32, sender: &NodeId, now: Duration) {
        if let Some(relay) = self.relays.remove(&seq) {
            self.send(
                relay.origin,
                Message::Ack {
                    seq: relay.origin_seq,
                },
                Vec::new(),
            );
            return;
        }
        let Some(probe) = self.probe.as_mut().filter(|p| p.seq == seq && !p.acked) else {
            return;
        };
        probe.acked = true;
        self.metrics.acks += 1;
        if probe.target == *sender {
            let rtt = now.saturating_sub(probe.sent);
            let target = probe.target.clone();
            if let Some(record) = self.members.get_mut(&target) {
                record.rtt.sample(rtt);
            }
            self.health.apply(-1);
        }
    }

    /// A relay could not reach our target in time.
    pub(super) fn on_nack(&mut self, seq: u32) {
        if let Some(probe) = self.probe.as_mut().filter(|p| p.seq == seq) {
            probe.nacks += 1;
            self.metrics.nacks += 1;
        }
    }

    /// Probes `target` for the member at `origin`; a nack follows if no ack comes in time.
    pub(super) fn on_ping_req(
        &mut self,
        origin: SocketAddr,
        origin_seq: u32,
        target: NodeId,
        target_addr: SocketAddr,
        now: Duration,
    ) {
        if target == self.me.id {
            self.send(origin, Message::Ack { seq: origin_seq }, Vec::new());
            return;
        }
        let timeout = match self.members.get(&target) {
            Some(record) => record.rtt.probe_timeout(&self.cfg),
            None => self.cfg.probe_timeout,
        };
        let seq = self.next_seq();
        self.relays.insert(seq, Relay { origin, origin_seq });
        let ping = Message::Ping {
            seq,
            target: codec::fingerprint(&target),
        };
        self.send(target_addr, ping, Vec::new());
        self.timers
            .schedule(now + timeout.mul_f64(0.8), Timer::RelayNack { seq });
    }

    /// The relayed ping stayed unanswered: nack its origin.
    pub(super) fn relay_nack(&mut self, seq: u32) {
        if let Some(relay) = self.relays.remove(&seq) {
            self.send(
                relay.origin,
                Message::Nack {
                    seq: relay.origin_seq,
                },
                Vec::new(),
            );
        }
    }
}
