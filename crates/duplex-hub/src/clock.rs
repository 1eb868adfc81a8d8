//! The hub's wall clock: the one place that reads the time of day.
//!
//! Publications are stamped with it (history's `time`, and the age limit
//! `history_ttl_secs`), documents' snapshots too, and tokens' `exp` and `nbf`
//! are checked against it. A [`Hub`](crate::Hub) is opened with a [`Clock`]:
//! [`Clock::system`] in production, or the clock of a [`ManualClock`] that
//! moves only when told, so that a test of expiry takes no real time.
//!
//! Durations measured on the connection (timeouts, rates) use
//! [`std::time::Instant`] and tokio's timers, not this clock. With the Redis
//! engine, a publication's `time` is Redis's clock, not this one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the time of day, in milliseconds since the Unix epoch.
/// Cheap to clone; clones read the same source.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None` for the system clock; else the milliseconds a
    /// [`ManualClock`] holds.
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system's clock. This is the default.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// Milliseconds since the epoch, now (0 if the system clock is set
    /// before 1970).
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(ms) => ms.load(Ordering::Relaxed),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        }
    }

    /// Seconds since the epoch, now (rounded down).
    pub fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }
}

/// A clock that stands still until [`advance`](Self::advance) moves it:
/// open a hub with its [`clock`](Self::clock), and the test decides when
/// time passes.
///
/// ```
/// use std::time::Duration;
/// use duplex_hub::clock::ManualClock;
///
/// let manual = ManualClock::new(1_700_000_000_000);
/// let clock = manual.clock();
/// manual.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now_ms(), 1_700_000_001_500);
/// assert_eq!(clock.now_secs(), 1_700_000_001);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `start_ms` milliseconds since the epoch.
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            ms: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// A clock standing at the system's time of day now: tokens signed
    /// with real `exp` values stay valid on it until it is moved past them.
    pub fn starting_now() -> ManualClock {
        ManualClock::new(Clock::system().now_ms())
    }

    /// The [`Clock`] that reads this one, to give to the hub.
    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(self.ms.clone()),
        }
    }

    /// Moves the clock forward by `by` (saturating at `u64::MAX` ms).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |ms| {
                Some(ms.saturating_add(by))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_is_the_time_of_day() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let now = Clock::system().now_ms();
        assert!(now >= before && now - before < 60_000, "{now} vs {before}");
        assert!(
            Clock::default().manual.is_none(),
            "the default is the system's"
        );
    }

    #[test]
    fn a_manual_clock_moves_only_when_told_and_every_clone_sees_it() {
        let manual = ManualClock::new(5_000);
        let a = manual.clock();
        let b = a.clone();
        assert_eq!(a.now_ms(), 5_000);
        manual.clone().advance(Duration::from_secs(2));
        assert_eq!(b.now_ms(), 7_000);
        assert_eq!(a.now_secs(), 7);
        manual.advance(Duration::MAX);
        assert_eq!(a.now_ms(), u64::MAX);
    }
}
