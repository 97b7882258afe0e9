//! Tests of the QUIC transport against peers speaking raw quinn: the limits an unproven
//! connection lives under, the limits lifted by the proof, and the cap on unproven
//! connections.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use super::proof::UNPROVEN_WINDOW;
use super::*;
use tokio::time::timeout;

/// Only a guard against a hang: every wait below ends as soon as its event happens.
const T: Duration = Duration::from_secs(20);

fn limits(max_unproven: usize, proof_timeout: Duration) -> Limits {
    Limits {
        max_unproven,
        proof_timeout,
    }
}

/// A transport with the given limits, its data dir removed when the guard is dropped.
fn node(limits: Limits) -> (QuicTransport, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let t =
        QuicTransport::bind_with(addr, dir.path(), &ClusterSecret::new("s"), limits).expect("bind");
    (t, dir)
}

/// A bare quinn client: TLS only, no proof of its own.
fn raw_client() -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let config = tls::client_config(quinn::TransportConfig::default()).expect("config");
    endpoint.set_default_client_config(config);
    endpoint
}

/// Connects `client` to `to` and finishes the TLS handshake.
async fn tls_connect(client: &quinn::Endpoint, to: SocketAddr) -> quinn::Connection {
    let connecting = client.connect(to, "kvs").expect("connect");
    timeout(T, connecting)
        .await
        .expect("handshake in time")
        .expect("handshake")
}

/// Polls a future once: whether it can finish with what the connection knows now.
fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

// ---- Limits before and after the proof. ----

#[tokio::test]
async fn an_unproven_client_gets_one_stream_and_a_small_window() {
    let (server, _dir) = node(LIMITS);
    let client = raw_client();
    let conn = tls_connect(&client, server.local_addr().expect("addr")).await;
    let (mut send, _recv) = conn.open_bi().await.expect("the one stream");
    assert!(
        poll_once(pin!(conn.open_bi())).is_pending(),
        "a second stream"
    );
    assert!(
        poll_once(pin!(conn.open_uni())).is_pending(),
        "a unidirectional stream"
    );
    let chunk = vec![0u8; 4096];
    let mut sent = 0usize;
    while let Poll::Ready(written) = poll_once(pin!(send.write(&chunk))) {
        sent += written.expect("write");
        assert!(sent <= 64 * 1024, "{sent} bytes and counting");
    }
    assert_eq!(
        sent, UNPROVEN_WINDOW as usize,
        "bytes the server would buffer"
    );
}

#[tokio::test]
async fn the_proof_lifts_the_limits_both_ways() {
    const STREAMS: usize = 8;
    const FRAME: usize = 64 * 1024;
    let ((client, _dc), (server, _ds)) = (node(LIMITS), node(LIMITS));
    let addr = server.local_addr().expect("addr");
    let serving = tokio::spawn(async move {
        let conn = timeout(T, server.accept())
            .await
            .expect("in time")
            .expect("accept");
        // Server-initiated streams, all open at once: the client lifted its limits too.
        let mut ours = Vec::new();
        for _ in 0..2 {
            let mut stream = conn.open_stream().await.expect("open");
            stream.send_frame(b"from the server").await.expect("send");
            ours.push(stream);
        }
        let mut lengths = Vec::new();
        for _ in 0..STREAMS {
            let mut stream = conn.accept_stream().await.expect("stream");
            let frame = stream.recv_frame().await.expect("recv").expect("a frame");
            lengths.push(frame.len());
        }
        (server, conn, ours, lengths)
    });
    let conn = timeout(T, client.connect(addr))
        .await
        .expect("in time")
        .expect("connect");
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        streams.push(
            timeout(T, conn.open_stream())
                .await
                .expect("in time")
                .expect("open"),
        );
    }
    for stream in &mut streams {
        let frame = vec![1u8; FRAME];
        timeout(T, stream.send_frame(&frame))
            .await
            .expect("in time")
            .expect("send");
    }
    for _ in 0..2 {
        let mut stream = timeout(T, conn.accept_stream())
            .await
            .expect("in time")
            .expect("accept");
        assert_eq!(
            stream.recv_frame().await.expect("recv"),
            Some(b"from the server".to_vec())
        );
    }
    let (_server, _conn, _ours, lengths) =
        timeout(T, serving).await.expect("in time").expect("task");
    assert_eq!(lengths, vec![FRAME; STREAMS]);
}

#[tokio::test]
async fn connections_beyond_the_unproven_cap_are_refused_until_one_ends() {
    let (server, _ds) = node(limits(2, Duration::from_secs(600)));
    let (client, _dc) = node(LIMITS);
    let addr = server.local_addr().expect("addr");
    let raw = raw_client();
    let silent = [tls_connect(&raw, addr).await, tls_connect(&raw, addr).await];
    let refused = timeout(T, client.connect(addr)).await.expect("in time");
    assert!(
        matches!(refused, Err(NetError::Connection(_))),
        "{refused:?}"
    );
    assert_eq!(server.counts().refused_busy, 1);
    for conn in &silent {
        conn.close(0u32.into(), b"bye");
    }
    let freed = timeout(T, async {
        while server.counts().refused_peers < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    freed.await.expect("both silent connections given up");
    let accepting = tokio::spawn(async move {
        timeout(T, server.accept())
            .await
            .expect("in time")
            .map(|_| server)
    });
    timeout(T, client.connect(addr))
        .await
        .expect("in time")
        .expect("accepted now");
    let server = accepting.await.expect("task").expect("handed over");
    assert_eq!(server.counts().refused_busy, 1);
}
