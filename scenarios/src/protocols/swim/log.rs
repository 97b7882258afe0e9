//! What the SWIM nodes of one run saw, shared by the nodes (which append) and the
//! membership properties (which read): every membership event with its virtual time and
//! the simulator's ground truth about its subject at that moment, and each node's lives.
//!
//! Ground truth is kept here because the adapter sees every life begin (`create`) and end
//! (the node is dropped when it crashes), so an entry is judged at the instant it was made.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use kvs_membership::{Member, MembershipEvent};
use kvs_net::NodeId;

/// A membership event kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Joined, refuted or came back.
    Alive,
    /// Suspected.
    Suspect,
    /// Declared dead.
    Dead,
    /// Left gracefully.
    Left,
    /// Address or metadata changed.
    Updated,
    /// Forgotten.
    Removed,
}

/// One membership event seen by one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Virtual time.
    pub at: Duration,
    /// The node that emitted the event.
    pub observer: usize,
    /// Which life of the observer (0 first, +1 per restart).
    pub observer_life: u64,
    /// The member it is about.
    pub subject: usize,
    /// What happened.
    pub seen: Seen,
    /// The incarnation in the event (0 for `Removed`).
    pub incarnation: u64,
    /// Ground truth: the subject was running (not crashed) at that moment.
    pub subject_up: bool,
    /// Ground truth: the incarnation the subject's current (or last) life started with;
    /// an event below it is about an earlier life.
    pub subject_life_incarnation: u64,
}

impl Observation {
    /// A verdict about the subject's running life: the subject is up and the event is not
    /// about one of its earlier lives.
    pub fn about_running_life(&self) -> bool {
        self.subject_up && self.incarnation >= self.subject_life_incarnation
    }
}

/// One node's lives.
#[derive(Debug, Clone, Default)]
pub struct Life {
    /// Running now.
    pub up: bool,
    /// Lives started (1 after the first start).
    pub lives: u64,
    /// When the current (or last) life started.
    pub started: Duration,
    /// The incarnation the current life started with.
    pub first_incarnation: u64,
    /// The highest incarnation the node has given itself.
    pub incarnation: u64,
}

/// The whole run's observations.
#[derive(Debug, Default)]
pub struct Observations {
    /// Every event, in the order emitted.
    pub entries: Vec<Observation>,
    /// Each node's lives, by index.
    pub nodes: Vec<Life>,
}

/// The log as shared between nodes and properties (one run, one thread).
pub type SharedLog = Rc<RefCell<Observations>>;

/// `n17` or `n17....` (padded) -> 16.
pub(crate) fn index_of(id: &NodeId) -> Option<usize> {
    let digits: String = id
        .as_str()
        .strip_prefix('n')?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse::<usize>().ok()?.checked_sub(1)
}

impl Observations {
    /// Starts a life of node `index` at `now`; returns its starting incarnation (one above
    /// the highest of its previous lives).
    pub(crate) fn start(&mut self, index: usize, now: Duration) -> u64 {
        if self.nodes.len() <= index {
            self.nodes.resize(index + 1, Life::default());
        }
        let life = &mut self.nodes[index];
        let first = if life.lives == 0 {
            0
        } else {
            life.incarnation + 1
        };
        *life = Life {
            up: true,
            lives: life.lives + 1,
            started: now,
            first_incarnation: first,
            incarnation: first,
        };
        first
    }

    /// Records one event of `observer` at `now`.
    pub(crate) fn record(&mut self, observer: usize, now: Duration, event: MembershipEvent) {
        let (seen, member): (Seen, Option<Member>) = match event {
            MembershipEvent::Alive(m) => (Seen::Alive, Some(m)),
            MembershipEvent::Suspect(m) => (Seen::Suspect, Some(m)),
            MembershipEvent::Dead(m) => (Seen::Dead, Some(m)),
            MembershipEvent::Left(m) => (Seen::Left, Some(m)),
            MembershipEvent::Updated(m) => (Seen::Updated, Some(m)),
            MembershipEvent::Removed(id) => {
                let Some(subject) = index_of(&id) else { return };
                return self.push(observer, now, subject, Seen::Removed, 0);
            }
        };
        let Some(m) = member else { return };
        if let Some(subject) = index_of(&m.id) {
            self.push(observer, now, subject, seen, m.incarnation);
        }
    }

    fn push(&mut self, observer: usize, at: Duration, subject: usize, seen: Seen, inc: u64) {
        let truth = self.nodes.get(subject).cloned().unwrap_or_default();
        let observer_life = self
            .nodes
            .get(observer)
            .map_or(0, |l| l.lives.saturating_sub(1));
        self.entries.push(Observation {
            at,
            observer,
            observer_life,
            subject,
            seen,
            incarnation: inc,
            subject_up: truth.up,
            subject_life_incarnation: truth.first_incarnation,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_lives() {
        assert_eq!(index_of(&NodeId::new("n17")), Some(16));
        assert_eq!(index_of(&NodeId::new("n3......")), Some(2));
        assert_eq!(index_of(&NodeId::new("x3")), None);
        let mut log = Observations::default();
        assert_eq!(log.start(2, Duration::ZERO), 0);
        log.nodes[2].incarnation = 4;
        log.nodes[2].up = false;
        assert_eq!(log.start(2, Duration::from_secs(1)), 5);
        assert_eq!(log.nodes[2].lives, 2);
    }
}
