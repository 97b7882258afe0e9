//! `cluster.config` of a `protocol: swim` cluster: the preset (`profile: lan|wan`),
//! `lifeguard`, how nodes join (`seeds`, `join_stagger`), the id length, and any
//! [`SwimConfig`] field by its own name. Unknown keys are errors.

use std::time::Duration;

use kvs_membership::SwimConfig;
use serde::Deserialize;
use serde_yaml::Value;

use crate::{SimError, duration};

/// The SWIM preset a cluster starts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Profile {
    /// `SwimConfig::lan()`.
    #[default]
    Lan,
    /// `SwimConfig::wan()`.
    Wan,
}

/// The file's keys; every `SwimConfig` override is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default)]
    profile: Profile,
    lifeguard: Option<bool>,
    seeds: Option<Vec<String>>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    join_stagger: Option<Duration>,
    id_len: Option<usize>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    probe_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    probe_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    probe_timeout_min: Option<Duration>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    probe_timeout_max: Option<Duration>,
    indirect_checks: Option<usize>,
    suspicion_mult: Option<u32>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    suspicion_timeout_min: Option<Duration>,
    suspicion_max_mult: Option<u32>,
    suspicion_confirmations: Option<usize>,
    retransmit_mult: Option<u32>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    gossip_interval: Option<Duration>,
    gossip_fanout: Option<usize>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    push_pull_interval: Option<Duration>,
    push_pull_scale_threshold: Option<usize>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    push_pull_interval_max: Option<Duration>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    reannounce_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    join_retry_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    reap_after: Option<Duration>,
    max_health: Option<u32>,
    max_payload: Option<usize>,
}

/// The resolved settings of a SWIM cluster.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The core's settings (preset plus overrides), validated.
    pub(crate) swim: SwimConfig,
    /// Node indexes every node joins through (default: `n1`).
    pub(crate) seeds: Vec<usize>,
    /// Node `i` first joins at `i · join_stagger` (default 5 ms).
    pub(crate) join_stagger: Duration,
    /// Ids are `n<k>` padded with `.` to this length (default 0: no padding; 36 gives
    /// UUID-sized ids, as the node binary uses, for realistic byte counts).
    pub(crate) id_len: usize,
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

impl Settings {
    /// Parses the options of a cluster of `nodes` nodes (`Null`: all defaults), found at
    /// `key` in the file (errors name it): `cluster.config` of a SWIM cluster,
    /// `cluster.config.membership` of a full one. Seeds must be nodes of the cluster, and
    /// a cluster of more than one node needs one.
    pub(crate) fn parse(
        config: &Value,
        nodes: usize,
        duration: Duration,
        key: &str,
    ) -> Result<Self, SimError> {
        let invalid = |e: &dyn std::fmt::Display| SimError::invalid(e.to_string()).at(key);
        let o: Options = if config.is_null() {
            Options::default()
        } else {
            serde_yaml::from_value(config.clone()).map_err(|e| invalid(&e))?
        };
        let mut c = match o.profile {
            Profile::Lan => SwimConfig::lan(),
            Profile::Wan => SwimConfig::wan(),
        };
        set(&mut c.lifeguard, o.lifeguard);
        set(&mut c.probe_interval, o.probe_interval);
        set(&mut c.probe_timeout, o.probe_timeout);
        set(&mut c.probe_timeout_min, o.probe_timeout_min);
        set(&mut c.probe_timeout_max, o.probe_timeout_max);
        set(&mut c.indirect_checks, o.indirect_checks);
        set(&mut c.suspicion_mult, o.suspicion_mult);
        set(&mut c.suspicion_timeout_min, o.suspicion_timeout_min);
        set(&mut c.suspicion_max_mult, o.suspicion_max_mult);
        set(&mut c.suspicion_confirmations, o.suspicion_confirmations);
        set(&mut c.retransmit_mult, o.retransmit_mult);
        set(&mut c.gossip_interval, o.gossip_interval);
        set(&mut c.gossip_fanout, o.gossip_fanout);
        set(&mut c.push_pull_interval, o.push_pull_interval);
        set(
            &mut c.push_pull_scale_threshold,
            o.push_pull_scale_threshold,
        );
        set(&mut c.push_pull_interval_max, o.push_pull_interval_max);
        set(&mut c.reannounce_interval, o.reannounce_interval);
        set(&mut c.join_retry_interval, o.join_retry_interval);
        set(&mut c.reap_after, o.reap_after);
        set(&mut c.max_health, o.max_health);
        set(&mut c.max_payload, o.max_payload);
        c.validate().map_err(|e| invalid(&e))?;
        let seeds: Vec<usize> = match o.seeds {
            Some(names) => names
                .iter()
                .map(|name| crate::spec::node_index(name, nodes))
                .collect::<Result<_, _>>()
                .map_err(|e| e.at("seeds").at(key))?,
            None => vec![0],
        };
        if seeds.is_empty() && nodes > 1 {
            return Err(invalid(&"seeds: empty: no node would find another"));
        }
        let id_len = o.id_len.unwrap_or(0);
        if id_len > 128 {
            return Err(invalid(&"id_len: at most 128"));
        }
        let join_stagger = o.join_stagger.unwrap_or(Duration::from_millis(5));
        let last_join = join_stagger
            .checked_mul(u32::try_from(nodes.saturating_sub(1)).unwrap_or(u32::MAX))
            .filter(|&at| at <= duration);
        if last_join.is_none() {
            return Err(invalid(&format_args!(
                "join_stagger: n{nodes} would first join after duration ({})",
                duration::show(duration)
            )));
        }
        Ok(Self {
            swim: c,
            seeds,
            join_stagger,
            id_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn presets_overrides_and_errors() {
        let s = Settings::parse(&Value::Null, 3, MINUTE, "cluster.config").expect("defaults");
        assert_eq!((s.swim, s.seeds), (SwimConfig::lan(), vec![0]));
        let v: Value = serde_yaml::from_str(
            "{profile: wan, lifeguard: false, probe_interval: 3s, seeds: [n2], \
             suspicion_timeout_min: 0s}",
        )
        .expect("yaml");
        let s = Settings::parse(&v, 3, MINUTE, "cluster.config").expect("valid");
        assert_eq!(s.swim.probe_interval, Duration::from_secs(3));
        assert!(!s.swim.lifeguard);
        assert_eq!(s.swim.suspicion_timeout_min, Duration::ZERO);
        assert_eq!(s.seeds, vec![1]);
        for bad in [
            "{nope: 1}",
            "{probe_interval: 10ms}",
            "{seeds: [x]}",
            "{seeds: [n4]}",
            "{seeds: [n01]}",
            "{seeds: []}",
            "{join_stagger: 31s}",
        ] {
            let v: Value = serde_yaml::from_str(bad).expect("yaml");
            let e = Settings::parse(&v, 3, MINUTE, "cluster.config").expect_err(bad);
            assert!(e.to_string().contains("cluster.config"), "{bad}: {e}");
        }
        let alone: Value = serde_yaml::from_str("{seeds: []}").expect("yaml");
        assert!(Settings::parse(&alone, 1, MINUTE, "cluster.config").is_ok());
    }
}
