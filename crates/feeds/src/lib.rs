//! # pmargin-feeds: market data from real venues
//!
//! Each venue's wire format is read by its own adapter, a pure function from one message's text
//! to [`Update`]s in the engine's units (prices in USD, vols as fractions, times in ms since the
//! epoch): [`deribit`] (ticker and price-index notifications), [`chain`] (a whole Deribit option
//! chain into a `market.json`), [`binance`], [`okx`], [`uniswap`] (v3 `Swap` logs and `slot0`),
//! [`chainlink`] (`AnswerUpdated` logs) and [`pyth`] (price updates with their confidence).
//!
//! Around them: [`config`] reads `feeds.toml`; [`pipeline`] maps venue symbols to underlyings,
//! weighs them, drops what is out of order and thins what is too frequent, giving the quotes,
//! marks and vols to post; [`connection`] keeps one WebSocket per feed open (reconnecting with
//! backoff); [`health`] counts what each feed did; [`record`] writes and reads captures.
//! Nothing here knows the engine or the service: the server posts what the pipeline gives.

pub mod binance;
pub mod chain;
pub mod chainlink;
pub mod config;
pub mod connection;
pub mod deribit;
pub mod eth;
pub mod health;
mod num;
pub mod okx;
pub mod onchain;
pub mod pipeline;
pub mod pyth;
pub mod record;
pub mod uniswap;

use serde::{Deserialize, Serialize};

/// What one venue message says, keyed by the venue's own names (the [`pipeline`] maps them to
/// underlyings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Update {
    /// A venue's price of an asset (an index, a mark, a pool or aggregator price), in USD, with
    /// the venue's uncertainty of it when it gives one (Pyth).
    Quote {
        symbol: String,
        price: f64,
        confidence: Option<f64>,
        ts_ms: i64,
    },
    /// The forward of one expiry (a future's price, or Deribit's synthetic forward).
    Forward {
        currency: String,
        expiry: String,
        price: f64,
        ts_ms: i64,
    },
    /// One option's implied vol (a fraction, not a percentage): a smile point.
    Vol {
        instrument: String,
        currency: String,
        expiry: String,
        strike: f64,
        iv: f64,
        ts_ms: i64,
    },
}

impl Update {
    pub fn ts_ms(&self) -> i64 {
        match self {
            Update::Quote { ts_ms, .. }
            | Update::Forward { ts_ms, .. }
            | Update::Vol { ts_ms, .. } => *ts_ms,
        }
    }
}

/// A message that could not be read; names the venue and the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{venue}: `{field}` {reason}")]
pub struct ParseError {
    pub venue: &'static str,
    pub field: String,
    pub reason: String,
}

impl ParseError {
    pub fn new(venue: &'static str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        ParseError {
            venue,
            field: field.into(),
            reason: reason.into(),
        }
    }
}
