//! Limits on what one client can make the service do (issue 15): a per-key rate limit on
//! writes, a bounded writer queue and heavy pool, capped pages, a cap on concurrent streams
//! per key, request timeouts and the largest magnitudes an event may carry.
//!
//! The defaults (README, "Limits") fit a venue adapter that posts every fill of a busy venue
//! through one key: 1,000 writes per second per key with bursts of 2,000.

use crate::error::ServiceError;
use pmargin_engine::engine::{MAX_AMOUNT, MAX_INSTRUMENTS_PER_UNDERLYING, MAX_PRICE, MAX_SIZE};
use pmargin_engine::Event;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Every limit of the service, settable by `pmargin serve` flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Writes (POST, DELETE but what-ifs) per second per API key, on average.
    pub writes_per_second: f64,
    /// Writes one key may send at once before the rate applies.
    pub write_burst: f64,
    /// Events waiting for the writer at most; beyond, 503.
    pub writer_queue: usize,
    /// Heavy computations (report refreshes, what-ifs, scenario tables) running or waiting
    /// at most; beyond, 503.
    pub heavy_queue: usize,
    /// Largest page of `GET /v1/accounts` and `GET /v1/audit`.
    pub max_page: usize,
    /// Stream connections open at once per API key; beyond, 429.
    pub streams_per_key: usize,
    /// Stream messages read from the log per page while a stream catches up.
    pub stream_page: usize,
    /// Longest time a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Longest time a client may take to send a request head (and, on a kept-alive
    /// connection, to start the next one); beyond, the connection is closed.
    pub header_read_timeout: Duration,
    /// Most instruments one underlying may list (new names arrive with accepted fills only);
    /// a fill naming one more new instrument is refused (422). At most the engine's own bound,
    /// [`MAX_INSTRUMENTS_PER_UNDERLYING`].
    pub instruments_per_underlying: usize,
    /// How often the oracle's indices are re-assessed without a quote (a dead feed turns its
    /// index stale within `max_age_ms` plus this); `None`: only quotes move the oracle's
    /// clock (replays and tests that date quotes in the past).
    pub oracle_tick: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            writes_per_second: 1000.0,
            write_burst: 2000.0,
            writer_queue: 16_384,
            heavy_queue: 256,
            max_page: 1000,
            streams_per_key: 8,
            stream_page: 1000,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            instruments_per_underlying: MAX_INSTRUMENTS_PER_UNDERLYING,
            oracle_tick: Some(Duration::from_secs(1)),
        }
    }
}

/// Keys tracked at most; beyond, buckets that refilled are forgotten (a full bucket is what a
/// new key gets anyway).
const MAX_TRACKED: usize = 65_536;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per key: `burst` tokens, refilled at `rate` per second, one per write.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<[u8; 16], Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`, or says how long until one is there.
    pub fn take(&self, key: [u8; 16]) -> Result<(), Duration> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: [u8; 16], now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| {
                b.tokens + rate * now.saturating_duration_since(b.at).as_secs_f64() < burst
            });
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + self.rate * elapsed).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else if self.rate > 0.0 {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        } else {
            Err(Duration::from_secs(3600))
        }
    }
}

/// Open streams per key.
#[derive(Default)]
pub struct StreamSlots {
    open: Mutex<HashMap<String, usize>>,
}

impl StreamSlots {
    /// Takes a slot for one more stream of `key`, unless it has `max` open; give it back with
    /// [`StreamSlots::release`].
    pub fn acquire(&self, key: &str, max: usize) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key.to_string()).or_default();
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    pub fn release(&self, key: &str) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(key);
            }
        }
    }

    pub fn open(&self, key: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(key).copied().unwrap_or(0)
    }
}

/// Largest |funding rate| per event (100% of the mark).
pub const MAX_FUNDING_RATE: f64 = 1.0;

fn too_large(field: &str, value: f64, max: f64) -> ServiceError {
    ServiceError::bad_request(format!(
        "{field} {value} is beyond the largest magnitude allowed, {max:e}"
    ))
    .with_field(field)
}

/// Refuses (400, naming the field) a size, price, amount or rate beyond the documented
/// maxima, so no figure the event produces can overflow the settlement messages' fixed-point
/// encoding. The engine checks the same bounds (a replayed log obeys them too).
pub fn check_magnitudes(event: &Event) -> Result<(), ServiceError> {
    let check = |field: &str, value: f64, max: f64| {
        if value.is_finite() && value.abs() <= max {
            Ok(())
        } else {
            Err(too_large(field, value, max))
        }
    };
    match event {
        Event::Deposit { amount, .. } | Event::Withdrawal { amount, .. } => {
            check("amount", *amount, MAX_AMOUNT)
        }
        Event::Trade {
            size, price, fee, ..
        } => {
            check("size", *size, MAX_SIZE)?;
            check("price", *price, MAX_PRICE)?;
            check("fee", *fee, MAX_AMOUNT)
        }
        Event::Price { price, .. }
        | Event::Quote { price, .. }
        | Event::Mark { price, .. }
        | Event::Settlement { price, .. } => check("price", *price, MAX_PRICE),
        Event::Funding { rate, .. } => check("rate", *rate, MAX_FUNDING_RATE),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_a_burst_through_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(10.0, 3.0);
        let t0 = Instant::now();
        let key = [1; 16];
        for _ in 0..3 {
            assert!(limiter.take_at(key, t0).is_ok());
        }
        // Empty: one token takes 1/10 s.
        let wait = limiter.take_at(key, t0).expect_err("the burst is spent");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // Another key has its own bucket.
        assert!(limiter.take_at([2; 16], t0).is_ok());
        // 0.25 s later: 2.5 tokens, two writes pass, the third waits 0.05 s.
        let t1 = t0 + Duration::from_millis(250);
        assert!(limiter.take_at(key, t1).is_ok());
        assert!(limiter.take_at(key, t1).is_ok());
        let wait = limiter.take_at(key, t1).expect_err("half a token left");
        assert!((wait.as_secs_f64() - 0.05).abs() < 1e-9, "{wait:?}");
    }

    #[test]
    fn stream_slots_are_counted_per_key_and_given_back() {
        let slots = StreamSlots::default();
        assert!(slots.acquire("k", 2));
        assert!(slots.acquire("k", 2));
        assert!(!slots.acquire("k", 2), "third is refused");
        assert!(slots.acquire("other", 2));
        slots.release("k");
        assert_eq!(slots.open("k"), 1);
        assert!(slots.acquire("k", 2));
    }

    #[test]
    fn magnitudes_beyond_the_maxima_name_the_field() {
        let trade = |size: f64, price: f64| Event::Trade {
            account: "a".into(),
            instrument: "BTC-PERPETUAL".into(),
            size,
            price,
            fee: 0.0,
            counterparty: None,
        };
        assert!(check_magnitudes(&trade(1e9, 1e12)).is_ok());
        let e = check_magnitudes(&trade(-1.5e9, 1.0)).expect_err("size");
        assert_eq!(e.field.as_deref(), Some("size"));
        let e = check_magnitudes(&trade(1.0, 2e12)).expect_err("price");
        assert_eq!(e.field.as_deref(), Some("price"));
        let deposit = Event::Deposit {
            account: "a".into(),
            asset: "USDC".into(),
            amount: 1e16,
        };
        let e = check_magnitudes(&deposit).expect_err("amount");
        assert_eq!(
            (e.kind, e.field.as_deref()),
            (crate::error::ErrorKind::BadRequest, Some("amount"))
        );
    }
}
