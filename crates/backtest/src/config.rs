//! What a backtest runs: the models and the window. Its own module because both the run
//! (`engine`) and the report (`report`) read it, and the report must not depend on the run.

use crate::data::ImpliedVols;
use crate::daymarket::DEFAULT_VOL_FLOOR;
use chrono::NaiveDate;

/// Which requirement is backtested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Model {
    /// The scenario grid alone: `max(grid_risk, short_option_minimum)`, the IM with no history.
    Grid,
    /// The IM with filtered historical simulation on rows `0..=t`.
    Fhs,
    /// The IM with the Monte Carlo statistical model (`statistical.model = "mc"`) on rows `0..=t`.
    Mc,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::Grid => "grid",
            Model::Fhs => "fhs",
            Model::Mc => "mc",
        }
    }

    pub fn parse(s: &str) -> Option<Vec<Model>> {
        match s {
            "grid" => Some(vec![Model::Grid]),
            "fhs" => Some(vec![Model::Fhs]),
            "mc" => Some(vec![Model::Mc]),
            "all" => Some(vec![Model::Grid, Model::Fhs, Model::Mc]),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BacktestConfig {
    pub models: Vec<Model>,
    /// First requirement date (inclusive); default: the first row with `warmup_returns`.
    pub from: Option<NaiveDate>,
    /// Last requirement date (inclusive); default: the last row with a row `h` later.
    pub to: Option<NaiveDate>,
    /// Horizon in rows; default `statistical.horizon_days`.
    pub horizon_days: Option<u32>,
    /// Returns needed before the first requirement (EWMA and FHS warm-up).
    pub warmup_returns: usize,
    /// Floor of the flat option vol.
    pub vol_floor: f64,
    /// Implied vols that replace the EWMA rule on the dates they cover (e.g. DVOL).
    pub implied_vols: Option<ImpliedVols>,
}

impl Default for BacktestConfig {
    fn default() -> Self {
        BacktestConfig {
            models: vec![Model::Grid],
            from: None,
            to: None,
            horizon_days: None,
            warmup_returns: 250,
            vol_floor: DEFAULT_VOL_FLOOR,
            implied_vols: None,
        }
    }
}
