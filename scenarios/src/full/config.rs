//! The options of an `engine: full` scenario, parsed strictly: `cluster.config` (the
//! node's own settings: membership timing under `membership`, `sync_interval`,
//! `tombstone_ttl`, `max_clock_skew`, `purge_interval`, `store`), `clocks` (offset and drift per
//! node) and `workload` (clients, rate, keys, hot keys, the mix of operations).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

use crate::protocols::SwimSettings;
use crate::spec::Selector;
use crate::{SimError, duration};

/// `cluster.config` of a full cluster.
#[derive(Debug, Clone)]
pub(crate) struct NodeSettings {
    /// Membership timing and seeds (the `swim` protocol's `cluster.config` keys).
    pub(crate) membership: SwimSettings,
    pub(crate) sync_interval: Duration,
    pub(crate) tombstone_ttl: Duration,
    pub(crate) max_clock_skew: Duration,
    /// How often a node purges expired keys and old tombstones.
    pub(crate) purge_interval: Duration,
    /// What each node stores on.
    pub(crate) store: StoreKind,
}

/// A node's store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StoreKind {
    /// `kvs_sync::MemoryStore`, kept across crashes (fast).
    #[default]
    Memory,
    /// The node's own `DurableStore` (LMDB behind its write-ahead log) in a temporary
    /// directory: a crash closes it and a restart reopens it (replaying the log); disk
    /// faults apply.
    Lmdb,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeOptions {
    #[serde(default)]
    membership: Value,
    #[serde(default, deserialize_with = "duration::de_opt")]
    sync_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    tombstone_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    max_clock_skew: Option<Duration>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    purge_interval: Option<Duration>,
    #[serde(default)]
    store: StoreKind,
}

fn from_value<T: for<'de> Deserialize<'de> + Default>(
    value: &Value,
    key: &str,
) -> Result<T, SimError> {
    if value.is_null() {
        return Ok(T::default());
    }
    serde_yaml::from_value(value.clone()).map_err(|e| SimError::invalid(format!("{key}: {e}")))
}

impl NodeSettings {
    pub(crate) fn parse(
        config: &Value,
        nodes: usize,
        duration: Duration,
    ) -> Result<Self, SimError> {
        let o: NodeOptions = from_value(config, "cluster.config")?;
        let settings = Self {
            membership: SwimSettings::parse(
                &o.membership,
                nodes,
                duration,
                "cluster.config.membership",
            )?,
            sync_interval: o.sync_interval.unwrap_or(Duration::from_secs(2)),
            tombstone_ttl: o.tombstone_ttl.unwrap_or(Duration::from_secs(3600)),
            max_clock_skew: o.max_clock_skew.unwrap_or(Duration::from_secs(30)),
            purge_interval: o.purge_interval.unwrap_or(Duration::from_secs(1)),
            store: o.store,
        };
        if settings.sync_interval.is_zero() || settings.purge_interval.is_zero() {
            return Err(SimError::invalid(
                "cluster.config: sync_interval and purge_interval must be above zero",
            ));
        }
        Ok(settings)
    }
}

/// One node's wall clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ClockSpec {
    /// Microseconds ahead (negative: behind) of true time.
    pub(crate) offset_us: i64,
    /// Parts per million its clock runs fast (negative: slow).
    pub(crate) drift_ppm: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockOptions {
    offset: Option<String>,
    #[serde(default)]
    drift_ppm: i64,
}

/// `+10s`, `-250ms`, `3s` -> signed microseconds.
fn signed_micros(text: &str) -> Result<i64, String> {
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let d = duration::parse(rest)?;
    let us = i64::try_from(d.as_micros()).map_err(|_| format!("`{text}` is too large"))?;
    Ok(sign * us)
}

/// `clocks`: node name -> clock; unlisted nodes keep true time.
pub(crate) fn parse_clocks(value: &Value, n: usize) -> Result<Vec<ClockSpec>, SimError> {
    let raw: BTreeMap<String, ClockOptions> = from_value(value, "clocks")?;
    let mut out = vec![ClockSpec::default(); n];
    for (name, o) in raw {
        let nodes = Selector::Keyword(name.clone())
            .resolve(n)
            .map_err(|e| e.at(&format!("clocks.{name}")))?;
        let offset_us = match &o.offset {
            Some(text) => signed_micros(text)
                .map_err(|e| SimError::invalid(format!("clocks.{name}.offset: {e}")))?,
            None => 0,
        };
        if o.drift_ppm.abs() > 100_000 {
            return Err(SimError::invalid(format!(
                "clocks.{name}.drift_ppm: at most 100000 either way"
            )));
        }
        for i in nodes {
            out[i] = ClockSpec {
                offset_us,
                drift_ppm: o.drift_ppm,
            };
        }
    }
    Ok(out)
}

/// What share of a load each kind of operation takes.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Mix {
    #[serde(default)]
    pub(crate) put: f64,
    #[serde(default)]
    pub(crate) delete: f64,
    /// Puts with `ttl`.
    #[serde(default)]
    pub(crate) ttl_put: f64,
    /// Compare-and-set: read the key on the client's node, write only if unchanged.
    #[serde(default)]
    pub(crate) cas: f64,
    #[serde(default)]
    pub(crate) get: f64,
}

/// Keys that take a share of the operations (conflicts).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Hot {
    /// The first `keys` keys are hot ...
    pub(crate) keys: usize,
    /// ... and take this share of operations.
    pub(crate) share: f64,
}

/// One load: `clients` clients, each pinned to one of `nodes` in turn.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadSpec {
    pub(crate) clients: usize,
    /// Operations per second over all clients: `500/s`.
    pub(crate) rate: String,
    /// Keys `k0` .. `k{keys-1}` (with `prefix`).
    pub(crate) keys: usize,
    #[serde(default = "default_prefix")]
    pub(crate) prefix: String,
    pub(crate) hot: Option<Hot>,
    /// Keys in order (`k0`, `k1`, ... round and round) instead of at random: a load
    /// that fills the key space.
    #[serde(default)]
    pub(crate) sequential: bool,
    pub(crate) mix: Mix,
    #[serde(default = "default_ttl", deserialize_with = "duration::de")]
    pub(crate) ttl: Duration,
    #[serde(default, deserialize_with = "duration::de")]
    pub(crate) from: Duration,
    #[serde(deserialize_with = "duration::de")]
    pub(crate) until: Duration,
    /// The nodes clients talk to (default: all).
    pub(crate) nodes: Option<Selector>,
    /// Bytes of each value, about (default 32).
    #[serde(default = "default_value_bytes")]
    pub(crate) value_bytes: usize,
}

fn default_prefix() -> String {
    "k".into()
}

fn default_ttl() -> Duration {
    Duration::from_secs(5)
}

fn default_value_bytes() -> usize {
    32
}

/// The most clients one load may have (each has its own schedule).
const MAX_CLIENTS: usize = 10_000;

/// The largest `value_bytes`: the node's own default `max_value_bytes` (1 MiB).
const MAX_VALUE_BYTES: usize = 1_048_576;

/// The most operations all loads may send in a run (each is logged with its answer):
/// 100 times the largest shipped workload.
const MAX_OPERATIONS: f64 = 10_000_000.0;

/// The most bytes of values the loads may leave held over all nodes: each node holds every
/// key's value and up to ten revisions of it.
const MAX_HELD_BYTES: f64 = 2.0 * 1024.0 * 1024.0 * 1024.0;

/// Refuses loads that would send more than [`MAX_OPERATIONS`] or leave more than
/// [`MAX_HELD_BYTES`] held on `n` nodes (each limit of a load alone passing).
fn check_budget(loads: &[Load], n: usize) -> Result<(), SimError> {
    let mut operations = 0.0;
    let mut held = 0.0;
    for load in loads {
        let sent = (load.spec.until - load.spec.from).as_secs_f64() / load.interval.as_secs_f64()
            * load.spec.clients as f64;
        operations += sent;
        let versions = sent.min(load.spec.keys as f64 * 10.0);
        held += versions * (load.spec.value_bytes as f64 + 64.0) * n as f64;
    }
    if operations > MAX_OPERATIONS {
        return Err(SimError::invalid(format!(
            "workload: about {operations:.0} operations in all, at most {MAX_OPERATIONS:.0}"
        )));
    }
    if held > MAX_HELD_BYTES {
        return Err(SimError::invalid(format!(
            "workload: about {} MiB of values held over the nodes (keys x value_bytes x \
             nodes, with up to ten revisions each), at most {} MiB",
            (held / 1048576.0).round(),
            MAX_HELD_BYTES / 1048576.0
        )));
    }
    Ok(())
}

/// A resolved load.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub(crate) spec: LoadSpec,
    /// Between two operations of one client.
    pub(crate) interval: Duration,
    pub(crate) nodes: Vec<usize>,
}

/// `workload`: a list of loads.
pub(crate) fn parse_workload(value: &Value, n: usize) -> Result<Vec<Load>, SimError> {
    let specs: Vec<LoadSpec> = from_value(value, "workload")?;
    specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            let bad = |why: String| SimError::invalid(why).at(&format!("workload[{i}]"));
            let per_second: f64 = spec
                .rate
                .strip_suffix("/s")
                .and_then(|r| r.trim().parse().ok())
                .filter(|r: &f64| r.is_finite() && (0.001..=1_000_000.0).contains(r))
                .ok_or_else(|| {
                    bad(format!(
                        "rate `{}`: write e.g. `500/s` (0.001/s to 1000000/s)",
                        spec.rate
                    ))
                })?;
            if spec.clients == 0 || spec.keys == 0 {
                return Err(bad("clients and keys must be above zero".into()));
            }
            if spec.clients > MAX_CLIENTS {
                return Err(bad(format!(
                    "clients: {}, at most {MAX_CLIENTS}",
                    spec.clients
                )));
            }
            if spec.value_bytes > MAX_VALUE_BYTES {
                return Err(bad(format!(
                    "value_bytes: {}, at most {MAX_VALUE_BYTES} (the node's max_value_bytes)",
                    spec.value_bytes
                )));
            }
            let m = spec.mix;
            let shares = [m.put, m.delete, m.ttl_put, m.cas, m.get];
            if shares.iter().any(|s| !(0.0..=1.0).contains(s)) || shares.iter().sum::<f64>() <= 0.0
            {
                return Err(bad("mix: shares are 0..=1 and not all zero".into()));
            }
            if let Some(hot) = spec.hot
                && (hot.keys == 0 || hot.keys > spec.keys || !(0.0..=1.0).contains(&hot.share))
            {
                return Err(bad("hot: 1..=keys keys, share 0..=1".into()));
            }
            if spec.until <= spec.from {
                return Err(bad("until must be after from".into()));
            }
            let nodes = match &spec.nodes {
                Some(sel) => sel
                    .resolve(n)
                    .map_err(|e| e.at(&format!("workload[{i}].nodes")))?,
                None => (0..n).collect(),
            };
            if nodes.is_empty() {
                return Err(bad(
                    "nodes: selects no node for the clients to talk to".into()
                ));
            }
            let interval = Duration::from_secs_f64(spec.clients as f64 / per_second);
            Ok(Load {
                spec,
                interval,
                nodes,
            })
        })
        .collect::<Result<Vec<Load>, SimError>>()
        .and_then(|loads| check_budget(&loads, n).map(|()| loads))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).expect("yaml")
    }

    #[test]
    fn clocks_take_signed_offsets_and_name_bad_keys() {
        let clocks = parse_clocks(
            &yaml("{n2: {offset: +10s, drift_ppm: 200}, n3: {offset: -250ms}}"),
            3,
        )
        .expect("valid");
        assert_eq!(clocks[0], ClockSpec::default());
        assert_eq!(
            clocks[1],
            ClockSpec {
                offset_us: 10_000_000,
                drift_ppm: 200
            }
        );
        assert_eq!(clocks[2].offset_us, -250_000);
        let err = parse_clocks(&yaml("{n2: {ofset: 1s}}"), 3).unwrap_err();
        assert!(err.to_string().contains("ofset"), "{err}");
        assert!(parse_clocks(&yaml("{n9: {offset: 1s}}"), 3).is_err());
    }

    #[test]
    fn workloads_resolve_and_refuse_nonsense() {
        let loads = parse_workload(
            &yaml(
                "[{clients: 4, rate: 200/s, keys: 50, mix: {put: 0.8, delete: 0.2}, until: 10s}]",
            ),
            3,
        )
        .expect("valid");
        assert_eq!(loads[0].interval, Duration::from_millis(20));
        assert_eq!(loads[0].nodes, vec![0, 1, 2]);
        for bad in [
            "[{clients: 4, rate: fast, keys: 5, mix: {put: 1}, until: 1s}]",
            "[{clients: 0, rate: 1/s, keys: 5, mix: {put: 1}, until: 1s}]",
            "[{clients: 1, rate: 1/s, keys: 5, mix: {put: 0}, until: 1s}]",
            "[{clients: 1, rate: 1/s, keys: 5, mix: {put: 1}, hot: {keys: 9, share: 0.5}, until: 1s}]",
            "[{clients: 1, rate: 1/s, keys: 5, mix: {put: 1, pot: 1}, until: 1s}]",
        ] {
            assert!(parse_workload(&yaml(bad), 3).is_err(), "{bad}");
        }
    }
}
