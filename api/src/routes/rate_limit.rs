//! Per-client rate limits: at most `requests` per `window` for each client (the token's
//! user id, else the remote IP), counted in fixed windows that start at a client's first
//! request. Beyond the limit: `429 rate_limited` with `Retry-After` in whole seconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Clients remembered at most; past this, clients whose window ended are forgotten.
const MAX_CLIENTS: usize = 100_000;

/// The limit: `requests` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub requests: u32,
    /// The window.
    pub window: Duration,
}

/// The counters of every client.
pub(crate) struct RateLimiter {
    limit: RateLimit,
    clients: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request of `client` at `now`; `Err(seconds)` to wait when over the limit.
    pub(crate) fn admit(&self, client: &str, now: Instant) -> Result<(), u64> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if clients.len() >= MAX_CLIENTS {
            let window = self.limit.window;
            clients.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let (start, count) = clients.entry(client.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= self.limit.window {
            *start = now;
            *count = 0;
        }
        if *count >= self.limit.requests {
            let left = self.limit.window.saturating_sub(now.duration_since(*start));
            return Err(left.as_secs() + u64::from(left.subsec_nanos() > 0));
        }
        *count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_client_per_window() {
        let limiter = RateLimiter::new(RateLimit {
            requests: 3,
            window: Duration::from_secs(10),
        });
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
            limiter.admit("a", t0 + Duration::from_secs(10)),
            Ok(()),
            "a new window"
        );
    }
}
