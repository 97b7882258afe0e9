//! kvs-membership: who is in the cluster, by SWIM with the three Lifeguard extensions.
//!
//! The protocol is a sans-IO state machine, [`Swim`]: it is fed received datagrams and
//! timeouts, each with the current (virtual or real) monotonic time, and yields datagrams
//! to send, the time it next wants to be woken and [`MembershipEvent`]s. The same code
//! runs in the node binary (over UDP with the cluster-secret MAC, see `kvs-net`) and in
//! the deterministic simulator `kvs-sim`. Settings and their provenance are in
//! [`SwimConfig`]; measurements in `membership/README.md`.
//!
//! The driver that runs the core on tokio over any `kvs-net` datagram transport,
//! `Membership`, is behind the `driver` feature; without it this crate builds without
//! tokio.

mod config;
#[cfg(feature = "driver")]
mod driver;
mod proto;

pub use config::{ConfigError, SwimConfig};
#[cfg(feature = "driver")]
pub use driver::{DriverConfig, LEAVE_GRACE, Membership};
pub use proto::{
    LocalMember, MAX_ID_LEN, Member, MemberState, MembershipEvent, Metrics, Swim, SwimError,
    Transmit,
};
