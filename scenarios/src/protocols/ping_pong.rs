//! The ping-pong protocol: the first sans-IO node the simulator runs, to exercise the
//! fabric itself. Every `interval` (jittered) a node pings a random other node; a ping is
//! answered with a pong carrying the same sequence number.
//!
//! Wire format: `kind (1: 0 ping, 1 pong) | seq (8, big-endian) | padding`; anything else
//! is ignored (counted as malformed), never a panic.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kvs_net::SeededRng;
use rand::Rng;
use serde::Deserialize;
use serde_yaml::Value;

use crate::properties::{Phase, PongsResume, Property, expect_phase, only_keys};
use crate::protocol::{NodeCtx, Protocol, ProtocolFactory, Transmit};
use crate::{SimError, duration};

const PING: u8 = 0;
const PONG: u8 = 1;
const HEADER: usize = 9;
/// The smallest `size`: a ping or pong's kind and sequence number.
const MIN_SIZE: usize = HEADER;
/// The largest `size`: the largest UDP payload over IPv4.
const MAX_SIZE: usize = 65_507;

/// `cluster.config` of a ping-pong cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Mean time between a node's pings (jittered ±50 %).
    #[serde(default = "default_interval", deserialize_with = "duration::de")]
    interval: Duration,
    /// Payload size of pings and pongs: [`MIN_SIZE`]..=[`MAX_SIZE`].
    #[serde(default = "default_size")]
    size: usize,
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_size() -> usize {
    32
}

/// The ping-pong adapter.
#[derive(Debug, Clone)]
pub struct PingPong {
    config: Config,
}

/// One ping-pong node.
#[derive(Debug)]
pub struct PingPongNode {
    index: usize,
    peers: Arc<[SocketAddr]>,
    rng: SeededRng,
    config: Config,
    next_ping: Duration,
    seq: u64,
    outbox: VecDeque<Transmit>,
    pongs: u64,
    malformed: u64,
    last_pong: Option<Duration>,
}

impl PingPongNode {
    /// When the node last received a pong.
    pub fn last_pong(&self) -> Option<Duration> {
        self.last_pong
    }

    /// Pongs received.
    pub fn pongs(&self) -> u64 {
        self.pongs
    }

    /// Datagrams ignored as malformed.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    fn message(&self, kind: u8, seq: u64) -> Vec<u8> {
        let mut payload = vec![0u8; self.config.size];
        payload[0] = kind;
        payload[1..HEADER].copy_from_slice(&seq.to_be_bytes());
        payload
    }

    fn jittered(&mut self) -> Duration {
        self.config.interval.mul_f64(self.rng.gen_range(0.5..1.5))
    }
}

impl Protocol for PingPongNode {
    fn handle_datagram(&mut self, now: Duration, from: SocketAddr, payload: &[u8]) {
        let (Some(&kind), Some(seq)) = (payload.first(), payload.get(1..HEADER)) else {
            self.malformed += 1;
            return;
        };
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(seq);
        let seq = u64::from_be_bytes(seq_bytes);
        match kind {
            PING => {
                let reply = self.message(PONG, seq);
                self.outbox.push_back(Transmit {
                    to: from,
                    payload: reply,
                });
            }
            PONG => {
                self.pongs += 1;
                self.last_pong = Some(now);
            }
            _ => self.malformed += 1,
        }
    }

    fn handle_timeout(&mut self, now: Duration) {
        if now < self.next_ping {
            return;
        }
        let n = self.peers.len();
        if n > 1 {
            let mut target = self.rng.gen_range(0..n - 1);
            if target >= self.index {
                target += 1;
            }
            self.seq += 1;
            let ping = self.message(PING, self.seq);
            self.outbox.push_back(Transmit {
                to: self.peers[target],
                payload: ping,
            });
        }
        self.next_ping = now + self.jittered();
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    fn poll_timeout(&self) -> Option<Duration> {
        Some(self.next_ping)
    }
}

impl ProtocolFactory for PingPong {
    type Node = PingPongNode;

    fn from_config(config: &Value, _nodes: usize, _duration: Duration) -> Result<Self, SimError> {
        let config: Config = if config.is_null() {
            Config {
                interval: default_interval(),
                size: default_size(),
            }
        } else {
            serde_yaml::from_value(config.clone())
                .map_err(|e| SimError::invalid(format!("cluster.config: {e}")))?
        };
        if config.interval.is_zero() {
            return Err(SimError::invalid(
                "cluster.config.interval must be above zero",
            ));
        }
        if !(MIN_SIZE..=MAX_SIZE).contains(&config.size) {
            return Err(SimError::invalid(format!(
                "cluster.config.size: {} bytes, must be {MIN_SIZE}..={MAX_SIZE}",
                config.size
            )));
        }
        Ok(Self { config })
    }

    fn create(&self, ctx: NodeCtx) -> PingPongNode {
        let mut node = PingPongNode {
            index: ctx.index,
            peers: ctx.peers,
            rng: ctx.rng,
            config: self.config.clone(),
            next_ping: ctx.now,
            seq: 0,
            outbox: VecDeque::new(),
            pongs: 0,
            malformed: 0,
            last_pong: None,
        };
        // Nodes start spread over one interval rather than all at once.
        node.next_ping = ctx.now + node.config.interval.mul_f64(node.rng.r#gen::<f64>());
        node
    }

    fn property(
        &self,
        name: &str,
        phase: Phase,
        args: &Value,
    ) -> Result<Option<Box<dyn Property<PingPongNode>>>, SimError> {
        match name {
            "pongs_resume" => {
                expect_phase(name, phase, &[Phase::Eventually])?;
                only_keys(name, args, &[])?;
                Ok(Some(Box::new(PongsResume)))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> PingPongNode {
        let factory =
            PingPong::from_config(&Value::Null, 3, Duration::from_secs(1)).expect("defaults");
        let peers: Arc<[SocketAddr]> = (0..3).map(crate::protocol::node_addr).collect();
        factory.create(NodeCtx {
            index: 0,
            id: kvs_net::NodeId::from("n1"),
            addr: peers[0],
            peers,
            rng: kvs_net::seeded_rng(1, "t"),
            incarnation: 0,
            now: Duration::ZERO,
        })
    }

    #[test]
    fn answers_pings_and_ignores_garbage() {
        let mut n = node();
        let from = crate::protocol::node_addr(1);
        for bad in [&[][..], &[0u8][..], &[7u8; 20][..]] {
            n.handle_datagram(Duration::ZERO, from, bad);
        }
        assert_eq!(n.malformed(), 2 + 1);
        let ping = n.message(PING, 5);
        n.handle_datagram(Duration::ZERO, from, &ping);
        let reply = n.poll_transmit().expect("a pong");
        assert_eq!((reply.to, reply.payload[0]), (from, PONG));
        n.handle_datagram(Duration::from_secs(1), from, &reply.payload);
        assert_eq!(
            (n.pongs(), n.last_pong()),
            (1, Some(Duration::from_secs(1)))
        );
    }

    #[test]
    fn pings_another_node_when_due() {
        let mut n = node();
        let due = n.poll_timeout().expect("a timer");
        n.handle_timeout(due);
        let ping = n.poll_transmit().expect("a ping");
        assert_ne!(ping.to, crate::protocol::node_addr(0));
        assert!(n.poll_timeout().expect("next") > due);
    }
}
