//! Timing and size settings of the SWIM core: plain data with two presets (`lan()`, the
//! default, and `wan()`) and `validate()` for the relations between fields.
//!
//! The reference point is hashicorp/memberlist's `DefaultLANConfig` (probe interval 1 s,
//! probe timeout 500 ms, suspicion multiplier 4, 3 indirect checks, retransmit multiplier
//! 4, gossip every 200 ms to 3 nodes, push-pull every 30 s), which gives about 8 s of
//! suspicion at N=100 and ~10 s from crash to dead. The LAN preset here runs the probe
//! period five times faster and relies on Lifeguard's confirmations, the per-peer RTT
//! timeout and the buddy system to stay accurate at that speed, and keeps every suspicion
//! at least 1.5 s long (`suspicion_timeout_min`), so that a member cut off for up to 1 s
//! has time to refute at any N (see `membership/README.md` for the measurements that back
//! the numbers).

use std::time::Duration;

use thiserror::Error;

/// Settings of a [`crate::Swim`] node. Build one with [`SwimConfig::lan`] or
/// [`SwimConfig::wan`], adjust fields, then [`SwimConfig::validate`] it.
#[derive(Debug, Clone, PartialEq)]
pub struct SwimConfig {
    /// Length of one protocol period: one member is probed per period. memberlist LAN: 1 s;
    /// here 200 ms, so that a failure is noticed within a few hundred milliseconds.
    pub probe_interval: Duration,
    /// Direct-probe timeout for a peer whose round-trip time has not been measured yet.
    pub probe_timeout: Duration,
    /// Lower bound of the RTT-derived probe timeout (`srtt + 4·rttvar`, as TCP's RTO).
    pub probe_timeout_min: Duration,
    /// Upper bound of the RTT-derived probe timeout; must leave room in the period for the
    /// indirect probes.
    pub probe_timeout_max: Duration,
    /// Members asked to `ping-req` a peer that missed its direct ack (SWIM's k; memberlist 3).
    pub indirect_checks: usize,
    /// Minimum suspicion timeout = `suspicion_mult · max(1, log10 N) · probe_interval`,
    /// but never below `suspicion_timeout_min`.
    pub suspicion_mult: u32,
    /// Floor of the minimum suspicion timeout, whatever N. A suspicion starts at the
    /// earliest one probe period into a cut, and the suspect can only refute once the cut
    /// is over, so a member cut off for `d` survives only if the timeout exceeds
    /// `d - probe_interval` plus the time its refutation takes to spread. LAN: 1.5 s (below
    /// the formula's 1.6 s at N=100, so it changes nothing from N=75 up), which leaves
    /// 0.7 s after a 1 s cut (at N=16 the spread took up to about 0.5 s: cuts of up to
    /// 1.3 s pass); without it the timeout is 0.96 s at N=16 and 0.8 s at N=10, and a 1 s
    /// cut killed a healthy member in half of the runs of `scenarios/swim-brief-cuts.yaml`.
    /// Longer costs detection in small clusters: at 1.6 s, crash to dead at N=12 passed 3 s
    /// in 3 of 1,000 runs of `swim-crash-rejoin.yaml` (nobody had probed the crashed member
    /// for 1.36 s). Zero: no floor (memberlist's formula).
    pub suspicion_timeout_min: Duration,
    /// Maximum (initial) suspicion timeout = `suspicion_max_mult ·` the minimum (Lifeguard;
    /// memberlist uses 6).
    pub suspicion_max_mult: u32,
    /// Independent confirmations after which the suspicion timeout reaches its minimum
    /// (Lifeguard's K; memberlist uses `suspicion_mult - 2`).
    pub suspicion_confirmations: usize,
    /// Each update is retransmitted `retransmit_mult · ceil(log10(N + 1))` times (λ·log N).
    pub retransmit_mult: u32,
    /// How often pending updates are also sent, outside probes, to `gossip_fanout` members.
    pub gossip_interval: Duration,
    /// Members per gossip round.
    pub gossip_fanout: usize,
    /// Push-pull of the full member list with a random peer, for clusters up to
    /// `push_pull_scale_threshold` members; longer in proportion above it, so that the
    /// bytes each node spends on push-pull per second stay flat in N.
    pub push_pull_interval: Duration,
    /// Cluster size up to which `push_pull_interval` applies unscaled.
    pub push_pull_scale_threshold: usize,
    /// Upper bound of the scaled push-pull interval.
    pub push_pull_interval_max: Duration,
    /// How often a push-pull is offered to one dead member or unanswered seed, so that a
    /// healed partition merges again.
    pub reannounce_interval: Duration,
    /// How often `join` retries its seeds while none has answered.
    pub join_retry_interval: Duration,
    /// Dead and left members are forgotten this long after they became so.
    pub reap_after: Duration,
    /// Lifeguard on (local health multiplier, dynamic suspicion, buddy system). Off gives
    /// classic SWIM: fixed suspicion timeout, no health multiplier, no buddy hint.
    pub lifeguard: bool,
    /// Highest local health score; intervals and timeouts stretch by `1 + score`
    /// (memberlist's `AwarenessMaxMultiplier` is 8).
    pub max_health: u32,
    /// Half-life of a member's flap score (state changes alive ↔ suspect/dead).
    pub flap_half_life: Duration,
    /// Largest datagram payload this core produces; the transport adds its MAC on top.
    pub max_payload: usize,
}

impl Default for SwimConfig {
    fn default() -> Self {
        Self::lan()
    }
}

impl SwimConfig {
    /// Defaults for a LAN (sub-millisecond RTT, rare loss): crash to dead on every member
    /// within about 3 s at N=100, no false deaths at 30 % loss, nor from cuts of up to 1 s.
    pub fn lan() -> Self {
        Self {
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(80),
            probe_timeout_min: Duration::from_millis(20),
            probe_timeout_max: Duration::from_millis(120),
            indirect_checks: 3,
            suspicion_mult: 4,
            suspicion_timeout_min: Duration::from_millis(1500),
            suspicion_max_mult: 6,
            suspicion_confirmations: 2,
            retransmit_mult: 5,
            gossip_interval: Duration::from_millis(100),
            gossip_fanout: 3,
            push_pull_interval: Duration::from_secs(30),
            push_pull_scale_threshold: 32,
            push_pull_interval_max: Duration::from_secs(3600),
            reannounce_interval: Duration::from_secs(10),
            join_retry_interval: Duration::from_secs(1),
            reap_after: Duration::from_secs(3600),
            lifeguard: true,
            max_health: 8,
            flap_half_life: Duration::from_secs(60),
            max_payload: 1300,
        }
    }

    /// A preset for a WAN (tens to hundreds of ms RTT, more jitter), after memberlist's
    /// `DefaultWANConfig` (probe 5 s / 3 s, suspicion ×6, gossip 500 ms to 4, push-pull 60 s)
    /// but with a shorter period, since the timeout adapts to each peer's RTT.
    pub fn wan() -> Self {
        Self {
            probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_millis(1000),
            probe_timeout_min: Duration::from_millis(100),
            probe_timeout_max: Duration::from_millis(1500),
            suspicion_mult: 6,
            suspicion_confirmations: 4,
            gossip_interval: Duration::from_millis(500),
            gossip_fanout: 4,
            push_pull_interval: Duration::from_secs(60),
            push_pull_interval_max: Duration::from_secs(7200),
            reannounce_interval: Duration::from_secs(30),
            join_retry_interval: Duration::from_secs(5),
            ..Self::lan()
        }
    }

    /// Checks the relations between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = Duration::ZERO;
        if self.probe_interval == zero || self.gossip_interval == zero {
            return Err(ConfigError::ZeroInterval);
        }
        if self.push_pull_interval == zero || self.reannounce_interval == zero {
            return Err(ConfigError::ZeroInterval);
        }
        if self.join_retry_interval == zero {
            return Err(ConfigError::ZeroInterval);
        }
        if !(self.probe_timeout_min <= self.probe_timeout
            && self.probe_timeout <= self.probe_timeout_max)
        {
            return Err(ConfigError::ProbeTimeoutBounds);
        }
        if self.probe_timeout_min == zero || self.probe_timeout_max >= self.probe_interval {
            return Err(ConfigError::ProbeTimeoutBounds);
        }
        if self.suspicion_mult == 0 || self.suspicion_max_mult == 0 || self.retransmit_mult == 0 {
            return Err(ConfigError::ZeroMultiplier);
        }
        let longest = self
            .suspicion_timeout_min
            .checked_mul(self.suspicion_max_mult);
        if longest.is_none_or(|d| d > MAX_SUSPICION_FLOOR_SPAN) {
            return Err(ConfigError::SuspicionFloor);
        }
        if self.push_pull_interval_max < self.push_pull_interval {
            return Err(ConfigError::PushPullBounds);
        }
        if self.max_payload < MIN_PAYLOAD {
            return Err(ConfigError::PayloadTooSmall(self.max_payload));
        }
        Ok(())
    }
}

/// Upper bound of `suspicion_timeout_min · suspicion_max_mult` (the longest suspicion the
/// floor alone can make): a year.
const MAX_SUSPICION_FLOOR_SPAN: Duration = Duration::from_secs(365 * 24 * 3600);

/// The smallest `max_payload` accepted: room for a header and a few updates.
pub(crate) const MIN_PAYLOAD: usize = 1024;

/// A relation between [`SwimConfig`] fields that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// An interval is zero.
    #[error("probe, gossip, push-pull, re-announce and join-retry intervals must be > 0")]
    ZeroInterval,
    /// The probe timeouts are not `0 < min <= initial <= max < probe_interval`.
    #[error("probe timeouts must satisfy 0 < min <= initial <= max < probe_interval")]
    ProbeTimeoutBounds,
    /// A multiplier is zero.
    #[error("suspicion and retransmit multipliers must be >= 1")]
    ZeroMultiplier,
    /// `suspicion_timeout_min · suspicion_max_mult` above a year.
    #[error("suspicion_timeout_min times suspicion_max_mult must not exceed a year")]
    SuspicionFloor,
    /// `push_pull_interval_max < push_pull_interval`.
    #[error("push_pull_interval_max must be >= push_pull_interval")]
    PushPullBounds,
    /// `max_payload` below the minimum.
    #[error("max_payload {0} is below the minimum of 1024 bytes")]
    PayloadTooSmall(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        SwimConfig::lan().validate().unwrap();
        SwimConfig::wan().validate().unwrap();
    }

    #[test]
    fn timeout_above_interval_is_rejected() {
        let mut cfg = SwimConfig::lan();
        cfg.probe_timeout_max = cfg.probe_interval;
        assert_eq!(cfg.validate(), Err(ConfigError::ProbeTimeoutBounds));
        let mut cfg = SwimConfig::lan();
        cfg.max_payload = 100;
        assert_eq!(cfg.validate(), Err(ConfigError::PayloadTooSmall(100)));
        let mut cfg = SwimConfig::lan();
        cfg.suspicion_timeout_min = Duration::MAX;
        assert_eq!(cfg.validate(), Err(ConfigError::SuspicionFloor));
        let mut cfg = SwimConfig::lan();
        cfg.max_payload = 100;
        assert_eq!(cfg.validate(), Err(ConfigError::PayloadTooSmall(100)));
    }
}
