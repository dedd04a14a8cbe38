//! # pmargin-backtest: does the margin cover the losses it claims to?
//!
//! A clearinghouse runs this every day: for each past day `t`, the margin each reference
//! portfolio would have been asked for (computed only from data up to `t`), against the loss
//! the portfolio actually made over the margin horizon `h`. The breach rate, its statistics
//! (Kupiec, Christoffersen, the Basel traffic light) and how abruptly the margin moved
//! (procyclicality) are the evidence a risk committee reads.
//!
//! * [`portfolios`]: the bundled reference portfolios (rolling instruments re-struck every day)
//!   and user portfolios held constant;
//! * [`daymarket`]: the market snapshot of a history row, with the documented vol rule;
//! * [`mod@recommend`]: the recommended version 2 parameter set, derived from the bundled real data;
//! * [`engine`]: the backtest itself (no look-ahead), in parallel over days;
//! * [`report`]: the JSON report and the summary table;
//! * [`calibrate`]: proposing new scan ranges from EWMA volatility, with anti-procyclicality;
//! * [`plot`]: requirement against realised loss, breaches marked (SVG and PNG);
//! * [`data`]: the bundled histories, real market series (DVOL, funding, the Deribit
//!   perpetual, stablecoins) and parameter sets.
//!
//! ## Documented rules
//!
//! **Vol rule.** With implied vols configured (`BacktestConfig::implied_vols`, by default in
//! `pmargin backtest` Deribit's DVOL for BTC and ETH from 2021-03-24), on a row whose date the
//! index covers every option of `u` is marked at the index's close for that day, flat across
//! strikes and tenors (the index is a 30-day at-the-money level; no skew, no term structure).
//! Otherwise every option of `u` is marked at the flat vol `max(vol_floor, sqrt(365 * s2))`,
//! where `s2` is the EWMA variance forecast (docs/MODEL.md section 5 recursion, `lambda =
//! statistical.ewma_lambda`) from the log returns of rows `1..=t` only; `vol_floor` defaults
//! to 20%.
//!
//! **Histories.** [`run_backtest_on`] runs each portfolio on the first of several histories
//! that has all its underlyings (BTC alone on 2011-2025, the BTC/ETH pair on 2015-2023 by
//! default) and merges the reports; each portfolio's entry names its history and dates.
//!
//! **Rolling instruments.** A reference option leg is re-struck every day: on row `t` it is
//! the European option expiring `days` calendar days after row `t`'s date (08:00 UTC), with
//! strike `spot_t * (1 + moneyness)` (rounded to 6 significant digits), and `notional / spot_t` contracts. A perpetual leg is
//! `notional / spot_t` contracts entered at `spot_t`, a spot leg `notional / spot_t` units of
//! the asset. Each day's positions are held unchanged over the horizon: at row `t + h` the
//! same contracts are revalued at that row's prices and vol rule, the options with `h` rows'
//! worth of calendar time less to expiry.
//!
//! **User portfolios** are held constant (sizes and entry prices as given). An option whose
//! fixed expiry has passed is worth its intrinsic value on the forward (docs/MODEL.md section 1).
//!
//! **Loss.** `loss_t = equity_t - equity_{t+h}` (docs/MODEL.md section 2 equity: balances at
//! price, perpetuals at `size * (mark - entry)`, options at their Black-76 value), and a
//! breach is `loss_t > requirement_t`.

pub mod calibrate;
pub mod config;
pub mod data;
pub mod daymarket;
pub mod engine;
pub mod plot;
pub mod portfolios;
pub mod recommend;
pub mod report;

pub use calibrate::{calibrate, CalibrationConfig, Proposal};
pub use engine::{requirements_at, run_backtest, run_backtest_on, BacktestConfig, Model};
pub use portfolios::{reference_portfolios, user_portfolios, BacktestPortfolio, Leg};
pub use recommend::{recommend, recommend_with, Recommendation};
pub use report::{BacktestReport, ModelResult, PortfolioResult};

use std::fmt;

/// Everything that can stop a backtest or a calibration. The message names the file and the
/// field where the input is at fault (core errors carry file, path and account).
#[derive(Debug, Clone, PartialEq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<pmargin_core::InputError> for Error {
    fn from(e: pmargin_core::InputError) -> Self {
        Error(e.to_string())
    }
}

impl From<pmargin_stats::StatsError> for Error {
    fn from(e: pmargin_stats::StatsError) -> Self {
        Error(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn err<T>(message: impl Into<String>) -> Result<T> {
    Err(Error(message.into()))
}
