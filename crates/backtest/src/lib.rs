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
//! * [`engine`]: the backtest itself (no look-ahead), in parallel over days;
//! * [`report`]: the JSON report and the summary table;
//! * [`calibrate`]: proposing new scan ranges from EWMA volatility, with anti-procyclicality;
//! * [`plot`]: requirement against realised loss, breaches marked (SVG and PNG);
//! * [`data`]: the bundled history and reference parameter set.
//!
//! ## Documented rules
//!
//! **Vol rule.** On row `t` every option of underlying `u` is marked at the flat vol
//! `max(vol_floor, sqrt(365 * s2))`, where `s2` is the EWMA variance forecast (MODEL.md
//! section 5 recursion, `lambda = statistical.ewma_lambda`) from the log returns of rows
//! `1..=t` only; `vol_floor` defaults to 20%. The bundled history has no implied vols.
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
//! fixed expiry has passed is worth its intrinsic value on the forward (MODEL.md section 1).
//!
//! **Loss.** `loss_t = equity_t - equity_{t+h}` (MODEL.md section 2 equity: balances at
//! price, perpetuals at `size * (mark - entry)`, options at their Black-76 value), and a
//! breach is `loss_t > requirement_t`.

pub mod calibrate;
pub mod data;
pub mod daymarket;
pub mod engine;
pub mod plot;
pub mod portfolios;
pub mod report;

pub use calibrate::{calibrate, CalibrateOptions, Proposal};
pub use engine::{requirements_at, run_backtest, BacktestConfig, Model};
pub use portfolios::{reference_portfolios, user_portfolios, BacktestPortfolio, Leg};
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
