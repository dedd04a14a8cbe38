//! Aggregation: the index an underlying's fresh quotes support, before the circuit breaker.

use super::config::OracleConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// 1 / Φ⁻¹(3/4): scales the median absolute deviation to a standard deviation for normal data.
/// With it, `mad_multiple` reads as "this many sigmas".
pub(super) const MAD_TO_SIGMA: f64 = 1.4826;

/// What the last update made of one source's quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceHealth {
    /// Went into the index median.
    Used,
    /// Outside the freshness window: older than `max_age_ms`, or dated more than `max_age_ms`
    /// after `now`.
    Stale,
    /// Fresh, but too far from the median of the fresh quotes.
    Outlier,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub source: String,
    pub price: f64,
    pub ts_ms: i64,
    pub status: SourceHealth,
}

/// What the quotes support at `now`, before the circuit breaker.
pub(super) enum Assessment {
    NoneFresh,
    NoQuorum,
    Index { price: f64, newest_quote_ms: i64 },
}

/// |a / b − 1|; `b` is a validated positive price.
pub(super) fn rel_diff(a: f64, b: f64) -> f64 {
    (a / b - 1.0).abs()
}

/// Median of a non-empty slice (mean of the two middle values for an even count). Sorts it.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

pub(super) fn assess(
    config: &OracleConfig,
    quotes: &BTreeMap<String, (f64, i64)>,
    now_ms: i64,
) -> (Assessment, Vec<SourceStatus>) {
    // Fresh means within max_age_ms of now, on either side. A future date counts too, because
    // venue clocks drift. But the window is bounded, so a source stamping quotes far in the
    // future cannot keep one price "fresh" forever.
    let max_age = config.max_age_ms.unsigned_abs();
    let is_fresh = |ts: i64| now_ms.abs_diff(ts) <= max_age;

    let mut fresh: Vec<f64> = quotes
        .values()
        .filter(|(_, ts)| is_fresh(*ts))
        .map(|(p, _)| *p)
        .collect();
    if fresh.is_empty() {
        let sources = quotes
            .iter()
            .map(|(s, &(p, ts))| status(s, p, ts, SourceHealth::Stale))
            .collect();
        return (Assessment::NoneFresh, sources);
    }

    let centre = median(&mut fresh);
    // MAD is 0 when more than half the quotes are identical. The rule would then flag any
    // quote that differs by one tick and could break the quorum. Skip it: the fraction rule
    // still applies.
    let mad_limit = config.mad_multiple.and_then(|k| {
        let mut dev: Vec<f64> = fresh.iter().map(|p| (p - centre).abs()).collect();
        let mad = median(&mut dev);
        (mad > 0.0).then_some(k * MAD_TO_SIGMA * mad)
    });
    let is_outlier = |p: f64| {
        rel_diff(p, centre) > config.outlier_fraction
            || mad_limit.is_some_and(|limit| (p - centre).abs() > limit)
    };

    let mut used = Vec::new();
    let mut newest_quote_ms = i64::MIN;
    let sources = quotes
        .iter()
        .map(|(s, &(p, ts))| {
            let health = if !is_fresh(ts) {
                SourceHealth::Stale
            } else if is_outlier(p) {
                SourceHealth::Outlier
            } else {
                used.push(p);
                newest_quote_ms = newest_quote_ms.max(ts);
                SourceHealth::Used
            };
            status(s, p, ts, health)
        })
        .collect();

    if used.len() < config.min_sources {
        return (Assessment::NoQuorum, sources);
    }
    let price = median(&mut used);
    (
        Assessment::Index {
            price,
            newest_quote_ms,
        },
        sources,
    )
}

fn status(source: &str, price: f64, ts_ms: i64, status: SourceHealth) -> SourceStatus {
    SourceStatus {
        source: source.to_string(),
        price,
        ts_ms,
        status,
    }
}
