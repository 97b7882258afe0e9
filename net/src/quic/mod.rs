//! The real stream transport: QUIC with quinn (feature `quic`). Each node has a
//! self-signed certificate kept in its data dir (`tls.rs`); every connection runs the
//! cluster-secret proof (`proof.rs`) under tight limits before it is handed to the
//! caller, and a peer that fails it or does not finish it in time is refused and counted.
//! At most [`MAX_UNPROVEN`] incoming connections may be in their handshake or proof at
//! once; further attempts are refused at once and counted. Streams carry length-prefixed
//! frames.
//!
//! Every task the endpoint spawns is joined: the accept loop owns the handshake-and-proof
//! task of each incoming connection (a `JoinSet`), and [`QuicTransport::shutdown`] closes
//! the endpoint and waits, within a bound, for the loop, which stops the tasks left
//! (mini-redis's `shutdown.rs`: signal, then wait for every handler).

mod proof;
#[cfg(test)]
mod tests;
mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};

use self::proof::{PROOF_TIMEOUT, ProofKey, prove_client, prove_server, unproven_limits};
use crate::{
    AuthCounts, AuthError, AuthStats, BiStream, ClusterSecret, Connection, MAX_FRAME, NetError,
    StreamTransport,
};

/// Authenticated incoming connections waiting for `accept`.
const ACCEPT_QUEUE: usize = 64;
/// Incoming connections that may be in their TLS handshake or proof at once.
const MAX_UNPROVEN: usize = 64;

/// How many unproven connections an endpoint tolerates, and for how long.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Incoming connections in their handshake or proof at once.
    max_unproven: usize,
    /// How long a connection's TLS handshake may take, on either side.
    handshake_timeout: Duration,
    /// How long the proof may take once the handshake is done, on either side.
    proof_timeout: Duration,
}

const LIMITS: Limits = Limits {
    max_unproven: MAX_UNPROVEN,
    handshake_timeout: PROOF_TIMEOUT,
    proof_timeout: PROOF_TIMEOUT,
};

fn conn_err(e: impl std::fmt::Display) -> NetError {
    NetError::Connection(e.to_string())
}

/// A QUIC endpoint that both connects and accepts. Must be made inside a tokio runtime.
#[derive(Debug)]
pub struct QuicTransport {
    endpoint: quinn::Endpoint,
    key: ProofKey,
    stats: Arc<AuthStats>,
    incoming: Mutex<mpsc::Receiver<QuicConnection>>,
    limits: Limits,
    /// The accept loop, until [`QuicTransport::shutdown`] has joined it.
    accepting: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// The endpoint's tasks still running.
    tasks: Arc<Tasks>,
}

impl QuicTransport {
    /// Binds `addr` (port 0 picks one), with the certificate kept in `data_dir` (made at
    /// first start), and starts accepting connections in the background.
    pub fn bind(
        addr: SocketAddr,
        data_dir: &Path,
        secret: &ClusterSecret,
    ) -> Result<Self, NetError> {
        Self::bind_with(addr, data_dir, secret, LIMITS)
    }

    fn bind_with(
        addr: SocketAddr,
        data_dir: &Path,
        secret: &ClusterSecret,
        limits: Limits,
    ) -> Result<Self, NetError> {
        let (cert, key) = tls::load_or_create(data_dir)?;
        let server = tls::server_config(cert, key, unproven_limits())
            .map_err(|error| tls::kept_files_unusable(data_dir, &error))?;
        let mut endpoint = quinn::Endpoint::server(server, addr)?;
        endpoint.set_default_client_config(tls::client_config(unproven_limits())?);
        let key = ProofKey::new(secret);
        let stats = Arc::new(AuthStats::default());
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let tasks = Arc::new(Tasks::default());
        let accepting = tokio::spawn(accept_loop(
            endpoint.clone(),
            Handshake {
                key: key.clone(),
                stats: Arc::clone(&stats),
                tx,
                limits,
            },
            tasks.enter(),
        ));
        Ok(Self {
            endpoint,
            key,
            stats,
            incoming: Mutex::new(rx),
            limits,
            accepting: std::sync::Mutex::new(Some(accepting)),
            tasks,
        })
    }

    /// Refused peers and other counters.
    pub fn counts(&self) -> AuthCounts {
        self.stats.snapshot()
    }

    /// Closes every connection and stops accepting.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"closing");
    }

    /// Closes the endpoint, then waits at most `within` for its tasks: the accept loop,
    /// which stops the handshakes and proofs left (with the endpoint closed they could
    /// only fail, or wait for room in the accept queue). Past `within` the loop is
    /// aborted. Returns how many of the endpoint's tasks still run: 0 unless the runtime
    /// is shutting down under it.
    pub async fn shutdown(&self, within: Duration) -> usize {
        self.close();
        let accepting = self.accepting.lock().map_or(None, |mut a| a.take());
        if let Some(mut accepting) = accepting
            && tokio::time::timeout(within, &mut accepting).await.is_err()
        {
            accepting.abort();
            let _ = accepting.await;
        }
        self.tasks_running()
    }

    /// The endpoint's tasks still running: the accept loop and each connection in its
    /// handshake or proof.
    pub fn tasks_running(&self) -> usize {
        self.tasks.0.load(Ordering::Acquire)
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.close();
        if let Some(accepting) = self.accepting.get_mut().ok().and_then(Option::take) {
            accepting.abort();
        }
    }
}

/// Counts an endpoint's running tasks: each holds a [`Running`] while it lives.
#[derive(Debug, Default)]
struct Tasks(AtomicUsize);

impl Tasks {
    fn enter(self: &Arc<Self>) -> Running {
        self.0.fetch_add(1, Ordering::AcqRel);
        Running(Arc::clone(self))
    }
}

/// One running task of [`Tasks`], counted until dropped (when the task returns or is
/// aborted).
struct Running(Arc<Tasks>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a handshake-and-proof task needs.
#[derive(Clone)]
struct Handshake {
    key: ProofKey,
    stats: Arc<AuthStats>,
    tx: mpsc::Sender<QuicConnection>,
    limits: Limits,
}

/// Accepts connections, running each handshake and proof in its own task so a slow or
/// hostile peer cannot hold up the others; refuses new ones while `max_unproven` are in
/// their handshake or proof. Once the endpoint is closed, stops those tasks and waits for
/// them.
async fn accept_loop(endpoint: quinn::Endpoint, handshake: Handshake, running: Running) {
    let unproven = Arc::new(Semaphore::new(handshake.limits.max_unproven));
    let mut handshakes = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            // Reaps finished tasks, so that the set holds only running ones.
            Some(_) = handshakes.join_next() => continue,
        };
        let Some(incoming) = incoming else { break };
        let Ok(permit) = Arc::clone(&unproven).try_acquire_owned() else {
            incoming.refuse();
            handshake.stats.record_busy();
            continue;
        };
        let counted = running.0.enter();
        handshakes.spawn(handshake.clone().run(incoming, permit, counted));
    }
    handshakes.shutdown().await;
}

impl Handshake {
    /// Runs one incoming connection's TLS handshake and proof, holding `permit` (its slot
    /// among the unproven) until they end; hands it to `accept` when proven, closes it
    /// otherwise.
    async fn run(self, incoming: quinn::Incoming, permit: OwnedSemaphorePermit, _running: Running) {
        let Self {
            key,
            stats,
            tx,
            limits,
        } = self;
        let handshake = tokio::time::timeout(limits.handshake_timeout, incoming);
        let Ok(Ok(conn)) = handshake.await else {
            drop(permit);
            stats.record_rejected(&AuthError::PeerRefused);
            return;
        };
        let proving = prove_server(&conn, &key);
        let proven = tokio::time::timeout(limits.proof_timeout, proving).await;
        // The slot is released, then the refusal counted, then the peer told: a peer
        // that sees the close, or a count seen, means a free slot.
        drop(permit);
        let reason: &[u8] = match proven {
            Ok(Ok(())) => {
                let _ = tx.send(QuicConnection(conn)).await;
                return;
            }
            Ok(Err(_)) => b"cluster secret proof failed",
            Err(_) => b"cluster secret proof timed out",
        };
        stats.record_rejected(&AuthError::PeerRefused);
        conn.close(1u32.into(), reason);
    }
}

impl StreamTransport for QuicTransport {
    type Conn = QuicConnection;

    async fn connect(&self, to: SocketAddr) -> Result<QuicConnection, NetError> {
        let connecting = self.endpoint.connect(to, "kvs").map_err(conn_err)?;
        let conn = tokio::time::timeout(self.limits.handshake_timeout, connecting)
            .await
            .map_err(|_| NetError::TimedOut)?
            .map_err(conn_err)?;
        let proving = prove_client(&conn, &self.key);
        let proven = tokio::time::timeout(self.limits.proof_timeout, proving).await;
        match proven {
            Ok(Ok(())) => Ok(QuicConnection(conn)),
            Ok(Err(e)) => {
                self.stats.record_rejected(&AuthError::PeerRefused);
                conn.close(1u32.into(), b"cluster secret proof failed");
                Err(e)
            }
            Err(_) => {
                self.stats.record_rejected(&AuthError::PeerRefused);
                conn.close(1u32.into(), b"cluster secret proof timed out");
                Err(NetError::TimedOut)
            }
        }
    }

    async fn accept(&self) -> Result<QuicConnection, NetError> {
        self.incoming
            .lock()
            .await
            .recv()
            .await
            .ok_or(NetError::Closed)
    }

    fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.endpoint.local_addr()?)
    }
}

/// A QUIC connection whose peer proved it holds the cluster secret.
#[derive(Debug, Clone)]
pub struct QuicConnection(quinn::Connection);

impl Connection for QuicConnection {
    type Stream = QuicStream;

    fn remote_addr(&self) -> SocketAddr {
        self.0.remote_address()
    }

    /// Opens a stream; the peer sees it once the first frame is sent.
    async fn open_stream(&self) -> Result<QuicStream, NetError> {
        let (send, recv) = self.0.open_bi().await.map_err(conn_err)?;
        Ok(QuicStream { send, recv })
    }

    async fn accept_stream(&self) -> Result<QuicStream, NetError> {
        let (send, recv) = self.0.accept_bi().await.map_err(conn_err)?;
        Ok(QuicStream { send, recv })
    }

    fn close(&self) {
        self.0.close(0u32.into(), b"done");
    }
}

/// A bidirectional QUIC stream of frames: `length (4, big-endian) | bytes`.
#[derive(Debug)]
pub struct QuicStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl BiStream for QuicStream {
    async fn send_frame(&mut self, frame: &[u8]) -> Result<(), NetError> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&l| l as usize <= MAX_FRAME);
        let len = len.ok_or(NetError::TooLarge {
            len: frame.len(),
            max: MAX_FRAME,
        })?;
        self.send
            .write_all(&len.to_be_bytes())
            .await
            .map_err(conn_err)?;
        self.send.write_all(frame).await.map_err(conn_err)
    }

    async fn recv_frame(&mut self) -> Result<Option<Vec<u8>>, NetError> {
        let mut len = [0u8; 4];
        match self.recv.read_exact(&mut len).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(e) => return Err(conn_err(e)),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(NetError::TooLarge {
                len,
                max: MAX_FRAME,
            });
        }
        let mut frame = vec![0u8; len];
        self.recv.read_exact(&mut frame).await.map_err(conn_err)?;
        Ok(Some(frame))
    }

    fn finish(&mut self) -> Result<(), NetError> {
        self.send.finish().map_err(conn_err)
    }
}
