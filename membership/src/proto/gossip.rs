//! The update rules (SWIM's precedence by incarnation), Lifeguard's dynamic suspicion with
//! confirmations, refutation of suspicions about this node, and the gossip round that
//! sends pending updates outside probes.
//!
//! Precedence, for a member known at incarnation `j`:
//! - `alive(i)` wins over anything when `i > j`;
//! - `suspect(i)` wins over `alive(j)` when `i >= j` and over `suspect(j)` when `i > j`;
//!   `suspect(j)` from a new accuser is a confirmation that shortens the timeout;
//! - `dead(i)` wins over alive and suspect when `i >= j`; `left(i)` over all but left.
//!
//! Dead entries received in a push-pull count as suspicions, not deaths (as memberlist
//! does), so that one node's stale view cannot kill a healthy member outright. Unknown
//! members are learned only from `alive` facts.
//!
//! This node refutes `alive` about itself when it is newer than its own, or as new but
//! with another address or metadata (as memberlist does): a node restarted before anyone
//! noticed may start at an incarnation its earlier life already reached by refuting, and
//! its peers would otherwise keep the earlier life's entry and never see the restart.

use std::collections::BTreeSet;
use std::time::Duration;

use kvs_net::NodeId;

use super::codec::{Kind, Message, Update};
use super::health::{Flap, Rtt, suspicion_timeout};
use super::members::{Record, Suspicion};
use super::timers::Timer;
use super::types::{MemberState, MembershipEvent};
use super::{MAX_ID_LEN, MAX_META_LEN, Swim};

/// Where an update came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// Piggy-backed on a probe or gossip datagram.
    Gossip,
    /// Part of a full-state exchange with this sender.
    PushPull(NodeId),
}

impl Swim {
    /// Applies one received (or locally made) update. Returns the newer fact to send back
    /// when the update is a stale accusation (suspect, dead or left at an incarnation
    /// already superseded), so that its sender stops spreading it.
    pub(super) fn apply(
        &mut self,
        update: Update,
        source: &Source,
        now: Duration,
    ) -> Option<Update> {
        if !plausible(&update) {
            return None;
        }
        if update.id == self.me.id {
            return self.apply_about_me(update);
        }
        if let Some(record) = self.members.get(&update.id)
            && update.incarnation < record.incarnation
            && update.kind != Kind::Alive
        {
            return Some(self.state_entry(&update.id, record));
        }
        match (&update.kind, source) {
            (Kind::Alive, _) => self.apply_alive(update, now),
            (Kind::Suspect { from }, _) => {
                let from = from.clone();
                self.apply_suspect(update, from, now);
            }
            (Kind::Dead { .. }, Source::PushPull(sender)) => {
                let update = Update {
                    kind: Kind::Suspect {
                        from: sender.clone(),
                    },
                    ..update
                };
                self.apply_suspect(update, sender.clone(), now);
            }
            (Kind::Left, _) | (Kind::Dead { .. }, Source::Gossip) => self.apply_down(update, now),
        }
        None
    }

    fn apply_alive(&mut self, update: Update, now: Duration) {
        let Some(record) = self.members.get_mut(&update.id) else {
            let record = Record {
                addr: update.addr,
                meta: update.meta.clone(),
                incarnation: update.incarnation,
                joined_at: update.joined_at,
                state: MemberState::Alive,
                since: now,
                suspicion: None,
                rtt: Rtt::default(),
                flap: Flap::default(),
            };
            self.members
                .insert(update.id.clone(), record, &mut self.rng);
            self.emit(&update.id, MembershipEvent::Alive);
            return self.queue(&update);
        };
        record.joined_at = record.joined_at.min(update.joined_at);
        if update.incarnation <= record.incarnation {
            return;
        }
        let changed = record.addr != update.addr || record.meta != update.meta;
        record.addr = update.addr;
        record.meta = update.meta.clone();
        record.incarnation = update.incarnation;
        record.suspicion = None;
        if record.state == MemberState::Alive {
            if changed {
                self.emit(&update.id, MembershipEvent::Updated);
            }
        } else {
            record.flap.bump(now, self.cfg.flap_half_life);
            self.members.set_state(&update.id, MemberState::Alive, now);
            self.emit(&update.id, MembershipEvent::Alive);
        }
        self.queue(&update);
    }

    fn apply_suspect(&mut self, update: Update, from: NodeId, now: Duration) {
        let n = self.members.live() + 1;
        let stretch = self.suspicion_stretch();
        let Some(record) = self.members.get_mut(&update.id) else {
            return;
        };
        if update.incarnation < record.incarnation || !record.is_live() {
            return;
        }
        let token = self.next_token;
        if record.state == MemberState::Suspect && update.incarnation == record.incarnation {
            let Some(suspicion) = record.suspicion.as_mut() else {
                return;
            };
            if !suspicion.accusers.insert(from) {
                return;
            }
            self.next_token += 1;
            suspicion.token = token;
            let confirmations = suspicion.accusers.len() - 1;
            let deadline =
                suspicion.started + suspicion_timeout(&self.cfg, n, confirmations) + stretch;
            self.timers.schedule(
                deadline.max(now),
                Timer::Suspicion {
                    id: update.id.clone(),
                    token,
                },
            );
            return self.queue(&update);
        }
        self.next_token += 1;
        record.incarnation = update.incarnation;
        record.flap.bump(now, self.cfg.flap_half_life);
        record.suspicion = Some(Suspicion {
            started: now,
            accuser: from.clone(),
            accusers: BTreeSet::from([from]),
            token,
        });
        self.members
            .set_state(&update.id, MemberState::Suspect, now);
        let deadline = now + suspicion_timeout(&self.cfg, n, 0) + stretch;
        self.timers.schedule(
            deadline,
            Timer::Suspicion {
                id: update.id.clone(),
                token,
            },
        );
        self.metrics.suspicions += 1;
        self.emit(&update.id, MembershipEvent::Suspect);
        self.queue(&update);
    }

    /// Time added to every suspicion this node times: one probe period per point of its
    /// local health score. A node whose own probes lately went unanswered (a lossy network
    /// around it, or it was cut off) holds weaker evidence, and its suspects need longer
    /// to get a refutation through; on a healthy network the score is 0 and detection is
    /// unchanged. Lifeguard stretches only probe intervals and timeouts by the score; this
    /// extends it to the suspicion, which `scenarios/bench/swim-brief-cuts-loss-30.yaml`
    /// showed was needed: a suspicion raised by loss just before a 1 s cut left the suspect
    /// about 0.5 s to refute, and 8 of 1,000 seeds ended with a healthy member dead.
    fn suspicion_stretch(&self) -> Duration {
        self.cfg.probe_interval * self.health.score()
    }

    /// `dead` or `left` from gossip (or this node's own verdict).
    fn apply_down(&mut self, update: Update, now: Duration) {
        let left = update.kind == Kind::Left;
        let Some(record) = self.members.get_mut(&update.id) else {
            return;
        };
        if update.incarnation < record.incarnation || record.state == MemberState::Left {
            return;
        }
        if record.state == MemberState::Dead && !left {
            record.incarnation = update.incarnation;
            return;
        }
        record.incarnation = update.incarnation;
        record.suspicion = None;
        let (state, event): (_, fn(_) -> _) = if left {
            (MemberState::Left, MembershipEvent::Left)
        } else {
            record.flap.bump(now, self.cfg.flap_half_life);
            self.metrics.deaths += 1;
            (MemberState::Dead, MembershipEvent::Dead)
        };
        self.members.set_state(&update.id, state, now);
        self.timers.schedule(
            now + self.cfg.reap_after,
            Timer::Reap {
                id: update.id.clone(),
                since: now,
            },
        );
        self.emit(&update.id, event);
        self.queue(&update);
    }

    /// Someone talks about this node: refute anything but `alive` at our incarnation with
    /// our address and metadata, and answer a stale accusation with our current entry.
    fn apply_about_me(&mut self, update: Update) -> Option<Update> {
        if self.me.leaving {
            return None;
        }
        let stale = update.incarnation < self.me.incarnation;
        if stale && update.kind != Kind::Alive {
            return Some(self.local_update());
        }
        let refute = match update.kind {
            Kind::Alive => {
                update.incarnation > self.me.incarnation
                    || (update.incarnation == self.me.incarnation
                        && (update.addr != self.me.addr || update.meta != self.me.meta))
            }
            Kind::Suspect { .. } | Kind::Dead { .. } | Kind::Left => !stale,
        };
        if refute && update.kind == Kind::Alive && update.addr != self.me.addr {
            if self.claimed_from == Some(update.addr) {
                self.note_id_conflict(update.addr);
            }
            self.claimed_from = Some(update.addr);
        }
        let earlier = update.joined_at < self.me.joined_at;
        self.me.joined_at = self.me.joined_at.min(update.joined_at);
        if refute {
            if matches!(update.kind, Kind::Suspect { .. }) {
                self.health.apply(1);
            }
            self.metrics.refutations += 1;
            // Saturating: a peer may claim any incarnation (u64::MAX from a hostile one
            // overflowed here).
            self.me.incarnation = update.incarnation.saturating_add(1);
        }
        if refute || earlier {
            let own = self.local_update();
            self.queue(&own);
            if refute && let Kind::Suspect { from } | Kind::Dead { from } = &update.kind {
                self.tell_accuser(from, own);
            }
        }
        None
    }

    /// Sends a refutation straight to the first accuser named in the suspicion: its timer
    /// started first, so it is the member most likely to declare this node dead before the
    /// refutation's gossip reaches it. (In 1 of 3,000 seeds of
    /// `scenarios/bench/swim-brief-cuts-loss-30.yaml` the gossip reached 10 of 12 members
    /// in time, and the accuser, a few milliseconds too late.)
    fn tell_accuser(&mut self, accuser: &NodeId, own: Update) {
        if let Some(addr) = self.members.get(accuser).map(|r| r.addr) {
            self.send(addr, Message::Gossip, vec![own]);
        }
    }

    /// The suspicion timer of `id` ran out: declare it dead, unless the timer is stale.
    pub(super) fn suspicion_expired(&mut self, id: &NodeId, token: u64, now: Duration) {
        let Some(record) = self.members.get(id) else {
            return;
        };
        let current = record.suspicion.as_ref().is_some_and(|s| s.token == token);
        if record.state != MemberState::Suspect || !current {
            return;
        }
        let update = Update {
            id: id.clone(),
            incarnation: record.incarnation,
            addr: record.addr,
            meta: record.meta.clone(),
            joined_at: record.joined_at,
            kind: Kind::Dead {
                from: self.me.id.clone(),
            },
        };
        self.apply_down(update, now);
    }

    /// Sends pending updates to `gossip_fanout` random live members.
    /// Also runs while this node holds suspicions, re-asserting some of them to the first
    /// target, so that a refutation it missed comes back to it.
    pub(super) fn gossip_round(&mut self, now: Duration) {
        self.gossip_armed = false;
        if self.broadcasts.is_empty() && self.members.suspects().next().is_none() {
            return;
        }
        // With nothing queued, one datagram carries the re-assertions.
        let fanout = if self.broadcasts.is_empty() {
            1
        } else {
            self.cfg.gossip_fanout
        };
        let targets = self.members.random_live(&mut self.rng, fanout, &[]);
        if targets.is_empty() {
            // Nobody to tell: later joiners learn everything by push-pull.
            self.broadcasts = Default::default();
            return;
        }
        for (i, id) in targets.iter().enumerate() {
            let mut first = self.buddy(id);
            if i == 0 {
                first.extend(self.reassertions(id));
            }
            if let Some(addr) = self.members.get(id).map(|r| r.addr) {
                self.send(addr, Message::Gossip, first);
            }
        }
        if !self.broadcasts.is_empty() || self.members.suspects().next().is_some() {
            self.gossip_armed = true;
            self.timers
                .schedule(now + self.cfg.gossip_interval, Timer::Gossip);
        }
    }

    /// Pushes an event carrying the member's current snapshot.
    pub(super) fn emit(&mut self, id: &NodeId, make: fn(super::Member) -> MembershipEvent) {
        if let Some(member) = self.member(id) {
            self.events.push_back(make(member));
        }
    }
}

/// Sizes within what a datagram can carry; anything larger is dropped unheard.
fn plausible(update: &Update) -> bool {
    let from_len = match &update.kind {
        Kind::Suspect { from } | Kind::Dead { from } => from.as_str().len(),
        Kind::Alive | Kind::Left => 0,
    };
    update.id.as_str().len() <= MAX_ID_LEN
        && from_len <= MAX_ID_LEN
        && update.meta.len() <= MAX_META_LEN
}
