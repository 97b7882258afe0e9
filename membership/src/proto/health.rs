//! The numeric models behind accuracy: Lifeguard's local health multiplier and dynamic
//! suspicion timeout, the per-peer round-trip estimator and the per-member flap score.

use std::time::Duration;

use crate::config::SwimConfig;

/// Lifeguard's local health multiplier: a score in `0..=max` raised by signs that this
/// node itself is slow (failed probes with missing nacks, having to refute a suspicion)
/// and lowered by successful direct probes. Intervals and timeouts stretch by `1 + score`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalHealth {
    score: u32,
    max: u32,
}

impl LocalHealth {
    pub(crate) fn new(cfg: &SwimConfig) -> Self {
        Self {
            score: 0,
            max: if cfg.lifeguard { cfg.max_health } else { 0 },
        }
    }

    /// Applies a delta, clamped to `0..=max`.
    pub(crate) fn apply(&mut self, delta: i64) {
        self.score = (i64::from(self.score) + delta).clamp(0, i64::from(self.max)) as u32;
    }

    /// The current score.
    pub(crate) fn score(&self) -> u32 {
        self.score
    }

    /// `d` stretched by `1 + score`.
    pub(crate) fn scale(&self, d: Duration) -> Duration {
        d * (1 + self.score)
    }
}

/// Lifeguard's dynamic suspicion timeout for a cluster of `n` members after `confirmations`
/// independent confirmations (beyond the first accuser): starts at
/// `max = suspicion_max_mult · min` and falls logarithmically to
/// `min = suspicion_mult · max(1, log10 n) · probe_interval` at `suspicion_confirmations`,
/// `min` being at least `suspicion_timeout_min` (so that a brief cut can be refuted in
/// time: see that field). Without Lifeguard, or with too few members to confirm, it is
/// `min` (classic SWIM).
pub(crate) fn suspicion_timeout(cfg: &SwimConfig, n: usize, confirmations: usize) -> Duration {
    let scale = (n.max(1) as f64).log10().max(1.0);
    let min = cfg
        .probe_interval
        .mul_f64(f64::from(cfg.suspicion_mult) * scale)
        .max(cfg.suspicion_timeout_min);
    let k = cfg.suspicion_confirmations;
    if !cfg.lifeguard || k == 0 || n < k + 2 {
        return min;
    }
    let max = min * cfg.suspicion_max_mult;
    let frac = ((confirmations as f64) + 1.0).ln() / ((k as f64) + 1.0).ln();
    let timeout = max.as_secs_f64() - (max - min).as_secs_f64() * frac;
    Duration::from_secs_f64(timeout.max(min.as_secs_f64()))
}

/// Smoothed round-trip time of one peer (RFC 6298), from direct ping/ack pairs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rtt {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl Rtt {
    /// Records one sample.
    pub(crate) fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + err) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// The smoothed RTT, once measured.
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The direct-probe timeout for this peer: `srtt + 4·rttvar` within the configured
    /// bounds, or the configured initial timeout before any sample.
    pub(crate) fn probe_timeout(&self, cfg: &SwimConfig) -> Duration {
        match self.srtt {
            None => cfg.probe_timeout,
            Some(srtt) => {
                (srtt + self.rttvar * 4).clamp(cfg.probe_timeout_min, cfg.probe_timeout_max)
            }
        }
    }
}

/// How often a member changed between alive and suspect/dead lately: each change adds 1,
/// and the score halves every `flap_half_life`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flap {
    score: f64,
    at: Duration,
}

impl Flap {
    /// Records one state change at `now`.
    pub(crate) fn bump(&mut self, now: Duration, half_life: Duration) {
        self.score = self.value(now, half_life) + 1.0;
        self.at = now;
    }

    /// The decayed score at `now`.
    pub(crate) fn value(&self, now: Duration, half_life: Duration) -> f64 {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.score * 0.5f64.powf(elapsed / half_life.as_secs_f64().max(1e-3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_shrinks_with_confirmations() {
        let cfg = SwimConfig::lan();
        let min = suspicion_timeout(&cfg, 100, 3);
        assert_eq!(min, Duration::from_millis(1600));
        let first = suspicion_timeout(&cfg, 100, 0);
        assert_eq!(first, min * 6);
        assert!(suspicion_timeout(&cfg, 100, 1) < first);
        assert_eq!(suspicion_timeout(&cfg, 100, 10), min);
        let classic = SwimConfig {
            lifeguard: false,
            ..SwimConfig::lan()
        };
        assert_eq!(suspicion_timeout(&classic, 100, 0), min);
    }

    #[test]
    fn suspicion_has_a_floor() {
        let cfg = SwimConfig::lan();
        // The formula gives 0.96 s at N=16 and 0.8 s at N=10: both raised to the floor;
        // 1.6 s at N=100, above it.
        for n in [3, 10, 16] {
            assert_eq!(suspicion_timeout(&cfg, n, 10), Duration::from_millis(1500));
        }
        assert_eq!(
            suspicion_timeout(&cfg, 100, 10),
            Duration::from_millis(1600)
        );
        assert_eq!(suspicion_timeout(&cfg, 16, 0), Duration::from_millis(9000));
        assert_eq!(
            suspicion_timeout(&cfg, 1000, 10),
            Duration::from_millis(2400)
        );
        let none = SwimConfig {
            suspicion_timeout_min: Duration::ZERO,
            ..cfg
        };
        assert_eq!(suspicion_timeout(&none, 10, 10), Duration::from_millis(800));
    }

    #[test]
    fn health_is_clamped_and_scales() {
        let cfg = SwimConfig::lan();
        let mut h = LocalHealth::new(&cfg);
        h.apply(-1);
        assert_eq!(h.score(), 0);
        h.apply(100);
        assert_eq!(h.score(), 8);
        assert_eq!(
            h.scale(Duration::from_millis(10)),
            Duration::from_millis(90)
        );
        let mut off = LocalHealth::new(&SwimConfig {
            lifeguard: false,
            ..cfg
        });
        off.apply(5);
        assert_eq!(off.score(), 0);
    }

    #[test]
    fn rtt_timeout_is_bounded() {
        let cfg = SwimConfig::lan();
        let mut rtt = Rtt::default();
        assert_eq!(rtt.probe_timeout(&cfg), cfg.probe_timeout);
        rtt.sample(Duration::from_micros(200));
        assert_eq!(rtt.probe_timeout(&cfg), cfg.probe_timeout_min);
        for _ in 0..20 {
            rtt.sample(Duration::from_millis(500));
        }
        assert_eq!(rtt.probe_timeout(&cfg), cfg.probe_timeout_max);
    }

    #[test]
    fn flap_decays() {
        let mut f = Flap::default();
        let hl = Duration::from_secs(60);
        f.bump(Duration::ZERO, hl);
        f.bump(Duration::ZERO, hl);
        assert!((f.value(Duration::from_secs(60), hl) - 1.0).abs() < 1e-9);
    }
}
