//! The model engine: sans-IO protocol nodes on the discrete-event [`Fabric`], on virtual
//! time. Events are ordered by `(time, sequence)`; every random draw comes from a
//! generator derived from the run seed; nothing reads the system clock or spawns threads.
//! The same scenario and seed therefore give the same trace, event for event.

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kvs_net::{AUTH_OVERHEAD, NodeId, SeededRng, seeded_rng};

use crate::checks::Checks;
use crate::fabric::{Fabric, NetCounts, NetOp};
use crate::properties::{Violation, World};
use crate::protocol::{NodeCtx, Protocol, ProtocolFactory, Transmit, addr_index, node_addr};
use crate::queue::{EventQueue, Pending};
use crate::slot::{NodeState, Slot};
use crate::timeline::{NodeOp, Op, TimedOp, compile};
use crate::trace::{DropReason, Event, Record, Trace};
use crate::{Scenario, SimError};

/// A paused node queues at most this many datagrams (a socket buffer); more are dropped.
const PAUSED_QUEUE: usize = 1024;
/// A run stops as failed after this many events (a protocol asking for a timer at `now`
/// forever would otherwise never end).
const EVENT_BUDGET: u64 = 200_000_000;

/// How to run.
pub struct RunOptions<'a> {
    /// The run seed.
    pub seed: u64,
    /// Where to write the JSONL trace, if anywhere.
    pub trace: Option<&'a mut dyn Write>,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The scenario's name.
    pub name: String,
    /// The seed it ran with.
    pub seed: u64,
    /// SHA-256 of the event trace, hex.
    pub digest: String,
    /// The first property that failed, if any.
    pub violation: Option<Violation>,
    /// The last events of the trace.
    pub last_events: Vec<Record>,
    /// How many events the trace holds.
    pub events: u64,
    /// The virtual time played.
    pub virtual_time: Duration,
    /// What the network did.
    pub counts: NetCounts,
    /// Figures the properties measured (`property.figure`, value), for `--report`.
    pub measurements: Vec<(String, f64)>,
}

struct Engine<'a, F: ProtocolFactory> {
    factory: F,
    seed: u64,
    nodes: Vec<Slot<F::Node>>,
    peers: Arc<[SocketAddr]>,
    fabric: Fabric,
    slow_rng: SeededRng,
    queue: EventQueue,
    now: Duration,
    quiesce_at: Duration,
    steps: Vec<TimedOp>,
    trace: Trace<'a>,
    checks: Checks<F::Node>,
    failure: Option<Violation>,
}

/// What a run of `scenario` with protocol `F` is built from, every option checked.
struct Prepared<F: ProtocolFactory> {
    factory: F,
    checks: Checks<F::Node>,
    steps: Vec<TimedOp>,
}

fn prepare<F: ProtocolFactory>(scenario: &Scenario) -> Result<Prepared<F>, SimError> {
    scenario.validate()?;
    let steps = compile(scenario)?;
    if steps.iter().any(|s| matches!(s.op, Op::Disk(..))) {
        return Err(SimError::invalid(
            "disk_fault needs engine: full with store: lmdb",
        ));
    }
    let factory = F::from_config(
        &scenario.cluster.config,
        scenario.cluster.nodes,
        scenario.duration,
    )?;
    let checks = Checks::new(&factory, scenario)?;
    Ok(Prepared {
        factory,
        checks,
        steps,
    })
}

/// Checks everything a run of `scenario` with protocol `F` would check before it
/// starts (options, properties, timeline, network), without running it.
pub(crate) fn check<F: ProtocolFactory>(scenario: &Scenario) -> Result<(), SimError> {
    prepare::<F>(scenario)?;
    Fabric::new(
        scenario.cluster.nodes,
        &scenario.network,
        seeded_rng(0, "network"),
    )?;
    Ok(())
}

/// Plays `scenario` with protocol `F`.
pub(crate) fn run<F: ProtocolFactory>(
    scenario: &Scenario,
    opts: RunOptions<'_>,
) -> Result<RunReport, SimError> {
    let Prepared {
        factory,
        checks,
        steps,
    } = prepare::<F>(scenario)?;
    let n = scenario.cluster.nodes;
    let mut engine = Engine {
        fabric: Fabric::new(n, &scenario.network, seeded_rng(opts.seed, "network"))?,
        slow_rng: seeded_rng(opts.seed, "slow"),
        factory,
        seed: opts.seed,
        nodes: Vec::with_capacity(n),
        peers: (0..n).map(node_addr).collect(),
        queue: EventQueue::default(),
        now: Duration::ZERO,
        quiesce_at: scenario.quiesce_at(),
        steps,
        trace: Trace::new(opts.trace),
        checks,
        failure: None,
    };
    engine.start(n)?;
    engine.run_until(scenario.duration)?;
    if engine.failure.is_none() {
        engine.now = scenario.duration;
        let world = World {
            now: engine.now,
            quiesce_at: engine.quiesce_at,
            nodes: &engine.nodes,
            fabric: &engine.fabric,
        };
        engine.failure = engine.checks.at_end(&world).err();
    }
    let measurements = engine.checks.measurements();
    let (digest, last_events, events) = engine.trace.finish()?;
    Ok(RunReport {
        name: scenario.name.clone(),
        seed: opts.seed,
        digest,
        violation: engine.failure,
        last_events,
        events,
        virtual_time: engine.now,
        counts: engine.fabric.counts().clone(),
        measurements,
    })
}

impl<F: ProtocolFactory> Engine<'_, F> {
    fn schedule(&mut self, at: Duration, what: Pending) {
        self.queue.push(at.max(self.now), what);
    }

    fn start(&mut self, n: usize) -> Result<(), SimError> {
        for i in 0..self.steps.len() {
            self.schedule(self.steps[i].at, Pending::Step(i));
        }
        if self.checks.has_eventually() {
            self.schedule(self.quiesce_at, Pending::Check);
        }
        for i in 0..n {
            let proto = self.create(i, 0);
            self.nodes.push(Slot {
                state: NodeState::Up,
                proto: Some(proto),
                incarnation: 0,
                timer: None,
                timer_gen: 0,
                due_while_paused: false,
                inbox: VecDeque::new(),
                slow: None,
            });
            self.flush(i)?;
        }
        Ok(())
    }

    fn create(&self, index: usize, incarnation: u64) -> F::Node {
        let name = if incarnation == 0 {
            format!("n{}", index + 1)
        } else {
            format!("n{}#{incarnation}", index + 1)
        };
        self.factory.create(NodeCtx {
            index,
            id: NodeId::new(name),
            addr: self.peers[index],
            peers: Arc::clone(&self.peers),
            rng: seeded_rng(self.seed, &format!("node/{index}/{incarnation}")),
            incarnation,
            now: self.now,
        })
    }

    fn run_until(&mut self, end: Duration) -> Result<(), SimError> {
        while self.failure.is_none() {
            let Some((at, what)) = self.queue.pop_until(end) else {
                break;
            };
            self.now = at;
            match what {
                Pending::Deliver {
                    from,
                    to,
                    late,
                    payload,
                    ..
                } => self.deliver(from as usize, to as usize, late, payload)?,
                Pending::Timer { node, generation } => self.fire_timer(node, generation)?,
                Pending::Step(i) => self.step(i)?,
                Pending::Check => self.check_eventually(),
            }
        }
        Ok(())
    }

    /// Records an event after the `always` properties judged it.
    fn emit(&mut self, event: Event, payload: &[u8]) -> Result<(), SimError> {
        let rec = Record {
            at: self.now,
            event,
        };
        if self.failure.is_none() {
            let world = World {
                now: self.now,
                quiesce_at: self.quiesce_at,
                nodes: &self.nodes,
                fabric: &self.fabric,
            };
            self.failure = self.checks.on_event(&world, &rec).err();
        }
        self.trace.record(rec, payload)?;
        if self.queue.scheduled() > EVENT_BUDGET {
            self.failure = Some(Violation {
                property: "event_budget".into(),
                evidence: format!("more than {EVENT_BUDGET} events"),
            });
        }
        Ok(())
    }

    fn check_eventually(&mut self) {
        let world = World {
            now: self.now,
            quiesce_at: self.quiesce_at,
            nodes: &self.nodes,
            fabric: &self.fabric,
        };
        match self.checks.poll_eventually(&world) {
            Ok(Some(next)) => self.schedule(next, Pending::Check),
            Ok(None) => {}
            Err(v) => self.failure = Some(v),
        }
    }

    /// Sends what node `i` wants sent and re-arms its timer.
    fn flush(&mut self, i: usize) -> Result<(), SimError> {
        while let Some(t) = self.nodes[i]
            .proto
            .as_mut()
            .and_then(Protocol::poll_transmit)
        {
            self.transmit(i, t)?;
        }
        let want = self.nodes[i]
            .proto
            .as_ref()
            .and_then(Protocol::poll_timeout);
        let slot = &mut self.nodes[i];
        if want != slot.timer {
            slot.timer_gen += 1;
            slot.timer = want;
            let generation = slot.timer_gen;
            if let Some(at) = want {
                self.schedule(
                    at,
                    Pending::Timer {
                        node: i,
                        generation,
                    },
                );
            }
        }
        Ok(())
    }

    /// Hands one datagram of node `i` to the fabric.
    fn transmit(&mut self, i: usize, t: Transmit) -> Result<(), SimError> {
        let len = t.payload.len();
        let Some(to) = addr_index(t.to, self.peers.len()) else {
            self.emit(
                Event::Send {
                    from: i,
                    to: usize::MAX,
                    len,
                },
                &[],
            )?;
            let reason = self.fabric.dropped(DropReason::NoRoute);
            return self.emit(
                Event::Drop {
                    from: i,
                    to: usize::MAX,
                    reason,
                },
                &[],
            );
        };
        self.emit(Event::Send { from: i, to, len }, &[])?;
        match self.fabric.route(self.now, i, to, len + AUTH_OVERHEAD) {
            Err(reason) => self.emit(
                Event::Drop {
                    from: i,
                    to,
                    reason,
                },
                &[],
            )?,
            Ok(times) => {
                let payload = t.payload.into_boxed_slice();
                for (at, held) in times {
                    // Node counts are validated to fit (at most 100,000).
                    let (from, to) = (
                        u32::try_from(i).unwrap_or(u32::MAX),
                        u32::try_from(to).unwrap_or(u32::MAX),
                    );
                    self.schedule(
                        at,
                        Pending::Deliver {
                            from,
                            to,
                            late: false,
                            held,
                            payload: payload.clone(),
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn deliver(
        &mut self,
        from: usize,
        to: usize,
        late: bool,
        payload: Box<[u8]>,
    ) -> Result<(), SimError> {
        let reason = if self.fabric.blocked(from, to) {
            Some(DropReason::Partition)
        } else {
            match self.nodes[to].state {
                NodeState::Down => Some(DropReason::Down),
                NodeState::Paused if self.nodes[to].inbox.len() >= PAUSED_QUEUE => {
                    Some(DropReason::Overflow)
                }
                NodeState::Paused => {
                    self.nodes[to].inbox.push_back((from, payload));
                    return Ok(());
                }
                NodeState::Up => match self.nodes[to].slow {
                    Some(delay) if !late => {
                        let at = self.now + delay.sample(&mut self.slow_rng);
                        let (from, to) = (
                            u32::try_from(from).unwrap_or(u32::MAX),
                            u32::try_from(to).unwrap_or(u32::MAX),
                        );
                        let pending = Pending::Deliver {
                            from,
                            to,
                            late: true,
                            held: false,
                            payload,
                        };
                        self.schedule(at, pending);
                        return Ok(());
                    }
                    _ => None,
                },
            }
        };
        if let Some(reason) = reason {
            let reason = self.fabric.dropped(reason);
            return self.emit(Event::Drop { from, to, reason }, &[]);
        }
        self.handle(from, to, &payload)
    }

    /// Hands a datagram to an up node's handler.
    fn handle(&mut self, from: usize, to: usize, payload: &[u8]) -> Result<(), SimError> {
        self.fabric.delivered();
        self.emit(
            Event::Deliver {
                from,
                to,
                len: payload.len(),
            },
            payload,
        )?;
        let (now, addr) = (self.now, self.peers[from]);
        if let Some(p) = self.nodes[to].proto.as_mut() {
            p.handle_datagram(now, addr, payload);
        }
        self.flush(to)
    }

    fn fire_timer(&mut self, node: usize, generation: u64) -> Result<(), SimError> {
        let slot = &mut self.nodes[node];
        if slot.timer_gen != generation {
            return Ok(());
        }
        match slot.state {
            NodeState::Down => Ok(()),
            NodeState::Paused => {
                slot.due_while_paused = true;
                Ok(())
            }
            NodeState::Up => self.timeout(node),
        }
    }

    fn timeout(&mut self, node: usize) -> Result<(), SimError> {
        self.nodes[node].timer = None;
        self.emit(Event::Timer { node }, &[])?;
        let now = self.now;
        if let Some(p) = self.nodes[node].proto.as_mut() {
            p.handle_timeout(now);
        }
        self.flush(node)
    }

    fn step(&mut self, i: usize) -> Result<(), SimError> {
        let TimedOp { what, op, .. } = self.steps[i].clone();
        self.emit(Event::Step(what), &[])?;
        match op {
            Op::Net(net) => {
                self.fabric.apply(self.now, &net)?;
                if matches!(net, NetOp::Heal) {
                    self.queue.release_held(self.now);
                }
            }
            Op::Node(kind, nodes) => {
                for node in nodes {
                    self.node_op(kind, node)?;
                }
            }
            // Refused before the run starts.
            Op::Disk(..) => {}
            Op::Slow(nodes, delay) => {
                for node in nodes {
                    self.nodes[node].slow = Some(delay);
                }
            }
        }
        Ok(())
    }

    fn node_op(&mut self, kind: NodeOp, i: usize) -> Result<(), SimError> {
        let state = self.nodes[i].state;
        match (kind, state) {
            (NodeOp::Crash | NodeOp::Wipe, NodeState::Up | NodeState::Paused) => {
                let slot = &mut self.nodes[i];
                slot.state = NodeState::Down;
                slot.proto = None;
                slot.timer = None;
                slot.timer_gen += 1;
                slot.due_while_paused = false;
                slot.inbox.clear();
            }
            (NodeOp::Restart, NodeState::Down) => {
                let incarnation = self.nodes[i].incarnation + 1;
                let proto = self.create(i, incarnation);
                let slot = &mut self.nodes[i];
                (slot.incarnation, slot.proto, slot.state) =
                    (incarnation, Some(proto), NodeState::Up);
                self.flush(i)?;
            }
            (NodeOp::Pause, NodeState::Up) => self.nodes[i].state = NodeState::Paused,
            (NodeOp::Resume, NodeState::Paused) => self.resume(i)?,
            (NodeOp::Unslow, _) => self.nodes[i].slow = None,
            _ => {}
        }
        Ok(())
    }

    fn resume(&mut self, i: usize) -> Result<(), SimError> {
        self.nodes[i].state = NodeState::Up;
        let queued = std::mem::take(&mut self.nodes[i].inbox);
        for (from, payload) in queued {
            if self.nodes[i].state != NodeState::Up {
                break;
            }
            self.handle(from, i, &payload)?;
        }
        if std::mem::take(&mut self.nodes[i].due_while_paused) {
            self.timeout(i)?;
        }
        Ok(())
    }
}
