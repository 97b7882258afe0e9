//! Push replication: every accepted local write is sent at once to the other live
//! members over authenticated QUIC streams, and versions received from peers are merged
//! into the store by the conflict rule.
//!
//! One task drains the outbox in batches and sends each batch, as one frame on a new
//! stream, to every live member's sync address (connections are kept and re-made after
//! an error). One task accepts connections and merges what arrives. A peer that was away
//! misses pushes; catching it up is anti-entropy's job (not part of this module).
//!
//! Frame: bincode (`=2.0.1`, standard config) of [`Push`]; a frame that does not decode,
//! has another protocol version or a key over 1,024 bytes is dropped and counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kvs_net::{BiStream, Connection, QuicConnection, QuicTransport, StreamTransport};
use kvs_sync::{Store, Version};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::store::DurableStore;

/// The push protocol's version.
const PROTOCOL: u8 = 1;
/// Versions sent in one frame at most.
const BATCH: usize = 512;
/// Time allowed for one peer to take one batch.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest key a peer may send (keys are at most 512 bytes; `_auth` ids are short).
const MAX_KEY: usize = 1024;

/// One frame: versions to merge.
#[derive(Debug, Serialize, Deserialize)]
struct Push {
    protocol: u8,
    versions: Vec<(String, Version)>,
}

fn encode(versions: Vec<(String, Version)>) -> Option<Vec<u8>> {
    let push = Push {
        protocol: PROTOCOL,
        versions,
    };
    bincode::serde::encode_to_vec(&push, bincode::config::standard()).ok()
}

fn decode(frame: &[u8]) -> Option<Vec<(String, Version)>> {
    let (push, _): (Push, usize) =
        bincode::serde::decode_from_slice(frame, bincode::config::standard()).ok()?;
    (push.protocol == PROTOCOL
        && push
            .versions
            .iter()
            .all(|(key, _)| !key.is_empty() && key.len() <= MAX_KEY))
    .then_some(push.versions)
}

/// Counters of replication.
#[derive(Debug, Default)]
pub struct ReplicationStats {
    /// Versions sent (once per peer).
    pub sent: AtomicU64,
    /// Versions received and stored.
    pub stored: AtomicU64,
    /// Versions received that lost to the held version.
    pub ignored: AtomicU64,
    /// Frames dropped as malformed.
    pub malformed: AtomicU64,
    /// Sends that failed (peer down or refused).
    pub send_errors: AtomicU64,
}

/// The handle writers push through.
pub struct Replicator {
    outbox: mpsc::UnboundedSender<(String, Version)>,
    stats: Arc<ReplicationStats>,
}

impl Replicator {
    /// Starts the sending and receiving tasks; `peers` gives the live members' sync
    /// addresses (this node excluded) when called.
    pub fn start(
        transport: Arc<QuicTransport>,
        store: Arc<DurableStore>,
        peers: Arc<dyn Fn() -> Vec<SocketAddr> + Send + Sync>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let (outbox, inbox) = mpsc::unbounded_channel();
        let stats = Arc::new(ReplicationStats::default());
        tokio::spawn(send_loop(
            Arc::clone(&transport),
            inbox,
            peers,
            Arc::clone(&stats),
        ));
        tokio::spawn(receive_loop(transport, store, Arc::clone(&stats), shutdown));
        Self { outbox, stats }
    }

    /// Queues an accepted local write for the other members.
    pub fn push(&self, key: String, version: Version) {
        let _ = self.outbox.send((key, version));
    }

    /// Replication counters in Prometheus text.
    pub fn render_metrics(&self, out: &mut String) {
        for (name, help, counter) in [
            ("sent", "Versions pushed to peers.", &self.stats.sent),
            (
                "stored",
                "Versions received from peers and stored.",
                &self.stats.stored,
            ),
            (
                "ignored",
                "Versions received that lost to the held one.",
                &self.stats.ignored,
            ),
            (
                "malformed",
                "Push frames dropped as malformed.",
                &self.stats.malformed,
            ),
            (
                "send_errors",
                "Pushes to a peer that failed.",
                &self.stats.send_errors,
            ),
        ] {
            out.push_str(&format!(
                "# HELP kvs_replication_{name}_total {help}\n# TYPE kvs_replication_{name}_total counter\nkvs_replication_{name}_total {}\n",
                counter.load(Ordering::Relaxed)
            ));
        }
    }
}

async fn send_loop(
    transport: Arc<QuicTransport>,
    mut inbox: mpsc::UnboundedReceiver<(String, Version)>,
    peers: Arc<dyn Fn() -> Vec<SocketAddr> + Send + Sync>,
    stats: Arc<ReplicationStats>,
) {
    let mut connections: HashMap<SocketAddr, QuicConnection> = HashMap::new();
    while let Some(first) = inbox.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match inbox.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        let Some(frame) = encode(batch) else {
            tracing::error!("a push batch could not be encoded");
            continue;
        };
        for peer in peers() {
            let sent = tokio::time::timeout(
                SEND_TIMEOUT,
                send_to(&transport, &mut connections, peer, &frame),
            )
            .await;
            match sent {
                Ok(Ok(())) => {
                    stats.sent.fetch_add(count, Ordering::Relaxed);
                }
                failed => {
                    tracing::debug!(%peer, ?failed, "push failed");
                    connections.remove(&peer);
                    stats.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

async fn send_to(
    transport: &QuicTransport,
    connections: &mut HashMap<SocketAddr, QuicConnection>,
    peer: SocketAddr,
    frame: &[u8],
) -> Result<(), kvs_net::NetError> {
    let connection = match connections.get(&peer) {
        Some(connection) => connection.clone(),
        None => {
            let connection = transport.connect(peer).await?;
            connections.insert(peer, connection.clone());
            connection
        }
    };
    let mut stream = connection.open_stream().await?;
    stream.send_frame(frame).await?;
    stream.finish()
}

async fn receive_loop(
    transport: Arc<QuicTransport>,
    store: Arc<DurableStore>,
    stats: Arc<ReplicationStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = transport.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok(connection) => {
                tokio::spawn(serve_connection(
                    connection,
                    Arc::clone(&store),
                    Arc::clone(&stats),
                ));
            }
            Err(error) => tracing::debug!(%error, "a sync connection was refused"),
        }
    }
}

async fn serve_connection(
    connection: QuicConnection,
    store: Arc<DurableStore>,
    stats: Arc<ReplicationStats>,
) {
    while let Ok(mut stream) = connection.accept_stream().await {
        while let Ok(Some(frame)) = stream.recv_frame().await {
            let Some(versions) = decode(&frame) else {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let total = versions.len() as u64;
            let store = Arc::clone(&store);
            match tokio::task::spawn_blocking(move || store.merge(&versions)).await {
                Ok(Ok(stored)) => {
                    stats.stored.fetch_add(stored as u64, Ordering::Relaxed);
                    stats
                        .ignored
                        .fetch_add(total - stored as u64, Ordering::Relaxed);
                }
                Ok(Err(error)) => tracing::error!(%error, "storing pushed versions failed"),
                Err(error) => tracing::error!(%error, "the merge task failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvs_sync::VersionId;

    fn version() -> Version {
        Version {
            id: VersionId {
                timestamp: 5,
                origin_joined_at: 1,
                uuid: uuid::Uuid::new_v4(),
            },
            data: Some("[1]".into()),
            owner: Some("u".into()),
            group: None,
            permissions: 0xf31,
            expires_at: Some(9),
        }
    }

    #[test]
    fn frames_roundtrip() {
        let versions = vec![
            ("a/b".to_owned(), version()),
            ("_auth/users/x".to_owned(), version()),
        ];
        let frame = encode(versions.clone()).unwrap();
        assert_eq!(decode(&frame), Some(versions));
    }

    #[test]
    fn bad_frames_are_refused_not_panicked_on() {
        let good = encode(vec![("k".to_owned(), version())]).unwrap();
        for cut in 0..good.len() {
            assert_eq!(decode(&good[..cut]), None, "cut at {cut}");
        }
        let mut other_protocol = good.clone();
        other_protocol[0] = 9;
        assert_eq!(decode(&other_protocol), None);
        assert_eq!(
            decode(&encode(vec![(String::new(), version())]).unwrap()),
            None
        );
        assert_eq!(
            decode(&encode(vec![("k".repeat(2000), version())]).unwrap()),
            None
        );
        for garbage in [&b""[..], b"\xff\xff\xff\xff\xff", &[0u8; 64]] {
            let _ = decode(garbage);
        }
    }
}
