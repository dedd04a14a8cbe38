//! Pure statistics for pmargin's statistical margin models and their backtests.
//!
//! Nothing in this crate knows about instruments, files or clocks: it takes
//! numbers (prices, returns, correlation matrices, loss series, margin
//! requirement series) and returns numbers, so that every figure in the
//! methodology can be reproduced and tested in isolation.
//!
//! * [`ewma`]: how volatile and how correlated the markets are right now.
//! * [`correlation`]: making correlation estimates safe to use, and stressing them.
//! * [`montecarlo`]: simulating fat-tailed joint moves and measuring the tail loss.
//! * [`backtest_stats`]: did the margin cover losses as often as it claimed to?
//! * [`calibration`]: turning volatility into a price scan range, with
//!   anti-procyclicality protections.
//!
//! Every function that reads input data validates it and returns a
//! [`StatsError`] describing what is wrong instead of panicking, and no
//! result contains NaN.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backtest_stats;
pub mod calibration;
pub mod correlation;
mod error;
pub mod ewma;
pub mod montecarlo;
mod validate;

pub use error::{Result, StatsError};

/// Dense matrix of `f64` used for correlation and covariance matrices.
pub type Matrix = nalgebra::DMatrix<f64>;
