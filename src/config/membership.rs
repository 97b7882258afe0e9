//! The membership keys of the config: the `lan` or `wan` preset with the timing
//! overrides applied, the probe timeout's adaptive bounds derived from them, and the
//! checks that keep the protocol's deadlines within range.

use std::time::Duration;

use super::{Config, KeyError};

impl Config {
    /// The membership protocol's settings: the preset, then the overrides. The probe
    /// timeout's adaptive bounds follow `probe_interval` and `probe_timeout` (see
    /// [`probe_timeouts`]); an error names the key.
    pub fn swim_config(&self) -> Result<kvs_membership::SwimConfig, KeyError> {
        let preset = match self.membership_profile.as_str() {
            "lan" => kvs_membership::SwimConfig::lan(),
            "wan" => kvs_membership::SwimConfig::wan(),
            other => {
                let why = format!("{other:?} is not lan or wan");
                return Err(KeyError::new("membership_profile", why));
            }
        };
        let mut swim = probe_timeouts(
            preset,
            self.probe_interval.map(|d| d.0),
            self.probe_timeout.map(|d| d.0),
        )?;
        if let Some(n) = self.indirect_probes {
            swim.indirect_checks = n;
        }
        if let Some(n) = self.suspicion_multiplier {
            swim.suspicion_mult = n;
        }
        if let Some(d) = self.gossip_interval {
            swim.gossip_interval = d.0;
        }
        if let Some(n) = self.gossip_fanout {
            swim.gossip_fanout = n;
        }
        if let Some(d) = self.push_pull_interval {
            swim.push_pull_interval = d.0;
            swim.push_pull_interval_max = swim.push_pull_interval_max.max(d.0);
        }
        // Left out, it is the preset's, or twice a long push_pull_interval.
        swim.reap_after = match self.member_reap_after {
            Some(d) => d.0,
            None => swim
                .reap_after
                .max(swim.push_pull_interval.saturating_mul(2)),
        };
        check_membership_keys(&swim)?;
        // The keys above cannot break what remains: the preset's own fields.
        swim.validate()
            .map_err(|e| KeyError::new("membership_profile", e.to_string()))?;
        Ok(swim)
    }
}

/// `preset` with `probe_interval` and `probe_timeout` applied. A probe timeout left out
/// is the preset's, or the preset's share of `probe_interval` when that is shorter; the
/// bounds it adapts within scale with it, and the upper one stays below `probe_interval`.
fn probe_timeouts(
    mut swim: kvs_membership::SwimConfig,
    interval: Option<Duration>,
    timeout: Option<Duration>,
) -> Result<kvs_membership::SwimConfig, KeyError> {
    let preset = swim.clone();
    let interval = interval.unwrap_or(preset.probe_interval);
    if interval.is_zero() {
        return Err(KeyError::new("probe_interval", "must be above zero"));
    }
    let timeout = timeout.unwrap_or_else(|| {
        preset
            .probe_timeout
            .min(scale(preset.probe_timeout, interval, preset.probe_interval))
    });
    if timeout.is_zero() {
        return Err(KeyError::new("probe_timeout", "must be above zero"));
    }
    if timeout >= interval {
        let why = format!("{timeout:?} must be below probe_interval ({interval:?})");
        return Err(KeyError::new("probe_timeout", why));
    }
    let min = scale(preset.probe_timeout_min, timeout, preset.probe_timeout);
    let max = scale(preset.probe_timeout_max, timeout, preset.probe_timeout);
    swim.probe_interval = interval;
    swim.probe_timeout = timeout;
    swim.probe_timeout_min = min.max(Duration::from_millis(1)).min(timeout);
    swim.probe_timeout_max = max.min(timeout + (interval - timeout) / 2).max(timeout);
    Ok(swim)
}

/// `value * to / from`.
fn scale(value: Duration, to: Duration, from: Duration) -> Duration {
    let nanos = value.as_nanos() * to.as_nanos() / from.as_nanos().max(1);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The longest `probe_interval`, `gossip_interval` and `push_pull_interval` accepted.
///
/// The membership protocol computes deadlines from them with `Duration` arithmetic, which
/// panics on overflow. The longest is Lifeguard's initial suspicion timeout,
/// `suspicion_max_mult` (6) · `suspicion_multiplier` · `log10(N)` (below 20 for any N) ·
/// `probe_interval`: with these bounds about 13 years, far inside `Duration` (and inside
/// the timers', which take a deadline of centuries), while an hour-long period or a
/// thousandfold multiplier is already far beyond any use (the presets: 200 ms to 60 s,
/// ×4 to ×6).
const MAX_MEMBERSHIP_INTERVAL: Duration = Duration::from_secs(3600);

/// The largest `suspicion_multiplier` accepted (see [`MAX_MEMBERSHIP_INTERVAL`]).
const MAX_SUSPICION_MULTIPLIER: u32 = 1000;

/// The longest `member_reap_after` accepted: far beyond any use, far inside the timers'
/// range. The shortest is twice `push_pull_interval` (see [`check_membership_keys`]).
const MAX_MEMBER_REAP_AFTER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Checks the membership overrides: an error names the key.
///
/// Each must be above zero: zero intervals and multipliers stop the protocol's timers;
/// with `indirect_probes: 0` a missed ack never gets the `ping-req` through k other
/// members that SWIM relies on before suspecting (`shared/spec/cluster.md`); with
/// `gossip_fanout: 0` a gossip round has nobody to send to and drops the pending updates,
/// which then never ride on the probes either. The intervals and the multiplier are also
/// bounded (see [`MAX_MEMBERSHIP_INTERVAL`]). `member_reap_after` is at least twice
/// `push_pull_interval`: a member forgotten sooner may be brought back as alive by a
/// peer that has not heard of its end yet (its full member list still says so), then
/// probed and declared dead again; and at most [`MAX_MEMBER_REAP_AFTER`].
fn check_membership_keys(swim: &kvs_membership::SwimConfig) -> Result<(), KeyError> {
    let zero = [
        ("gossip_interval", swim.gossip_interval.is_zero()),
        ("push_pull_interval", swim.push_pull_interval.is_zero()),
        ("suspicion_multiplier", swim.suspicion_mult == 0),
        ("indirect_probes", swim.indirect_checks == 0),
        ("gossip_fanout", swim.gossip_fanout == 0),
    ];
    if let Some((key, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
        return Err(KeyError::new(key, "must be above zero"));
    }
    let intervals = [
        ("probe_interval", swim.probe_interval),
        ("gossip_interval", swim.gossip_interval),
        ("push_pull_interval", swim.push_pull_interval),
    ];
    if let Some((key, _)) = intervals
        .iter()
        .find(|(_, interval)| *interval > MAX_MEMBERSHIP_INTERVAL)
    {
        let max = kvs_api::format_duration(MAX_MEMBERSHIP_INTERVAL);
        return Err(KeyError::new(key, format!("must be at most {max}")));
    }
    if swim.suspicion_mult > MAX_SUSPICION_MULTIPLIER {
        let why = format!("must be at most {MAX_SUSPICION_MULTIPLIER}");
        return Err(KeyError::new("suspicion_multiplier", why));
    }
    let shortest = swim.push_pull_interval.saturating_mul(2);
    if swim.reap_after < shortest {
        let why = format!(
            "{} is below twice push_pull_interval ({}): a member would be forgotten before every node has exchanged its member list",
            kvs_api::format_duration(swim.reap_after),
            kvs_api::format_duration(shortest)
        );
        return Err(KeyError::new("member_reap_after", why));
    }
    if swim.reap_after > MAX_MEMBER_REAP_AFTER {
        let why = format!(
            "{} is above {}",
            kvs_api::format_duration(swim.reap_after),
            kvs_api::format_duration(MAX_MEMBER_REAP_AFTER)
        );
        return Err(KeyError::new("member_reap_after", why));
    }
    Ok(())
}
