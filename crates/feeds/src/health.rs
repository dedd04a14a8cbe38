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
    /// Receive time of the last message (ms since the epoch; 0: none yet).
    pub last_message_ms: AtomicI64,
    /// Lag of the last post made durable, and the largest seen.
    pub lag_ms: AtomicI64,
    pub max_lag_ms: AtomicI64,
}

impl FeedHealth {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn record_lag(&self, lag_ms: i64) {
        self.lag_ms.store(lag_ms, Relaxed);
        self.max_lag_ms.fetch_max(lag_ms, Relaxed);
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
            "messages": self.messages.load(Relaxed), "posted": self.posted.load(Relaxed),
            "malformed": self.malformed.load(Relaxed), "out_of_order": self.out_of_order.load(Relaxed),
            "rejected": self.rejected.load(Relaxed),
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

    pub fn to_json(&self, now_ms: i64) -> Value {
        Value::Array(self.feeds.iter().map(|f| f.to_json(now_ms)).collect())
    }

    /// The Prometheus text of every feed's gauges and counters.
    pub fn prometheus(&self, now_ms: i64) -> String {
        let mut out = String::new();
        let gauges: [(&str, &str, Gauge); 5] = [
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
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for f in &self.feeds {
                let _ = writeln!(out, "{name}{{feed=\"{}\"}} {}", f.name, value(f, now_ms));
            }
        }
        let counters: [(&str, Counter); 7] = [
            ("messages", |f| &f.messages),
            ("posted", |f| &f.posted),
            ("malformed", |f| &f.malformed),
            ("out_of_order", |f| &f.out_of_order),
            ("rejected", |f| &f.rejected),
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
