//! Timeline steps in the scenario file: a time and one action each, parsed strictly (an
//! error names the step), checked against the run's duration and limits, and `repeat`s
//! expanded.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

use super::{LinkRule, Selector};
use crate::duration;

/// The most timeline steps a file may have once its `repeat`s are expanded.
pub(crate) const MAX_TIMELINE_STEPS: usize = 100_000;

/// One timeline step: a time and one action.
#[derive(Debug, Clone)]
pub struct Step {
    /// When it happens.
    pub at: Duration,
    /// What happens.
    pub action: Action,
    /// Where the file has it, for error messages: `timeline[3]`, or
    /// `timeline[3].repeat.steps[1]` for a step of a `repeat`.
    pub place: String,
}

/// A fault or a repair.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Groups that cannot reach each other (both ways); unlisted nodes form one more group.
    Partition(Vec<Selector>),
    /// `from` cannot reach `to`; the reverse direction still works.
    PartitionOneway {
        /// Senders whose datagrams are lost.
        from: Selector,
        /// Receivers.
        to: Selector,
    },
    /// Removes every partition (`heal: all`).
    Heal(String),
    /// Changes link settings from now on.
    Link(LinkRule),
    /// Holds datagrams on the links for a while, then delivers them.
    Clog {
        /// Senders.
        from: Selector,
        /// Receivers.
        to: Selector,
        /// How long datagrams are held.
        #[serde(rename = "for", deserialize_with = "duration::de")]
        hold: Duration,
    },
    /// Stops the nodes, losing their state.
    Crash(Selector),
    /// Starts crashed nodes again with fresh state (a higher incarnation).
    Restart(Selector),
    /// Crashes the nodes and loses their disks (`engine: full`: they restart empty).
    Wipe(Selector),
    /// Freezes the nodes: incoming datagrams queue, timers wait.
    Pause(Selector),
    /// Unfreezes paused nodes.
    Resume(Selector),
    /// Makes nodes slow: each datagram that reaches one waits an extra `delay` (drawn per
    /// datagram) before its handler runs, as a node with a stalled event loop would.
    Slow(SlowSpec),
    /// Makes slow nodes handle datagrams on time again.
    Unslow(Selector),
    /// Makes the next write-ahead-log operation of the nodes fail (`engine: full` with
    /// `store: lmdb`): `{nodes: [n2], fault: sync}`.
    DiskFault(DiskFaultSpec),
    /// Plays `steps` (their `at` relative to each repetition) `times` times, `every` apart;
    /// expanded into plain steps when the file is parsed.
    Repeat(Repeat),
}

/// A storage fault on some nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskFaultSpec {
    /// The nodes whose disk fails.
    pub nodes: Selector,
    /// What fails next.
    pub fault: DiskFault,
}

/// What fails on a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskFault {
    /// A WAL append fails with nothing written.
    Write,
    /// A WAL append writes half its bytes, then fails.
    TornWrite,
    /// An `fdatasync` of the WAL fails.
    Sync,
}

/// A block of steps played several times (e.g. a flapping link).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    /// Time between the starts of two repetitions.
    #[serde(deserialize_with = "duration::de")]
    pub every: Duration,
    /// How many repetitions.
    pub times: u32,
    /// The steps of one repetition (`at` is the offset from its start).
    pub steps: Vec<Step>,
}

/// Which nodes are slow, and by how much.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowSpec {
    /// The slow nodes.
    pub nodes: Selector,
    /// The extra handling delay of each datagram (min + exponential tail, cut at max).
    pub delay: crate::Latency,
}

/// `timeline`, each step's error named by its place (`timeline[3]: ...`).
pub(super) fn de_timeline<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Step>, D::Error> {
    use serde::de::Error;
    let steps = Vec::<Value>::deserialize(d)?;
    steps
        .into_iter()
        .enumerate()
        .map(|(i, step)| {
            Step::deserialize(step).map_err(|e| D::Error::custom(format!("timeline[{i}]: {e}")))
        })
        .collect()
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = BTreeMap::<String, Value>::deserialize(d)?;
        let at = map
            .remove("at")
            .ok_or_else(|| D::Error::custom("a timeline step needs `at`"))?;
        let at = match at {
            Value::String(s) => {
                duration::parse(&s).map_err(|e| D::Error::custom(format!("at: {e}")))?
            }
            _ => return Err(D::Error::custom("`at` is a duration such as `10s`")),
        };
        if map.len() != 1 {
            let keys: Vec<_> = map.keys().cloned().collect();
            return Err(D::Error::custom(format!(
                "a timeline step has `at` and exactly one action, found {keys:?}"
            )));
        }
        let Some((key, value)) = map.into_iter().next() else {
            return Err(D::Error::custom("a timeline step needs an action"));
        };
        let tagged = Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
            tag: serde_yaml::value::Tag::new(key.clone()),
            value,
        }));
        let action = Action::deserialize(tagged)
            .map_err(|e| D::Error::custom(format!("action `{key}`: {e}")))?;
        Ok(Step {
            at,
            action,
            place: String::new(),
        })
    }
}

/// Refuses a timeline whose steps are after `duration` or out of time order (a timeline
/// with a `repeat` is sorted once expanded, so its steps may come in any order), or whose
/// `repeat`s would expand past `duration` or into more than [`MAX_TIMELINE_STEPS`]
/// steps, before anything is expanded.
fn check_timeline(timeline: &[Step], duration: Duration) -> Result<(), String> {
    let sorted_later = timeline
        .iter()
        .any(|s| matches!(s.action, Action::Repeat(_)));
    let mut steps: usize = 0;
    for (i, step) in timeline.iter().enumerate() {
        let show = crate::duration::show;
        if step.at > duration {
            return Err(format!(
                "timeline[{i}].at: {} is after duration ({})",
                show(step.at),
                show(duration)
            ));
        }
        if let Some(before) = i.checked_sub(1).map(|b| timeline[b].at)
            && step.at < before
            && !sorted_later
        {
            return Err(format!(
                "timeline[{i}].at: {} is before the step above it ({}): steps are in time order",
                show(step.at),
                show(before)
            ));
        }
        let Action::Repeat(r) = &step.action else {
            steps += 1;
            continue;
        };
        if r.times == 0 || r.steps.is_empty() {
            return Err(format!(
                "timeline[{i}].repeat: needs `times` of at least 1 and at least one step"
            ));
        }
        if let Some(j) = r
            .steps
            .iter()
            .position(|s| matches!(s.action, Action::Repeat(_)))
        {
            return Err(format!(
                "timeline[{i}].repeat.steps[{j}]: a `repeat` cannot contain another `repeat`"
            ));
        }
        let last_offset = r.steps.iter().map(|s| s.at).max().unwrap_or_default();
        let fits = r
            .every
            .checked_mul(r.times - 1)
            .and_then(|d| d.checked_add(step.at))
            .and_then(|d| d.checked_add(last_offset))
            .is_some_and(|last| last <= duration);
        if !fits {
            return Err(format!(
                "timeline[{i}].repeat: its last step comes after duration ({})",
                show(duration)
            ));
        }
        steps = steps.saturating_add((r.times as usize).saturating_mul(r.steps.len()));
    }
    if steps > MAX_TIMELINE_STEPS {
        return Err(format!(
            "timeline: {steps} steps once `repeat`s are expanded, at most {MAX_TIMELINE_STEPS}"
        ));
    }
    Ok(())
}

/// Replaces each `repeat` step by its repetitions (after [`check_timeline`]); the result
/// is stably sorted by time when anything was expanded. Every step gets its place in the
/// file.
pub(super) fn expand(timeline: Vec<Step>, duration: Duration) -> Result<Vec<Step>, String> {
    check_timeline(&timeline, duration)?;
    let mut out = Vec::with_capacity(timeline.len());
    let mut expanded = false;
    for (i, step) in timeline.into_iter().enumerate() {
        let Action::Repeat(r) = step.action else {
            out.push(Step {
                place: format!("timeline[{i}]"),
                ..step
            });
            continue;
        };
        expanded = true;
        for k in 0..r.times {
            for (j, inner) in r.steps.iter().enumerate() {
                out.push(Step {
                    at: step.at + r.every * k + inner.at,
                    action: inner.action.clone(),
                    place: format!("timeline[{i}].repeat.steps[{j}]"),
                });
            }
        }
    }
    if expanded {
        out.sort_by_key(|s| s.at);
    }
    Ok(out)
}
