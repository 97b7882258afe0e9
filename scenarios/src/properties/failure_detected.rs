//! `failure_detected: {within: 3s}` (always): every crash is noticed by everyone — each
//! member running when a node crashed that knew the crashed life (had it alive, suspect
//! or updated), and still running in the same life at the bound, has declared the
//! crashed life dead within `within` of the crash. A crash whose node restarts before the
//! bound, or whose bound lies past the end of the run, is not judged; nor is a member
//! that never knew the life (a node held down from 0 s, the README's late join, crashed
//! before anyone met it: found by an audit, which saw that idiom fail).
//! Measures `crash_to_dead_s` (crash to the last member's verdict) for each judged crash.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_yaml::Value;

use super::membership::{Cursor, duration_arg};
use super::{Property, World};
use crate::protocols::{Life, Seen, SharedLog, SwimNode};
use crate::{Event, Record, SimError, duration};

/// One crash being watched.
struct Crash {
    node: usize,
    at: Duration,
    life: Life,
    /// Members running at the crash, with their life number.
    observers: Vec<(usize, u64)>,
    /// First dead verdict about this life, per observer.
    dead: BTreeMap<usize, Duration>,
}

/// The property.
pub(crate) struct FailureDetected {
    cursor: Cursor,
    within: Duration,
    known: Vec<Life>,
    step_at: Option<Duration>,
    watching: Vec<Crash>,
    /// The highest incarnation each observer, in each of its lives, knew each member
    /// at while the member was not dead to it: `(observer, observer life, subject)`.
    known_alive: BTreeMap<(usize, u64, usize), u64>,
    latencies: Vec<f64>,
}

impl FailureDetected {
    pub(crate) fn new(name: &str, log: &SharedLog, a: &Value) -> Result<Self, SimError> {
        let within = duration_arg(name, a, "within")?
            .ok_or_else(|| SimError::invalid(format!("`{name}` needs `within: <duration>`")))?;
        Ok(Self {
            cursor: Cursor::new(log),
            within,
            known: Vec::new(),
            step_at: None,
            watching: Vec::new(),
            known_alive: BTreeMap::new(),
            latencies: Vec::new(),
        })
    }

    /// After a timeline step: finds the lives that ended (crashes) and restarts.
    fn notice_steps(&mut self) {
        let Some(at) = self.step_at.take() else {
            return;
        };
        let now: Vec<Life> = self.cursor.log().borrow().nodes.clone();
        for (node, life) in now.iter().enumerate() {
            let before = self.known.get(node);
            if before.is_some_and(|b| b.up && !life.up) {
                let knew = |o: usize, l: &Life| {
                    let observer_life = l.lives.saturating_sub(1);
                    self.known_alive
                        .get(&(o, observer_life, node))
                        .is_some_and(|&inc| inc >= life.first_incarnation)
                };
                let observers = now
                    .iter()
                    .enumerate()
                    .filter(|(o, l)| *o != node && l.up && knew(*o, l))
                    .map(|(o, l)| (o, l.lives))
                    .collect();
                self.watching.push(Crash {
                    node,
                    at,
                    life: life.clone(),
                    observers,
                    dead: BTreeMap::new(),
                });
            }
            if life.up && before.is_some_and(|b| !b.up) {
                self.watching.retain(|c| c.node != node);
            }
        }
        self.known = now;
    }

    fn collect_verdicts(&mut self) {
        let watching = &mut self.watching;
        let known_alive = &mut self.known_alive;
        let _ = self.cursor.drain(|o| {
            if matches!(o.seen, Seen::Alive | Seen::Suspect | Seen::Updated) {
                let known = known_alive
                    .entry((o.observer, o.observer_life, o.subject))
                    .or_insert(o.incarnation);
                *known = (*known).max(o.incarnation);
            }
            if o.seen != Seen::Dead {
                return Ok(());
            }
            for c in watching.iter_mut() {
                if c.node == o.subject && o.at >= c.at && o.incarnation >= c.life.first_incarnation
                {
                    c.dead.entry(o.observer).or_insert(o.at);
                }
            }
            Ok(())
        });
    }

    /// Judges the crashes whose bound has passed at `now`.
    fn judge_due(&mut self, now: Duration) -> Result<(), String> {
        let due: Vec<Crash>;
        (due, self.watching) = std::mem::take(&mut self.watching)
            .into_iter()
            .partition(|c| c.at + self.within <= now);
        if due.is_empty() {
            return Ok(());
        }
        let lives = self.cursor.log().borrow().nodes.clone();
        for c in due {
            let still = |&&(o, n): &&(usize, u64)| lives[o].up && lives[o].lives == n;
            let required: Vec<usize> = c.observers.iter().filter(still).map(|p| p.0).collect();
            let mut slowest = Duration::ZERO;
            let mut missing = Vec::new();
            for o in required {
                match c.dead.get(&o) {
                    Some(&t) if t <= c.at + self.within => slowest = slowest.max(t - c.at),
                    _ => missing.push(format!("n{}", o + 1)),
                }
            }
            if !missing.is_empty() {
                missing.truncate(10);
                return Err(format!(
                    "n{} crashed at {} and was not dead within {} on: {}",
                    c.node + 1,
                    duration::show(c.at),
                    duration::show(self.within),
                    missing.join(", ")
                ));
            }
            self.latencies.push(slowest.as_secs_f64());
        }
        Ok(())
    }

    fn judge(&mut self, now: Duration, last: bool) -> Result<(), String> {
        // A crash is noted with who knew whom as of the events before it.
        self.notice_steps();
        self.collect_verdicts();
        if last {
            // Crashes whose bound lies past the end cannot be judged.
            let within = self.within;
            self.watching.retain(|c| c.at + within <= now);
        }
        self.judge_due(now)
    }
}

impl Property<SwimNode> for FailureDetected {
    fn on_event(&mut self, world: &World<'_, SwimNode>, rec: &Record) -> Result<(), String> {
        let result = self.judge(world.now, false);
        let started = self.cursor.log().borrow().nodes.len();
        if self.known.len() < started {
            // Nodes still being created at the start of the run.
            self.known = self.cursor.log().borrow().nodes.clone();
        }
        if let Event::Step(_) = rec.event {
            // Applied right after this call: looked at from the next event on.
            self.step_at = Some(rec.at);
        }
        result
    }

    fn check(&mut self, world: &World<'_, SwimNode>) -> Result<(), String> {
        self.judge(world.now, true)
    }

    fn measurements(&self) -> Vec<(String, f64)> {
        self.latencies
            .iter()
            .map(|&l| ("crash_to_dead_s".to_string(), l))
            .collect()
    }
}
