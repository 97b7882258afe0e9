//! kvs-sync: what a replica stores and how replicas agree.
//!
//! - [`Version`]: one version of a key (value or tombstone, ownership, expiry) and the
//!   conflict rule that every replica applies the same way ([`Version::supersedes`]).
//! - [`plan_write`]: the local write rules (preconditions, the causal timestamp).
//! - [`Arrivals`]: the changes a store made visible lately, in their order (`/watch`).
//! - [`Store`]: the storage seam, implemented in memory here ([`MemoryStore`]) and over
//!   LMDB in the node binary, with one conformance suite (feature `conformance`) that
//!   both pass.
//! - Anti-entropy: the [`merkle`] tree every store keeps, the diff [`protocol`], and
//!   [`Session`], one side of a diff session, sans IO; [`Admission`] checks every
//!   version a peer sends before it is merged.

mod admission;
mod arrivals;
mod audit;
#[cfg(feature = "driver")]
pub mod driver;
mod memory;
pub mod merkle;
pub mod protocol;
mod session;
mod status;
mod store;
mod version;
mod write;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use admission::{Admission, MAX_KEY_BYTES, Refusal, RefusalCounts, Sorted};
pub use arrivals::Arrivals;
pub use audit::{
    AuditEntry, AuditKey, AuditVerdict, GENESIS_HASH, head as audit_head, verify_chain,
};
pub use memory::MemoryStore;
pub use merkle::MerkleTree;
pub use protocol::Standing;
pub use session::{
    Exchange, Session, SessionError, SessionStats, approximate_size, exchange_locally,
    exchange_with,
};
pub use status::{PeerStatus, SyncStatus};
pub use store::{
    Change, Cursor, ListPage, Listed, PurgeStats, Store, StoreError, StoreOptions, StoreStats,
    Undelivered, WriteOutcome,
};
pub use version::{Version, VersionId};
pub use write::{Mutation, Precondition, WriteOp, WriteRejected, plan_write};
