//! Clients of an `engine: full` run: each load's clients send operations to their node at
//! a fixed pace (client `c` of a load with `k` clients starts `c/k` of an interval late),
//! drawing the kind from the mix and the key from the key space (hot keys first), all
//! from one seeded generator per load. Every acknowledged write is kept in the
//! [`AckLog`] with the version it produced and the version the node held before.

use std::time::Duration;

use kvs_net::{SeededRng, seeded_rng};
use kvs_sync::{Mutation, Precondition, Version, WriteOp};
use rand::Rng;
use uuid::Uuid;

use super::config::Load;
use super::node::FullNode;

/// What a client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Put,
    Delete,
    TtlPut,
    Cas,
    Get,
}

/// An acknowledged write.
#[derive(Debug, Clone)]
pub(crate) struct Ack {
    pub(crate) at: Duration,
    pub(crate) node: usize,
    pub(crate) key: String,
    pub(crate) version: Version,
    /// What the node held for the key when it wrote (the write must supersede it).
    pub(crate) held: Option<Version>,
}

/// A node's disk from a `disk_fault` to the node's next restart (`None`: the end of the
/// run): its store must refuse every write then.
#[derive(Debug, Clone)]
pub(crate) struct FaultyDisk {
    pub(crate) node: usize,
    pub(crate) from: Duration,
    pub(crate) until: Option<Duration>,
}

/// Every acknowledged write of a run, in order.
#[derive(Debug, Default)]
pub(crate) struct AckLog {
    pub(crate) acks: Vec<Ack>,
    /// Every key a client touched.
    pub(crate) keys: std::collections::BTreeSet<String>,
    /// The disk faults injected, in order.
    pub(crate) faulty_disks: Vec<FaultyDisk>,
}

/// The operation a client sends next.
pub(crate) struct Planned {
    pub(crate) at: Duration,
    pub(crate) load: usize,
    pub(crate) client: usize,
}

/// The clients of every load.
pub(crate) struct Workload {
    loads: Vec<Load>,
    rngs: Vec<SeededRng>,
    /// Per load and client: the time of its next operation.
    next: Vec<Vec<Duration>>,
    /// Per load: operations sent.
    counts: Vec<u64>,
    sent: u64,
}

impl Workload {
    pub(crate) fn new(loads: Vec<Load>, seed: u64) -> Self {
        let rngs = (0..loads.len())
            .map(|i| seeded_rng(seed, &format!("workload/{i}")))
            .collect();
        let next = loads
            .iter()
            .map(|load| {
                let k = load.spec.clients as u32;
                (0..k)
                    .map(|c| load.spec.from + load.interval * c / k)
                    .collect()
            })
            .collect();
        Self {
            counts: vec![0; loads.len()],
            loads,
            rngs,
            next,
            sent: 0,
        }
    }

    /// The next operation due (earliest, then lowest load and client).
    pub(crate) fn peek(&self) -> Option<Planned> {
        let mut best: Option<Planned> = None;
        for (load, times) in self.next.iter().enumerate() {
            for (client, &at) in times.iter().enumerate() {
                if at >= self.loads[load].spec.until {
                    continue;
                }
                if best.as_ref().is_none_or(|b| at < b.at) {
                    best = Some(Planned { at, load, client });
                }
            }
        }
        best
    }

    /// Runs the planned operation against `nodes`; returns a trace line (node, text).
    pub(crate) fn run(
        &mut self,
        planned: &Planned,
        nodes: &[FullNode],
        log: &mut AckLog,
    ) -> (usize, String) {
        let Planned { at, load, client } = *planned;
        self.next[load][client] = at + self.loads[load].interval;
        self.sent += 1;
        let spec = &self.loads[load].spec;
        let targets = &self.loads[load].nodes;
        let node = targets[client % targets.len()];
        let rng = &mut self.rngs[load];
        let key = if spec.sequential {
            self.counts[load] % spec.keys as u64
        } else {
            pick_key(rng, spec.keys, spec.hot.map(|h| (h.keys, h.share))) as u64
        };
        self.counts[load] += 1;
        let key = format!("{}{key}", spec.prefix);
        let kind = pick_kind(rng, &spec.mix);
        let uuid = Uuid::from_u128(rng.r#gen());
        let data = format!(
            "{{\"c\":{client},\"n\":{},\"pad\":\"{}\"}}",
            self.sent,
            "x".repeat(spec.value_bytes.saturating_sub(20))
        );
        log.keys.insert(key.clone());
        let target = &nodes[node];
        if !target.serves() {
            return (node, format!("{kind:?} {key}: unavailable"));
        }
        let (mutation, precondition) = match kind {
            Kind::Get => {
                let held = target.store.get(&key);
                let what = match held {
                    Ok(Some(v)) if v.is_live(target.now_ms()) => format!("{}", v.id.uuid),
                    Ok(_) => "absent".into(),
                    Err(e) => format!("error {e}"),
                };
                return (node, format!("get {key}: {what}"));
            }
            Kind::Put => (Mutation::Put { data, ttl_ms: None }, Precondition::None),
            Kind::TtlPut => (
                Mutation::Put {
                    data,
                    ttl_ms: Some(u64::try_from(spec.ttl.as_millis()).unwrap_or(u64::MAX)),
                },
                Precondition::None,
            ),
            Kind::Delete => (Mutation::Delete, Precondition::None),
            Kind::Cas => {
                let now = target.now_ms();
                let precondition = match target.store.get(&key) {
                    Ok(Some(v)) if v.is_live(now) => Precondition::IfMatch(v.id.uuid),
                    _ => Precondition::IfAbsent,
                };
                (Mutation::Put { data, ttl_ms: None }, precondition)
            }
        };
        let op = WriteOp {
            key: key.clone(),
            mutation,
            precondition,
            uuid,
            origin_joined_at: target.joined_at(),
            owner: None,
            group: None,
            permissions: 0,
            actor: None,
        };
        match target.write(op) {
            Ok((held, Ok(outcome))) => {
                let line = format!(
                    "{kind:?} {key}: ack {}@{}",
                    outcome.version.id.uuid, outcome.version.id.timestamp
                );
                log.acks.push(Ack {
                    at,
                    node,
                    key,
                    version: outcome.version,
                    held,
                });
                (node, line)
            }
            Ok((_, Err(refused))) => (node, format!("{kind:?} {key}: {refused}")),
            Err(error) => (node, format!("{kind:?} {key}: error {error}")),
        }
    }

    /// Operations sent so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }
}

fn pick_key(rng: &mut SeededRng, keys: usize, hot: Option<(usize, f64)>) -> usize {
    match hot {
        Some((hot_keys, share)) if rng.gen_bool(share) => rng.gen_range(0..hot_keys),
        _ => rng.gen_range(0..keys),
    }
}

fn pick_kind(rng: &mut SeededRng, mix: &super::config::Mix) -> Kind {
    let shares = [
        (Kind::Put, mix.put),
        (Kind::Delete, mix.delete),
        (Kind::TtlPut, mix.ttl_put),
        (Kind::Cas, mix.cas),
        (Kind::Get, mix.get),
    ];
    let total: f64 = shares.iter().map(|(_, s)| s).sum();
    let mut draw = rng.gen_range(0.0..total);
    for (kind, share) in shares {
        if draw < share {
            return kind;
        }
        draw -= share;
    }
    Kind::Put
}
