//! kvs-sync: what a replica stores and how replicas agree.
//!
//! - [`Version`]: one version of a key (value or tombstone, ownership, expiry) and the
//!   conflict rule that every replica applies the same way ([`Version::supersedes`]).
//! - [`plan_write`]: the local write rules (preconditions, the causal timestamp).
//! - [`Store`]: the storage seam, implemented in memory here ([`MemoryStore`]) and over
//!   LMDB in the node binary, with one conformance suite (feature `conformance`) that
//!   both pass.

mod audit;
mod memory;
pub mod merkle;
mod store;
mod version;
mod write;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use audit::{AuditEntry, AuditVerdict, GENESIS_HASH, verify_chain};
pub use memory::MemoryStore;
pub use merkle::MerkleTree;
pub use store::{
    Cursor, ListPage, Listed, PurgeStats, Store, StoreError, StoreOptions, StoreStats, WriteOutcome,
};
pub use version::{Version, VersionId};
pub use write::{Mutation, Precondition, WriteOp, WriteRejected, plan_write};
