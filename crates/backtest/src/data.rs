//! Data bundled into the binary, so that `pmargin backtest` and `pmargin calibrate` run with
//! no file at all: the repository's daily closes and a reference parameter set.

use crate::Result;
use pmargin_core::{History, Params};

/// Daily closes of BTC and ETH, 2015-08-07 .. 2021-11-24 (2298 rows); provenance in
/// `data/README.md` at the repository root.
pub const HISTORY_CSV: &str = include_str!("../../../data/history.csv");
/// The name errors and reports quote for [`HISTORY_CSV`].
pub const HISTORY_NAME: &str = "bundled data/history.csv";

/// Reference parameter set for BTC and ETH (the FORMATS.md example ranges, 1-day horizon).
pub const PARAMS_JSON: &str = include_str!("../data/params.json");
/// The name errors and reports quote for [`PARAMS_JSON`].
pub const PARAMS_NAME: &str = "bundled crates/backtest/data/params.json";

pub fn history() -> Result<History> {
    Ok(History::parse(HISTORY_NAME, HISTORY_CSV)?)
}

pub fn params() -> Result<Params> {
    Ok(Params::parse(PARAMS_NAME, PARAMS_JSON)?)
}
