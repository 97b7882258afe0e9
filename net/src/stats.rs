//! Counters of refused input (datagrams and connections), shared by the transports and
//! read by `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::AuthError;

/// Live counters, updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct AuthStats {
    accepted: AtomicU64,
    truncated: AtomicU64,
    oversized: AtomicU64,
    bad_version: AtomicU64,
    bad_mac: AtomicU64,
    replayed: AtomicU64,
    stale: AtomicU64,
    misaddressed: AtomicU64,
    handshakes: AtomicU64,
    refused_peers: AtomicU64,
    refused_busy: AtomicU64,
}

/// A snapshot of [`AuthStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthCounts {
    /// Datagrams that passed authentication.
    pub accepted: u64,
    /// Datagrams shorter than the header and tag.
    pub truncated: u64,
    /// Datagrams longer than the maximum.
    pub oversized: u64,
    /// Datagrams of an unknown format version.
    pub bad_version: u64,
    /// Datagrams with a wrong MAC (wrong secret or tampered).
    pub bad_mac: u64,
    /// Datagrams already seen.
    pub replayed: u64,
    /// Datagrams stamped too far from our clock.
    pub stale: u64,
    /// Datagrams naming another boot than ours (replayed to another node or across a
    /// restart, or sent before the sender learned of our restart).
    pub misaddressed: u64,
    /// The addressing handshake's own datagrams (first contacts naming no boot, hellos);
    /// not refusals.
    pub handshakes: u64,
    /// Connections whose peer failed the cluster-secret proof or did not finish it (or
    /// its handshake) in time.
    pub refused_peers: u64,
    /// Connection attempts refused because too many others were in their handshake or
    /// proof.
    pub refused_busy: u64,
}

impl AuthCounts {
    /// All refused datagrams.
    pub fn rejected(&self) -> u64 {
        self.truncated
            + self.oversized
            + self.bad_version
            + self.bad_mac
            + self.replayed
            + self.stale
            + self.misaddressed
    }
}

impl AuthStats {
    /// Counts one accepted datagram.
    pub fn record_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one datagram of the addressing handshake.
    pub fn record_handshake(&self) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one connection attempt refused while the endpoint was busy with unproven
    /// ones.
    pub fn record_busy(&self) {
        self.refused_busy.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one refusal under its reason.
    pub fn record_rejected(&self, err: &AuthError) {
        let counter = match err {
            AuthError::Truncated { .. } => &self.truncated,
            AuthError::Oversized { .. } => &self.oversized,
            AuthError::BadVersion(_) => &self.bad_version,
            AuthError::BadMac => &self.bad_mac,
            AuthError::Replayed => &self.replayed,
            AuthError::Stale { .. } => &self.stale,
            AuthError::Misaddressed => &self.misaddressed,
            AuthError::PeerRefused => &self.refused_peers,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> AuthCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AuthCounts {
            accepted: get(&self.accepted),
            truncated: get(&self.truncated),
            oversized: get(&self.oversized),
            bad_version: get(&self.bad_version),
            bad_mac: get(&self.bad_mac),
            replayed: get(&self.replayed),
            stale: get(&self.stale),
            misaddressed: get(&self.misaddressed),
            handshakes: get(&self.handshakes),
            refused_peers: get(&self.refused_peers),
            refused_busy: get(&self.refused_busy),
        }
    }
}
