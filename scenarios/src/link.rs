//! One directed link's behaviour: latency distribution, loss (optionally bursty, a
//! Gilbert-Elliott chain), duplication, reordering and MTU, and how a datagram's fate is
//! drawn from the network's seeded generator.

use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

use crate::{SimError, duration};

/// Latency: `min` plus an exponential tail of mean `mean - min`, cut at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// Fastest delivery.
    #[serde(deserialize_with = "duration::de")]
    pub min: Duration,
    /// Mean delivery.
    #[serde(deserialize_with = "duration::de")]
    pub mean: Duration,
    /// Slowest delivery (reordering and clogging may add to it).
    #[serde(deserialize_with = "duration::de")]
    pub max: Duration,
}

impl Latency {
    /// One draw: `min` plus an exponential tail of mean `mean - min`, cut at `max`.
    pub(crate) fn sample(&self, rng: &mut impl Rng) -> Duration {
        let tail_mean = (self.mean - self.min).as_secs_f64();
        let u: f64 = rng.r#gen();
        let tail = -(1.0 - u).ln() * tail_mean;
        (self.min + Duration::from_secs_f64(tail.min(1e6))).min(self.max)
    }

    /// Refuses a distribution that is not `min <= mean <= max`.
    pub(crate) fn validate(&self) -> Result<(), SimError> {
        if self.min <= self.mean && self.mean <= self.max {
            Ok(())
        } else {
            Err(SimError::invalid(format!(
                "needs min <= mean <= max, found {}, {}, {}",
                duration::show(self.min),
                duration::show(self.mean),
                duration::show(self.max)
            )))
        }
    }
}

/// Bursty loss: per datagram the link enters the bad state with probability `enter` and
/// leaves it with `exit`; in the bad state datagrams are lost with probability `loss`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// Probability of good -> bad per datagram.
    pub enter: f64,
    /// Probability of bad -> good per datagram.
    pub exit: f64,
    /// Loss probability in the bad state.
    pub loss: f64,
}

/// Link settings as written in a file: every field optional, applied over what is there.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkPatch {
    /// Latency distribution.
    pub latency: Option<Latency>,
    /// Independent loss probability (in the good state when `burst` is set).
    pub loss: Option<f64>,
    /// Bursty loss.
    pub burst: Option<Burst>,
    /// Probability that a datagram is delivered twice.
    pub duplicate: Option<f64>,
    /// Probability that a datagram is held back by up to `reorder_delay` more.
    pub reorder: Option<f64>,
    /// Extra delay of a reordered datagram (uniform up to this).
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub reorder_delay: Option<Duration>,
    /// Largest datagram on the wire, authentication overhead included.
    pub mtu: Option<usize>,
}

/// Resolved link settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkSpec {
    /// Latency distribution.
    pub latency: Latency,
    /// Independent loss probability.
    pub loss: f64,
    /// Bursty loss, if any.
    pub burst: Option<Burst>,
    /// Duplication probability.
    pub duplicate: f64,
    /// Reordering probability.
    pub reorder: f64,
    /// Extra delay of reordered datagrams.
    pub reorder_delay: Duration,
    /// Largest wire datagram.
    pub mtu: usize,
}

impl Default for LinkSpec {
    /// A quiet LAN: 0.5-1-5 ms, no loss, MTU 1,400.
    fn default() -> Self {
        Self {
            latency: Latency {
                min: Duration::from_micros(500),
                mean: Duration::from_millis(1),
                max: Duration::from_millis(5),
            },
            loss: 0.0,
            burst: None,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(10),
            mtu: kvs_net::MAX_DATAGRAM,
        }
    }
}

/// What happens to one datagram on a link.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fate {
    /// Lost (randomly or in a burst).
    Lost,
    /// Delivered after each of these delays (two when duplicated).
    Delayed(Vec<Duration>),
}

impl LinkSpec {
    /// These settings with a patch applied, checked.
    pub fn patched(&self, patch: &LinkPatch) -> Result<Self, SimError> {
        let mut out = self.clone();
        if let Some(l) = patch.latency {
            out.latency = l;
        }
        out.loss = patch.loss.unwrap_or(out.loss);
        out.burst = patch.burst.or(out.burst);
        out.duplicate = patch.duplicate.unwrap_or(out.duplicate);
        out.reorder = patch.reorder.unwrap_or(out.reorder);
        out.reorder_delay = patch.reorder_delay.unwrap_or(out.reorder_delay);
        out.mtu = patch.mtu.unwrap_or(out.mtu);
        out.validate()?;
        Ok(out)
    }

    fn validate(&self) -> Result<(), SimError> {
        let mut probabilities = vec![
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ];
        if let Some(b) = self.burst {
            probabilities.extend([
                ("burst.enter", b.enter),
                ("burst.exit", b.exit),
                ("burst.loss", b.loss),
            ]);
        }
        if let Some((key, p)) = probabilities.iter().find(|(_, p)| !(0.0..=1.0).contains(p)) {
            return Err(SimError::invalid(format!(
                "{key}: {p} is not a probability (0..=1)"
            )));
        }
        self.latency.validate().map_err(|e| e.at("latency"))
    }

    /// Draws a datagram's fate. `bad` is the link's burst state, updated here.
    pub(crate) fn draw(&self, rng: &mut impl Rng, bad: &mut bool) -> Fate {
        let mut loss = self.loss;
        if let Some(b) = self.burst {
            let flip = if *bad { b.exit } else { b.enter };
            if rng.r#gen::<f64>() < flip {
                *bad = !*bad;
            }
            if *bad {
                loss = b.loss;
            }
        }
        if rng.r#gen::<f64>() < loss {
            return Fate::Lost;
        }
        let mut delays = vec![self.delay(rng)];
        if rng.r#gen::<f64>() < self.duplicate {
            delays.push(self.delay(rng));
        }
        Fate::Delayed(delays)
    }

    /// One latency draw (with reordering delay, if drawn).
    pub(crate) fn delay(&self, rng: &mut impl Rng) -> Duration {
        let mut d = self.latency.sample(rng);
        if rng.r#gen::<f64>() < self.reorder {
            d += self.reorder_delay.mul_f64(rng.r#gen::<f64>());
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_rate_and_latency_bounds_hold() {
        let spec = LinkSpec::default()
            .patched(&LinkPatch {
                loss: Some(0.3),
                ..LinkPatch::default()
            })
            .expect("valid");
        let mut rng = kvs_net::seeded_rng(1, "test");
        let mut bad = false;
        let mut lost = 0;
        for _ in 0..10_000 {
            match spec.draw(&mut rng, &mut bad) {
                Fate::Lost => lost += 1,
                Fate::Delayed(d) => assert!(d[0] >= spec.latency.min && d[0] <= spec.latency.max),
            }
        }
        assert!((2_700..3_300).contains(&lost), "{lost}");
    }

    #[test]
    fn invalid_settings_are_refused() {
        let p = LinkPatch {
            loss: Some(1.5),
            ..LinkPatch::default()
        };
        assert!(LinkSpec::default().patched(&p).is_err());
    }
}
