//! The bundled demo book, compiled into the binary so `pmargin demo` needs no files.

use crate::commands::{CliError, Loaded};
use pmargin_core::{Market, Params, Portfolio};

pub const PORTFOLIO: &str = include_str!("../demo/portfolio.json");
pub const MARKET: &str = include_str!("../demo/market.json");
pub const PARAMS: &str = include_str!("../demo/params.json");

pub fn inputs() -> Result<Loaded, CliError> {
    Ok(Loaded {
        portfolio: Portfolio::parse("demo/portfolio.json", PORTFOLIO)?,
        market: Market::parse("demo/market.json", MARKET)?,
        params: Params::parse("demo/params.json", PARAMS)?,
        history: None,
    })
}
