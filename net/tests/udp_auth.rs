//! Real-socket tests of the UDP transport's authentication: wrong secret, tampered,
//! truncated, oversized and replayed datagrams are dropped and counted, never a panic; a
//! datagram captured on the wire is refused by a third node and by the receiver's next
//! boot, while the addressing handshake lets normal traffic through.
#![cfg(feature = "udp")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kvs_net::{ClusterSecret, Datagrams, MAX_DATAGRAM, MAX_PAYLOAD, NetError, UdpTransport};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const LOCAL: &str = "127.0.0.1:0";
/// Only a guard against a hang: every wait below ends as soon as its datagram arrives.
const T: Duration = Duration::from_secs(10);

/// A transport with a task that keeps receiving (the addressing handshake runs there),
/// handing what it delivers to `inbox`. The task stops when the peer is dropped.
struct Peer {
    t: Arc<UdpTransport>,
    inbox: mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>,
    task: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Peer {
    fn new(t: UdpTransport) -> Self {
        let t = Arc::new(t);
        let (tx, inbox) = mpsc::unbounded_channel();
        let rx = Arc::clone(&t);
        let task = tokio::spawn(async move {
            while let Ok(got) = rx.recv_from().await {
                if tx.send(got).is_err() {
                    return;
                }
            }
        });
        Self { t, inbox, task }
    }

    fn addr(&self) -> SocketAddr {
        self.t.local_addr().expect("addr")
    }

    /// The next delivered datagram: a wrongly accepted one shows as a mismatch, a wrongly
    /// dropped one as a failure rather than a hang.
    async fn recv(&mut self) -> (SocketAddr, Vec<u8>) {
        timeout(T, self.inbox.recv())
            .await
            .expect("a datagram in time")
            .expect("the receive task runs")
    }

    /// Stops the receive task and gives the transport back (its socket closes with it).
    async fn stop(mut self) -> UdpTransport {
        self.task.abort();
        let _ = (&mut self.task).await;
        let t = Arc::clone(&self.t);
        drop(self);
        Arc::into_inner(t).expect("the task held the only other handle")
    }
}

async fn bind_at(addr: SocketAddr, secret: &str) -> UdpTransport {
    UdpTransport::bind(addr, &ClusterSecret::new(secret))
        .await
        .expect("bind")
}

async fn peer(secret: &str) -> Peer {
    Peer::new(bind_at(LOCAL.parse().expect("addr"), secret).await)
}

async fn raw() -> UdpSocket {
    UdpSocket::bind(LOCAL).await.expect("bind raw")
}

/// Receives one datagram on a raw socket.
async fn take(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let (n, _) = timeout(T, socket.recv_from(&mut buf))
        .await
        .expect("in time")
        .expect("recv");
    buf.truncate(n);
    buf
}

/// Captures what `sender` puts on the wire to a raw socket (a first contact: it names no
/// boot).
async fn capture(sender: &Peer, payload: &[u8]) -> Vec<u8> {
    let raw = raw().await;
    let to = raw.local_addr().expect("addr");
    sender.t.send_to(to, payload).await.expect("send");
    take(&raw).await
}

/// A man in the middle: forwards the next datagram `relay` gets to `to` and returns it.
async fn forward(relay: &UdpSocket, to: SocketAddr) -> Vec<u8> {
    let wire = take(relay).await;
    relay.send_to(&wire, to).await.expect("send");
    wire
}

/// Makes `tx` send `payload` to `rx` through the man in the middle `relay` and returns the
/// datagram as captured there, addressed to `rx`'s boot: the relay carries the first
/// contact to `rx`, its hello back to `tx`, and then the re-sent datagram, which `rx`
/// delivers.
async fn capture_addressed(tx: &Peer, rx: &mut Peer, relay: &UdpSocket, payload: &[u8]) -> Vec<u8> {
    let relay_addr = relay.local_addr().expect("addr");
    tx.t.send_to(relay_addr, payload).await.expect("send");
    forward(relay, rx.addr()).await;
    forward(relay, tx.addr()).await;
    let wire = forward(relay, rx.addr()).await;
    assert_eq!(rx.recv().await, (relay_addr, payload.to_vec()));
    wire
}

#[tokio::test]
async fn round_trip_between_two_transports() {
    let (mut a, mut b) = (peer("s3cret").await, peer("s3cret").await);
    a.t.send_to(b.addr(), b"ping").await.expect("send");
    assert_eq!(b.recv().await, (a.addr(), b"ping".to_vec()));
    // b learned a's boot from the datagram it accepted: its answer needs no handshake.
    b.t.send_to(a.addr(), b"pong").await.expect("send");
    assert_eq!(a.recv().await, (b.addr(), b"pong".to_vec()));
    let (ca, cb) = (a.t.counts(), b.t.counts());
    assert_eq!((ca.accepted, ca.handshakes), (1, 1), "b's hello: {ca:?}");
    assert_eq!(
        (cb.accepted, cb.handshakes),
        (1, 1),
        "a's first contact: {cb:?}"
    );
    let max = vec![9u8; MAX_PAYLOAD];
    a.t.send_to(b.addr(), &max).await.expect("max payload fits");
    assert_eq!(b.recv().await.1, max);
    let too_big = vec![0u8; MAX_PAYLOAD + 1];
    assert!(matches!(
        a.t.send_to(b.addr(), &too_big).await,
        Err(NetError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn wrong_secret_is_dropped_and_counted() {
    let (good, bad, mut rx) = (peer("s").await, peer("not-s").await, peer("s").await);
    let to = rx.addr();
    bad.t.send_to(to, b"forged").await.expect("send");
    good.t.send_to(to, b"genuine").await.expect("send");
    assert_eq!(rx.recv().await.1, b"genuine");
    let counts = rx.t.counts();
    assert_eq!((counts.bad_mac, counts.accepted), (1, 1));
    assert_eq!(bad.t.counts().accepted, 0, "the intruder got no hello");
}

#[tokio::test]
async fn tampered_truncated_oversized_and_garbage_are_dropped() {
    let (tx, mut rx) = (peer("s").await, peer("s").await);
    let wire = capture(&tx, b"hello").await;
    let raw = raw().await;
    let to = rx.addr();
    let mut tampered = wire.clone();
    tampered[12] ^= 0x40;
    raw.send_to(&tampered, to).await.expect("send");
    for n in [0, 1, 9, 24] {
        raw.send_to(&wire[..n], to).await.expect("send");
    }
    raw.send_to(&vec![0xAB; MAX_DATAGRAM + 1], to)
        .await
        .expect("send");
    raw.send_to(&vec![0xAB; 60_000], to).await.expect("send");
    raw.send_to(b"garbage that is long enough to hold a tag", to)
        .await
        .expect("send");
    tx.t.send_to(to, b"marker").await.expect("send");
    let (_, payload) = rx.recv().await;
    assert_eq!(payload, b"marker");
    let c = rx.t.counts();
    assert_eq!(c.accepted, 1);
    assert_eq!(c.oversized, 2);
    // A zero-length datagram may or may not be delivered by the OS.
    assert!(c.truncated >= 3, "{c:?}");
    assert_eq!(c.bad_mac, 2, "{c:?}");
}

#[tokio::test]
async fn replays_are_dropped() {
    let (tx, mut rx) = (peer("s").await, peer("s").await);
    let relay = raw().await;
    let wire = capture_addressed(&tx, &mut rx, &relay, b"once").await;
    let to = rx.addr();
    for _ in 0..2 {
        relay.send_to(&wire, to).await.expect("send");
    }
    // A replay from yet another address is caught too: the window is per boot id.
    let other = raw().await;
    other.send_to(&wire, to).await.expect("send");
    tx.t.send_to(to, b"marker").await.expect("send");
    assert_eq!(rx.recv().await.1, b"marker");
    let c = rx.t.counts();
    assert_eq!((c.accepted, c.replayed), (2, 3), "{c:?}");
}

#[tokio::test]
async fn replay_to_a_third_node_is_refused() {
    let (tx, mut rx, mut third) = (peer("s").await, peer("s").await, peer("s").await);
    let relay = raw().await;
    let wire = capture_addressed(&tx, &mut rx, &relay, b"for rx only").await;
    raw()
        .await
        .send_to(&wire, third.addr())
        .await
        .expect("send");
    tx.t.send_to(third.addr(), b"marker").await.expect("send");
    assert_eq!(third.recv().await, (tx.addr(), b"marker".to_vec()));
    let c = third.t.counts();
    assert_eq!((c.misaddressed, c.accepted), (1, 1), "{c:?}");
}

#[tokio::test]
async fn replay_to_the_restarted_receiver_is_refused() {
    let (tx, mut rx) = (peer("s").await, peer("s").await);
    let relay = raw().await;
    let wire = capture_addressed(&tx, &mut rx, &relay, b"before the restart").await;
    // The receiver restarts at the same address: a new boot id, an empty replay window.
    let addr = rx.addr();
    drop(rx.stop().await);
    let mut rx = Peer::new(bind_at(addr, "s").await);
    raw().await.send_to(&wire, addr).await.expect("send");
    tx.t.send_to(addr, b"after the restart")
        .await
        .expect("send");
    assert_eq!(rx.recv().await, (tx.addr(), b"after the restart".to_vec()));
    let c = rx.t.counts();
    assert_eq!((c.misaddressed, c.accepted), (1, 1), "{c:?}");
}

#[tokio::test]
async fn stale_datagrams_are_dropped() {
    use kvs_net::{DatagramAuth, ManualClock};
    const T0: u64 = 1_700_000_000_000_000;
    let secret = ClusterSecret::new("s");
    let addr: SocketAddr = LOCAL.parse().expect("addr");
    let bind = |unix_us: u64| {
        let auth = DatagramAuth::new(&secret);
        UdpTransport::bind_with(addr, auth, Arc::new(ManualClock::new(unix_us)))
    };
    // The sender's clock is two minutes behind the receiver's (beyond DEFAULT_MAX_AGE).
    let (late, on_time, mut rx) = (
        Peer::new(bind(T0).await.expect("bind")),
        Peer::new(bind(T0 + 120_000_000).await.expect("bind")),
        Peer::new(bind(T0 + 120_000_000).await.expect("bind")),
    );
    let to = rx.addr();
    late.t.send_to(to, b"old").await.expect("send");
    on_time.t.send_to(to, b"marker").await.expect("send");
    assert_eq!(rx.recv().await.1, b"marker");
    let c = rx.t.counts();
    assert_eq!((c.stale, c.accepted), (1, 1), "{c:?}");
}

#[tokio::test]
async fn a_wider_freshness_bound_lets_a_skewed_clock_through() {
    use kvs_net::{DatagramAuth, ManualClock, ReplayWindow, random_seed};
    const T0: u64 = 1_700_000_000_000_000;
    let secret = ClusterSecret::new("s");
    let addr: SocketAddr = LOCAL.parse().expect("addr");
    let bind = |unix_us: u64| {
        let window = ReplayWindow::with_max_age(std::time::Duration::from_secs(300));
        let auth = DatagramAuth::with_window(&secret, random_seed(), window);
        UdpTransport::bind_with(addr, auth, Arc::new(ManualClock::new(unix_us)))
    };
    // The same two minutes as above, within a five-minute bound.
    let (late, mut rx) = (
        Peer::new(bind(T0).await.expect("bind")),
        Peer::new(bind(T0 + 120_000_000).await.expect("bind")),
    );
    late.t.send_to(rx.addr(), b"late").await.expect("send");
    assert_eq!(rx.recv().await, (late.addr(), b"late".to_vec()));
    let c = rx.t.counts();
    assert_eq!((c.stale, c.accepted), (0, 1), "{c:?}");
}
