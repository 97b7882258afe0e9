//! The membership driver (feature `driver`): runs the sans-IO [`Swim`] core on any
//! [`Runtime`] (tokio in the node, the simulator's executor in `kvs-sim`) over any
//! [`Datagrams`] transport of `kvs-net`, on an injected [`Clock`] and random seed, so
//! that the node runs it over authenticated UDP and tests (and the simulator) over their
//! own datagrams and virtual time.
//!
//! One task owns the core's inputs: it feeds it received datagrams and timer expiries at
//! the clock's monotonic time, sends what it wants sent, logs every membership event and
//! hands it to the caller's sink (the node turns them into replication's peers up and
//! down). Snapshots are read through [`Membership::members`] and
//! [`Membership::metrics`]. When `shutdown` turns true the node announces `left` and
//! keeps gossiping for at most [`LEAVE_GRACE`] so that the news spreads; then the task
//! ends and [`Membership::stopped`] returns.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kvs_net::{Clock, Datagrams, NetError, Runtime, TaskHandle};
use tokio::sync::watch;
use tracing::Instrument;

use crate::{LocalMember, Member, MembershipEvent, Metrics, Swim, SwimConfig, SwimError};

/// How long a leaving node keeps gossiping its `left` at most.
pub const LEAVE_GRACE: Duration = Duration::from_millis(800);

/// How long a node started with seeds may know no other member before it warns that it
/// cannot join, and how long between such warnings after that.
const JOIN_WARNING_AFTER: Duration = Duration::from_secs(5);
const JOIN_WARNING_EVERY: Duration = Duration::from_secs(60);
/// How long between warnings that another node uses this node's id.
const ID_CONFLICT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How long the driver sleeps when the core wants no wake-up (it wants one as soon as
/// it knows another member; until then only a datagram or the shutdown wakes it).
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// What the driver needs to start.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// This node as the others see it (its `gossip_addr` is where they reach the
    /// transport).
    pub local: LocalMember,
    /// Protocol timing.
    pub swim: SwimConfig,
    /// Gossip addresses to join through (none: wait for others to join this node).
    pub seeds: Vec<SocketAddr>,
    /// Seeds the core's random choices (log it, or take it from a scenario, to replay).
    pub rng_seed: u64,
}

/// A running membership; see the module doc.
pub struct Membership {
    swim: Arc<Mutex<Swim>>,
    task: TaskHandle,
}

fn lock(swim: &Mutex<Swim>) -> MutexGuard<'_, Swim> {
    swim.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Membership {
    /// Builds the core, joins through the seeds and spawns the driver task on `runtime`.
    /// Every membership event is logged, then given to `events`.
    pub fn start<T: Datagrams>(
        runtime: Arc<dyn Runtime>,
        transport: Arc<T>,
        clock: Arc<dyn Clock>,
        config: DriverConfig,
        events: impl Fn(&MembershipEvent) + Send + Sync + 'static,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, SwimError> {
        let span = tracing::info_span!(
            "membership",
            node_id = %config.local.id,
            addr = %config.local.gossip_addr,
        );
        // A node that is one of its own seeds may be the cluster's first: it is not
        // warned about being alone.
        let joining = !config.seeds.is_empty() && !config.seeds.contains(&config.local.gossip_addr);
        let mut swim = Swim::new(config.local, config.swim, config.rng_seed, clock.now())?;
        if !config.seeds.is_empty() {
            swim.join(&config.seeds, clock.now());
        }
        let join_warning_at = joining.then(|| clock.now() + JOIN_WARNING_AFTER);
        let swim = Arc::new(Mutex::new(swim));
        let driver = Driver {
            swim: Arc::clone(&swim),
            seeds: config.seeds,
            join_warning_at,
            id_conflicts_warned: 0,
            id_warning_at: Duration::ZERO,
            transport,
            clock,
            runtime: Arc::clone(&runtime),
            events,
        };
        let task = runtime.spawn(Box::pin(driver.run(shutdown).instrument(span)));
        Ok(Self { swim, task })
    }

    /// Every known member, this node included.
    pub fn members(&self) -> Vec<Member> {
        lock(&self.swim).members()
    }

    /// The core's counters.
    pub fn metrics(&self) -> Metrics {
        lock(&self.swim).metrics()
    }

    /// Waits until the driver has announced `left` and stopped; every member as it then
    /// knew them, this node included.
    pub async fn stopped(self) -> Vec<Member> {
        self.task.await;
        lock(&self.swim).members()
    }

    /// Stops the driver at once, without a leave (a crash, in the simulator).
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// What woke the driver.
enum Input {
    Timer,
    Shutdown,
    Datagram(Result<(SocketAddr, Vec<u8>), NetError>),
}

/// The driver task's state: the core, the transport, the clock and the event sink.
struct Driver<T, E> {
    swim: Arc<Mutex<Swim>>,
    /// The gossip addresses this node joins through.
    seeds: Vec<SocketAddr>,
    /// When to warn that no seed has answered, while none has.
    join_warning_at: Option<Duration>,
    /// The id conflicts counted when this node last warned of one, and when it may warn
    /// again.
    id_conflicts_warned: u64,
    id_warning_at: Duration,
    transport: Arc<T>,
    clock: Arc<dyn Clock>,
    runtime: Arc<dyn Runtime>,
    events: E,
}

impl<T: Datagrams, E: Fn(&MembershipEvent)> Driver<T, E> {
    /// One loop owning the core's inputs, until the leave has been gossiped.
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.flush().await;
        let mut leave_by: Option<Duration> = None;
        loop {
            let now = self.clock.now();
            let next = lock(&self.swim).poll_timeout();
            if leave_by.is_some_and(|by| next.is_none() || now >= by) {
                return;
            }
            let wake = next.unwrap_or(now + IDLE_WAKE);
            let wake = leave_by.map_or(wake, |by| wake.min(by));
            // Biased: the same inputs are handled in the same order (timers, then the
            // shutdown, then datagrams), so that a run on virtual time replays exactly.
            let input = tokio::select! {
                biased;
                () = self.runtime.sleep(wake.saturating_sub(now)) => Input::Timer,
                _ = shutdown.wait_for(|stop| *stop), if leave_by.is_none() => Input::Shutdown,
                received = self.transport.recv_from() => Input::Datagram(received),
            };
            let now = self.clock.now();
            match input {
                Input::Timer => {
                    lock(&self.swim).handle_timeout(now);
                    self.warn_while_alone(now);
                    self.flush().await;
                }
                Input::Shutdown => {
                    lock(&self.swim).leave(now);
                    leave_by = Some(now + LEAVE_GRACE);
                    self.flush().await;
                }
                Input::Datagram(Ok((from, bytes))) => {
                    lock(&self.swim).handle_datagram(from, &bytes, now);
                    self.warn_of_id_conflict(now);
                    let span = tracing::debug_span!("gossip", peer = %from);
                    self.flush().instrument(span).await;
                }
                Input::Datagram(Err(error)) => tracing::debug!(%error, "gossip receive failed"),
            }
        }
    }

    /// Warns, from [`JOIN_WARNING_AFTER`] after the start and then every
    /// [`JOIN_WARNING_EVERY`], while no seed has answered: a node that cannot join
    /// otherwise runs on alone without a word (the seeds are down or unreachable, or have
    /// another `cluster_secret` and drop its datagrams).
    fn warn_while_alone(&mut self, now: Duration) {
        if self.join_warning_at.is_none_or(|at| now < at) {
            return;
        }
        if lock(&self.swim).live_members() > 1 {
            self.join_warning_at = None;
            return;
        }
        self.join_warning_at = Some(now + JOIN_WARNING_EVERY);
        tracing::warn!(
            seeds = ?self.seeds,
            "no seed (or peer kept from an earlier run) has answered yet: check that they \
             run and that this node reaches their gossip ports, and that every node has the \
             same cluster_secret"
        );
    }

    /// Warns, at most once every [`ID_CONFLICT_WARNING_EVERY`], while another process uses this
    /// node's id (see [`Swim::id_conflict`]): the two refute each other for ever and the
    /// cluster sees one member flap between their addresses, which nothing else says.
    fn warn_of_id_conflict(&mut self, now: Duration) {
        let (conflicts, addr) = {
            let swim = lock(&self.swim);
            (swim.metrics().id_conflicts, swim.id_conflict())
        };
        if conflicts == self.id_conflicts_warned || now < self.id_warning_at {
            return;
        }
        self.id_conflicts_warned = conflicts;
        self.id_warning_at = now + ID_CONFLICT_WARNING_EVERY;
        if let Some(other) = addr {
            tracing::warn!(
                %other,
                "another node uses this node's node_id: each node needs an id of its own \
                 (a config copied from another node keeps its node_id); the two refute each \
                 other and the cluster sees one member flapping between their addresses"
            );
        }
    }

    /// Sends every pending datagram; logs every pending event and hands it on.
    async fn flush(&self) {
        loop {
            let (transmit, events) = {
                let mut swim = lock(&self.swim);
                let events: Vec<MembershipEvent> =
                    std::iter::from_fn(|| swim.poll_event()).collect();
                (swim.poll_transmit(), events)
            };
            for event in &events {
                log_event(event);
                (self.events)(event);
            }
            let Some(transmit) = transmit else { return };
            if let Err(error) = self
                .transport
                .send_to(transmit.dst, &transmit.payload)
                .await
            {
                tracing::debug!(%error, dst = %transmit.dst, "gossip send failed");
            }
        }
    }
}

fn log_event(event: &MembershipEvent) {
    match event {
        MembershipEvent::Alive(m) => {
            tracing::info!(node_id = %m.id, addr = %m.addr, incarnation = m.incarnation, "member alive")
        }
        MembershipEvent::Suspect(m) => tracing::info!(node_id = %m.id, "member suspect"),
        MembershipEvent::Dead(m) => tracing::warn!(node_id = %m.id, "member dead"),
        MembershipEvent::Left(m) => tracing::info!(node_id = %m.id, "member left"),
        MembershipEvent::Updated(m) => tracing::debug!(node_id = %m.id, "member updated"),
        MembershipEvent::Removed(id) => {
            tracing::info!(node_id = %id, "member forgotten")
        }
    }
}
