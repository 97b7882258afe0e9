//! Time as protocol code sees it: a [`Clock`] passed in, never the system's directly, so
//! that the simulator can drive everything on virtual time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time. `now` is monotonic (for timers); `unix_micros` is wall-clock time
/// (for version timestamps and datagram stamps) and may jump or be skewed.
pub trait Clock: Send + Sync {
    /// Monotonic time since the clock's own origin.
    fn now(&self) -> Duration;
    /// Wall-clock time in microseconds since the Unix epoch.
    fn unix_micros(&self) -> u64;
}

/// The system's clocks.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn unix_micros(&self) -> u64 {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
    }
}

/// A clock set by hand (tests, simulators): both readings move only when told to.
/// Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    micros: Arc<AtomicU64>,
    unix_offset_us: u64,
}

impl ManualClock {
    /// A clock at monotonic zero whose wall clock reads `unix_micros` at that point.
    pub fn new(unix_micros: u64) -> Self {
        Self {
            micros: Arc::new(AtomicU64::new(0)),
            unix_offset_us: unix_micros,
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let us = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(us, Ordering::SeqCst);
    }

    /// Sets the monotonic reading (it never goes back: earlier values are ignored).
    pub fn set(&self, now: Duration) {
        let us = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_max(us, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::SeqCst))
    }

    fn unix_micros(&self) -> u64 {
        self.unix_offset_us
            .saturating_add(self.micros.load(Ordering::SeqCst))
    }
}
