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

/// `n7` -> 6.
fn seed_index(name: &str) -> Result<usize, SimError> {
    name.strip_prefix('n')
        .and_then(|k| k.parse::<usize>().ok())
        .and_then(|k| k.checked_sub(1))
        .ok_or_else(|| SimError::invalid(format!("cluster.config.seeds: bad node `{name}`")))
}

impl Settings {
    /// Parses `cluster.config` (`Null`: all defaults).
    pub(crate) fn parse(config: &Value) -> Result<Self, SimError> {
        let o: Options = if config.is_null() {
            Options::default()
        } else {
            serde_yaml::from_value(config.clone())
                .map_err(|e| SimError::invalid(format!("cluster.config: {e}")))?
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
        c.validate()
            .map_err(|e| SimError::invalid(format!("cluster.config: {e}")))?;
        let seeds = match o.seeds {
            Some(names) => names
                .iter()
                .map(|n| seed_index(n))
                .collect::<Result<_, _>>()?,
            None => vec![0],
        };
        let id_len = o.id_len.unwrap_or(0);
        if id_len > 128 {
            return Err(SimError::invalid("cluster.config.id_len: at most 128"));
        }
        Ok(Self {
            swim: c,
            seeds,
            join_stagger: o.join_stagger.unwrap_or(Duration::from_millis(5)),
            id_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_overrides_and_errors() {
        let s = Settings::parse(&Value::Null).expect("defaults");
        assert_eq!((s.swim, s.seeds), (SwimConfig::lan(), vec![0]));
        let v: Value = serde_yaml::from_str(
            "{profile: wan, lifeguard: false, probe_interval: 3s, seeds: [n2], \
             suspicion_timeout_min: 0s}",
        )
        .expect("yaml");
        let s = Settings::parse(&v).expect("valid");
        assert_eq!(s.swim.probe_interval, Duration::from_secs(3));
        assert!(!s.swim.lifeguard);
        assert_eq!(s.swim.suspicion_timeout_min, Duration::ZERO);
        assert_eq!(s.seeds, vec![1]);
        for bad in ["{nope: 1}", "{probe_interval: 10ms}", "{seeds: [x]}"] {
            let v: Value = serde_yaml::from_str(bad).expect("yaml");
            assert!(Settings::parse(&v).is_err(), "{bad}");
        }
    }
}
