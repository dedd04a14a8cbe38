//! Prometheus text metrics.

use pmargin_engine::Engine;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds of the re-margin latency histogram, in seconds.
pub const BUCKETS: [f64; 13] = [
    1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 1.0,
];

/// Seconds over which events per second is measured.
const WINDOW_S: u64 = 10;

pub struct Metrics {
    start: Instant,
    applied: AtomicU64,
    rejected: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
    window: Mutex<VecDeque<(u64, u64)>>,
    pub http_requests: AtomicU64,
    /// Group commits: how many, their events, and the time spent committing (disk sync
    /// included).
    commits: AtomicU64,
    committed_events: AtomicU64,
    commit_ns: AtomicU64,
    commit_buckets: [AtomicU64; BUCKETS.len() + 1],
    /// The latest snapshot: the event it follows, its size, and how long taking it stalled the
    /// writer and how long writing it took (in the background).
    snapshot_seq: AtomicU64,
    snapshot_bytes: AtomicU64,
    snapshot_capture_ns: AtomicU64,
    snapshot_write_ns: AtomicU64,
    /// Requests and events refused, by reason (rate limits, full queues, engine refusals,
    /// storage failures): refusals are counted here rather than logged one by one.
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Whether writes are suspended after a failed commit.
    pub storage_failed: std::sync::atomic::AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            start: Instant::now(),
            applied: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
            window: Mutex::new(VecDeque::new()),
            http_requests: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            committed_events: AtomicU64::new(0),
            commit_ns: AtomicU64::new(0),
            commit_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            snapshot_seq: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
            snapshot_capture_ns: AtomicU64::new(0),
            snapshot_write_ns: AtomicU64::new(0),
            refused: Mutex::new(BTreeMap::new()),
            storage_failed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Metrics {
    pub fn record_event(&self, accepted: bool, latency: Duration) {
        if accepted {
            &self.applied
        } else {
            &self.rejected
        }
        .fetch_add(1, Ordering::Relaxed);
        let s = latency.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(latency.as_nanos() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let sec = self.start.elapsed().as_secs();
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        match w.back_mut() {
            Some((s, n)) if *s == sec => *n += 1,
            _ => w.push_back((sec, 1)),
        }
        while w.front().is_some_and(|(s, _)| *s + WINDOW_S < sec) {
            w.pop_front();
        }
    }

    /// One group commit of `events` events (and their audit entries) that took `latency`.
    pub fn record_commit(&self, events: usize, latency: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.committed_events
            .fetch_add(events as u64, Ordering::Relaxed);
        self.commit_ns
            .fetch_add(latency.as_nanos() as u64, Ordering::Relaxed);
        let s = latency.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        self.commit_buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// One request or event refused for `reason` (a fixed label).
    pub fn refused(&self, reason: &'static str) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Refusals so far for `reason`.
    pub fn refused_count(&self, reason: &str) -> u64 {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    /// Counts the events of the log before a snapshot a restart started from, which it does not
    /// apply again (their latencies are not in the histogram).
    pub fn seed(&self, applied: u64, rejected: u64) {
        self.applied.fetch_add(applied, Ordering::Relaxed);
        self.rejected.fetch_add(rejected, Ordering::Relaxed);
    }

    /// Events applied and refused so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.applied.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        )
    }

    /// A snapshot taken after event `seq`: its JSON size, the writer's pause to copy the
    /// engine, and the background write.
    pub fn record_snapshot(&self, seq: u64, bytes: usize, capture: Duration, write: Duration) {
        self.snapshot_seq.store(seq, Ordering::Relaxed);
        self.snapshot_bytes.store(bytes as u64, Ordering::Relaxed);
        self.snapshot_capture_ns
            .store(capture.as_nanos() as u64, Ordering::Relaxed);
        self.snapshot_write_ns
            .store(write.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The event after which the latest snapshot since start was taken (0: none yet).
    pub fn snapshot_seq(&self) -> u64 {
        self.snapshot_seq.load(Ordering::Relaxed)
    }

    pub fn events_total(&self) -> u64 {
        self.applied.load(Ordering::Relaxed) + self.rejected.load(Ordering::Relaxed)
    }

    /// Events per second over the last complete seconds of the window.
    pub fn events_per_second(&self) -> f64 {
        let now = self.start.elapsed().as_secs();
        let w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let span = WINDOW_S.min(now.max(1));
        let n: u64 = w
            .iter()
            .filter(|(s, _)| *s < now && *s + span >= now)
            .map(|(_, n)| n)
            .sum();
        n as f64 / span as f64
    }

    /// The whole exposition: counters here plus the engine's gauges.
    pub fn render(&self, engine: &Engine, stream_next: u64, durable: bool) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "# HELP pmargin_events_total Events applied by the engine, by result."
        );
        let _ = writeln!(w, "# TYPE pmargin_events_total counter");
        let _ = writeln!(
            w,
            "pmargin_events_total{{result=\"applied\"}} {}",
            self.applied.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            w,
            "pmargin_events_total{{result=\"rejected\"}} {}",
            self.rejected.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            w,
            "# HELP pmargin_refused_total Requests and events refused, by reason (none of them is logged)."
        );
        let _ = writeln!(w, "# TYPE pmargin_refused_total counter");
        for (reason, n) in self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(w, "pmargin_refused_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(w, "# HELP pmargin_events_per_second Events applied per second over the last {WINDOW_S} s.");
        let _ = writeln!(w, "# TYPE pmargin_events_per_second gauge");
        let _ = writeln!(w, "pmargin_events_per_second {}", self.events_per_second());
        let _ = writeln!(w, "# HELP pmargin_remargin_latency_seconds Time to apply one event and re-margin the accounts it touches.");
        let _ = writeln!(w, "# TYPE pmargin_remargin_latency_seconds histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                w,
                "pmargin_remargin_latency_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            w,
            "pmargin_remargin_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            w,
            "pmargin_remargin_latency_seconds_sum {}",
            self.sum_ns.load(Ordering::Relaxed) as f64 * 1e-9
        );
        let _ = writeln!(
            w,
            "pmargin_remargin_latency_seconds_count {}",
            self.count.load(Ordering::Relaxed)
        );
        let _ = writeln!(w, "# HELP pmargin_commit_seconds Time of one group commit (one transaction, one disk sync) of the event log.");
        let _ = writeln!(w, "# TYPE pmargin_commit_seconds histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.commit_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                w,
                "pmargin_commit_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        cumulative += self.commit_buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            w,
            "pmargin_commit_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            w,
            "pmargin_commit_seconds_sum {}",
            self.commit_ns.load(Ordering::Relaxed) as f64 * 1e-9
        );
        let _ = writeln!(
            w,
            "pmargin_commit_seconds_count {}",
            self.commits.load(Ordering::Relaxed)
        );
        let _ = writeln!(w, "# HELP pmargin_committed_events_total Events written by group commits (their count over pmargin_commit_seconds_count is the mean batch).");
        let _ = writeln!(w, "# TYPE pmargin_committed_events_total counter");
        let _ = writeln!(
            w,
            "pmargin_committed_events_total {}",
            self.committed_events.load(Ordering::Relaxed)
        );
        let _ = writeln!(w, "# HELP pmargin_snapshot_sequence Event after which the latest snapshot (since start) was taken.");
        let _ = writeln!(w, "# TYPE pmargin_snapshot_sequence gauge");
        let _ = writeln!(
            w,
            "pmargin_snapshot_sequence {}",
            self.snapshot_seq.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            w,
            "# HELP pmargin_snapshot_bytes Size of the latest snapshot's JSON."
        );
        let _ = writeln!(w, "# TYPE pmargin_snapshot_bytes gauge");
        let _ = writeln!(
            w,
            "pmargin_snapshot_bytes {}",
            self.snapshot_bytes.load(Ordering::Relaxed)
        );
        let _ = writeln!(w, "# HELP pmargin_snapshot_capture_seconds Writer pause to copy the engine for the latest snapshot.");
        let _ = writeln!(w, "# TYPE pmargin_snapshot_capture_seconds gauge");
        let _ = writeln!(
            w,
            "pmargin_snapshot_capture_seconds {}",
            self.snapshot_capture_ns.load(Ordering::Relaxed) as f64 * 1e-9
        );
        let _ = writeln!(w, "# HELP pmargin_snapshot_write_seconds Time to serialize and store the latest snapshot (in the background).");
        let _ = writeln!(w, "# TYPE pmargin_snapshot_write_seconds gauge");
        let _ = writeln!(
            w,
            "pmargin_snapshot_write_seconds {}",
            self.snapshot_write_ns.load(Ordering::Relaxed) as f64 * 1e-9
        );
        let mut statuses: BTreeMap<&str, u64> =
            ["healthy", "restricted", "liquidatable", "bankrupt"]
                .iter()
                .map(|s| (*s, 0))
                .collect();
        for (_, r) in engine.risks() {
            *statuses.entry(r.status.as_str()).or_default() += 1;
        }
        let _ = writeln!(w, "# HELP pmargin_accounts Accounts by margin status.");
        let _ = writeln!(w, "# TYPE pmargin_accounts gauge");
        for (s, n) in &statuses {
            let _ = writeln!(w, "pmargin_accounts{{status=\"{s}\"}} {n}");
        }
        let _ = writeln!(w, "# HELP pmargin_oracle_health Oracle health of each underlying's index (1 for the current state).");
        let _ = writeln!(w, "# TYPE pmargin_oracle_health gauge");
        let _ = writeln!(w, "# HELP pmargin_oracle_price Last good index price.");
        let _ = writeln!(w, "# TYPE pmargin_oracle_price gauge");
        if let Some(oracle) = engine.oracle() {
            for u in oracle.underlyings() {
                if let Some(s) = oracle.state(u) {
                    let current = serde_json::to_value(s.health)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    for h in ["fresh", "stale", "no_quorum", "awaiting_confirmation"] {
                        let _ = writeln!(
                            w,
                            "pmargin_oracle_health{{underlying=\"{u}\",health=\"{h}\"}} {}",
                            u8::from(h == current)
                        );
                    }
                    if let Some(p) = s.price {
                        let _ = writeln!(w, "pmargin_oracle_price{{underlying=\"{u}\"}} {p}");
                    }
                }
            }
        }
        let _ = writeln!(w, "# HELP pmargin_liquidations_suspended Whether liquidations on an underlying are suspended.");
        let _ = writeln!(w, "# TYPE pmargin_liquidations_suspended gauge");
        for u in &engine.book().underlyings {
            let _ = writeln!(
                w,
                "pmargin_liquidations_suspended{{underlying=\"{}\"}} {}",
                u.name,
                u8::from(engine.liquidations_suspended(&u.name))
            );
        }
        let _ = writeln!(
            w,
            "# HELP pmargin_insurance_fund Insurance fund balance (settlement asset)."
        );
        let _ = writeln!(w, "# TYPE pmargin_insurance_fund gauge");
        let _ = writeln!(w, "pmargin_insurance_fund {}", engine.insurance_fund());
        let _ = writeln!(w, "# TYPE pmargin_event_sequence counter");
        let _ = writeln!(w, "pmargin_event_sequence {}", engine.sequence());
        let _ = writeln!(w, "# TYPE pmargin_stream_sequence counter");
        let _ = writeln!(
            w,
            "pmargin_stream_sequence {}",
            stream_next.saturating_sub(1)
        );
        let _ = writeln!(w, "# TYPE pmargin_http_requests_total counter");
        let _ = writeln!(
            w,
            "pmargin_http_requests_total {}",
            self.http_requests.load(Ordering::Relaxed)
        );
        let _ = writeln!(w, "# TYPE pmargin_store_durable gauge");
        let _ = writeln!(w, "pmargin_store_durable {}", u8::from(durable));
        let _ = writeln!(w, "# HELP pmargin_storage_failed Whether writes are suspended after a failed commit (until the store takes writes again).");
        let _ = writeln!(w, "# TYPE pmargin_storage_failed gauge");
        let _ = writeln!(
            w,
            "pmargin_storage_failed {}",
            u8::from(self.storage_failed.load(Ordering::Relaxed))
        );
        out
    }
}
