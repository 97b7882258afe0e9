//! The errors of kvs-net: why a datagram was refused ([`AuthError`]) and why a transport
//! operation failed ([`NetError`]).

use std::io;

/// Why an incoming datagram or connection failed authentication. Never a panic: every
/// malformed input maps to one of these and is counted in [`crate::AuthStats`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Shorter than the authentication header and tag.
    #[error("datagram truncated: {len} bytes")]
    Truncated {
        /// Length received.
        len: usize,
    },
    /// Longer than [`crate::MAX_DATAGRAM`] (or a payload longer than [`crate::MAX_PAYLOAD`]).
    #[error("datagram oversized: {len} bytes")]
    Oversized {
        /// Length received or asked for.
        len: usize,
    },
    /// An unknown authentication format version.
    #[error("unknown datagram version {0}")]
    BadVersion(u8),
    /// The MAC does not match: wrong secret or tampered bytes.
    #[error("bad MAC (wrong cluster secret or tampered datagram)")]
    BadMac,
    /// The stamp was already seen from this peer, or is older than its replay window.
    #[error("replayed datagram")]
    Replayed,
    /// The datagram names another boot of the receiver (a replay to another node, or to
    /// this one after a restart, or a sender that has not yet learned of the restart).
    #[error("datagram addressed to another node or boot")]
    Misaddressed,
    /// The stamp is too far from the receiver's clock (stale or from the future).
    #[error("stale datagram (stamp {stamp_us} us, now {now_us} us)")]
    Stale {
        /// The datagram's stamp, microseconds since the Unix epoch.
        stamp_us: u64,
        /// The receiver's clock.
        now_us: u64,
    },
    /// A connection peer failed to prove it holds the cluster secret.
    #[error("peer failed the cluster-secret proof")]
    PeerRefused,
}

/// A failed transport operation.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A socket or file operation failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// Authentication failed.
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
    /// The payload or frame is larger than the transport allows.
    #[error("too large: {len} bytes (max {max})")]
    TooLarge {
        /// Length asked for.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A QUIC or TLS operation failed.
    #[error("connection: {0}")]
    Connection(String),
    /// The certificate in the data dir could not be made, read or used.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The transport or connection is closed.
    #[error("closed")]
    Closed,
    /// An operation did not finish in time.
    #[error("timed out")]
    TimedOut,
}
