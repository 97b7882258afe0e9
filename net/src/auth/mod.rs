//! Datagram authentication with the cluster secret: pure `seal`/`open` functions and the
//! [`DatagramAuth`] guard that adds stamping, addressing, the replay window and counters.
//!
//! Wire format of an authenticated datagram (at most [`MAX_DATAGRAM`] bytes):
//! `kind (1) | sender (8) | receiver (8) | stamp (8) | payload | tag (16)`, integers
//! big-endian, where
//! - `kind` is [`DatagramKind::Data`] (2, a payload for the protocol) or [`DatagramKind::Hello`] (3, from
//!   guard to guard; its payload is the 8-byte stamp of the datagram it answers);
//! - `sender` is the sender's boot id, random and non-zero, chosen at each start (the
//!   replay window is kept per boot id, so a replay from another source address is still
//!   caught);
//! - `receiver` is the receiver's boot id as the sender knows it, 0 while it does not;
//! - `stamp` is µs since the Unix epoch (strictly increasing per sender);
//! - `tag` is HMAC-SHA256 truncated to 128 bits over everything before it, keyed by a key
//!   derived from the cluster secret.
//!
//! A datagram is delivered only by the boot it names, so a captured datagram replayed to
//! another node, or to the same node after a restart (a new boot id, an empty window), is
//! refused. Boot ids are learned by a handshake: a fresh, authentic datagram that names
//! another boot or none is refused and answered with a hello naming the sender's boot and
//! echoing the refused stamp. Every accepted datagram (hellos included) teaches the boot
//! at its source address. A hello answering a first contact (which named no boot, so no
//! node can have delivered it) also teaches the boot at the address the first contact was
//! sent to, which may differ from the hello's source, and the first contact is sealed
//! again for that boot and re-sent, once. A hello answering a datagram that named a boot
//! makes the sender forget that boot, so that its next datagram there is a first contact.
//! First contact thus costs one round trip; a datagram sent to a peer that restarted
//! since is lost, never re-sent, so that a replay cannot make a node deliver an old
//! payload to the peer's next boot. Version 1 (no receiver) is refused as an unknown kind.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::replay::DEFAULT_MAX_PEERS;
use crate::{AuthCounts, AuthError, AuthStats, ReplayWindow};

/// The largest datagram on the wire, authentication included (fits a 1,500-byte MTU with
/// IP and UDP headers to spare).
pub const MAX_DATAGRAM: usize = 1400;
const HEADER_LEN: usize = 1 + 8 + 8 + 8;
const TAG_LEN: usize = 16;
/// Bytes added to a payload by [`seal`].
pub const AUTH_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The largest payload a datagram can carry.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - AUTH_OVERHEAD;
/// Sent datagrams remembered for answering hellos (a first contact's payload among them).
const SENT_MEMORY: usize = 256;
/// Hellos and re-sends waiting for [`DatagramAuth::poll_transmit`].
const OUTBOX: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// The config's `cluster_secret`. Its `Debug` does not show it.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl ClusterSecret {
    /// Wraps the secret's bytes (the config string as UTF-8).
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self(secret.as_ref().to_vec())
    }

    /// A 32-byte key for one purpose: HMAC-SHA256(secret, label).
    pub(crate) fn derive(&self, label: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.0, label)
    }

    /// HMAC-SHA256 of `message` under the key derived for `label`: a digest only those
    /// who hold the secret can make or check.
    pub fn digest(&self, label: &[u8], message: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.derive(label), message)
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// HMAC-SHA256 of `message` under `key`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = keyed(key);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 keyed with `key` (any key length is valid for HMAC).
pub(crate) fn keyed(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// The datagram MAC key derived from the cluster secret.
#[derive(Clone)]
pub struct DatagramKey(HmacSha256);

impl DatagramKey {
    /// Derives the datagram key from the cluster secret.
    pub fn new(secret: &ClusterSecret) -> Self {
        Self(keyed(&secret.derive(b"kvs datagram auth v1")))
    }
}

impl fmt::Debug for DatagramKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatagramKey(..)")
    }
}

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// A payload for the protocol.
    Data,
    /// The guard's answer to a datagram that named another boot or none: the payload is
    /// the answered datagram's stamp.
    Hello,
}

impl DatagramKind {
    fn byte(self) -> u8 {
        match self {
            DatagramKind::Data => 2,
            DatagramKind::Hello => 3,
        }
    }

    fn from_byte(byte: u8) -> Result<Self, AuthError> {
        match byte {
            2 => Ok(DatagramKind::Data),
            3 => Ok(DatagramKind::Hello),
            other => Err(AuthError::BadVersion(other)),
        }
    }
}

/// An authenticated datagram's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramHeader {
    /// What it carries.
    pub kind: DatagramKind,
    /// The sender's boot id.
    pub sender: u64,
    /// The receiver's boot id as the sender knew it (0: unknown).
    pub receiver: u64,
    /// The sender's stamp (µs since the Unix epoch, strictly increasing per sender).
    pub stamp: u64,
}

/// An authenticated datagram's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened<'a> {
    /// The header.
    pub header: DatagramHeader,
    /// The payload.
    pub payload: &'a [u8],
}

/// Appends the authenticated datagram for `header` and `payload` to `out` (cleared first).
pub fn seal(
    key: &DatagramKey,
    header: &DatagramHeader,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), AuthError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(AuthError::Oversized { len: payload.len() });
    }
    out.clear();
    out.reserve(payload.len() + AUTH_OVERHEAD);
    out.push(header.kind.byte());
    for field in [header.sender, header.receiver, header.stamp] {
        out.extend_from_slice(&field.to_be_bytes());
    }
    out.extend_from_slice(payload);
    let mut mac = key.0.clone();
    mac.update(out);
    out.extend_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
    Ok(())
}

/// Checks a datagram's length, MAC and kind, and returns its header and payload. Whom it
/// is for and replays are judged separately ([`DatagramAuth`], [`ReplayWindow`]).
pub fn open<'a>(key: &DatagramKey, datagram: &'a [u8]) -> Result<Opened<'a>, AuthError> {
    let len = datagram.len();
    if len > MAX_DATAGRAM {
        return Err(AuthError::Oversized { len });
    }
    if len < AUTH_OVERHEAD {
        return Err(AuthError::Truncated { len });
    }
    let (body, tag) = datagram.split_at(len - TAG_LEN);
    let mut mac = key.0.clone();
    mac.update(body);
    mac.verify_truncated_left(tag)
        .map_err(|_| AuthError::BadMac)?;
    let (header, payload) = body.split_at(HEADER_LEN);
    Ok(Opened {
        header: DatagramHeader {
            kind: DatagramKind::from_byte(header[0])?,
            sender: be_u64(&header[1..9]),
            receiver: be_u64(&header[9..17]),
            stamp: be_u64(&header[17..25]),
        },
        payload,
    })
}

/// A big-endian u64 from exactly 8 bytes (callers slice them from a checked header).
fn be_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    u64::from_be_bytes(b)
}

/// Gives strictly increasing stamps from a wall clock that may stall or step back.
#[derive(Debug, Clone, Default)]
pub struct Stamper {
    last: u64,
}

impl Stamper {
    /// The next stamp: `max(now_us, last + 1)`.
    pub fn next(&mut self, now_us: u64) -> u64 {
        self.last = now_us.max(self.last.saturating_add(1));
        self.last
    }
}

/// A datagram we sent, remembered so that a hello answering it can be matched.
#[derive(Debug)]
struct Sent {
    stamp: u64,
    to: SocketAddr,
    /// The payload of a first contact (sent naming no boot), until it is re-sent.
    first_contact: Option<Vec<u8>>,
}

/// The guard's mutable state, under one lock.
#[derive(Debug)]
struct State {
    stamper: Stamper,
    window: ReplayWindow<u64>,
    /// The boot id last learned at each address, and when it was learned.
    boots: BTreeMap<SocketAddr, (u64, u64)>,
    sent: VecDeque<Sent>,
    outbox: VecDeque<(SocketAddr, Vec<u8>)>,
}

impl State {
    /// Seals a datagram of ours for `receiver`.
    fn seal(
        &mut self,
        key: &DatagramKey,
        kind: DatagramKind,
        (sender, receiver): (u64, u64),
        now_us: u64,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<u64, AuthError> {
        let stamp = self.stamper.next(now_us);
        let header = DatagramHeader {
            kind,
            sender,
            receiver,
            stamp,
        };
        seal(key, &header, payload, out)?;
        Ok(stamp)
    }

    fn remember(&mut self, sent: Sent) {
        if self.sent.len() >= SENT_MEMORY {
            self.sent.pop_front();
        }
        self.sent.push_back(sent);
    }

    fn queue(&mut self, to: SocketAddr, wire: Vec<u8>) {
        if self.outbox.len() >= OUTBOX {
            self.outbox.pop_front();
        }
        self.outbox.push_back((to, wire));
    }

    /// Records that `boot` is at `addr`; when full, forgets the address learned longest ago.
    fn learn(&mut self, addr: SocketAddr, boot: u64, now_us: u64) {
        if !self.boots.contains_key(&addr) && self.boots.len() >= DEFAULT_MAX_PEERS {
            let oldest = self
                .boots
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(addr, _)| *addr);
            if let Some(oldest) = oldest {
                self.boots.remove(&oldest);
            }
        }
        self.boots.insert(addr, (boot, now_us));
    }

    /// A hello from `boot` answering our datagram stamped `echo`. For a first contact: the
    /// boot at the address we sent it to, and the payload re-sent to that boot. For a
    /// datagram that named a boot: that boot is forgotten (the peer restarted, or the
    /// datagram was replayed to another node), so our next datagram there is a first
    /// contact that the node really at that address answers.
    fn on_hello(
        &mut self,
        key: &DatagramKey,
        (ours, boot): (u64, u64),
        echo: u64,
        now_us: u64,
    ) -> Result<(), AuthError> {
        let Some(sent) = self.sent.iter_mut().find(|s| s.stamp == echo) else {
            return Ok(());
        };
        let (to, first_contact) = (sent.to, sent.first_contact.take());
        let Some(payload) = first_contact else {
            if self.boots.get(&to).is_some_and(|&(known, _)| known != boot) {
                self.boots.remove(&to);
            }
            return Ok(());
        };
        self.learn(to, boot, now_us);
        let mut wire = Vec::new();
        let stamp = self.seal(
            key,
            DatagramKind::Data,
            (ours, boot),
            now_us,
            &payload,
            &mut wire,
        )?;
        self.remember(Sent {
            stamp,
            to,
            first_contact: None,
        });
        self.queue(to, wire);
        Ok(())
    }
}

/// Everything a datagram transport needs to authenticate: the key, our boot id and
/// stamper, the boot ids learned at peers' addresses, the replay window kept per boot id,
/// and counters. Sans-IO: [`Self::seal`] and [`Self::open`] work on bytes, and the
/// handshake's own datagrams wait in [`Self::poll_transmit`].
#[derive(Debug)]
pub struct DatagramAuth {
    key: DatagramKey,
    boot: u64,
    state: Mutex<State>,
    stats: AuthStats,
}

impl DatagramAuth {
    /// A guard for `secret` with a random boot id and the default replay window.
    pub fn new(secret: &ClusterSecret) -> Self {
        Self::with_window(secret, crate::random_seed(), ReplayWindow::default())
    }

    /// A guard with a chosen boot id (0 is taken as 1: 0 means "unknown" on the wire) and
    /// replay window.
    pub fn with_window(secret: &ClusterSecret, boot: u64, window: ReplayWindow<u64>) -> Self {
        Self {
            key: DatagramKey::new(secret),
            boot: boot.max(1),
            state: Mutex::new(State {
                stamper: Stamper::default(),
                window,
                boots: BTreeMap::new(),
                sent: VecDeque::new(),
                outbox: VecDeque::new(),
            }),
            stats: AuthStats::default(),
        }
    }

    /// This start's boot id.
    pub fn boot(&self) -> u64 {
        self.boot
    }

    /// Seals `payload` for the node at `to`, stamped at wall time `now_us`, into `out`.
    pub fn seal(
        &self,
        now_us: u64,
        to: SocketAddr,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), AuthError> {
        let mut state = lock(&self.state);
        let receiver = state.boots.get(&to).map_or(0, |&(boot, _)| boot);
        let ids = (self.boot, receiver);
        let stamp = state.seal(&self.key, DatagramKind::Data, ids, now_us, payload, out)?;
        state.remember(Sent {
            stamp,
            to,
            first_contact: (receiver == 0).then(|| payload.to_vec()),
        });
        Ok(())
    }

    /// Opens a datagram received from `from` at wall time `now_us`: MAC, then freshness and
    /// replay (per boot id, whatever address it came from), then whom it names. Returns
    /// the payload for the protocol, or `None` for the handshake's own traffic (a hello, or
    /// a first contact that is answered with one). Counts the outcome.
    pub fn open<'a>(
        &self,
        now_us: u64,
        from: SocketAddr,
        datagram: &'a [u8],
    ) -> Result<Option<&'a [u8]>, AuthError> {
        let result = open(&self.key, datagram).and_then(|opened| self.admit(now_us, from, opened));
        match &result {
            Ok(Some(_)) => self.stats.record_accepted(),
            Ok(None) => self.stats.record_handshake(),
            Err(err) => self.stats.record_rejected(err),
        }
        result
    }

    fn admit<'a>(
        &self,
        now_us: u64,
        from: SocketAddr,
        opened: Opened<'a>,
    ) -> Result<Option<&'a [u8]>, AuthError> {
        let Opened { header, payload } = opened;
        let mut state = lock(&self.state);
        state.window.check(&header.sender, header.stamp, now_us)?;
        if header.receiver != self.boot {
            if header.kind == DatagramKind::Data {
                let echo = header.stamp.to_be_bytes();
                let mut hello = Vec::new();
                let ids = (self.boot, header.sender);
                state.seal(
                    &self.key,
                    DatagramKind::Hello,
                    ids,
                    now_us,
                    &echo,
                    &mut hello,
                )?;
                state.queue(from, hello);
            }
            return match header.receiver {
                0 => Ok(None),
                _ => Err(AuthError::Misaddressed),
            };
        }
        state.learn(from, header.sender, now_us);
        match header.kind {
            DatagramKind::Data => Ok(Some(payload)),
            DatagramKind::Hello => {
                if let Ok(echo) = <[u8; 8]>::try_from(payload) {
                    let echo = u64::from_be_bytes(echo);
                    state.on_hello(&self.key, (self.boot, header.sender), echo, now_us)?;
                }
                Ok(None)
            }
        }
    }

    /// The next datagram the handshake wants sent (a hello or a re-sent first contact):
    /// where to, and its bytes.
    pub fn poll_transmit(&self) -> Option<(SocketAddr, Vec<u8>)> {
        lock(&self.state).outbox.pop_front()
    }

    /// The live counters.
    pub fn stats(&self) -> &AuthStats {
        &self.stats
    }

    /// A snapshot of the counters.
    pub fn counts(&self) -> AuthCounts {
        self.stats.snapshot()
    }
}

/// Locks a mutex, recovering from poisoning (the guarded state stays consistent).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
