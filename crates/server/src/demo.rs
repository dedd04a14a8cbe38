//! `pmargin serve --demo`: the bundled book and real prices replayed into the oracle.
//!
//! The book is the CLI's demo book; prices are the daily closes of `data/history.csv`, replayed
//! as returns from the demo market's prices (so the book sees real volatility at today's
//! levels), each day split into a few ticks, each tick quoted by three venues a few basis
//! points apart, at an accelerated pace.

use crate::state::{now_ms, AppState};
use crate::store::Genesis;
use pmargin_engine::oracle::OracleConfig;
use pmargin_engine::{EngineConfig, Event};
use std::sync::Arc;
use std::time::Duration;

pub const PORTFOLIO: &str = include_str!("../../cli/demo/portfolio.json");
pub const MARKET: &str = include_str!("../../cli/demo/market.json");
pub const PARAMS: &str = include_str!("../../cli/demo/params.json");
pub const HISTORY: &str = include_str!("../../../data/history.csv");

/// The engine settings of the service: USDC settles, an oracle aggregates venue quotes.
pub fn engine_config(insurance_fund: f64) -> EngineConfig {
    EngineConfig {
        insurance_fund,
        oracle: Some(OracleConfig::default()),
        ..EngineConfig::default()
    }
}

/// The demo book with a funded insurance fund.
pub fn demo_genesis() -> Genesis {
    Genesis {
        portfolio: PORTFOLIO.into(),
        market: MARKET.into(),
        params: PARAMS.into(),
        config: engine_config(1_000_000.0),
    }
}

/// No accounts yet; the demo market and parameters (accounts arrive with deposits).
pub fn empty_genesis() -> Genesis {
    Genesis {
        portfolio: r#"{"accounts": []}"#.into(),
        market: MARKET.into(),
        params: PARAMS.into(),
        config: engine_config(0.0),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeedConfig {
    /// Wall time per history day.
    pub day_ms: u64,
    /// Ticks per day (geometric interpolation between closes).
    pub ticks_per_day: usize,
    /// Replay only the last `days` days of the history (then loop).
    pub days: usize,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            day_ms: 1000,
            ticks_per_day: 4,
            days: 365,
        }
    }
}

/// Daily closes per column of the history: (underlying names, rows of prices).
pub fn history() -> Result<(Vec<String>, Vec<Vec<f64>>), String> {
    let mut lines = HISTORY.lines();
    let header = lines.next().ok_or("history.csv is empty")?;
    let names: Vec<String> = header.split(',').skip(1).map(str::to_string).collect();
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate() {
        let row: Result<Vec<f64>, _> = line.split(',').skip(1).map(str::parse::<f64>).collect();
        let row = row.map_err(|e| format!("history.csv line {}: {e}", n + 2))?;
        if row.len() != names.len() || row.iter().any(|p| !(p.is_finite() && *p > 0.0)) {
            return Err(format!(
                "history.csv line {}: expected {} positive prices",
                n + 2,
                names.len()
            ));
        }
        rows.push(row);
    }
    Ok((names, rows))
}

/// The quotes of the replay: per tick, per underlying, three venues.
pub fn ticks(start: &[f64], rows: &[Vec<f64>], ticks_per_day: usize) -> Vec<Vec<f64>> {
    let mut level = start.to_vec();
    let mut out = Vec::new();
    for pair in rows.windows(2) {
        let step: Vec<f64> = pair[0]
            .iter()
            .zip(&pair[1])
            .map(|(a, b)| (b / a).powf(1.0 / ticks_per_day.max(1) as f64))
            .collect();
        for _ in 0..ticks_per_day.max(1) {
            for (l, s) in level.iter_mut().zip(&step) {
                *l *= s;
            }
            out.push(level.clone());
        }
    }
    out
}

/// Feeds the oracle until the task is aborted.
pub async fn feed(state: Arc<AppState>, config: FeedConfig) {
    let Ok((names, rows)) = history() else { return };
    let rows = &rows[rows.len().saturating_sub(config.days.max(2))..];
    let sources = [("venue-a", 0.9998), ("venue-b", 1.0), ("venue-c", 1.0003)];
    let pause = Duration::from_millis((config.day_ms / config.ticks_per_day.max(1) as u64).max(1));
    loop {
        let start: Vec<f64> = {
            let engine = state.engine();
            names
                .iter()
                .map(|u| engine.market().prices.get(u).copied().unwrap_or(1.0))
                .collect()
        };
        for tick in ticks(&start, rows, config.ticks_per_day) {
            for (u, price) in names.iter().zip(&tick) {
                for (source, skew) in sources {
                    let event = Event::Quote {
                        source: source.into(),
                        underlying: u.clone(),
                        price: price * skew,
                        ts_ms: now_ms(),
                    };
                    if state.submit(event, "demo-feed", None).await.is_err() {
                        return;
                    }
                }
            }
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_inputs_load_and_history_replays_as_returns() {
        crate::state::genesis_engine(&demo_genesis()).unwrap();
        crate::state::genesis_engine(&empty_genesis()).unwrap();
        let (names, rows) = history().unwrap();
        assert_eq!(names, ["BTC", "ETH"]);
        let t = ticks(&[100.0, 10.0], &rows[rows.len() - 3..], 2);
        assert_eq!(t.len(), 4);
        let last = &rows[rows.len() - 1];
        let first = &rows[rows.len() - 3];
        assert!((t[3][0] / 100.0 - last[0] / first[0]).abs() < 1e-9);
    }
}
