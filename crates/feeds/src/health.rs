//! Each feed's health: connected or not, when its last message came, how far behind the tick
//! path is (lag: from a message's receipt to its posts being durable in the engine), and what
//! went wrong, counted. Shared between the connection, the ingest loop and the readers of
//! `/metrics` and the oracle view, so every field is an atomic.

use crate::config::FeedsConfig;
use serde_json::{json, Value};
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct FeedHealth {
    pub name: String,
    pub venue: &'static str,
    pub source: String,
    pub stale_after_ms: i64,
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
    pub messages: AtomicU64,
    /// Messages no adapter could read.
    pub malformed: AtomicU64,
    /// Updates older than the last of their symbol.
    pub out_of_order: AtomicU64,
    /// Posts the service refused (a check of its identity, the engine's rules) or could not
    /// queue.
    pub rejected: AtomicU64,
    pub posted: AtomicU64,
    /// Posts replaced by a newer one of the same key while the engine was busy (never posted).
    pub coalesced: AtomicU64,
    /// Receive time of the last message (ms since the epoch; 0: none yet).
    pub last_message_ms: AtomicI64,
    /// Lag of the last post made durable, and the largest seen.
    pub lag_ms: AtomicI64,
    pub max_lag_ms: AtomicI64,
    /// Every lag recorded, for its quantiles.
    pub lags: LagHistogram,
}

/// Lags counted by the millisecond up to [`LagHistogram::MAX_MS`], and beyond it together:
/// quantiles exact to the millisecond in the range that matters (the target is 100 ms).
#[derive(Debug)]
pub struct LagHistogram(Box<[AtomicU64]>);

impl Default for LagHistogram {
    fn default() -> Self {
        LagHistogram((0..=Self::MAX_MS + 1).map(|_| AtomicU64::new(0)).collect())
    }
}

impl LagHistogram {
    /// The largest lag counted in its own bucket; a larger one counts as `MAX_MS + 1`.
    pub const MAX_MS: usize = 1023;

    pub fn record(&self, lag_ms: i64) {
        let bucket =
            usize::try_from(lag_ms.max(0)).map_or(Self::MAX_MS + 1, |ms| ms.min(Self::MAX_MS + 1));
        self.0[bucket].fetch_add(1, Relaxed);
    }

    /// The `q` quantile (0 to 1) of the lags of `histograms` together, in ms: the smallest lag
    /// at or below which a fraction `q` of them fall (`MAX_MS + 1`: beyond the range); none
    /// before the first.
    pub fn quantile<'a>(
        histograms: impl Iterator<Item = &'a LagHistogram> + Clone,
        q: f64,
    ) -> Option<i64> {
        let count = |b: usize| {
            histograms
                .clone()
                .map(|h| h.0[b].load(Relaxed))
                .sum::<u64>()
        };
        let counts: Vec<u64> = (0..=Self::MAX_MS + 1).map(count).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the quantile, 1-based: at least the first lag.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        counts
            .iter()
            .position(|&c| {
                seen += c;
                seen >= rank
            })
            .map(|b| b as i64)
    }
}

impl FeedHealth {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn record_lag(&self, lag_ms: i64) {
        self.lag_ms.store(lag_ms, Relaxed);
        self.max_lag_ms.fetch_max(lag_ms, Relaxed);
        self.lags.record(lag_ms);
    }

    /// The `q` quantile of this feed's lags (ms).
    pub fn lag_quantile(&self, q: f64) -> Option<i64> {
        LagHistogram::quantile(std::iter::once(&self.lags), q)
    }

    /// Whether the last message is older than `stale_after_ms` at `now_ms` (or none came).
    pub fn stale(&self, now_ms: i64) -> bool {
        let last = self.last_message_ms.load(Relaxed);
        last == 0 || now_ms.saturating_sub(last) > self.stale_after_ms
    }

    pub fn to_json(&self, now_ms: i64) -> Value {
        let last = self.last_message_ms.load(Relaxed);
        json!({
            "name": self.name, "venue": self.venue, "source": self.source,
            "connected": self.connected.load(Relaxed),
            "stale": self.stale(now_ms),
            "last_message_ms": (last > 0).then_some(last),
            "age_ms": (last > 0).then(|| now_ms.saturating_sub(last)),
            "lag_ms": self.lag_ms.load(Relaxed), "max_lag_ms": self.max_lag_ms.load(Relaxed),
            "lag_p50_ms": self.lag_quantile(0.5), "lag_p99_ms": self.lag_quantile(0.99),
            "messages": self.messages.load(Relaxed), "posted": self.posted.load(Relaxed),
            "malformed": self.malformed.load(Relaxed), "out_of_order": self.out_of_order.load(Relaxed),
            "rejected": self.rejected.load(Relaxed), "coalesced": self.coalesced.load(Relaxed),
            "connects": self.connects.load(Relaxed), "disconnects": self.disconnects.load(Relaxed),
        })
    }
}

/// A gauge's value of a feed at a time, and a counter of a feed.
type Gauge = fn(&FeedHealth, i64) -> i64;
type Counter = fn(&FeedHealth) -> &AtomicU64;

/// Every feed's health, in configuration order.
#[derive(Debug, Default, Clone)]
pub struct Health {
    pub feeds: Vec<Arc<FeedHealth>>,
}

impl Health {
    pub fn new(config: &FeedsConfig) -> Health {
        Health {
            feeds: config
                .feeds
                .iter()
                .map(|f| {
                    Arc::new(FeedHealth {
                        name: f.name.clone(),
                        venue: f.venue.as_str(),
                        source: f.source().to_string(),
                        stale_after_ms: f.stale_after_ms,
                        ..FeedHealth::default()
                    })
                })
                .collect(),
        }
    }

    /// The `q` quantile of every feed's lags together (ms).
    pub fn lag_quantile(&self, q: f64) -> Option<i64> {
        LagHistogram::quantile(self.feeds.iter().map(|f| &f.lags), q)
    }

    pub fn to_json(&self, now_ms: i64) -> Value {
        Value::Array(self.feeds.iter().map(|f| f.to_json(now_ms)).collect())
    }

    /// The Prometheus text of every feed's gauges and counters.
    pub fn prometheus(&self, now_ms: i64) -> String {
        let mut out = String::new();
        let gauges: [(&str, &str, Gauge); 7] = [
            (
                "pmargin_feed_connected",
                "1 while the feed's connection is open",
                |f, _| i64::from(f.connected.load(Relaxed)),
            ),
            (
                "pmargin_feed_stale",
                "1 when no message came within the feed's stale_after_ms",
                |f, now| i64::from(f.stale(now)),
            ),
            (
                "pmargin_feed_last_message_age_ms",
                "ms since the feed's last message",
                |f, now| {
                    let last = f.last_message_ms.load(Relaxed);
                    if last == 0 {
                        -1
                    } else {
                        now.saturating_sub(last)
                    }
                },
            ),
            (
                "pmargin_feed_lag_ms",
                "ms from receipt to durable posts, last message",
                |f, _| f.lag_ms.load(Relaxed),
            ),
            (
                "pmargin_feed_max_lag_ms",
                "largest lag_ms since start",
                |f, _| f.max_lag_ms.load(Relaxed),
            ),
            (
                "pmargin_feed_lag_p50_ms",
                "median lag_ms since start (-1: none yet)",
                |f, _| f.lag_quantile(0.5).unwrap_or(-1),
            ),
            (
                "pmargin_feed_lag_p99_ms",
                "99th percentile of lag_ms since start (-1: none yet)",
                |f, _| f.lag_quantile(0.99).unwrap_or(-1),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for f in &self.feeds {
                let _ = writeln!(out, "{name}{{feed=\"{}\"}} {}", f.name, value(f, now_ms));
            }
        }
        let counters: [(&str, Counter); 8] = [
            ("messages", |f| &f.messages),
            ("posted", |f| &f.posted),
            ("malformed", |f| &f.malformed),
            ("out_of_order", |f| &f.out_of_order),
            ("rejected", |f| &f.rejected),
            ("coalesced", |f| &f.coalesced),
            ("connects", |f| &f.connects),
            ("disconnects", |f| &f.disconnects),
        ];
        for (what, counter) in counters {
            let _ = writeln!(out, "# TYPE pmargin_feed_{what}_total counter");
            for f in &self.feeds {
                let _ = writeln!(
                    out,
                    "pmargin_feed_{what}_total{{feed=\"{}\"}} {}",
                    f.name,
                    counter(f).load(Relaxed)
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_quantiles_by_hand() {
        let h = LagHistogram::default();
        assert_eq!(LagHistogram::quantile(std::iter::once(&h), 0.5), None);
        // 100 lags: 1 ms x 50, 2 ms x 45, 80 ms x 4, 5000 ms x 1.
        for (ms, n) in [(1, 50), (2, 45), (80, 4), (5000, 1)] {
            (0..n).for_each(|_| h.record(ms));
        }
        let q = |q| LagHistogram::quantile(std::iter::once(&h), q);
        // The 50th of 100 is a 1; the 51st a 2; the 99th an 80; the 100th beyond the range.
        assert_eq!(q(0.5), Some(1));
        assert_eq!(q(0.51), Some(2));
        assert_eq!(q(0.99), Some(80));
        assert_eq!(q(1.0), Some(LagHistogram::MAX_MS as i64 + 1));
        // Two histograms count together: with 100 lags of 3 ms more, the 200 in order are 50
        // ones, 45 twos, 100 threes, ...: the 100th (the median) is a 3, the 50th a 1.
        let other = LagHistogram::default();
        (0..100).for_each(|_| other.record(3));
        assert_eq!(
            LagHistogram::quantile([&h, &other].into_iter(), 0.5),
            Some(3)
        );
        assert_eq!(
            LagHistogram::quantile([&h, &other].into_iter(), 0.25),
            Some(1)
        );
    }
}
