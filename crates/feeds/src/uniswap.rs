//! Uniswap v3 pool prices: from `Swap` event logs (the pool's `sqrtPriceX96` after the swap)
//! and from `slot0()` (the current one), with an optional time-weighted average.
//!
//! `sqrtPriceX96² / 2¹⁹²` is token1 per token0 in raw units; scaled by `10^(decimals0 −
//! decimals1)` it is the price of token0 in token1. The asset a pool prices (`base`) is either
//! token, quoted in the other: ETH in the USDC/WETH pool is token1, so its price is the inverse.

use crate::eth::Log;
use crate::ParseError;
use alloy_primitives::{aliases::U160, Address};
use alloy_sol_types::{sol, SolCall, SolEvent};
use serde::Deserialize;
use std::collections::VecDeque;

const VENUE: &str = "uniswap_v3";

sol! {
    event Swap(address indexed sender, address indexed recipient, int256 amount0, int256 amount1,
               uint160 sqrtPriceX96, uint128 liquidity, int24 tick);
    function slot0() external view returns (uint160 sqrtPriceX96, int24 tick,
        uint16 observationIndex, uint16 observationCardinality,
        uint16 observationCardinalityNext, uint8 feeProtocol, bool unlocked);
}

/// The `Swap` event's topic 0.
pub const SWAP_TOPIC: alloy_primitives::B256 = Swap::SIGNATURE_HASH;
/// `slot0()`'s calldata.
pub const SLOT0_SELECTOR: [u8; 4] = slot0Call::SELECTOR;

/// Which token of a pool is the asset priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Base {
    Token0,
    Token1,
}

/// A pool and how to read its price.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub address: Address,
    pub decimals0: u8,
    pub decimals1: u8,
    pub base: Base,
    /// Symbol its quotes carry (mapped to an underlying by the feed).
    pub symbol: String,
    /// Average the price over this many seconds (0: the last price).
    #[serde(default)]
    pub twap_s: u64,
}

/// The price of `pool.base` in the other token at `sqrt_price_x96`.
pub fn price(sqrt_price_x96: U160, pool: &Pool) -> Result<f64, ParseError> {
    let root = f64::from(sqrt_price_x96) / 2f64.powi(96);
    let token0_in_token1 =
        root * root * 10f64.powi(i32::from(pool.decimals0) - i32::from(pool.decimals1));
    let p = match pool.base {
        Base::Token0 => token0_in_token1,
        Base::Token1 => 1.0 / token0_in_token1,
    };
    if p.is_finite() && p > 0.0 {
        Ok(p)
    } else {
        Err(ParseError::new(
            VENUE,
            "sqrtPriceX96",
            format!("{sqrt_price_x96} gives no price"),
        ))
    }
}

/// The pool price after the swap a `Swap` log records.
pub fn swap_price(log: &Log, pool: &Pool) -> Result<f64, ParseError> {
    let swap = Swap::decode_raw_log(log.topics.iter().copied(), &log.data)
        .map_err(|e| ParseError::new(VENUE, "log", format!("is not a Swap event ({e})")))?;
    price(swap.sqrtPriceX96, pool)
}

/// The pool price `slot0()` returned (`hex`: the call's ABI-encoded answer).
pub fn slot0_price(answer: &[u8], pool: &Pool) -> Result<f64, ParseError> {
    let slot0 = slot0Call::abi_decode_returns(answer)
        .map_err(|e| ParseError::new(VENUE, "slot0", format!("is not slot0's answer ({e})")))?;
    price(slot0.sqrtPriceX96, pool)
}

/// Time-weighted geometric mean of a price path: each price holds from its time to the next
/// (the mean of log prices, as Uniswap's own tick-cumulative oracle averages ticks).
#[derive(Debug, Clone)]
pub struct Twap {
    window_ms: i64,
    /// (time, price), oldest first; one point at or before the window's start is kept.
    path: VecDeque<(i64, f64)>,
}

impl Twap {
    pub fn new(window_s: u64) -> Twap {
        Twap {
            window_ms: i64::try_from(window_s.saturating_mul(1000)).unwrap_or(i64::MAX),
            path: VecDeque::new(),
        }
    }

    /// Adds a price; one older than the newest is ignored (a path only moves forward).
    pub fn push(&mut self, ts_ms: i64, price: f64) {
        if self.path.back().is_some_and(|(t, _)| *t > ts_ms) {
            return;
        }
        self.path.push_back((ts_ms, price));
        let start = ts_ms.saturating_sub(self.window_ms);
        while self.path.len() > 1 && self.path[1].0 <= start {
            self.path.pop_front();
        }
    }

    /// The average over the window ending at `now_ms`; `None` before any price.
    pub fn value(&self, now_ms: i64) -> Option<f64> {
        let start = now_ms.saturating_sub(self.window_ms);
        let mut weighted = 0.0;
        let mut total = 0.0;
        for (i, (t, p)) in self.path.iter().enumerate() {
            let from = (*t).max(start);
            let to = self
                .path
                .get(i + 1)
                .map_or(now_ms, |(next, _)| *next)
                .min(now_ms);
            let span = (to - from).max(0) as f64;
            weighted += span * p.ln();
            total += span;
        }
        let last = self.path.back()?.1;
        Some(if total > 0.0 {
            (weighted / total).exp()
        } else {
            last
        })
    }
}
