//! `message_load: {max_bytes_per_node_s: B, from: 30s}` (always, judged at the end): the
//! payload bytes sent per node per second from `from` (default 0) to the end of the run
//! are at most `B`. Measures `bytes_per_node_s`, `wire_bytes_per_node_s` (with the
//! transport's MAC, `kvs_net::AUTH_OVERHEAD` per datagram) and `datagrams_per_node_s`.

use std::time::Duration;

use serde_yaml::Value;

use super::membership::duration_arg;
use super::{Property, World};
use crate::protocols::SwimNode;
use crate::{Event, Record, SimError};

/// The property.
pub(crate) struct MessageLoad {
    max: f64,
    from: Duration,
    bytes: u64,
    datagrams: u64,
    rates: Option<(f64, f64, f64)>,
}

impl MessageLoad {
    pub(crate) fn new(name: &str, a: &Value, duration: Duration) -> Result<Self, SimError> {
        let max = a
            .get("max_bytes_per_node_s")
            .and_then(Value::as_f64)
            .ok_or_else(|| {
                SimError::invalid(format!("`{name}` needs `max_bytes_per_node_s: <number>`"))
            })?;
        let from = duration_arg(name, a, "from")?.unwrap_or_default();
        if from >= duration {
            return Err(SimError::invalid(format!(
                "property `{name}`: from: {} is not before duration ({})",
                crate::duration::show(from),
                crate::duration::show(duration)
            )));
        }
        Ok(Self {
            max,
            from,
            bytes: 0,
            datagrams: 0,
            rates: None,
        })
    }
}

impl Property<SwimNode> for MessageLoad {
    fn on_event(&mut self, _: &World<'_, SwimNode>, rec: &Record) -> Result<(), String> {
        if let Event::Send { len, .. } = rec.event
            && rec.at >= self.from
        {
            self.bytes += len as u64;
            self.datagrams += 1;
        }
        Ok(())
    }

    fn check(&mut self, world: &World<'_, SwimNode>) -> Result<(), String> {
        let secs = world.now.saturating_sub(self.from).as_secs_f64();
        let per = |v: u64| v as f64 / world.nodes.len().max(1) as f64 / secs.max(1e-9);
        let wire = self.bytes + self.datagrams * kvs_net::AUTH_OVERHEAD as u64;
        let rates = (per(self.bytes), per(wire), per(self.datagrams));
        self.rates = Some(rates);
        if rates.0 <= self.max {
            return Ok(());
        }
        Err(format!(
            "{:.0} payload bytes per node per second ({:.1} datagrams), at most {} allowed",
            rates.0, rates.2, self.max
        ))
    }

    fn measurements(&self) -> Vec<(String, f64)> {
        let Some((bytes, wire, datagrams)) = self.rates else {
            return Vec::new();
        };
        vec![
            ("bytes_per_node_s".into(), bytes),
            ("wire_bytes_per_node_s".into(), wire),
            ("datagrams_per_node_s".into(), datagrams),
        ]
    }
}
