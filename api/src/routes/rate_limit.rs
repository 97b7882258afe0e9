//! Per-client rate limits: at most `requests` per `window` for each client (the token's
//! user id, else the remote IP), counted in fixed windows that start at a client's first
//! request. Beyond the limit: `429 rate_limited` with `Retry-After` in whole seconds.
//!
//! Memory is bounded: clients are spread over shards by a keyed hash, each shard behind
//! its own lock and holding at most its share of [`MAX_CLIENTS`]. A full shard forgets
//! the client whose window started first: its count is the one that would have mattered
//! the shortest, and it is a client whose window already ended whenever there is one.
//! Each request also forgets a few ended windows, so that idle clients do not linger.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Clients remembered at most, over all shards.
const MAX_CLIENTS: usize = 100_000;

/// Independent locks the clients are spread over.
const SHARDS: usize = 16;

/// Ended windows forgotten per request at most: more than the one client a request can
/// add, so they are forgotten as fast as clients arrive, without a long walk under a lock.
const SWEEP: usize = 2;

/// The limit: `requests` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub requests: u32,
    /// The window.
    pub window: Duration,
}

/// One client's window: when it started and the requests counted in it.
struct Bucket {
    start: Instant,
    count: u32,
}

/// The clients of one shard, with their windows ordered by start.
#[derive(Default)]
struct Shard {
    buckets: HashMap<Arc<str>, Bucket>,
    by_start: BTreeSet<(Instant, Arc<str>)>,
}

impl Shard {
    /// Forgets up to [`SWEEP`] clients whose window ended by `now`.
    fn forget_ended(&mut self, now: Instant, window: Duration) {
        for _ in 0..SWEEP {
            match self.by_start.first() {
                Some((start, _)) if now.duration_since(*start) >= window => {
                    self.forget_first();
                }
                _ => return,
            }
        }
    }

    /// Forgets the client whose window started first.
    fn forget_first(&mut self) {
        if let Some((_, client)) = self.by_start.pop_first() {
            self.buckets.remove(&client);
        }
    }

    /// Starts a window of `client` at `now`, replacing the one it had.
    fn start_window(&mut self, client: Arc<str>, now: Instant) {
        let fresh = Bucket {
            start: now,
            count: 0,
        };
        if let Some(old) = self.buckets.insert(Arc::clone(&client), fresh) {
            self.by_start.remove(&(old.start, Arc::clone(&client)));
        }
        self.by_start.insert((now, client));
    }

    /// The bucket of `client`, a fresh window from `now` when it had none or its window
    /// ended; a new client makes room first when the shard holds `capacity`.
    fn bucket(
        &mut self,
        client: &str,
        now: Instant,
        window: Duration,
        capacity: usize,
    ) -> &mut Bucket {
        let known = self
            .buckets
            .get_key_value(client)
            .map(|(name, bucket)| (Arc::clone(name), bucket.start));
        let name = match known {
            Some((name, start)) => {
                if now.duration_since(start) >= window {
                    self.start_window(Arc::clone(&name), now);
                }
                name
            }
            None => {
                if self.buckets.len() >= capacity {
                    self.forget_first();
                }
                let name: Arc<str> = Arc::from(client);
                self.start_window(Arc::clone(&name), now);
                name
            }
        };
        self.buckets
            .get_mut(&name)
            .expect("the bucket was just found or inserted")
    }
}

/// The counters of every client.
pub(crate) struct RateLimiter {
    limit: RateLimit,
    /// Clients one shard holds at most.
    per_shard: usize,
    /// Picks a client's shard; keyed per process, so that clients cannot aim at a shard.
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self::with_shards(limit, SHARDS, MAX_CLIENTS / SHARDS)
    }

    /// A limiter of `shards` shards holding `per_shard` clients each.
    fn with_shards(limit: RateLimit, shards: usize, per_shard: usize) -> Self {
        Self {
            limit,
            per_shard,
            hasher: RandomState::new(),
            shards: (0..shards).map(|_| Mutex::default()).collect(),
        }
    }

    /// Counts a request of `client` at `now`; `Err(seconds)` to wait when over the limit.
    pub(crate) fn admit(&self, client: &str, now: Instant) -> Result<(), u64> {
        let shard = self.hasher.hash_one(client) % self.shards.len() as u64;
        let mut shard = self.shards[usize::try_from(shard).unwrap_or_default()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let window = self.limit.window;
        shard.forget_ended(now, window);
        let bucket = shard.bucket(client, now, window, self.per_shard);
        if bucket.count >= self.limit.requests {
            let left = window.saturating_sub(now.duration_since(bucket.start));
            return Err(left.as_secs() + u64::from(left.subsec_nanos() > 0));
        }
        bucket.count += 1;
        Ok(())
    }

    /// Clients remembered now, over all shards.
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                assert_eq!(shard.buckets.len(), shard.by_start.len());
                shard.buckets.len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, window_secs: u64) -> RateLimit {
        RateLimit {
            requests,
            window: Duration::from_secs(window_secs),
        }
    }

    #[test]
    fn limits_per_client_per_window() {
        let limiter = RateLimiter::new(limit(3, 10));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.admit("a", t0), Ok(()));
        }
        assert_eq!(limiter.admit("a", t0 + Duration::from_millis(2500)), Err(8));
        assert_eq!(
            limiter.admit("b", t0),
            Ok(()),
            "another client has its own budget"
        );
        assert_eq!(
            limiter.admit("a", t0 + Duration::from_millis(9999)),
            Err(1),
            "the window has not ended yet"
        );
        assert_eq!(
            limiter.admit("a", t0 + Duration::from_secs(10)),
            Ok(()),
            "a new window"
        );
        for _ in 0..2 {
            assert_eq!(limiter.admit("a", t0 + Duration::from_secs(11)), Ok(()));
        }
        assert_eq!(
            limiter.admit("a", t0 + Duration::from_secs(11)),
            Err(9),
            "the new window counts from its own start"
        );
    }

    #[test]
    fn the_limiter_holds_max_clients_over_its_shards() {
        let limiter = RateLimiter::new(limit(1, 3600));
        assert_eq!(limiter.shards.len(), SHARDS);
        assert_eq!(limiter.per_shard * SHARDS, MAX_CLIENTS);
    }

    #[test]
    fn memory_stays_bounded_past_the_cap() {
        // The real shard count with a tenth of the capacity (the same code, a tenth of
        // the time in a debug build), and twice as many clients as it holds: every shard
        // fills, then forgets one client per newcomer.
        const CAP: usize = MAX_CLIENTS / 10;
        const CLIENTS: u64 = CAP as u64 * 2;
        let limiter = RateLimiter::with_shards(limit(1, 3600), SHARDS, CAP / SHARDS);
        let t0 = Instant::now();
        let at = |i: u64| t0 + Duration::from_micros(i);
        for i in 0..CLIENTS {
            assert_eq!(
                limiter.admit(&format!("ip:{i}"), at(i)),
                Ok(()),
                "client {i}"
            );
            if i % 1_000 == 0 {
                assert!(limiter.clients() <= CAP, "after client {i}");
            }
        }
        let remembered = limiter.clients();
        assert!(
            (CAP * 9 / 10..=CAP).contains(&remembered),
            "{remembered} clients remembered"
        );
        let now = at(CLIENTS);
        assert!(
            limiter.admit(&format!("ip:{}", CLIENTS - 1), now).is_err(),
            "the newest client is remembered"
        );
        assert_eq!(
            limiter.admit("ip:0", now),
            Ok(()),
            "the stalest client was forgotten"
        );
        assert!(limiter.clients() <= CAP);
    }

    #[test]
    fn a_full_shard_forgets_the_window_that_started_first() {
        let limiter = RateLimiter::with_shards(limit(1, 10), 1, 2);
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(limiter.admit("a", at(0)), Ok(()));
        assert_eq!(limiter.admit("b", at(5)), Ok(()));
        // a's window ended; its new one starts after b's.
        assert_eq!(limiter.admit("a", at(12)), Ok(()));
        assert_eq!(limiter.admit("c", at(13)), Ok(()), "pushes b out, not a");
        assert_eq!(limiter.clients(), 2);
        assert_eq!(limiter.admit("a", at(13)), Err(9), "a is remembered");
        assert_eq!(limiter.admit("c", at(13)), Err(10), "c is remembered");
        assert_eq!(limiter.admit("b", at(14)), Ok(()), "b was forgotten");
        assert_eq!(limiter.admit("c", at(14)), Err(9), "a went, c stays");
        assert_eq!(limiter.admit("a", at(14)), Ok(()), "a was forgotten");
    }

    #[test]
    fn ended_windows_are_forgotten_before_the_shard_fills() {
        let limiter = RateLimiter::with_shards(limit(1, 10), 1, 100);
        let t0 = Instant::now();
        for (i, client) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(
                limiter.admit(client, t0 + Duration::from_secs(i as u64)),
                Ok(())
            );
        }
        assert_eq!(limiter.clients(), 3);
        // At 11 s a's and b's windows have ended; this request forgets both.
        assert_eq!(limiter.admit("d", t0 + Duration::from_secs(11)), Ok(()));
        assert_eq!(limiter.clients(), 2);
        assert_eq!(
            limiter.admit("c", t0 + Duration::from_secs(11)),
            Err(1),
            "a running window is kept"
        );
    }
}
