//! The full engine (`engine: full`): whole nodes ([`node::FullNode`]: the real membership
//! and replication drivers, the real write path, a store) over the simulated datagrams
//! and streams of [`SimNet`], on virtual time, with per-node clocks, a client workload
//! and data checkers. The loop advances the network to the next thing due (a timeline
//! step, a client operation, a poll of the `eventually` properties), applies it, and
//! traces it; membership changes the nodes saw are traced as they happened. A
//! `nemesis` adds faults drawn from the seed to the timeline. Everything
//! runs on one thread and draws from generators derived from the seed, so the same file
//! and seed give the same trace digest.

mod checks;
mod config;
mod nemesis;
mod node;
mod workload;

use std::time::Duration;

use crate::engine::{RunOptions, RunReport};
use crate::fabric::Fabric;
use crate::properties::Violation;
use crate::simnet::SimNet;
use crate::timeline::{NodeOp, Op, TimedOp, compile};
use crate::trace::{Event, Record, Trace};
use crate::{Scenario, SimError};

use self::checks::{DataChecks, POLL, converged};
use self::config::{ClockSpec, Load, NodeSettings, parse_clocks, parse_workload};
use self::node::{FullNode, Notes};
use self::workload::{AckLog, FaultyDisk, Workload};

/// What comes next in the loop (in this order when due at the same time).
enum Due {
    Step(usize),
    Client,
    Poll,
    End,
}

struct FullEngine<'a> {
    net: SimNet,
    nodes: Vec<FullNode>,
    settings: NodeSettings,
    seed: u64,
    notes: Notes,
    trace: Trace<'a>,
    log: AckLog,
    failure: Option<Violation>,
}

/// What a run of a full scenario is built from, every option checked.
struct Prepared {
    settings: NodeSettings,
    clocks: Vec<ClockSpec>,
    loads: Vec<Load>,
    checks: DataChecks,
    /// The timeline and the nemesis's faults for the run's seed, in time order.
    steps: Vec<TimedOp>,
}

fn prepare(scenario: &Scenario, seed: u64) -> Result<Prepared, SimError> {
    scenario.validate()?;
    if !matches!(scenario.cluster.protocol.as_str(), "" | "node") {
        return Err(SimError::invalid(
            "cluster.protocol: engine: full runs whole nodes (`node`, or leave it out)",
        ));
    }
    let n = scenario.cluster.nodes;
    let settings = NodeSettings::parse(&scenario.cluster.config, n, scenario.duration)?;
    let clocks = parse_clocks(&scenario.clocks, n)?;
    let loads = parse_workload(&scenario.workload, n)?;
    if let Some((i, load)) = loads
        .iter()
        .enumerate()
        .find(|(_, load)| load.spec.until > scenario.duration)
    {
        return Err(SimError::invalid(format!(
            "workload[{i}].until: {} is after duration ({})",
            crate::duration::show(load.spec.until),
            crate::duration::show(scenario.duration)
        )));
    }
    let checks = DataChecks::parse(scenario)?;
    let mut steps = compile(scenario)?;
    steps.extend(nemesis::plan(
        &scenario.nemesis,
        n,
        scenario.duration,
        seed,
    )?);
    steps.sort_by_key(|s| s.at);
    if steps
        .iter()
        .any(|s| matches!(s.op, Op::Slow(..) | Op::Node(NodeOp::Unslow, _)))
    {
        return Err(SimError::invalid(
            "timeline: `slow` and `unslow` are not available with engine: full",
        ));
    }
    Ok(Prepared {
        settings,
        clocks,
        loads,
        checks,
        steps,
    })
}

/// Checks everything a run of a full scenario would check before it starts, without
/// running it (the nemesis's options are the same for every seed).
pub(crate) fn check(scenario: &Scenario) -> Result<(), SimError> {
    prepare(scenario, 1)?;
    Fabric::new(
        scenario.cluster.nodes,
        &scenario.network,
        kvs_net::seeded_rng(0, "network"),
    )?;
    Ok(())
}

/// Plays an `engine: full` scenario.
pub(crate) fn run(scenario: &Scenario, opts: RunOptions<'_>) -> Result<RunReport, SimError> {
    let Prepared {
        settings,
        clocks,
        loads,
        checks,
        steps,
    } = prepare(scenario, opts.seed)?;
    let n = scenario.cluster.nodes;
    let mut workload = Workload::new(loads, opts.seed);
    let net = SimNet::new(n, &scenario.network, opts.seed)?;
    for (i, clock) in clocks.iter().enumerate() {
        net.set_clock_offset(i, clock.offset_us);
        net.set_clock_drift(i, clock.drift_ppm);
    }
    let mut engine = FullEngine {
        nodes: (0..n)
            .map(|i| FullNode::new(i, &net, settings.store))
            .collect::<Result<_, _>>()?,
        net,
        settings,
        seed: opts.seed,
        notes: Notes::default(),
        trace: Trace::new(opts.trace),
        log: AckLog::default(),
        failure: None,
    };
    for i in 0..n {
        engine.nodes[i].start(&engine.net, &engine.settings, engine.seed, &engine.notes)?;
    }
    let quiesce_at = scenario.quiesce_at();
    let mut next_step = 0;
    let mut next_poll = checks.converge_within.map(|_| quiesce_at);
    let mut converged_after = None;
    loop {
        let step_at = steps.get(next_step).map(|s| s.at);
        let client = workload.peek();
        let mut due = (scenario.duration, Due::End);
        // A poll at the end itself is made: a deadline may fall there.
        if let Some(at) = next_poll.filter(|&at| at <= due.0) {
            due = (at, Due::Poll);
        }
        if let Some(c) = client.as_ref().filter(|c| c.at <= due.0) {
            due = (c.at, Due::Client);
        }
        if let Some(at) = step_at.filter(|&at| at <= due.0) {
            due = (at, Due::Step(next_step));
        }
        let (at, what) = due;
        engine.net.run_until(at);
        engine.trace_notes()?;
        match what {
            Due::End => break,
            Due::Step(i) => {
                next_step += 1;
                engine.record(at, Event::Step(steps[i].what.clone()))?;
                engine.apply(&steps[i].op)?;
            }
            Due::Client => {
                if let Some(planned) = client {
                    let (node, what) = workload.run(&planned, &engine.nodes, &mut engine.log);
                    engine.record(at, Event::Note { node, what })?;
                }
            }
            Due::Poll => {
                let within = checks.converge_within.unwrap_or_default();
                let deadline_at = quiesce_at + within;
                let deadline = at >= deadline_at;
                match converged(&engine.nodes, &engine.log, deadline) {
                    Ok(()) => {
                        next_poll = None;
                        converged_after = Some(at.saturating_sub(quiesce_at));
                    }
                    Err(evidence) if deadline => {
                        engine.failure = Some(Violation {
                            property: "data_converged".into(),
                            evidence: format!(
                                "not converged {} after quiesce: {evidence}",
                                crate::duration::show(within)
                            ),
                        });
                        break;
                    }
                    // The last poll comes at the deadline itself: a run that converges
                    // after it fails, however close (the polls' spacing passed a run up
                    // to one spacing late; found by a black-box audit).
                    Err(_) => next_poll = Some((at + POLL).min(deadline_at)),
                }
            }
        }
    }
    if engine.failure.is_none() {
        engine.failure = checks.at_end(&engine.nodes, &engine.log).err();
    }
    let mut measurements = vec![
        ("workload.sent".to_string(), workload.sent() as f64),
        ("workload.acked".to_string(), engine.log.acks.len() as f64),
    ];
    if let Some(after) = converged_after {
        measurements.push((
            "data_converged.after_quiesce_ms".into(),
            after.as_secs_f64() * 1000.0,
        ));
    }
    let virtual_time = engine.net.now();
    let counts = engine.net.counts();
    let (digest, last_events, events) = engine.trace.finish()?;
    Ok(RunReport {
        name: scenario.name.clone(),
        seed: opts.seed,
        digest,
        violation: engine.failure,
        last_events,
        events,
        virtual_time,
        counts,
        measurements,
    })
}

impl FullEngine<'_> {
    fn record(&mut self, at: Duration, event: Event) -> Result<(), SimError> {
        self.trace.record(Record { at, event }, &[])?;
        Ok(())
    }

    /// Traces the membership changes the nodes saw since the last call.
    fn trace_notes(&mut self) -> Result<(), SimError> {
        let notes = std::mem::take(
            &mut *self
                .notes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for (at, node, what) in notes {
            self.record(at, Event::Note { node, what })?;
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), SimError> {
        match op {
            Op::Net(net_op) => self.net.apply(net_op),
            Op::Node(kind, nodes) => {
                for &i in nodes {
                    self.node_op(*kind, i)?;
                }
                Ok(())
            }
            Op::Disk(nodes, fault) => {
                for &i in nodes {
                    self.nodes[i].disk_fault(*fault)?;
                    self.log.faulty_disks.push(FaultyDisk {
                        node: i,
                        from: self.net.now(),
                        until: None,
                    });
                }
                Ok(())
            }
            Op::Slow(..) => Ok(()),
        }
    }

    fn node_op(&mut self, kind: NodeOp, i: usize) -> Result<(), SimError> {
        let node = &mut self.nodes[i];
        match kind {
            NodeOp::Crash | NodeOp::Wipe if node.is_up() => {
                self.net.pause(i, false);
                self.net.crash(i);
                node.crash(kind == NodeOp::Wipe)?;
            }
            NodeOp::Restart if !node.is_up() => {
                let now = self.net.now();
                for disk in &mut self.log.faulty_disks {
                    if disk.node == i && disk.until.is_none() {
                        disk.until = Some(now);
                    }
                }
                self.net.set_up(i, true);
                node.start(&self.net, &self.settings, self.seed, &self.notes)?;
            }
            NodeOp::Pause if node.serves() => {
                self.net.pause(i, true);
                node.paused = true;
            }
            NodeOp::Resume if node.paused => {
                self.net.pause(i, false);
                node.paused = false;
            }
            _ => {}
        }
        Ok(())
    }
}
