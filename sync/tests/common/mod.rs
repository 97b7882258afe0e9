//! What the diff tests share: the admission rules at a fixed "now", an empty memory
//! store, and a bulk of versions.

use kvs_sync::{Admission, MemoryStore, StoreOptions, Version, VersionId};
use uuid::Uuid;

pub(crate) const NOW: u64 = 10_000_000;
pub(crate) const RULES: Admission = Admission {
    now_ms: NOW,
    max_clock_skew_ms: 30_000,
    tombstone_ttl_ms: 1_000_000,
};

pub(crate) fn store() -> MemoryStore {
    MemoryStore::new(StoreOptions::default())
}

/// `count` live versions of keys `bulk/NNNNNN`, written by `origin` before `NOW`.
pub(crate) fn bulk(count: usize, origin: u64) -> Vec<(String, Version)> {
    (0..count)
        .map(|n| {
            (
                format!("bulk/{n:06}"),
                Version {
                    id: VersionId {
                        timestamp: NOW - 1000,
                        origin_joined_at: origin,
                        // Never nil, which marks a burial (no write has it).
                        uuid: Uuid::from_u128(n as u128 + 1),
                    },
                    data: Some(format!("{n}")),
                    owner: None,
                    group: None,
                    permissions: 0xf31,
                    expires_at: None,
                },
            )
        })
        .collect()
}
