//! A small cache of authenticated callers, so that the hot path of a request with a
//! token already seen is one hash-map lookup instead of an HMAC, two store reads and a
//! JSON parse.
//!
//! Entries are keyed by a keyed (randomly seeded) hash of the token, never by the token
//! itself, and a hit compares the stored token in fixed time: a probe cannot time its way
//! through a comparison with a valid token. An entry is used for at most
//! [`MAX_AGE_MS`] and never after its token's `exp`; any write to the `_auth/` keyspace
//! through this node's API bumps the epoch and empties the cache, so a local revocation,
//! user deletion or group change applies to the very next request; so does a change of a
//! reserved key that the store takes from a peer ([`CallerCache::follow`] of the store's
//! count of them), as soon as it is there to be read. [`MAX_AGE_MS`] bounds the rest
//! (a caller whose token expires, say).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::Caller;
use crate::auth::{Principal, fixed_time_eq};

/// How long a cached authentication is trusted, in milliseconds.
pub(crate) const MAX_AGE_MS: u64 = 1_000;
/// At most this many tokens are cached; the cache is emptied when full.
const MAX_ENTRIES: usize = 4_096;

struct Cached {
    token: Box<str>,
    caller: Arc<Caller>,
    epoch: u64,
    checked_at: u64,
    expires_at: u64,
}

/// Recently authenticated callers by token, plus the two callers without a token.
pub(crate) struct CallerCache {
    seed: std::collections::hash_map::RandomState,
    epoch: AtomicU64,
    /// The store's count of reserved-key changes when last followed.
    store_changes: AtomicU64,
    entries: Mutex<HashMap<u64, Cached>>,
    /// The caller of every request while `auth_enabled` is false.
    pub(crate) unchecked: Arc<Caller>,
    /// The caller of every request without a token while `auth_enabled` is true.
    pub(crate) anonymous: Arc<Caller>,
}

impl CallerCache {
    pub(crate) fn new() -> Self {
        Self {
            seed: std::collections::hash_map::RandomState::new(),
            epoch: AtomicU64::new(0),
            store_changes: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
            unchecked: Arc::new(Caller::Unchecked),
            anonymous: Arc::new(Caller::Checked {
                principal: Principal::Anonymous,
                user: None,
            }),
        }
    }

    /// The current epoch: read it before the lookups whose result is then cached.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The cached caller of `token`, if still valid at `now_ms`.
    pub(crate) fn get(&self, token: &str, now_ms: u64) -> Option<Arc<Caller>> {
        let epoch = self.epoch();
        let key = self.seed.hash_one(token);
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let cached = entries.get(&key)?;
        let fresh = cached.epoch == epoch
            && now_ms >= cached.checked_at
            && now_ms < cached.checked_at.saturating_add(MAX_AGE_MS)
            && now_ms < cached.expires_at;
        (fresh && fixed_time_eq(cached.token.as_bytes(), token.as_bytes()))
            .then(|| Arc::clone(&cached.caller))
    }

    /// Caches `caller` for `token`, authenticated at `now_ms` with the lookups made in
    /// `epoch`; the token expires at `expires_at` (Unix ms).
    pub(crate) fn insert(
        &self,
        token: &str,
        caller: &Arc<Caller>,
        epoch: u64,
        now_ms: u64,
        expires_at: u64,
    ) {
        let key = self.seed.hash_one(token);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            key,
            Cached {
                token: token.into(),
                caller: Arc::clone(caller),
                epoch,
                checked_at: now_ms,
                expires_at,
            },
        );
    }

    /// Empties the cache if the store took a reserved key since the last call
    /// (`changes`: its [`kvs_sync::Store::reserved_changes`]); a load alone otherwise.
    pub(crate) fn follow(&self, changes: u64) {
        if self.store_changes.load(Ordering::Acquire) != changes
            && self.store_changes.swap(changes, Ordering::AcqRel) != changes
        {
            self.invalidate();
        }
    }

    /// Forgets every entry: an auth record changed.
    pub(crate) fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_caller() -> Arc<Caller> {
        Arc::new(Caller::Checked {
            principal: Principal::Anonymous,
            user: None,
        })
    }

    #[test]
    fn hits_until_stale_expired_or_invalidated() {
        let cache = CallerCache::new();
        let caller = user_caller();
        assert!(cache.get("t", 10).is_none());
        cache.insert("t", &caller, cache.epoch(), 10, 5_000);
        assert!(cache.get("t", 10).is_some_and(|c| Arc::ptr_eq(&c, &caller)));
        assert!(cache.get("u", 10).is_none());
        assert!(cache.get("t", 10 + MAX_AGE_MS).is_none(), "too old");
        assert!(cache.get("t", 9).is_none(), "clock went back");
        cache.insert("t", &caller, cache.epoch(), 4_500, 5_000);
        assert!(cache.get("t", 5_000).is_none(), "token expired");
        cache.insert("t", &caller, cache.epoch(), 10, 5_000);
        cache.invalidate();
        assert!(cache.get("t", 10).is_none(), "invalidated");
        cache.insert("t", &caller, cache.epoch(), 10, 5_000);
        cache.follow(0);
        assert!(
            cache.get("t", 10).is_some(),
            "the store took no reserved key"
        );
        cache.follow(1);
        assert!(cache.get("t", 10).is_none(), "the store took one");
    }

    #[test]
    fn lookups_from_before_an_invalidation_are_never_served() {
        let cache = CallerCache::new();
        let epoch = cache.epoch();
        cache.invalidate();
        cache.insert("t", &user_caller(), epoch, 10, 5_000);
        assert!(cache.get("t", 10).is_none());
    }

    #[test]
    fn bounded() {
        let cache = CallerCache::new();
        for i in 0..(MAX_ENTRIES + 10) {
            cache.insert(&format!("t{i}"), &user_caller(), 0, 1, 100);
        }
        let len = cache.entries.lock().map(|e| e.len()).unwrap_or(0);
        assert!(len <= MAX_ENTRIES);
    }
}
