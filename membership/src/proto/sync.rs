//! Full-state exchanges and the member list's life cycle: join through seeds, periodic
//! push-pull with a random member (chunked into datagrams of at most `max_payload` bytes,
//! each chunk useful on its own), an exchange offered to any sender this node does not
//! know (it missed that member's `alive`, which push gossip can do), re-announcement to
//! dead members and unanswered seeds so that partitions heal, and reaping of long-dead and
//! left members.

use std::net::SocketAddr;
use std::time::Duration;

use kvs_net::NodeId;

use super::codec::{self, Header, Kind, Message, Update};
use super::timers::Timer;
use super::types::{MemberState, MembershipEvent};
use super::{Record, Swim};

/// How many answered exchanges are remembered, so that each is answered once.
const REPLIED_MEMORY: usize = 64;

impl Swim {
    /// Sends this node's whole member list to `dst`, asking for its list back if `reply`.
    pub(super) fn send_state(&mut self, dst: SocketAddr, reply: bool) {
        if reply {
            self.metrics.push_pulls += 1;
        }
        let exchange = self.next_seq();
        let msg = Message::PushPull { exchange, reply };
        let header = codec::encode_header(&Header {
            sender: self.me.id.clone(),
            msg,
        });
        let mut entries = vec![codec::encode_update(&self.local_update())];
        for (id, record) in self.members.iter() {
            entries.push(codec::encode_update(&self.state_entry(id, record)));
        }
        let mut payload = header.clone();
        for entry in entries {
            if payload.len() + entry.len() > self.cfg.max_payload {
                let full = std::mem::replace(&mut payload, header.clone());
                self.emit_transmit(dst, full);
            }
            payload.extend(entry);
        }
        self.emit_transmit(dst, payload);
    }

    /// A member's entry as sent in a push-pull: our view, vouched for by this node.
    pub(super) fn state_entry(&self, id: &NodeId, record: &Record) -> Update {
        let me = self.me.id.clone();
        Update {
            id: id.clone(),
            incarnation: record.incarnation,
            addr: record.addr,
            meta: record.meta.clone(),
            joined_at: record.joined_at,
            kind: match record.state {
                MemberState::Alive => Kind::Alive,
                MemberState::Suspect => Kind::Suspect { from: me },
                MemberState::Dead => Kind::Dead { from: me },
                MemberState::Left => Kind::Left,
            },
        }
    }

    /// A push-pull chunk arrived (its entries are applied already): answer the exchange
    /// once if asked to.
    pub(super) fn on_push_pull(
        &mut self,
        from: SocketAddr,
        sender: NodeId,
        exchange: u32,
        reply: bool,
    ) {
        if !reply || self.replied.contains(&(sender.clone(), exchange)) {
            return;
        }
        if self.replied.len() == REPLIED_MEMORY {
            self.replied.pop_front();
        }
        self.replied.push_back((sender, exchange));
        self.send_state(from, false);
    }

    /// A datagram came from a member this node does not know (its `alive` was missed):
    /// offer it a push-pull, whose answer carries its entry. Each unknown sender is asked
    /// at most once per `join_retry_interval`.
    pub(super) fn introduce(&mut self, sender: NodeId, from: SocketAddr, now: Duration) {
        if self.me.leaving {
            return;
        }
        let quiet = self.cfg.join_retry_interval;
        self.introduced.retain(|_, at| now < *at + quiet);
        if self.introduced.contains_key(&sender) {
            return;
        }
        self.introduced.insert(sender, now);
        self.send_state(from, true);
    }

    /// Offers a push-pull to every seed.
    pub(super) fn contact_seeds(&mut self) {
        for seed in self.seeds.clone() {
            self.send_state(seed, true);
        }
    }

    /// Retries the seeds while no member is known.
    pub(super) fn join_retry(&mut self, now: Duration) {
        if self.members.live() > 0 {
            return;
        }
        self.contact_seeds();
        self.timers
            .schedule(now + self.cfg.join_retry_interval, Timer::JoinRetry);
    }

    /// Periodic push-pull with one random live member. The interval grows linearly above
    /// `push_pull_scale_threshold` members (the exchange itself grows linearly), so that
    /// its bytes per node per second stay flat in N.
    pub(super) fn push_pull_round(&mut self, now: Duration) {
        let n = self.members.live() + 1;
        let scale = (n as f64 / self.cfg.push_pull_scale_threshold.max(1) as f64).max(1.0);
        let interval = self
            .cfg
            .push_pull_interval
            .mul_f64(scale)
            .min(self.cfg.push_pull_interval_max);
        self.timers.schedule(now + interval, Timer::PushPull);
        let peer = self.members.random_live(&mut self.rng, 1, &[]).pop();
        if let Some(addr) = peer.and_then(|id| self.members.get(&id).map(|r| r.addr)) {
            self.send_state(addr, true);
        }
    }

    /// Offers a push-pull to one dead member or seed that is not a live member, so that
    /// the two sides of a healed partition find each other again.
    pub(super) fn reannounce(&mut self, now: Duration) {
        self.timers
            .schedule(now + self.cfg.reannounce_interval, Timer::Reannounce);
        let live: Vec<SocketAddr> = self
            .members
            .iter()
            .filter(|(_, r)| r.is_live())
            .map(|(_, r)| r.addr)
            .collect();
        let mut candidates: Vec<SocketAddr> = self.members.dead().map(|(_, r)| r.addr).collect();
        candidates.extend(self.seeds.iter().filter(|s| !live.contains(s)));
        if candidates.is_empty() {
            return;
        }
        let pick = candidates[rand::Rng::gen_range(&mut self.rng, 0..candidates.len())];
        self.send_state(pick, true);
    }

    /// Forgets `id` if it has stayed dead or left since `since`.
    pub(super) fn reap(&mut self, id: &NodeId, since: Duration) {
        let Some(record) = self.members.get(id) else {
            return;
        };
        let down = matches!(record.state, MemberState::Dead | MemberState::Left);
        if down && record.since == since {
            self.members.remove(id);
            self.events.push_back(MembershipEvent::Removed(id.clone()));
        }
    }
}
