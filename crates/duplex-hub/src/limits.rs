//! Request rates: a token bucket (per connection, and per client address
//! for handshakes in [`crate::abuse`]).
//!
//! The bucket holds up to `burst` tokens and refills at `rate` tokens a
//! second; each request takes one. Time comes in as an argument, so tests need
//! no clock.

use std::time::{Duration, Instant};

/// A token bucket: `rate` requests a second on average, `burst` at once.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token at `now`: true if there was one, false if the request
    /// is over the limit.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full again at `now` (as if new).
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.tokens + elapsed.as_secs_f64() * self.rate >= self.burst
    }

    /// How long until the next token, from the last call.
    pub fn retry_after(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 5, start);
        for _ in 0..5 {
            assert!(bucket.take(start));
        }
        assert!(!bucket.take(start), "the burst is spent");
        assert!(bucket.retry_after() > Duration::ZERO);
        // 10 a second: one more after 100 ms, not before.
        assert!(!bucket.take(start + Duration::from_millis(50)));
        assert!(bucket.take(start + Duration::from_millis(101)));
        assert!(!bucket.take(start + Duration::from_millis(101)));
        // A long pause refills to the burst, no more.
        let later = start + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(bucket.take(later));
        }
        assert!(!bucket.take(later));
        assert!(!bucket.is_full(later));
        assert!(bucket.is_full(later + Duration::from_millis(500)));
    }

    #[test]
    fn time_going_backwards_does_not_refill() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(1, 1, start);
        assert!(bucket.take(start));
        assert!(!bucket.take(start - Duration::from_secs(5)));
    }
}
