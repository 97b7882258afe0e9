//! Datagram authentication with the cluster secret: pure `seal`/`open` functions and the
//! [`DatagramAuth`] guard that adds stamping, the replay window and counters.
//!
//! Wire format of an authenticated datagram (at most [`MAX_DATAGRAM`] bytes):
//! `version (1) | sender (8) | stamp (8) | payload | tag (16)`, integers big-endian, where
//! `sender` is a random id the sender picks at start (the replay window is kept per
//! sender, so a replay from another source address is still caught), `stamp` is µs since
//! the Unix epoch (strictly increasing per sender) and `tag` is HMAC-SHA256 truncated to
//! 128 bits over everything before it, keyed by a key derived from the cluster secret.

use std::fmt;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{AuthCounts, AuthError, AuthStats, ReplayWindow};

/// The largest datagram on the wire, authentication included (fits a 1,500-byte MTU with
/// IP and UDP headers to spare).
pub const MAX_DATAGRAM: usize = 1400;
/// The authentication format version carried in the first byte.
pub const AUTH_VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 8 + 8;
const TAG_LEN: usize = 16;
/// Bytes added to a payload by [`seal`].
pub const AUTH_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The largest payload a datagram can carry.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - AUTH_OVERHEAD;

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
        let mut mac = keyed(&self.0);
        mac.update(label);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
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

/// An authenticated datagram's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened<'a> {
    /// The sender's random id.
    pub sender: u64,
    /// The sender's stamp (µs since the Unix epoch, strictly increasing per sender).
    pub stamp: u64,
    /// The payload.
    pub payload: &'a [u8],
}

/// Appends the authenticated datagram for `payload` to `out` (cleared first).
pub fn seal(
    key: &DatagramKey,
    sender: u64,
    stamp: u64,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), AuthError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(AuthError::Oversized { len: payload.len() });
    }
    out.clear();
    out.reserve(payload.len() + AUTH_OVERHEAD);
    out.push(AUTH_VERSION);
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(&stamp.to_be_bytes());
    out.extend_from_slice(payload);
    let mut mac = key.0.clone();
    mac.update(out);
    out.extend_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
    Ok(())
}

/// Checks a datagram's length, version and MAC, and returns its stamp and payload.
/// Replays are judged separately ([`ReplayWindow`]).
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
    if header[0] != AUTH_VERSION {
        return Err(AuthError::BadVersion(header[0]));
    }
    Ok(Opened {
        sender: be_u64(&header[1..9]),
        stamp: be_u64(&header[9..17]),
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

/// Everything a datagram transport needs to authenticate: the key, our random sender id
/// and stamper, the replay window kept per sender id, and counters.
#[derive(Debug)]
pub struct DatagramAuth {
    key: DatagramKey,
    sender: u64,
    stamper: Mutex<Stamper>,
    window: Mutex<ReplayWindow<u64>>,
    stats: AuthStats,
}

impl DatagramAuth {
    /// A guard for `secret` with a random sender id and the default replay window.
    pub fn new(secret: &ClusterSecret) -> Self {
        Self::with_window(secret, crate::random_seed(), ReplayWindow::default())
    }

    /// A guard with a chosen sender id and replay window.
    pub fn with_window(secret: &ClusterSecret, sender: u64, window: ReplayWindow<u64>) -> Self {
        Self {
            key: DatagramKey::new(secret),
            sender,
            stamper: Mutex::new(Stamper::default()),
            window: Mutex::new(window),
            stats: AuthStats::default(),
        }
    }

    /// Seals `payload` stamped at wall time `now_us` into `out`.
    pub fn seal(&self, now_us: u64, payload: &[u8], out: &mut Vec<u8>) -> Result<(), AuthError> {
        let stamp = lock(&self.stamper).next(now_us);
        seal(&self.key, self.sender, stamp, payload, out)
    }

    /// Opens a datagram received at wall time `now_us`: MAC, then freshness and replay
    /// (per sender id, whatever address it came from). Counts the outcome.
    pub fn open<'a>(&self, now_us: u64, datagram: &'a [u8]) -> Result<&'a [u8], AuthError> {
        let result = open(&self.key, datagram).and_then(|opened| {
            lock(&self.window).check(&opened.sender, opened.stamp, now_us)?;
            Ok(opened.payload)
        });
        match &result {
            Ok(_) => self.stats.record_accepted(),
            Err(err) => self.stats.record_rejected(err),
        }
        result
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
mod tests {
    use super::*;

    fn key(s: &str) -> DatagramKey {
        DatagramKey::new(&ClusterSecret::new(s))
    }

    #[test]
    fn round_trip_and_max_size() {
        let mut out = Vec::new();
        let payload = vec![7u8; MAX_PAYLOAD];
        seal(&key("s"), 3, 42, &payload, &mut out).expect("fits");
        assert_eq!(out.len(), MAX_DATAGRAM);
        let opened = open(&key("s"), &out).expect("valid");
        assert_eq!(
            (opened.sender, opened.stamp, opened.payload),
            (3, 42, &payload[..])
        );
        let too_big = vec![0u8; MAX_PAYLOAD + 1];
        assert!(matches!(
            seal(&key("s"), 3, 1, &too_big, &mut out),
            Err(AuthError::Oversized { .. })
        ));
    }

    #[test]
    fn wrong_key_tampered_and_truncated_are_refused() {
        let mut out = Vec::new();
        seal(&key("s"), 3, 1, b"hello", &mut out).expect("fits");
        assert_eq!(open(&key("other"), &out), Err(AuthError::BadMac));
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x01;
            assert!(open(&key("s"), &bad).is_err(), "flip at {i}");
        }
        for n in 0..out.len() {
            assert!(open(&key("s"), &out[..n]).is_err(), "truncated to {n}");
        }
    }

    #[test]
    fn guard_refuses_replays() {
        let auth = DatagramAuth::new(&ClusterSecret::new("s"));
        let mut out = Vec::new();
        auth.seal(1_000_000, b"x", &mut out).expect("fits");
        assert_eq!(auth.open(1_000_000, &out), Ok(&b"x"[..]));
        assert_eq!(auth.open(1_000_000, &out), Err(AuthError::Replayed));
        let counts = auth.counts();
        assert_eq!((counts.accepted, counts.replayed), (1, 1));
    }

    #[test]
    fn stamper_is_strictly_increasing() {
        let mut s = Stamper::default();
        assert_eq!(s.next(10), 10);
        assert_eq!(s.next(10), 11);
        assert_eq!(s.next(5), 12);
        assert_eq!(s.next(100), 100);
    }
}
