//! Real-socket tests of the UDP transport's authentication: wrong secret, tampered,
//! truncated, oversized and replayed datagrams are dropped and counted, never a panic.
#![cfg(feature = "udp")]

use std::net::SocketAddr;
use std::time::Duration;

use kvs_net::{ClusterSecret, Datagrams, MAX_DATAGRAM, MAX_PAYLOAD, NetError, UdpTransport};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const LOCAL: &str = "127.0.0.1:0";

async fn transport(secret: &str) -> UdpTransport {
    let addr: SocketAddr = LOCAL.parse().expect("addr");
    UdpTransport::bind(addr, &ClusterSecret::new(secret))
        .await
        .expect("bind")
}

/// Receives with a deadline, so that a wrongly accepted datagram shows as a mismatch and a
/// wrongly dropped one as a timeout rather than a hang.
async fn recv(t: &UdpTransport) -> (SocketAddr, Vec<u8>) {
    timeout(Duration::from_secs(5), t.recv_from())
        .await
        .expect("a datagram in time")
        .expect("recv")
}

/// Captures what `sender` puts on the wire by sending to a raw socket.
async fn capture(sender: &UdpTransport, payload: &[u8]) -> Vec<u8> {
    let raw = UdpSocket::bind(LOCAL).await.expect("bind raw");
    let to = raw.local_addr().expect("addr");
    sender.send_to(to, payload).await.expect("send");
    let mut buf = vec![0u8; 2048];
    let (n, _) = timeout(Duration::from_secs(5), raw.recv_from(&mut buf))
        .await
        .expect("in time")
        .expect("recv");
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn round_trip_between_two_transports() {
    let (a, b) = (transport("s3cret").await, transport("s3cret").await);
    let b_addr = b.local_addr().expect("addr");
    a.send_to(b_addr, b"ping").await.expect("send");
    let (from, payload) = recv(&b).await;
    assert_eq!(from, a.local_addr().expect("addr"));
    assert_eq!(payload, b"ping");
    let max = vec![9u8; MAX_PAYLOAD];
    a.send_to(b_addr, &max).await.expect("max payload fits");
    assert_eq!(recv(&b).await.1, max);
    let too_big = vec![0u8; MAX_PAYLOAD + 1];
    assert!(matches!(
        a.send_to(b_addr, &too_big).await,
        Err(NetError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn wrong_secret_is_dropped_and_counted() {
    let (good, bad, rx) = (
        transport("s").await,
        transport("not-s").await,
        transport("s").await,
    );
    let to = rx.local_addr().expect("addr");
    bad.send_to(to, b"forged").await.expect("send");
    good.send_to(to, b"genuine").await.expect("send");
    assert_eq!(recv(&rx).await.1, b"genuine");
    let counts = rx.counts();
    assert_eq!((counts.bad_mac, counts.accepted), (1, 1));
}

#[tokio::test]
async fn tampered_truncated_oversized_and_garbage_are_dropped() {
    let (tx, rx) = (transport("s").await, transport("s").await);
    let wire = capture(&tx, b"hello").await;
    let raw = UdpSocket::bind(LOCAL).await.expect("bind");
    let to = rx.local_addr().expect("addr");
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
    tx.send_to(to, b"marker").await.expect("send");
    let (_, payload) = recv(&rx).await;
    assert_eq!(payload, b"marker");
    let c = rx.counts();
    assert_eq!(c.accepted, 1);
    assert_eq!(c.oversized, 2);
    // A zero-length datagram may or may not be delivered by the OS.
    assert!(c.truncated >= 3, "{c:?}");
    assert_eq!(c.bad_mac, 2, "{c:?}");
}

#[tokio::test]
async fn replays_are_dropped() {
    let (tx, rx) = (transport("s").await, transport("s").await);
    let wire = capture(&tx, b"once").await;
    let raw = UdpSocket::bind(LOCAL).await.expect("bind");
    let to = rx.local_addr().expect("addr");
    for _ in 0..3 {
        raw.send_to(&wire, to).await.expect("send");
    }
    let (_, first) = recv(&rx).await;
    assert_eq!(first, b"once");
    // A replay from yet another address is caught too: the window is per sender id.
    let other = UdpSocket::bind(LOCAL).await.expect("bind");
    other.send_to(&wire, to).await.expect("send");
    tx.send_to(to, b"marker").await.expect("send");
    assert_eq!(recv(&rx).await.1, b"marker");
    let c = rx.counts();
    assert_eq!((c.accepted, c.replayed), (2, 3), "{c:?}");
}

#[tokio::test]
async fn stale_datagrams_are_dropped() {
    use kvs_net::{DatagramAuth, ManualClock};
    use std::sync::Arc;
    const T0: u64 = 1_700_000_000_000_000;
    let secret = ClusterSecret::new("s");
    let addr: SocketAddr = LOCAL.parse().expect("addr");
    let bind = |unix_us: u64| {
        let auth = DatagramAuth::new(&secret);
        UdpTransport::bind_with(addr, auth, Arc::new(ManualClock::new(unix_us)))
    };
    // The sender's clock is two minutes behind the receiver's (beyond DEFAULT_MAX_AGE).
    let (late, on_time, rx) = (
        bind(T0).await.expect("bind"),
        bind(T0 + 120_000_000).await.expect("bind"),
        bind(T0 + 120_000_000).await.expect("bind"),
    );
    let to = rx.local_addr().expect("addr");
    late.send_to(to, b"old").await.expect("send");
    on_time.send_to(to, b"marker").await.expect("send");
    assert_eq!(recv(&rx).await.1, b"marker");
    let c = rx.counts();
    assert_eq!((c.stale, c.accepted), (1, 1), "{c:?}");
}
