//! The membership driver (feature `driver`) over in-memory datagrams on a paused tokio
//! clock: drivers find each other, a node cut off the network is declared dead, a node
//! that shuts down is seen to leave, and the same seeds replay the same run. Every bound
//! is on virtual time, so the tests are deterministic and take milliseconds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvs_membership::{
    DriverConfig, LEAVE_GRACE, LocalMember, MemberState, Membership, MembershipEvent, SwimConfig,
};
use kvs_net::{Clock, Datagrams, NetError, NodeId};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

type Packet = (SocketAddr, Vec<u8>);

/// An in-memory network: one inbox per address; a cut address neither sends nor receives.
#[derive(Default)]
struct Hub {
    inboxes: Mutex<BTreeMap<SocketAddr, mpsc::UnboundedSender<Packet>>>,
    cut: Mutex<BTreeSet<SocketAddr>>,
}

impl Hub {
    fn attach(self: &Arc<Self>, addr: SocketAddr) -> HubDatagrams {
        let (sender, inbox) = mpsc::unbounded_channel();
        self.inboxes.lock().unwrap().insert(addr, sender);
        HubDatagrams {
            hub: Arc::clone(self),
            addr,
            inbox: tokio::sync::Mutex::new(inbox),
        }
    }

    fn cut(&self, addr: SocketAddr) {
        self.cut.lock().unwrap().insert(addr);
    }
}

/// One node's datagrams on the [`Hub`]: delivered at once, in order, never lost.
struct HubDatagrams {
    hub: Arc<Hub>,
    addr: SocketAddr,
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<Packet>>,
}

impl Datagrams for HubDatagrams {
    async fn send_to(&self, to: SocketAddr, payload: &[u8]) -> Result<(), NetError> {
        let cut = self.hub.cut.lock().unwrap();
        if cut.contains(&self.addr) || cut.contains(&to) {
            return Ok(());
        }
        if let Some(inbox) = self.hub.inboxes.lock().unwrap().get(&to) {
            let _ = inbox.send((self.addr, payload.to_vec()));
        }
        Ok(())
    }

    async fn recv_from(&self) -> Result<Packet, NetError> {
        self.inbox.lock().await.recv().await.ok_or(NetError::Closed)
    }

    fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.addr)
    }
}

/// Tokio's clock (virtual once paused) as the driver's [`Clock`].
struct TokioClock(Instant);

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }

    fn unix_micros(&self) -> u64 {
        1_735_689_600_000_000 + u64::try_from(self.0.elapsed().as_micros()).unwrap()
    }
}

/// What one node's event sink saw: when (virtual time since the run began), about
/// whom, and the event's kind.
type Seen = Arc<Mutex<Vec<(Duration, String, &'static str)>>>;

struct Node {
    name: &'static str,
    addr: SocketAddr,
    membership: Membership,
    seen: Seen,
    stop: watch::Sender<bool>,
}

fn kind(event: &MembershipEvent) -> (String, &'static str) {
    match event {
        MembershipEvent::Alive(m) => (m.id.to_string(), "alive"),
        MembershipEvent::Suspect(m) => (m.id.to_string(), "suspect"),
        MembershipEvent::Dead(m) => (m.id.to_string(), "dead"),
        MembershipEvent::Left(m) => (m.id.to_string(), "left"),
        MembershipEvent::Updated(m) => (m.id.to_string(), "updated"),
        MembershipEvent::Removed(id) => (id.to_string(), "removed"),
    }
}

/// Starts node `i` (address 10.0.0.i:7946) on the hub, joining through `seeds`.
fn start(hub: &Arc<Hub>, origin: Instant, name: &'static str, i: u8, seeds: &[SocketAddr]) -> Node {
    let addr = SocketAddr::from(([10, 0, 0, i], 7946));
    let config = DriverConfig {
        local: LocalMember {
            id: NodeId::new(name),
            gossip_addr: addr,
            meta: Vec::new(),
            incarnation: 0,
            joined_at: 0,
        },
        swim: SwimConfig::lan(),
        seeds: seeds.to_vec(),
        rng_seed: u64::from(i),
    };
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    let events = move |event: &MembershipEvent| {
        let (subject, kind) = kind(event);
        sink.lock().unwrap().push((origin.elapsed(), subject, kind));
    };
    let (stop, shutdown) = watch::channel(false);
    let membership = Membership::start(
        Arc::new(kvs_net::TokioRuntime),
        Arc::new(hub.attach(addr)),
        Arc::new(TokioClock(origin)),
        config,
        events,
        shutdown,
    )
    .expect("a valid config");
    Node {
        name,
        addr,
        membership,
        seen,
        stop,
    }
}

/// Three nodes, `b` and `c` joining through `a`.
fn three(hub: &Arc<Hub>, origin: Instant) -> Vec<Node> {
    let a = start(hub, origin, "a", 1, &[]);
    let seeds = [a.addr];
    let b = start(hub, origin, "b", 2, &seeds);
    let c = start(hub, origin, "c", 3, &seeds);
    vec![a, b, c]
}

fn state(observer: &Node, subject: &str) -> Option<MemberState> {
    let members = observer.membership.members();
    let member = members.iter().find(|m| m.id.as_str() == subject)?;
    Some(member.state)
}

/// Waits (polling every 10 ms of virtual time) until `cond` holds; fails past `limit`.
async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

async fn all_alive(nodes: &[Node]) {
    until(
        "every node sees every node alive",
        Duration::from_secs(5),
        || {
            nodes.iter().all(|observer| {
                nodes
                    .iter()
                    .all(|subject| state(observer, subject.name) == Some(MemberState::Alive))
            })
        },
    )
    .await;
}

/// The kinds of event `observer`'s sink got about `subject`, in order.
fn kinds(observer: &Node, subject: &str) -> Vec<&'static str> {
    let seen = observer.seen.lock().unwrap();
    seen.iter()
        .filter(|(_, about, _)| about == subject)
        .map(|&(_, _, kind)| kind)
        .collect()
}

/// Runs three nodes, cuts `c` off once all are alive, and waits until `a` and `b` have
/// declared it dead; returns the nodes and how long detection took.
async fn cut_and_detect() -> (Vec<Node>, Duration) {
    let hub = Arc::new(Hub::default());
    let nodes = three(&hub, Instant::now());
    all_alive(&nodes).await;
    hub.cut(nodes[2].addr);
    let took = until("a and b declare c dead", Duration::from_secs(10), || {
        nodes[..2]
            .iter()
            .all(|observer| state(observer, "c") == Some(MemberState::Dead))
    })
    .await;
    (nodes, took)
}

#[tokio::test(start_paused = true)]
async fn drivers_find_each_other_and_declare_a_cut_node_dead() {
    let (nodes, took) = cut_and_detect().await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // Detection takes at least a probe and a suspicion, on virtual time.
    assert!(
        took > SwimConfig::lan().probe_interval,
        "dead after {took:?}"
    );
    for (observer, other) in [(a, b), (b, a)] {
        assert_eq!(state(observer, other.name), Some(MemberState::Alive));
        assert_eq!(
            kinds(observer, other.name),
            ["alive"],
            "{} only ever saw {} alive",
            observer.name,
            other.name
        );
        let about_c = kinds(observer, "c");
        assert_eq!(about_c.first(), Some(&"alive"), "{about_c:?}");
        assert_eq!(about_c.last(), Some(&"dead"), "{about_c:?}");
        assert!(!about_c.contains(&"left"), "{about_c:?}");
        assert!(observer.membership.metrics().deaths >= 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_that_shuts_down_announces_left_within_the_grace() {
    let hub = Arc::new(Hub::default());
    let mut nodes = three(&hub, Instant::now());
    all_alive(&nodes).await;
    let c = nodes.pop().expect("three nodes");
    c.stop.send(true).expect("the driver listens");
    let stopping = Instant::now();
    c.membership.stopped().await;
    assert!(
        stopping.elapsed() <= LEAVE_GRACE,
        "stopped after {:?}",
        stopping.elapsed()
    );
    until("a and b see c left", Duration::from_secs(5), || {
        nodes
            .iter()
            .all(|observer| state(observer, "c") == Some(MemberState::Left))
    })
    .await;
    for observer in &nodes {
        assert_eq!(kinds(observer, "c"), ["alive", "left"], "{}", observer.name);
    }
}

#[test]
fn the_same_seeds_replay_the_same_run() {
    let run = || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let (nodes, took) = cut_and_detect().await;
            let seen: Vec<_> = nodes
                .iter()
                .map(|n| n.seen.lock().unwrap().clone())
                .collect();
            (seen, took)
        })
    };
    let first = run();
    assert!(first.0.iter().all(|seen| !seen.is_empty()));
    assert_eq!(first, run());
}
