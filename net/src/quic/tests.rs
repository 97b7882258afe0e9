//! Tests of the QUIC transport against hostile peers speaking raw quinn: a peer that
//! finishes TLS and then sends nothing, a truncated tag, a tag from another session, on
//! the client and on the server side; the limits an unproven connection lives under, the
//! limits lifted by the proof, and the cap on unproven connections. Every negative case
//! has a positive twin in the same harness, so a transport that refused everything fails.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use quinn::ConnectionError;

use super::proof::{Role, TAG_LEN, UNPROVEN_WINDOW, exporter};
use super::*;
use tokio::time::timeout;

/// Only a guard against a hang: every wait below ends as soon as its event happens.
const T: Duration = Duration::from_secs(20);
const SECRET: &str = "s";

/// Limits with a handshake timeout no loaded machine reaches.
fn limits(max_unproven: usize, proof_timeout: Duration) -> Limits {
    Limits {
        max_unproven,
        handshake_timeout: T,
        proof_timeout,
    }
}

/// Production's cap, and timeouts no loaded machine reaches.
fn patient() -> Limits {
    limits(MAX_UNPROVEN, T)
}

/// A transport with the given limits, its data dir removed when the guard is dropped.
fn node(limits: Limits) -> (QuicTransport, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let t = QuicTransport::bind_with(addr, dir.path(), &ClusterSecret::new(SECRET), limits)
        .expect("bind");
    (t, dir)
}

fn key() -> ProofKey {
    ProofKey::new(&ClusterSecret::new(SECRET))
}

/// A bare quinn client: TLS only, no proof of its own.
fn raw_client() -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let config = tls::client_config(quinn::TransportConfig::default()).expect("config");
    endpoint.set_default_client_config(config);
    endpoint
}

/// A bare quinn server with a fresh certificate: TLS only, no proof of its own.
fn raw_server() -> (quinn::Endpoint, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = tls::load_or_create(dir.path()).expect("certificate");
    let config = tls::server_config(cert, key, quinn::TransportConfig::default()).expect("config");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    (quinn::Endpoint::server(config, addr).expect("bind"), dir)
}

/// Connects `client` to `to` and finishes the TLS handshake.
async fn tls_connect(client: &quinn::Endpoint, to: SocketAddr) -> quinn::Connection {
    let connecting = client.connect(to, "kvs").expect("connect");
    timeout(T, connecting)
        .await
        .expect("handshake in time")
        .expect("handshake")
}

/// The next connection `server` gets, its TLS handshake finished.
async fn tls_accept(server: &quinn::Endpoint) -> quinn::Connection {
    let incoming = timeout(T, server.accept())
        .await
        .expect("in time")
        .expect("an incoming connection");
    incoming.await.expect("handshake")
}

/// Polls a future once: whether it can finish with what the connection knows now.
fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// How the peer closed `conn`: its application error code and reason.
async fn closed_by_peer(conn: &quinn::Connection) -> (u64, String) {
    match timeout(T, conn.closed()).await.expect("closed in time") {
        ConnectionError::ApplicationClosed(close) => (
            close.error_code.into_inner(),
            String::from_utf8_lossy(&close.reason).into_owned(),
        ),
        other => panic!("closed otherwise: {other:?}"),
    }
}

/// Sends `tag` (whatever its length) as a raw client's side of the proof and returns what
/// the server sent back on the stream: its tag when it accepted ours, an error when it
/// closed the connection instead.
async fn send_tag(conn: &quinn::Connection, tag: &[u8]) -> Result<Vec<u8>, quinn::ReadToEndError> {
    let (mut send, mut recv) = conn.open_bi().await.expect("open the proof stream");
    send.write_all(tag).await.expect("write");
    send.finish().expect("finish");
    timeout(T, recv.read_to_end(64)).await.expect("in time")
}

// ---- The server side: hostile clients. ----

#[tokio::test]
async fn server_accepts_a_raw_client_with_the_right_tag() {
    let (server, _dir) = node(patient());
    let client = raw_client();
    let conn = tls_connect(&client, server.local_addr().expect("addr")).await;
    let ekm = exporter(&conn).expect("exporter");
    let answer = send_tag(&conn, &key().tag(Role::Client, &ekm))
        .await
        .expect("answered");
    assert_eq!(key().verify(Role::Server, &ekm, &answer), Ok(()));
    timeout(T, server.accept())
        .await
        .expect("in time")
        .expect("handed over");
    assert_eq!(server.counts().refused_peers, 0);
}

#[tokio::test]
async fn server_closes_a_client_that_sends_nothing_when_the_proof_times_out() {
    let (server, _dir) = node(limits(4, Duration::from_millis(300)));
    let client = raw_client();
    let conn = tls_connect(&client, server.local_addr().expect("addr")).await;
    assert_eq!(
        closed_by_peer(&conn).await,
        (1, "cluster secret proof timed out".to_owned())
    );
    assert_eq!(server.counts().refused_peers, 1);
    assert!(
        poll_once(pin!(server.accept())).is_pending(),
        "never handed over"
    );
}

#[tokio::test]
async fn server_refuses_a_truncated_or_overlong_tag() {
    let (server, _dir) = node(patient());
    let client = raw_client();
    let addr = server.local_addr().expect("addr");
    for (case, cut) in [
        ("truncated", TAG_LEN / 2),
        ("empty", 0),
        ("one byte short", TAG_LEN - 1),
    ] {
        let conn = tls_connect(&client, addr).await;
        let tag = key().tag(Role::Client, &exporter(&conn).expect("exporter"));
        assert!(
            send_tag(&conn, &tag[..cut]).await.is_err(),
            "{case}: no answer"
        );
        assert_eq!(closed_by_peer(&conn).await.0, 1, "{case}");
    }
    let conn = tls_connect(&client, addr).await;
    let mut overlong = key()
        .tag(Role::Client, &exporter(&conn).expect("exporter"))
        .to_vec();
    overlong.push(0);
    assert!(
        send_tag(&conn, &overlong).await.is_err(),
        "overlong: no answer"
    );
    assert_eq!(closed_by_peer(&conn).await.0, 1);
    assert_eq!(server.counts().refused_peers, 4);
    assert!(
        poll_once(pin!(server.accept())).is_pending(),
        "never handed over"
    );
}

#[tokio::test]
async fn server_refuses_a_client_tag_relayed_from_another_session() {
    // A man in the middle: a genuine client connects to it (session 1) and sends its tag,
    // which the relay presents to the genuine server on its own session 2.
    let (server, _ds) = node(patient());
    let (genuine, _dg) = node(patient());
    let (relay_server, _dr) = raw_server();
    let relay_addr = relay_server.local_addr().expect("addr");
    let dialing = tokio::spawn(async move { genuine.connect(relay_addr).await.map(|_| ()) });
    let session1 = tls_accept(&relay_server).await;
    let (_send, mut recv) = session1.accept_bi().await.expect("the proof stream");
    let captured = recv
        .read_to_end(64)
        .await
        .expect("the genuine client's tag");
    assert_eq!(captured.len(), TAG_LEN);
    let relay_client = raw_client();
    let session2 = tls_connect(&relay_client, server.local_addr().expect("addr")).await;
    assert!(send_tag(&session2, &captured).await.is_err(), "no answer");
    assert_eq!(closed_by_peer(&session2).await.0, 1);
    assert_eq!(server.counts().refused_peers, 1);
    session1.close(0u32.into(), b"relay gives up");
    let dialed = dialing.await.expect("task");
    assert!(dialed.is_err(), "the genuine client got no server tag");
}

// ---- The client side: hostile servers. ----

/// A hostile server's handling of one connection: it reads the client's tag and answers
/// with whatever `answer` makes of the session's exporter (`None`: nothing, connection
/// kept open until the client closes it). Returns how the client closed it, if it did.
async fn serve_once(
    server: &quinn::Endpoint,
    answer: impl FnOnce(&[u8; 32]) -> Option<Vec<u8>>,
) -> Option<(u64, String)> {
    let conn = tls_accept(server).await;
    let ekm = exporter(&conn).expect("exporter");
    let (mut send, mut recv) = conn.accept_bi().await.expect("the proof stream");
    let client_tag = recv.read_to_end(64).await.expect("the client's tag");
    assert_eq!(key().verify(Role::Client, &ekm, &client_tag), Ok(()));
    if let Some(bytes) = answer(&ekm) {
        send.write_all(&bytes).await.expect("write");
        send.finish().expect("finish");
    }
    match timeout(T, conn.closed()).await.expect("closed in time") {
        ConnectionError::ApplicationClosed(close) => Some((
            close.error_code.into_inner(),
            String::from_utf8_lossy(&close.reason).into_owned(),
        )),
        _ => None,
    }
}

#[tokio::test]
async fn client_accepts_the_right_tag_and_refuses_one_from_another_session() {
    let (client, _dc) = node(patient());
    let (server, _ds) = raw_server();
    let addr = server.local_addr().expect("addr");
    let first = tokio::spawn(async move {
        let mut tag = Vec::new();
        serve_once(&server, |ekm| {
            tag = key().tag(Role::Server, ekm).to_vec();
            Some(tag.clone())
        })
        .await;
        (server, tag)
    });
    let conn = timeout(T, client.connect(addr))
        .await
        .expect("in time")
        .expect("accepted");
    conn.close();
    let (server, old_tag) = first.await.expect("task");
    let second = tokio::spawn(async move { serve_once(&server, |_| Some(old_tag)).await });
    let result = timeout(T, client.connect(addr)).await.expect("in time");
    assert!(
        matches!(result, Err(NetError::Auth(AuthError::PeerRefused))),
        "{result:?}"
    );
    assert_eq!(
        second.await.expect("task"),
        Some((1, "cluster secret proof failed".to_owned()))
    );
    assert_eq!(client.counts().refused_peers, 1);
}

#[tokio::test]
async fn client_refuses_a_truncated_server_tag() {
    let (client, _dc) = node(patient());
    let (server, _ds) = raw_server();
    let addr = server.local_addr().expect("addr");
    let serving = tokio::spawn(async move {
        serve_once(&server, |ekm| {
            Some(key().tag(Role::Server, ekm)[..TAG_LEN / 2].to_vec())
        })
        .await
    });
    let result = timeout(T, client.connect(addr)).await.expect("in time");
    assert!(
        matches!(result, Err(NetError::Auth(AuthError::PeerRefused))),
        "{result:?}"
    );
    assert_eq!(
        serving.await.expect("task"),
        Some((1, "cluster secret proof failed".to_owned()))
    );
    assert_eq!(client.counts().refused_peers, 1);
}

#[tokio::test]
async fn client_gives_up_on_a_server_that_sends_nothing() {
    let (client, _dc) = node(limits(4, Duration::from_millis(300)));
    let (server, _ds) = raw_server();
    let addr = server.local_addr().expect("addr");
    let serving = tokio::spawn(async move { serve_once(&server, |_| None).await });
    let result = timeout(T, client.connect(addr)).await.expect("in time");
    assert!(matches!(result, Err(NetError::TimedOut)), "{result:?}");
    assert_eq!(
        serving.await.expect("task"),
        Some((1, "cluster secret proof timed out".to_owned()))
    );
    assert_eq!(client.counts().refused_peers, 1);
}

// ---- Limits before and after the proof. ----

#[tokio::test]
async fn an_unproven_client_gets_one_stream_and_a_small_window() {
    let (server, _dir) = node(patient());
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
    let ((client, _dc), (server, _ds)) = (node(patient()), node(patient()));
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
    let (client, _dc) = node(patient());
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

// ---- Shutdown. ----

/// `shutdown` joins the endpoint's tasks, a connection stuck in its proof included,
/// without waiting for the proof's timeout; `accept` then says the endpoint is closed.
#[tokio::test]
async fn shutdown_joins_every_task_without_waiting_out_a_proof() {
    let (server, _dir) = node(patient());
    let raw = raw_client();
    let silent = tls_connect(&raw, server.local_addr().expect("addr")).await;
    // Its handshake finished, so its task runs, waiting up to T for a proof.
    assert_eq!(
        server.tasks_running(),
        2,
        "the accept loop and the silent peer"
    );
    let started = tokio::time::Instant::now();
    assert_eq!(server.shutdown(T).await, 0, "every task joined");
    assert!(started.elapsed() < T / 2, "{:?}", started.elapsed());
    assert_eq!(server.tasks_running(), 0);
    assert!(matches!(server.accept().await, Err(NetError::Closed)));
    timeout(T, silent.closed()).await.expect("the peer told");
    assert_eq!(server.shutdown(T).await, 0, "a second shutdown is nothing");
}
