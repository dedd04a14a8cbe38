//! Portfolio greeks per underlying, in the terms a trader reads them.
//!
//! The engine's scenarios scale an underlying's spot and all its forwards together, so the
//! greeks are taken the same way: `delta` is the change in equity per unit move of spot
//! (in units of the underlying: a 1 BTC long perpetual has delta 1), `gamma` the change of that
//! delta per unit of spot, `vega` the change in equity for one vol point (0.01), and `theta`
//! the change in equity over one calendar day with everything else held.

use crate::book::{Book, BookAccount};
use pmargin_pricing::{black76_greeks, Greeks};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct PortfolioGreeks {
    pub delta: f64,
    pub gamma: f64,
    pub vega: f64,
    pub theta: f64,
}

impl PortfolioGreeks {
    /// Adds `size` contracts of an instrument whose forward moves `ratio` times spot: an
    /// option with its Black-76 greeks `x` per contract, a perpetual or future (`None`) with
    /// delta 1 on its forward.
    pub(crate) fn add_position(&mut self, size: f64, ratio: f64, x: Option<&Greeks>) {
        match x {
            None => self.delta += size * ratio,
            Some(x) => {
                self.delta += size * x.delta * ratio;
                self.gamma += size * x.gamma * ratio * ratio;
                self.vega += size * x.vega * 0.01;
                self.theta += size * x.theta / 365.0;
            }
        }
    }
}

pub fn portfolio_greeks(book: &Book, account: &BookAccount) -> BTreeMap<String, PortfolioGreeks> {
    let mut by_underlying: BTreeMap<usize, PortfolioGreeks> = account
        .exposures
        .iter()
        .map(|&u| (u, PortfolioGreeks::default()))
        .collect();
    for p in &account.positions {
        let Some(g) = by_underlying.get_mut(&p.underlying) else {
            continue;
        };
        let inst = &book.instruments[p.instrument];
        let spot = book.underlyings[p.underlying].spot;
        // d(forward)/d(spot) under proportional scaling.
        let x = inst
            .option
            .as_ref()
            .map(|o| black76_greeks(o.side, inst.forward, o.strike, o.t, o.vol, book.rate));
        g.add_position(p.size, inst.forward / spot, x.as_ref());
    }
    for b in &account.balances {
        let asset = &book.assets[b.asset];
        if let Some(g) = asset.underlying.and_then(|u| by_underlying.get_mut(&u)) {
            let spot = book.underlyings[asset.underlying.unwrap_or_default()].spot;
            g.delta += b.amount * asset.price / spot;
        }
    }
    by_underlying
        .into_iter()
        .map(|(u, g)| (book.underlyings[u].name.clone(), g))
        .collect()
}
