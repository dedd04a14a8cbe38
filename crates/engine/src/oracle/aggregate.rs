//! Aggregation: the index an underlying's fresh quotes support, before the circuit breaker.

use super::config::OracleConfig;
use serde::{Deserialize, Serialize};

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
    /// The source's confidence of its quote (USD), when it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// The source's weight in the median, when it is not 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

/// A source's latest quote as the oracle keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Held {
    pub price: f64,
    pub ts_ms: i64,
    pub confidence: Option<f64>,
    pub weight: Option<f64>,
}

/// What the quotes support at `now`, before the circuit breaker.
pub(super) enum Assessment {
    NoneFresh,
    NoQuorum,
    Index {
        price: f64,
        newest_quote_ms: i64,
        /// The largest confidence among the sources in the index (none if none gives one).
        confidence: Option<f64>,
    },
}

/// |a / b − 1|; `b` is a validated positive price.
pub(super) fn rel_diff(a: f64, b: f64) -> f64 {
    (a / b - 1.0).abs()
}

/// Weighted median of a non-empty slice of `(value, weight)` (weights positive): the smallest
/// value at which the cumulative weight passes half the total; where it reaches exactly half,
/// the mean of that value and the next. With equal weights this is the plain median (the mean
/// of the two middle values for an even count). Sorts the slice by value.
pub(super) fn weighted_median(values: &mut [(f64, f64)]) -> f64 {
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    let half = values.iter().map(|v| v.1).sum::<f64>() / 2.0;
    let mut cumulative = 0.0;
    for (i, &(value, weight)) in values.iter().enumerate() {
        cumulative += weight;
        if cumulative == half {
            if let Some(next) = values.get(i + 1) {
                return (value + next.0) / 2.0;
            }
        }
        if cumulative >= half {
            return value;
        }
    }
    // Rounding left the sum of the prefix short of the total's half: the largest value.
    values[values.len() - 1].0
}

pub(super) fn assess<'a>(
    config: &OracleConfig,
    quotes: impl Iterator<Item = (&'a String, Held)> + Clone,
    now_ms: i64,
) -> (Assessment, Vec<SourceStatus>) {
    // Fresh means within max_age_ms of now, on either side. A future date counts too, because
    // venue clocks drift. But the window is bounded, so a source stamping quotes far in the
    // future cannot keep one price "fresh" forever.
    let max_age = config.max_age_ms.unsigned_abs();
    let is_fresh = |ts: i64| now_ms.abs_diff(ts) <= max_age;
    let weight = |h: &Held| h.weight.unwrap_or(1.0);

    let mut fresh: Vec<(f64, f64)> = quotes
        .clone()
        .filter(|(_, h)| is_fresh(h.ts_ms))
        .map(|(_, h)| (h.price, weight(&h)))
        .collect();
    if fresh.is_empty() {
        let sources = quotes
            .map(|(s, h)| status(s, &h, SourceHealth::Stale))
            .collect();
        return (Assessment::NoneFresh, sources);
    }

    let centre = weighted_median(&mut fresh);
    // MAD is 0 when more than half the weight quotes one price. The rule would then flag any
    // quote that differs by one tick and could break the quorum. Skip it: the fraction rule
    // still applies.
    let mad_limit = config.mad_multiple.and_then(|k| {
        let mut dev: Vec<(f64, f64)> = fresh
            .iter()
            .map(|&(p, w)| ((p - centre).abs(), w))
            .collect();
        let mad = weighted_median(&mut dev);
        (mad > 0.0).then_some(k * MAD_TO_SIGMA * mad)
    });
    let is_outlier = |p: f64| {
        rel_diff(p, centre) > config.outlier_fraction
            || mad_limit.is_some_and(|limit| (p - centre).abs() > limit)
    };

    let mut used = Vec::new();
    let mut newest_quote_ms = i64::MIN;
    let mut confidence: Option<f64> = None;
    let sources = quotes
        .map(|(s, h)| {
            let health = if !is_fresh(h.ts_ms) {
                SourceHealth::Stale
            } else if is_outlier(h.price) {
                SourceHealth::Outlier
            } else {
                used.push((h.price, weight(&h)));
                newest_quote_ms = newest_quote_ms.max(h.ts_ms);
                if let Some(c) = h.confidence {
                    confidence = Some(confidence.map_or(c, |m: f64| m.max(c)));
                }
                SourceHealth::Used
            };
            status(s, &h, health)
        })
        .collect();

    if used.len() < config.min_sources {
        return (Assessment::NoQuorum, sources);
    }
    let price = weighted_median(&mut used);
    (
        Assessment::Index {
            price,
            newest_quote_ms,
            confidence,
        },
        sources,
    )
}

fn status(source: &str, held: &Held, status: SourceHealth) -> SourceStatus {
    SourceStatus {
        source: source.to_string(),
        price: held.price,
        ts_ms: held.ts_ms,
        status,
        confidence: held.confidence,
        weight: held.weight,
    }
}
