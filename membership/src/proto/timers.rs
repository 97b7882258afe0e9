//! The one timer scheduler of a SWIM node: typed timers ordered by `(deadline, sequence)`.
//!
//! Timers are never cancelled in place; each carries the data needed to tell on firing
//! whether it still applies (a probe sequence number, a suspicion token, a state-change
//! time), as foca's `Timer`/`TimerToken` do. Stale ones are ignored when they fire.

use std::collections::BTreeMap;
use std::time::Duration;

use kvs_net::NodeId;

/// Something to do at a given time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Start the next protocol period.
    ProbeRound,
    /// The direct probe `seq` had no ack in time: go indirect.
    ProbeTimeout { seq: u32 },
    /// The protocol period of probe `seq` is over: suspect its target if still silent.
    ProbeEnd { seq: u32 },
    /// The relayed ping `seq` had no ack in time: nack the origin.
    RelayNack { seq: u32 },
    /// Suspicion of `id` runs out, unless `token` is stale.
    Suspicion { id: NodeId, token: u64 },
    /// Send pending updates to a few members.
    Gossip,
    /// Exchange full state with a random member.
    PushPull,
    /// Offer a push-pull to one dead member or unanswered seed.
    Reannounce,
    /// Try the seeds again if nobody answered yet.
    JoinRetry,
    /// Forget `id` if it is still dead or left since `since`.
    Reap { id: NodeId, since: Duration },
}

/// Pending timers in firing order.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    queue: BTreeMap<(Duration, u64), Timer>,
    next: u64,
}

impl Timers {
    /// Schedules `timer` at `at`; equal deadlines fire in scheduling order.
    pub(crate) fn schedule(&mut self, at: Duration, timer: Timer) {
        self.queue.insert((at, self.next), timer);
        self.next += 1;
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: Duration) -> Option<Timer> {
        let entry = self.queue.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(entry.remove())
    }

    /// Drops every pending timer.
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_then_schedule_order() {
        let mut t = Timers::default();
        let ms = Duration::from_millis;
        t.schedule(ms(20), Timer::Gossip);
        t.schedule(ms(10), Timer::ProbeEnd { seq: 1 });
        t.schedule(ms(10), Timer::ProbeRound);
        assert_eq!(t.next_deadline(), Some(ms(10)));
        assert_eq!(t.pop_due(ms(5)), None);
        assert_eq!(t.pop_due(ms(15)), Some(Timer::ProbeEnd { seq: 1 }));
        assert_eq!(t.pop_due(ms(15)), Some(Timer::ProbeRound));
        assert_eq!(t.pop_due(ms(15)), None);
        assert_eq!(t.pop_due(ms(20)), Some(Timer::Gossip));
    }
}
