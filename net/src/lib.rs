//! kvs-net: node identities and the transport seam of kvs.
//!
//! Membership and sync talk to the network only through the traits defined here, so that
//! the same protocol code runs over real sockets in the binary and over the simulated
//! network in `kvs-sim`:
//! - [`Datagrams`]: unreliable datagrams (SWIM), at most [`MAX_PAYLOAD`] bytes each;
//! - [`StreamTransport`] / [`Connection`] / [`BiStream`]: reliable framed bidirectional
//!   streams on authenticated connections (sync);
//! - [`Clock`] and [`seeded_rng`]: time and randomness are injected, never read from the
//!   system by protocol code.
//!
//! The datagram authentication codec ([`seal`], [`open`], [`ReplayWindow`],
//! [`DatagramAuth`]) is pure and always built. The executor seam ([`Runtime`]: spawn,
//! sleep, blocking work) and its tokio implementation are behind the `tokio` feature, the
//! tokio UDP transport behind `udp`, the quinn transport behind `quic`.

mod auth;
mod clock;
mod error;
mod node_id;
#[cfg(feature = "quic")]
mod quic;
mod random;
mod replay;
#[cfg(feature = "tokio")]
mod runtime;
mod stats;
mod transport;
#[cfg(feature = "udp")]
mod udp;

pub use auth::{
    AUTH_OVERHEAD, ClusterSecret, DatagramAuth, DatagramHeader, DatagramKey, DatagramKind,
    MAX_DATAGRAM, MAX_PAYLOAD, Opened, Stamper, open, seal,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{AuthError, NetError};
pub use node_id::NodeId;
#[cfg(feature = "quic")]
pub use quic::{QuicConnection, QuicStream, QuicTransport};
pub use random::{SeededRng, random_seed, seeded_rng};
pub use replay::{DEFAULT_MAX_AGE, REPLAY_WINDOW, ReplayWindow};
#[cfg(feature = "tokio")]
pub use runtime::{
    BlockingWork, BoxSleep, BoxTask, Runtime, TaskControl, TaskHandle, TaskSet, TokioRuntime,
    run_blocking, timeout,
};
pub use stats::{AuthCounts, AuthStats};
pub use transport::{BiStream, Connection, Datagrams, MAX_FRAME, StreamTransport};
#[cfg(feature = "udp")]
pub use udp::UdpTransport;
