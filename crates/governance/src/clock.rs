//! Where governance takes the time from.
//!
//! The state machine ([`crate::Governance`]) is pure and takes `now_ms` as an argument; the
//! service that drives it reads the time from a [`Clock`]. In production that is the
//! [`SystemClock`]; tests pass a [`ManualClock`] and move it forward, so a day-long timelock or
//! ratification window is crossed in a microsecond instead of being slept through.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        // A clock set before 1970 reads as the epoch rather than wrapping.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to (for tests and simulations).
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock(AtomicI64::new(now_ms))
    }

    /// Starts at the system clock's current time (so stored timestamps look plausible).
    pub fn at_system_time() -> ManualClock {
        ManualClock::new(SystemClock.now_ms())
    }

    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the clock forward by `ms` (backward if negative) and returns the new time.
    pub fn advance(&self, ms: i64) -> i64 {
        self.0.fetch_add(ms, Ordering::SeqCst).saturating_add(ms)
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now_ms(), 1_000);
        assert_eq!(c.advance(86_400_000), 86_401_000);
        assert_eq!(c.now_ms(), 86_401_000);
        c.set(5);
        assert_eq!(c.now_ms(), 5);
    }

    #[test]
    fn the_system_clock_is_past_2020() {
        // 2020-01-01T00:00:00Z: a clock reading in seconds or microseconds would fail this.
        let now = SystemClock.now_ms();
        assert!(
            now > 1_577_836_800_000 && now < 1_577_836_800_000 * 10,
            "{now}"
        );
    }
}
