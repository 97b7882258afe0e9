//! The nemesis of an `engine: full` scenario (`nemesis:`): a timeline of faults drawn
//! from the run seed, so that every seed plays a different history. From `from` to
//! `until` it applies one fault at a time, each lasting between `hold.min` and
//! `hold.max` and undone before the next: a partition of the nodes into two random
//! groups (healed after), a crash of a random node (restarted after, its disk kept), or
//! a pause of one (resumed after). Nothing is left broken at `until`, so the quiet phase
//! after it judges liveness.

use std::collections::BTreeSet;
use std::time::Duration;

use kvs_net::seeded_rng;
use rand::Rng;
use rand::seq::SliceRandom;
use serde::Deserialize;
use serde_yaml::Value;

use crate::fabric::NetOp;
use crate::timeline::{NodeOp, Op, TimedOp};
use crate::{SimError, duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Fault {
    Partition,
    Crash,
    Pause,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hold {
    #[serde(deserialize_with = "duration::de")]
    min: Duration,
    #[serde(deserialize_with = "duration::de")]
    max: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NemesisSpec {
    #[serde(deserialize_with = "duration::de")]
    from: Duration,
    #[serde(deserialize_with = "duration::de")]
    until: Duration,
    hold: Hold,
    /// Quiet time between two faults, at most (at random from zero).
    #[serde(default = "default_gap", deserialize_with = "duration::de")]
    gap: Duration,
    faults: Vec<Fault>,
}

/// The most faults a nemesis may draw (counted as `(until - from) / hold.min`).
const MAX_FAULTS: u128 = 100_000;

fn default_gap() -> Duration {
    Duration::from_secs(1)
}

fn uniform(rng: &mut impl Rng, min: Duration, max: Duration) -> Duration {
    let (lo, hi) = (min.as_micros() as u64, max.as_micros() as u64);
    Duration::from_micros(rng.gen_range(lo..=hi))
}

fn step(at: Duration, what: String, op: Op) -> TimedOp {
    TimedOp { at, what, op }
}

/// The faults of `nemesis` (none when it is absent) for `n` nodes and a run of
/// `duration` with `seed`, in time order.
pub(crate) fn plan(
    value: &Value,
    n: usize,
    duration: Duration,
    seed: u64,
) -> Result<Vec<TimedOp>, SimError> {
    if value.is_null() {
        return Ok(Vec::new());
    }
    let spec: NemesisSpec = serde_yaml::from_value(value.clone())
        .map_err(|e| SimError::invalid(format!("nemesis: {e}")))?;
    if spec.faults.is_empty() || spec.hold.min.is_zero() || spec.hold.max < spec.hold.min {
        return Err(SimError::invalid(
            "nemesis: at least one fault, and 0 < hold.min <= hold.max",
        ));
    }
    if spec.until <= spec.from || n < 2 {
        return Err(SimError::invalid(
            "nemesis: until must be after from, and the cluster needs two nodes",
        ));
    }
    if spec.until > duration {
        return Err(SimError::invalid(format!(
            "nemesis.until: {} is after duration ({})",
            duration::show(spec.until),
            duration::show(duration)
        )));
    }
    let most = (spec.until - spec.from).as_micros() / spec.hold.min.as_micros().max(1);
    if most > MAX_FAULTS {
        return Err(SimError::invalid(format!(
            "nemesis: up to {most} faults of hold.min between from and until, at most {MAX_FAULTS}"
        )));
    }
    let mut rng = seeded_rng(seed, "nemesis");
    let mut out = Vec::new();
    let mut at = spec.from;
    loop {
        let hold = uniform(&mut rng, spec.hold.min, spec.hold.max);
        if at + hold > spec.until {
            break;
        }
        let fault = spec.faults[rng.gen_range(0..spec.faults.len())];
        let end = at + hold;
        match fault {
            Fault::Partition => {
                let mut nodes: Vec<usize> = (0..n).collect();
                nodes.shuffle(&mut rng);
                let cut = rng.gen_range(1..n);
                let minority: BTreeSet<usize> = nodes[..cut].iter().copied().collect();
                let label = (0..n)
                    .map(|i| u32::from(minority.contains(&i)) + 1)
                    .collect();
                let names: Vec<String> = minority.iter().map(|&i| crate::node_name(i)).collect();
                out.push(step(
                    at,
                    format!("nemesis: partition {names:?} from the rest"),
                    Op::Net(NetOp::Partition(label)),
                ));
                out.push(step(end, "nemesis: heal".into(), Op::Net(NetOp::Heal)));
            }
            Fault::Crash | Fault::Pause => {
                let node = rng.gen_range(0..n);
                let (down, up) = match fault {
                    Fault::Crash => (NodeOp::Crash, NodeOp::Restart),
                    _ => (NodeOp::Pause, NodeOp::Resume),
                };
                let name = crate::node_name(node);
                out.push(step(
                    at,
                    format!("nemesis: {down:?} {name}"),
                    Op::Node(down, vec![node]),
                ));
                out.push(step(
                    end,
                    format!("nemesis: {up:?} {name}"),
                    Op::Node(up, vec![node]),
                ));
            }
        }
        at = end + uniform(&mut rng, Duration::ZERO, spec.gap);
    }
    Ok(out)
}
