//! Pushes: every accepted local write goes at once to every live peer, through one
//! bounded queue and one sender task per peer, so that a slow, paused or dead peer never
//! delays the others. The receiver merges a batch durably, then acknowledges it; a batch
//! that gets no acknowledgement is sent again on a fresh connection once (a connection
//! that idled out is the common case), and then left to anti-entropy, which also takes
//! over when a queue outgrows its byte bound.
//!
//! Frame: bincode (`=2.0.1`, standard config) of [`PushFrame`], put together from each
//! version's encoding, made once per write for all peers ([`Pushed`]); the
//! acknowledgement is the number of versions stored, u32 big-endian.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kvs_net::{BiStream, Connection, StreamTransport};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{KIND_PUSH, Shared};
use crate::protocol::{MAX_FRAME_VERSIONS, bounded_versions};
use crate::{Version, approximate_size};

/// The push protocol's version.
const PROTOCOL: u8 = 1;
/// How long a peer may take to store and acknowledge one batch.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// One batch of versions to merge.
#[derive(Debug, Serialize, Deserialize)]
struct PushFrame {
    protocol: u8,
    /// At most [`MAX_FRAME_VERSIONS`].
    #[serde(deserialize_with = "bounded_versions")]
    versions: Vec<(String, Version)>,
}

/// One version as it goes in a [`PushFrame`]: encoded once, when it is written, and
/// shared by every peer's queue (a cluster of N encodes a write once, not N - 1 times).
#[derive(Clone)]
pub(crate) struct Pushed {
    bytes: Arc<[u8]>,
    /// The version's timestamp (Unix ms).
    timestamp: u64,
    /// When it was queued (Unix ms, the node's clock).
    queued_at: u64,
    /// What it counts for in the queue's byte bound ([`approximate_size`]).
    size: usize,
}

impl Pushed {
    pub(crate) fn new(key: &str, version: &Version, queued_at: u64) -> Self {
        let bytes = bincode::serde::encode_to_vec((key, version), bincode::config::standard())
            .unwrap_or_default();
        Self {
            bytes: bytes.into(),
            timestamp: version.id.timestamp,
            queued_at,
            size: approximate_size(key, version),
        }
    }
}

/// The frame of `batch`: byte for byte the bincode of a [`PushFrame`] holding it (the
/// protocol byte, the count as a varint, then the versions), put together from the
/// versions' own encodings.
fn frame_of(batch: &[Pushed]) -> Vec<u8> {
    let body: usize = batch.iter().map(|pushed| pushed.bytes.len()).sum();
    // The protocol byte, then a count of at most 9 bytes.
    let mut frame = Vec::with_capacity(1 + 9 + body);
    frame.push(PROTOCOL);
    let count = batch.len() as u64;
    // Writing into a Vec cannot fail.
    let _ = bincode::encode_into_std_write(count, &mut frame, bincode::config::standard());
    for pushed in batch {
        frame.extend_from_slice(&pushed.bytes);
    }
    frame
}

/// Decodes a push frame; `None` for anything malformed (never a panic).
fn decode(bytes: &[u8]) -> Option<Vec<(String, Version)>> {
    let config = bincode::config::standard().with_limit::<{ 64 * 1024 * 1024 }>();
    let (frame, used): (PushFrame, usize) =
        bincode::serde::decode_from_slice(bytes, config).ok()?;
    (used == bytes.len() && frame.protocol == PROTOCOL).then_some(frame.versions)
}

#[derive(Default)]
struct Queued {
    items: VecDeque<Pushed>,
    bytes: usize,
    closed: bool,
    /// A batch taken by the sender is not yet acknowledged or given up.
    sending: bool,
}

/// The versions waiting for one peer, bounded in bytes.
#[derive(Default)]
pub(crate) struct PeerQueue {
    queued: Mutex<Queued>,
    ready: Notify,
}

impl PeerQueue {
    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a version; `false` when the queue would pass `limit` bytes: it is then
    /// emptied, and the peer is left to anti-entropy.
    pub(crate) fn push(&self, pushed: Pushed, limit: usize) -> bool {
        let size = pushed.size;
        let mut queued = self.lock();
        if queued.closed {
            return true;
        }
        if queued.bytes + size > limit && !queued.items.is_empty() {
            queued.items.clear();
            queued.bytes = 0;
            return false;
        }
        queued.bytes += size;
        queued.items.push_back(pushed);
        drop(queued);
        self.ready.notify_one();
        true
    }

    /// Bytes queued.
    pub(crate) fn bytes(&self) -> u64 {
        self.lock().bytes as u64
    }

    /// Whether the peer is no longer live (the sender stops).
    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Whether nothing is queued, and no batch is being sent.
    pub(crate) fn is_idle(&self) -> bool {
        let queued = self.lock();
        queued.items.is_empty() && !queued.sending
    }

    /// The batch the sender took was acknowledged, or given up.
    fn batch_done(&self) {
        self.lock().sending = false;
    }

    /// Stops the sender and forgets what is queued.
    pub(crate) fn close(&self) {
        let mut queued = self.lock();
        queued.closed = true;
        queued.items.clear();
        queued.bytes = 0;
        drop(queued);
        self.ready.notify_one();
    }

    /// Waits for versions and takes about `budget` bytes of them (at least one);
    /// `None` once closed.
    async fn next_batch(&self, budget: usize) -> Option<Vec<Pushed>> {
        loop {
            {
                let mut queued = self.lock();
                if queued.closed {
                    return None;
                }
                if !queued.items.is_empty() {
                    let mut batch = Vec::new();
                    let mut bytes = 0;
                    while let Some(next) = queued.items.front() {
                        let full = bytes + next.size > budget || batch.len() == MAX_FRAME_VERSIONS;
                        if !batch.is_empty() && full {
                            break;
                        }
                        let Some(pushed) = queued.items.pop_front() else {
                            break;
                        };
                        bytes += pushed.size;
                        batch.push(pushed);
                    }
                    queued.bytes -= bytes;
                    queued.sending = true;
                    return Some(batch);
                }
            }
            self.ready.notified().await;
        }
    }
}

/// Writes queued this close together may reach the queues out of timestamp order.
const QUEUE_ORDER_MARGIN_MS: u64 = 1_000;

/// The time before which `batch`, once acknowledged, shows every own write delivered
/// (with the batches before it): its newest version, but no later than its first
/// version's queueing, less [`QUEUE_ORDER_MARGIN_MS`] for writes stamped before it and
/// queued after, since a write may be stamped ahead of the clock (causal overwrites).
fn delivers_before(batch: &[Pushed]) -> u64 {
    let newest = batch
        .iter()
        .map(|pushed| pushed.timestamp)
        .max()
        .unwrap_or(0);
    let queued = batch.first().map_or(0, |pushed| pushed.queued_at);
    newest
        .saturating_add(1)
        .min(queued.saturating_sub(QUEUE_ORDER_MARGIN_MS))
}

/// A push stream to one peer, with the connection it runs on.
struct Link<T: StreamTransport> {
    _connection: T::Conn,
    stream: <T::Conn as Connection>::Stream,
}

/// Sends `peer`'s queue until it is closed.
pub(crate) async fn send_loop<T: StreamTransport>(
    shared: Arc<Shared<T>>,
    node_id: String,
    addr: std::net::SocketAddr,
    queue: Arc<PeerQueue>,
) {
    let mut link: Option<Link<T>> = None;
    let ttl = super::millis(shared.config.tombstone_ttl);
    while let Some(mut batch) = queue.next_batch(shared.config.batch_bytes).await {
        let count = batch.len() as u64;
        let delivers_before = delivers_before(&batch);
        let mut frame = frame_of(&batch);
        let mut delivered = false;
        // Whether the peer is left without part of the batch (too late to push, or not
        // taken there): it is then behind, for anti-entropy to make good.
        let mut left_out = false;
        for _attempt in 0..2 {
            if queue.is_closed() {
                // The peer went down meanwhile: what is left is anti-entropy's.
                break;
            }
            if link.is_none() {
                link = open_link(&shared, addr).await;
            }
            let Some(open) = link.as_mut() else { continue };
            let now = shared.now_ms();
            let before = batch.len();
            batch.retain(|pushed| !outlived_push(pushed.timestamp, now, ttl));
            if batch.len() < before {
                left_out = true;
                frame = frame_of(&batch);
            }
            if batch.is_empty() {
                break;
            }
            let sent = send_batch(&mut open.stream, &frame);
            match kvs_net::timeout(shared.runtime.as_ref(), ACK_TIMEOUT, sent).await {
                Some(Ok(taken_whole)) => {
                    delivered = true;
                    left_out |= !taken_whole;
                    break;
                }
                failed => {
                    tracing::debug!(%node_id, ?failed, "push failed; reconnecting");
                    link = None;
                    shared.forget_connection(addr);
                }
            }
        }
        shared.counters.pushed.fetch_add(count, Ordering::Relaxed);
        if delivered {
            shared
                .counters
                .push_acks
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        } else if !batch.is_empty() {
            shared.counters.push_errors.fetch_add(1, Ordering::Relaxed);
        }
        if left_out {
            tracing::debug!(%node_id, "versions too old to push left to anti-entropy");
        }
        match delivered && !left_out {
            true => shared.pushed(&node_id, delivers_before),
            false => shared.mark_behind(&node_id),
        }
        // After its outcome is noted: a drain that sees the queue idle sees it noted.
        queue.batch_done();
    }
}

async fn open_link<T: StreamTransport>(
    shared: &Shared<T>,
    addr: std::net::SocketAddr,
) -> Option<Link<T>> {
    let connection = shared.connection(addr).await.ok()?;
    let mut stream = connection.open_stream().await.ok()?;
    stream.send_frame(KIND_PUSH).await.ok()?;
    Some(Link {
        _connection: connection,
        stream,
    })
}

/// The acknowledgement of a batch the peer did not take whole: it held a version older
/// than `tombstone_ttl` there ([`outlived_push`], or a deletion past keeping). Any other
/// acknowledgement is the count of versions stored.
const NOT_ALL_TAKEN: u32 = u32::MAX;

/// Whether pushing a version stamped at `timestamp` (Unix ms) at `now_ms` would come too
/// late: it is older than `tombstone_ttl`, so a deletion of it may have been purged
/// everywhere by now, and the push would bring the key back. Such a version is for
/// anti-entropy, whose rules tell. (Found by a chaos test of real processes: a push held
/// up by a cut link, or by its sender paused, arrived after the key's deletion had been
/// purged, and the key came back on every node.)
fn outlived_push(timestamp: u64, now_ms: u64, tombstone_ttl_ms: u64) -> bool {
    timestamp.saturating_add(tombstone_ttl_ms) <= now_ms
}

/// Sends one batch and waits for its acknowledgement: whether the peer took it whole.
async fn send_batch<S: BiStream>(stream: &mut S, frame: &[u8]) -> Result<bool, kvs_net::NetError> {
    stream.send_frame(frame).await?;
    match stream.recv_frame().await? {
        Some(ack) => match <[u8; 4]>::try_from(ack.as_slice()) {
            Ok(ack) => Ok(u32::from_be_bytes(ack) != NOT_ALL_TAKEN),
            Err(_) => Err(kvs_net::NetError::Closed),
        },
        None => Err(kvs_net::NetError::Closed),
    }
}

/// Serves a push stream from a peer: merge each batch durably, then acknowledge it.
pub(crate) async fn serve<T: StreamTransport>(
    shared: Arc<Shared<T>>,
    mut stream: <T::Conn as Connection>::Stream,
) {
    while let Ok(Some(frame)) = stream.recv_frame().await {
        let Some(versions) = decode(&frame) else {
            shared
                .counters
                .malformed_frames
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let received = versions.len() as u64;
        let timestamps: Vec<u64> = versions.iter().map(|(_, v)| v.id.timestamp).collect();
        let rules = shared.admission();
        let (taken, refused) = rules.filter(versions);
        shared.counters.refused(refused);
        let fresh = |(_, version): &(String, Version)| {
            !outlived_push(version.id.timestamp, rules.now_ms, rules.tombstone_ttl_ms)
        };
        let (taken, late): (Vec<_>, Vec<_>) = taken.into_iter().partition(fresh);
        let all_taken = late.is_empty() && refused.past_keeping == 0;
        shared
            .counters
            .push_received
            .fetch_add(received, Ordering::Relaxed);
        let store = Arc::clone(&shared.store);
        let stored = match shared.blocking(move || store.merge(&taken)).await {
            Ok(stored) => stored as u64,
            Err(error) => {
                tracing::error!(%error, "storing pushed versions failed");
                return;
            }
        };
        shared
            .counters
            .push_stored
            .fetch_add(stored, Ordering::Relaxed);
        let now = shared.now_ms();
        for timestamp in timestamps {
            shared.counters.lag.record(now.saturating_sub(timestamp));
        }
        // A frame holds far fewer versions than `NOT_ALL_TAKEN`.
        let ack = match all_taken {
            true => u32::try_from(stored).map_or(NOT_ALL_TAKEN - 1, |n| n.min(NOT_ALL_TAKEN - 1)),
            false => NOT_ALL_TAKEN,
        };
        if stream.send_frame(&ack.to_be_bytes()).await.is_err() {
            return;
        }
    }
}

/// The frame a sender sends for `versions` (tests).
#[cfg(test)]
fn encode(versions: Vec<(String, Version)>) -> Vec<u8> {
    let batch: Vec<Pushed> = versions.iter().map(|(k, v)| Pushed::new(k, v, 0)).collect();
    frame_of(&batch)
}

/// The bincode of a whole [`PushFrame`] holding `versions`, encoded at once (tests: what
/// [`frame_of`] must equal).
#[cfg(test)]
fn whole_frame(versions: Vec<(String, Version)>) -> Vec<u8> {
    let frame = PushFrame {
        protocol: PROTOCOL,
        versions,
    };
    bincode::serde::encode_to_vec(&frame, bincode::config::standard()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VersionId;

    fn version(size: usize) -> Version {
        Version {
            id: VersionId {
                timestamp: 5,
                origin_joined_at: 1,
                uuid: uuid::Uuid::from_u128(3),
            },
            data: Some("7".repeat(size)),
            owner: Some("u".into()),
            group: None,
            permissions: 0xf31,
            expires_at: Some(9),
        }
    }

    #[test]
    fn frames_roundtrip_and_bad_frames_are_none() {
        let versions = vec![
            ("a/b".to_owned(), version(3)),
            ("_auth/x".to_owned(), version(1)),
        ];
        let good = encode(versions.clone());
        assert_eq!(decode(&good), Some(versions));
        for cut in 0..good.len() {
            assert_eq!(decode(&good[..cut]), None, "cut at {cut}");
        }
        let mut other = good.clone();
        other[0] = 9;
        assert_eq!(decode(&other), None);
        for garbage in [&b""[..], b"\x01\xff\xff\xff\xff\xff", &[0u8; 64]] {
            assert_eq!(decode(garbage), None);
        }
    }

    #[test]
    fn a_frame_of_many_versions_counts_them_in_a_longer_varint() {
        // bincode writes counts from 251 up in more than one byte.
        for count in [250, 251, 300, MAX_FRAME_VERSIONS] {
            let versions: Vec<(String, Version)> =
                (0..count).map(|n| (format!("k{n}"), version(1))).collect();
            let expected = whole_frame(versions.clone());
            let frame = encode(versions.clone());
            assert_eq!(frame, expected, "{count} versions");
            assert_eq!(decode(&frame), Some(versions));
        }
    }

    #[test]
    fn a_frame_of_more_versions_than_any_sender_batches_is_refused() {
        let one_more: Vec<(String, Version)> = (0..=MAX_FRAME_VERSIONS)
            .map(|n| (format!("k{n}"), version(1)))
            .collect();
        assert_eq!(decode(&encode(one_more)), None);
    }

    #[tokio::test]
    async fn a_batch_never_holds_more_versions_than_a_frame_may() {
        let queue = PeerQueue::default();
        let small = version(0);
        for n in 0..MAX_FRAME_VERSIONS + 10 {
            assert!(queue.push(Pushed::new(&format!("{n}"), &small, 0), usize::MAX));
        }
        let first = queue.next_batch(usize::MAX).await.unwrap();
        assert_eq!(first.len(), MAX_FRAME_VERSIONS);
        assert_eq!(queue.next_batch(usize::MAX).await.unwrap().len(), 10);
    }

    #[tokio::test]
    async fn a_queue_is_bounded_and_batches_by_bytes() {
        let queue = PeerQueue::default();
        for n in 0..10 {
            assert!(queue.push(Pushed::new(&format!("k{n}"), &version(1000), 0), 100_000));
        }
        let batch = queue.next_batch(3000).await.unwrap();
        assert_eq!(batch.len(), 2, "about 3,000 bytes");
        assert!(
            !queue.push(Pushed::new("big", &version(200_000), 0), 100_000),
            "overflow"
        );
        assert_eq!(queue.bytes(), 0, "an overflow empties the queue");
        assert!(
            queue.push(Pushed::new("huge", &version(200_000), 0), 100_000),
            "one version always fits"
        );
        assert_eq!(queue.next_batch(10).await.unwrap().len(), 1);
        queue.close();
        assert!(queue.next_batch(10).await.is_none());
    }
}

/// Fuzz loops of the push frame codec (run long with `PROPTEST_CASES`; see
/// docs/fuzzing.md).
#[cfg(test)]
mod fuzz_tests {
    use proptest::prelude::*;

    use super::{PROTOCOL, decode, encode, whole_frame};
    use crate::protocol::fuzz::{mutate, versions};

    proptest! {
        // proptest's default: 256 cases, or PROPTEST_CASES.

        #[test]
        fn fuzz_push_frame_round_trips(batch in versions(12)) {
            prop_assert_eq!(decode(&encode(batch.clone())), Some(batch));
        }

        #[test]
        fn fuzz_push_frame_is_the_bincode_of_the_frame(batch in versions(12)) {
            // Put together from the versions' own encodings, the frame is what encoding
            // the whole frame at once gives (what earlier nodes sent and every node reads).
            prop_assert_eq!(encode(batch.clone()), whole_frame(batch));
        }

        #[test]
        fn fuzz_push_frame_garbage_is_refused_or_consistent(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            guided in any::<bool>(),
        ) {
            // Half the cases carry this protocol's version byte, to reach the batch.
            let bytes = if guided {
                let mut framed = vec![PROTOCOL];
                framed.extend(bytes);
                framed
            } else {
                bytes
            };
            if let Some(batch) = decode(&bytes) {
                prop_assert_eq!(bytes.first(), Some(&PROTOCOL));
                prop_assert_eq!(decode(&encode(batch.clone())), Some(batch));
            }
        }

        #[test]
        fn fuzz_push_frame_mutations_are_refused_or_consistent(
            batch in versions(6),
            how in any::<u8>(),
            at in any::<usize>(),
            byte in any::<u8>(),
        ) {
            let good = encode(batch);
            match decode(&mutate(&good, how, at, byte)) {
                Some(_) if how % 4 == 1 => prop_assert!(false, "a cut frame decoded"),
                Some(decoded) => prop_assert_eq!(decode(&encode(decoded.clone())), Some(decoded)),
                None => {}
            }
            for cut in 0..good.len() {
                prop_assert_eq!(decode(&good[..cut]), None, "cut at {}", cut);
            }
        }
    }
}
