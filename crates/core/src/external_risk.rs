//! The scenario side of positions held in other protocols (docs/MODEL.md section 12): each
//! position revalued in every grid and historical scenario an account's risk reads, and its line
//! in a report. Kept apart from [`crate::external`], the valuation, because the book binds
//! positions through that valuation while this side reads the book and its risk arrays.

use crate::arrays::RiskArrays;
use crate::book::{Book, BookAccount, BookExternal};
use crate::external::Holding;
use crate::grid::JointPnl;
use crate::input::portfolio::EXTERNAL_KINDS;
use serde::Serialize;
use std::collections::BTreeMap;

/// The external positions' part of an account's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExternalFigures {
    pub equity: f64,
    pub margin_balance: f64,
    /// Their P&L in every grid scenario the account's grid risk reads.
    pub joint: JointPnl,
    /// Their P&L in every historical (or Monte Carlo) scenario; empty without history.
    pub fhs: Vec<f64>,
}

/// The external positions of `account` valued with each exposure `e`'s prices scaled by
/// `scales[e]` (1 where `scales` is shorter; a token of an underlying the account is not
/// exposed to keeps its price), and revalued in every scenario: a token moves by the move of
/// its collateral underlying, a stable token does not move (docs/MODEL.md section 12).
pub fn figures(
    book: &Book,
    arrays: &RiskArrays,
    account: &BookAccount,
    scales: &[f64],
) -> ExternalFigures {
    let assets = &book.assets;
    let exposures = &account.exposures;
    let index = account.exposure_index();
    let scale_of = |u: usize| index.of(u).and_then(|e| scales.get(e)).copied();
    let base = |a: usize| {
        let asset = &assets[a];
        asset.price * asset.underlying.and_then(scale_of).unwrap_or(1.0)
    };
    let (k, scan) = (exposures.len(), arrays.shape.scan_width());
    let (up, down) = (arrays.shape.decoupling_up(), arrays.shape.decoupling_down());
    let grid = &arrays.grid_shocks;
    let history = arrays.fhs_shocks.as_ref();
    let mut out = ExternalFigures {
        joint: JointPnl {
            single: vec![0.0; k * scan],
            tandem: vec![0.0; scan],
            decoupling: vec![[0.0; 2]; k],
        },
        fhs: vec![0.0; arrays.fhs_count],
        ..Default::default()
    };
    for x in &account.external {
        let today = x.holding.value(base);
        out.equity += today;
        out.margin_balance += x.margin_value(assets, today);
        // The P&L when each underlying `v` moves by `m(v)`.
        let pnl = |m: &dyn Fn(usize) -> f64| {
            let moved = |a: usize| base(a) * (1.0 + assets[a].underlying.map_or(0.0, m));
            x.holding.value(moved) - today
        };
        for (e, &u) in exposures.iter().enumerate() {
            if !x.holding.tokens().any(|a| assets[a].underlying == Some(u)) {
                continue;
            }
            let row = &mut out.joint.single[e * scan..(e + 1) * scan];
            for (total, &(m, _)) in row.iter_mut().zip(&grid[u]) {
                *total += pnl(&|v| if v == u { m } else { 0.0 });
            }
        }
        for (s, total) in out.joint.tandem.iter_mut().enumerate() {
            *total += pnl(&|v| grid[v][s].0);
        }
        if k > 1 {
            for (e, &u) in exposures.iter().enumerate() {
                let apart = |own: usize, other: usize| {
                    pnl(&|v| grid[v][if v == u { own } else { other }].0)
                };
                out.joint.decoupling[e][0] += apart(up, down);
                out.joint.decoupling[e][1] += apart(down, up);
            }
        }
        if let Some(history) = history {
            for (t, total) in out.fhs.iter_mut().enumerate() {
                *total += pnl(&|v| history[v].as_ref().map_or(0.0, |s| s[t].0));
            }
        }
    }
    out
}

/// One external position as a report shows it: what it holds at today's prices and what it
/// counts for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExternalReport {
    pub kind: &'static str,
    pub protocol: String,
    /// Signed token amounts (a borrow's negative), by token.
    pub amounts: BTreeMap<String, f64>,
    pub value: f64,
    pub margin_value: f64,
}

impl ExternalReport {
    pub fn of(book: &Book, x: &BookExternal) -> ExternalReport {
        let assets = &book.assets;
        let price = |a: usize| assets[a].price;
        let mut amounts = BTreeMap::new();
        for (a, amount) in x.holding.amounts(price) {
            *amounts.entry(assets[a].name.clone()).or_insert(0.0) += amount;
        }
        let value = x.value(assets);
        let kind = match x.holding {
            Holding::Lp { .. } => EXTERNAL_KINDS[0],
            Holding::Deposit { .. } => EXTERNAL_KINDS[1],
            Holding::Borrow { .. } => EXTERNAL_KINDS[2],
        };
        ExternalReport {
            kind,
            protocol: book.protocol_name(x.protocol).to_string(),
            amounts,
            value,
            margin_value: x.margin_value(assets, value),
        }
    }
}
