//! Simulated implementations of the `kvs_net` transport traits ([`SimDatagrams`],
//! [`SimStreams`]) and clock ([`SimClock`]), run by a deterministic executor on virtual
//! time ([`SimNet`]). This is what whole-node (`engine: full`) scenarios will run on: real
//! async driver code over a simulated network, with the same seed giving the same run.
//! Tasks are polled one at a time in wake order; when none is ready, time jumps to the
//! next timer or delivery.

mod core;
mod datagrams;
mod runtime;
mod streams;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvs_net::{BlockingWork, BoxSleep, BoxTask, Clock, Runtime, TaskHandle, seeded_rng};

use self::core::{Core, lock};
use self::runtime::{Executor, Spawner};
use crate::fabric::{Fabric, NetCounts, NetOp};
use crate::{Network, SimError};

pub use datagrams::SimDatagrams;
pub use runtime::{SimTask, Sleep, virtual_now};
pub use streams::{SimConnection, SimStream, SimStreams};

/// Wall-clock reading of virtual time zero (2025-01-01T00:00:00Z, in µs).
const UNIX_ORIGIN_US: u64 = 1_735_689_600_000_000;

/// A simulated network of `n` nodes with its executor.
pub struct SimNet {
    core: Arc<Mutex<Core>>,
    executor: Executor,
}

/// A node's clock: virtual time, with the node's wall-clock offset.
#[derive(Clone)]
pub struct SimClock {
    core: Arc<Mutex<Core>>,
    node: usize,
}

/// Spawns tasks onto a [`SimNet`] from inside other tasks.
#[derive(Clone)]
pub struct SimSpawner(Spawner);

impl SimNet {
    /// A network of `n` nodes (`n1`..) with the links of `network`, drawing from `seed`.
    pub fn new(n: usize, network: &Network, seed: u64) -> Result<Self, SimError> {
        let fabric = Fabric::new(n, network, seeded_rng(seed, "network"))?;
        Ok(Self {
            core: Arc::new(Mutex::new(Core::new(n, fabric))),
            executor: Executor::default(),
        })
    }

    /// Node `i`'s datagram transport.
    pub fn datagrams(&self, node: usize) -> SimDatagrams {
        SimDatagrams {
            core: Arc::clone(&self.core),
            node,
        }
    }

    /// Node `i`'s stream transport.
    pub fn streams(&self, node: usize) -> SimStreams {
        SimStreams {
            core: Arc::clone(&self.core),
            node,
        }
    }

    /// Node `i`'s clock.
    pub fn clock(&self, node: usize) -> SimClock {
        SimClock {
            core: Arc::clone(&self.core),
            node,
        }
    }

    /// A handle to spawn tasks.
    pub fn spawner(&self) -> SimSpawner {
        SimSpawner(self.executor.spawner())
    }

    /// Spawns a task of the simulator's own (no node's).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        drop(self.executor.spawner().spawn(task, None));
    }

    /// Node `i`'s runtime: its tasks die with it ([`SimNet::crash`]) and stop while it is
    /// paused ([`SimNet::pause`]).
    pub fn runtime(&self, node: usize) -> SimRuntime {
        SimRuntime {
            spawner: self.executor.spawner(),
            core: Arc::clone(&self.core),
            node,
        }
    }

    /// Crashes node `i`: its tasks are dropped and its network is down until
    /// [`SimNet::set_up`] brings it back.
    pub fn crash(&mut self, node: usize) {
        self.executor.kill_node(node);
        self.set_up(node, false);
        lock(&self.core).crashed(node);
    }

    /// Stops (`true`) or resumes running node `i`'s tasks (a stopped process: its
    /// timers and inputs wait; its peers' connections stay open).
    pub fn pause(&mut self, node: usize, paused: bool) {
        self.executor.set_paused(node, paused);
    }

    /// Runs tasks and the network until virtual time `end`; returns the time reached.
    pub fn run_until(&mut self, end: Duration) -> Duration {
        self.executor.run_until(&self.core, end)
    }

    /// Tasks still running.
    pub fn live_tasks(&self) -> usize {
        self.executor.live_tasks()
    }

    /// The current virtual time.
    pub fn now(&self) -> Duration {
        lock(&self.core).now
    }

    /// What the network did.
    pub fn counts(&self) -> NetCounts {
        lock(&self.core).fabric.counts().clone()
    }

    /// Splits the nodes into groups that cannot reach each other (unlisted: one more).
    pub fn partition(&self, groups: &[&[usize]]) {
        let mut core = lock(&self.core);
        let n = core.up.len();
        let mut label = vec![u32::try_from(groups.len() + 1).unwrap_or(u32::MAX); n];
        for (g, members) in groups.iter().enumerate() {
            for &i in members.iter().filter(|&&i| i < n) {
                label[i] = u32::try_from(g + 1).unwrap_or(u32::MAX);
            }
        }
        let now = core.now;
        let _ = core.fabric.apply(now, &NetOp::Partition(label));
    }

    /// Blocks every link from a node of `from` to a node of `to` (one way: the other
    /// direction still carries), until [`heal`](Self::heal).
    pub fn block(&self, from: &[usize], to: &[usize]) {
        let op = NetOp::Oneway(from.iter().copied().collect(), to.iter().copied().collect());
        let mut core = lock(&self.core);
        let now = core.now;
        let _ = core.fabric.apply(now, &op);
    }

    /// Holds what a node of `from` sends to a node of `to` for `hold` (datagrams and
    /// stream frames arrive at its end), unless a [`heal`](Self::heal) comes first.
    pub fn clog(&self, from: &[usize], to: &[usize], hold: Duration) {
        let op = NetOp::Clog(
            from.iter().copied().collect(),
            to.iter().copied().collect(),
            hold,
        );
        let _ = self.apply(&op);
    }

    /// Applies a resolved timeline change to the network.
    pub(crate) fn apply(&self, op: &NetOp) -> Result<(), SimError> {
        let mut core = lock(&self.core);
        let now = core.now;
        core.fabric.apply(now, op)?;
        if matches!(op, NetOp::Heal) {
            core.release_held();
        }
        Ok(())
    }

    /// Removes every partition and clog (what a clog held arrives at once).
    pub fn heal(&self) {
        let _ = self.apply(&NetOp::Heal);
    }

    /// Crashes (`false`) or revives (`true`) a node's network: a down node sends and
    /// receives nothing. Its tasks are the caller's to stop.
    pub fn set_up(&self, node: usize, up: bool) {
        let mut core = lock(&self.core);
        core.up[node] = up;
        if !up {
            core.mailboxes[node].datagrams.clear();
        }
    }

    /// Sets a node's wall-clock offset (clock skew), in microseconds.
    pub fn set_clock_offset(&self, node: usize, offset_us: i64) {
        lock(&self.core).clock_offsets_us[node] = offset_us;
    }

    /// Sets how fast a node's wall clock runs off true time, in parts per million.
    pub fn set_clock_drift(&self, node: usize, drift_ppm: i64) {
        lock(&self.core).clock_drift_ppm[node] = drift_ppm;
    }
}

impl SimSpawner {
    /// Spawns a task of the simulator's own.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        drop(self.0.spawn(task, None));
    }
}

/// One node's [`Runtime`] on the simulator: tasks tagged with the node, virtual-time
/// sleeps, blocking work run in place.
#[derive(Clone)]
pub struct SimRuntime {
    spawner: Spawner,
    core: Arc<Mutex<Core>>,
    node: usize,
}

impl Runtime for SimRuntime {
    fn spawn(&self, task: BoxTask) -> TaskHandle {
        TaskHandle::new(self.spawner.spawn(task, Some(self.node)))
    }

    fn sleep(&self, duration: Duration) -> BoxSleep {
        let until = lock(&self.core).now + duration;
        Box::pin(Sleep::new(Arc::clone(&self.core), until))
    }

    fn spawn_blocking(&self, work: BlockingWork) {
        work();
    }
}

impl SimClock {
    /// Completes after `d` of virtual time.
    pub fn sleep(&self, d: Duration) -> Sleep {
        let until = lock(&self.core).now + d;
        Sleep::new(Arc::clone(&self.core), until)
    }
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        lock(&self.core).now
    }

    fn unix_micros(&self) -> u64 {
        let core = lock(&self.core);
        let now = u64::try_from(core.now.as_micros()).unwrap_or(u64::MAX);
        let offset = core.clock_offsets_us[self.node];
        let drift = i64::try_from(
            i128::from(now) * i128::from(core.clock_drift_ppm[self.node]) / 1_000_000,
        )
        .unwrap_or(0);
        UNIX_ORIGIN_US
            .saturating_add(now)
            .saturating_add_signed(offset)
            .saturating_add_signed(drift)
    }
}
