//! Option pricing for the margin engine: Black-76 values, greeks and implied
//! volatility for European options on forwards.
//!
//! A portfolio margin engine revalues every option under many shocked
//! scenarios (forward up and down, volatility up and down, time forward), so
//! this crate is the innermost loop: small, allocation-free, branch-light and
//! defined for every input the scenario generator can produce. Shocked inputs
//! reach corners that normal market data never does (zero or enormous
//! volatility, expiry passing inside the horizon, forwards near zero), so
//! every function here returns a finite, economically meaningful number for
//! finite inputs instead of NaN; the implied-volatility solver reports a
//! typed error instead.
//!
//! * [`norm_cdf`], [`norm_pdf`]: normal distribution, accurate in the tails.
//! * [`black76`], [`black76_greeks`]: value and sensitivities.
//! * [`implied_vol`]: robust inversion of [`black76`] in volatility.

mod black76;
mod implied;
mod normal;

pub use black76::{black76, black76_greeks, black76_value_delta, Greeks};
pub use implied::{implied_vol, ImpliedVolError};
pub use normal::{norm_cdf, norm_pdf};

/// Call (right to buy at the strike) or put (right to sell at the strike).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OptionKind {
    Call,
    Put,
}
