//! kvs-net: node identities and the transport seam of kvs.
//!
//! Membership and sync talk to the network only through the traits defined here, so that
//! the same protocol code runs over real sockets in the binary and over the simulated
//! network in `kvs-sim`.

mod node_id;

pub use node_id::NodeId;
