//! Real-socket tests of the QUIC transport: connections between holders of the cluster
//! secret carry frames; a peer without it is refused (both directions) and counted, and
//! nothing it sends reaches the application.
#![cfg(feature = "quic")]

use std::net::SocketAddr;
use std::time::Duration;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};

use kvs_net::{
    AuthError, BiStream, ClusterSecret, Connection, NetError, QuicTransport, StreamTransport,
};
use tokio::time::timeout;

fn node(secret: &str) -> (QuicTransport, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let t = QuicTransport::bind(addr, dir.path(), &ClusterSecret::new(secret)).expect("bind");
    (t, dir)
}

/// Only a guard against a hang: every wait below ends as soon as its event happens.
const T: Duration = Duration::from_secs(10);

/// Whether `future` is still waiting when polled once.
fn is_pending<F: Future>(future: F) -> bool {
    let future = pin!(future);
    future
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
}

/// Waits until `server` has counted `n` refused peers.
async fn refused(server: &QuicTransport, n: u64) {
    let counted = async {
        while server.counts().refused_peers < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(T, counted).await.expect("the refusal counted");
}

#[tokio::test]
async fn frames_flow_between_holders_of_the_secret() {
    let ((a, _da), (b, _db)) = (node("s"), node("s"));
    let b_addr = b.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let conn = timeout(T, b.accept())
            .await
            .expect("in time")
            .expect("accept");
        let mut stream = conn.accept_stream().await.expect("stream");
        let frame = stream.recv_frame().await.expect("recv").expect("a frame");
        stream
            .send_frame(&[frame, b"-pong".to_vec()].concat())
            .await
            .expect("send");
        stream.finish().expect("finish");
        assert_eq!(stream.recv_frame().await.expect("recv"), None);
        // Dropping the last handle closes the connection: keep it until the client is done.
        (b, conn)
    });
    let conn = timeout(T, a.connect(b_addr))
        .await
        .expect("in time")
        .expect("connect");
    assert_eq!(conn.remote_addr(), b_addr);
    let mut stream = conn.open_stream().await.expect("open");
    stream.send_frame(b"ping").await.expect("send");
    stream.finish().expect("finish");
    assert_eq!(
        stream.recv_frame().await.expect("recv"),
        Some(b"ping-pong".to_vec())
    );
    assert_eq!(stream.recv_frame().await.expect("recv"), None);
    let (b, _conn) = server.await.expect("server task");
    assert_eq!(b.counts().refused_peers, 0);
    assert!(matches!(
        stream.send_frame(&vec![0u8; kvs_net::MAX_FRAME + 1]).await,
        Err(NetError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn client_without_the_secret_is_refused_and_counted() {
    let ((intruder, _di), (server, _ds)) = (node("wrong"), node("s"));
    let addr = server.local_addr().expect("addr");
    let result = timeout(T, intruder.connect(addr)).await.expect("in time");
    assert!(
        matches!(result, Err(NetError::Auth(AuthError::PeerRefused))),
        "the intruder must not get a connection: {result:?}"
    );
    assert_eq!(intruder.counts().refused_peers, 1);
    refused(&server, 1).await;
    // Judged once the server is done with it: never handed to the application.
    assert!(is_pending(server.accept()));
}

#[tokio::test]
async fn server_without_the_secret_is_refused_by_the_client() {
    let ((client, _dc), (impostor, _di)) = (node("s"), node("wrong"));
    let addr = impostor.local_addr().expect("addr");
    let result = timeout(T, client.connect(addr)).await.expect("in time");
    assert!(
        matches!(result, Err(NetError::Auth(AuthError::PeerRefused))),
        "{result:?}"
    );
    assert_eq!(client.counts().refused_peers, 1);
    // The impostor refused the client's tag in turn and handed nothing over.
    refused(&impostor, 1).await;
    assert!(is_pending(impostor.accept()));
}

#[tokio::test]
async fn garbage_datagrams_do_not_disturb_the_endpoint() {
    let ((a, _da), (b, _db)) = (node("s"), node("s"));
    let b_addr = b.local_addr().expect("addr");
    let raw = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    for len in [0usize, 1, 40, 1200, 1500] {
        raw.send_to(&vec![0xC3; len], b_addr).await.expect("send");
    }
    let server =
        tokio::spawn(async move { timeout(T, b.accept()).await.expect("in time").map(|_| ()) });
    timeout(T, a.connect(b_addr))
        .await
        .expect("in time")
        .expect("connect");
    server.await.expect("task").expect("accepted");
}

#[tokio::test]
async fn certificate_is_made_once_and_kept_in_the_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let secret = ClusterSecret::new("s");
    drop(QuicTransport::bind(addr, dir.path(), &secret).expect("first bind"));
    let cert = std::fs::read(dir.path().join("quic-cert.der")).expect("cert kept");
    drop(QuicTransport::bind(addr, dir.path(), &secret).expect("second bind"));
    assert_eq!(
        std::fs::read(dir.path().join("quic-cert.der")).expect("cert"),
        cert
    );
}

/// Found by an audit: a damaged kept certificate or key was reported against the sync
/// port ("cannot listen ...: invalid peer certificate"), naming neither file.
#[tokio::test]
async fn a_damaged_kept_certificate_or_key_is_named_with_what_to_do() {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let secret = ClusterSecret::new("s");
    for damaged in ["quic-cert.der", "quic-key.der"] {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(QuicTransport::bind(addr, dir.path(), &secret).expect("first bind"));
        std::fs::write(dir.path().join(damaged), b"not DER at all").expect("damage");
        let refused = match QuicTransport::bind(addr, dir.path(), &secret) {
            Ok(_) => panic!("{damaged}: bound with a damaged file"),
            Err(error) => error.to_string(),
        };
        assert!(
            refused.contains("quic-cert.der") && refused.contains("quic-key.der"),
            "{damaged}: {refused}"
        );
        assert!(refused.contains("delete both"), "{refused}");
        for file in ["quic-cert.der", "quic-key.der"] {
            std::fs::remove_file(dir.path().join(file)).expect("delete");
        }
        drop(QuicTransport::bind(addr, dir.path(), &secret).expect("new ones made"));
    }
}
