//! Positions held in other protocols (docs/MODEL.md section 12): a Uniswap v3 liquidity
//! position, a deposit or a borrow on a lending market, valued from the prices of the tokens
//! they hold.
//!
//! The valuation is pure and generic over how a token is named (a name in the input formats,
//! an index into the book's assets), so the service, which values attested positions, and the
//! margin computation share it. A token moves with its `collateral[token].underlying`, as a
//! balance of it would; a stable token does not move.
//!
//! An external position is not a function of one underlying (a liquidity position on two
//! non-stable tokens moves with both), so it is not summed into the per-underlying risk rows:
//! each evaluation revalues it in every scenario the account's grid and statistical risk read
//! ([`ExternalScenarios`]). An account holds few of them; an account without any pays nothing.

use crate::arrays::RiskArrays;
use crate::book::{Book, BookAccount, BookExternal};
use crate::grid::JointPnl;
use crate::input::portfolio::{
    ExternalPosition, LendingPosition, LiquidityPosition, EXTERNAL_KINDS,
};
use serde::Serialize;
use std::collections::BTreeMap;

/// A position of another protocol with its tokens named by `T`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Holding<T> {
    /// Concentrated liquidity `liquidity` on prices (of `token0` in `token1`) in
    /// `[price_lower, price_upper]`.
    Lp {
        token0: T,
        token1: T,
        liquidity: f64,
        price_lower: f64,
        price_upper: f64,
    },
    Deposit {
        asset: T,
        amount: f64,
    },
    Borrow {
        asset: T,
        amount: f64,
    },
}

/// Token amounts `(x, y)` of a liquidity position at price `p` (of token0 in token1): all token0
/// at or below `pa`, all token1 at or above `pb`, both inside (docs/MODEL.md section 12).
#[inline]
pub fn lp_amounts(liquidity: f64, pa: f64, pb: f64, p: f64) -> (f64, f64) {
    if p <= pa {
        (liquidity * (1.0 / pa.sqrt() - 1.0 / pb.sqrt()), 0.0)
    } else if p >= pb {
        (0.0, liquidity * (pb.sqrt() - pa.sqrt()))
    } else {
        let root = p.sqrt();
        (
            liquidity * (1.0 / root - 1.0 / pb.sqrt()),
            liquidity * (root - pa.sqrt()),
        )
    }
}

impl<T: Copy> Holding<T> {
    /// Signed token amounts at the token prices `price`: an LP's two (token0, token1), a
    /// deposit's amount (and a zero beside it), a borrow's amount negated.
    #[inline]
    pub fn amounts(&self, price: impl Fn(T) -> f64) -> [(T, f64); 2] {
        match *self {
            Holding::Lp {
                token0,
                token1,
                liquidity,
                price_lower,
                price_upper,
            } => {
                let p = price(token0) / price(token1);
                let (x, y) = lp_amounts(liquidity, price_lower, price_upper, p);
                [(token0, x), (token1, y)]
            }
            Holding::Deposit { asset, amount } => [(asset, amount), (asset, 0.0)],
            Holding::Borrow { asset, amount } => [(asset, -amount), (asset, 0.0)],
        }
    }

    /// Value in USD at the token prices `price` (a borrow's is negative).
    #[inline]
    pub fn value(&self, price: impl Fn(T) -> f64) -> f64 {
        let [(a, x), (b, y)] = self.amounts(&price);
        // (A zero amount beside a deposit adds nothing, whatever the price.)
        let second = if y == 0.0 { 0.0 } else { y * price(b) };
        x * price(a) + second
    }

    /// What a holding worth `value` counts for in the margin balance: an LP less the
    /// protocol's haircut, a deposit less the protocol's and the asset's (`asset_haircut`),
    /// a borrow in full.
    #[inline]
    pub fn margin_value(&self, value: f64, protocol_haircut: f64, asset_haircut: f64) -> f64 {
        match self {
            Holding::Lp { .. } => value * (1.0 - protocol_haircut),
            Holding::Deposit { .. } => value * (1.0 - protocol_haircut) * (1.0 - asset_haircut),
            Holding::Borrow { .. } => value,
        }
    }

    /// The tokens it names (an LP's two, or its asset).
    pub fn tokens(&self) -> impl Iterator<Item = T> {
        let (a, b) = match *self {
            Holding::Lp { token0, token1, .. } => (token0, Some(token1)),
            Holding::Deposit { asset, .. } | Holding::Borrow { asset, .. } => (asset, None),
        };
        std::iter::once(a).chain(b)
    }

    /// Whether it is exposed to whatever its non-stable tokens move with: an LP always, a
    /// lending position when its amount is not zero.
    pub fn counts_for_exposure(&self) -> bool {
        match self {
            Holding::Lp { .. } => true,
            Holding::Deposit { amount, .. } | Holding::Borrow { amount, .. } => *amount != 0.0,
        }
    }

    /// The same holding with its tokens renamed.
    pub fn map<U>(&self, mut f: impl FnMut(T) -> U) -> Holding<U> {
        match *self {
            Holding::Lp {
                token0,
                token1,
                liquidity,
                price_lower,
                price_upper,
            } => Holding::Lp {
                token0: f(token0),
                token1: f(token1),
                liquidity,
                price_lower,
                price_upper,
            },
            Holding::Deposit { asset, amount } => Holding::Deposit {
                asset: f(asset),
                amount,
            },
            Holding::Borrow { asset, amount } => Holding::Borrow {
                asset: f(asset),
                amount,
            },
        }
    }
}

impl ExternalPosition {
    /// The holding, its tokens by name.
    pub fn holding(&self) -> Holding<&str> {
        match self {
            ExternalPosition::UniswapV3Lp(LiquidityPosition {
                token0,
                token1,
                liquidity,
                price_lower,
                price_upper,
                ..
            }) => Holding::Lp {
                token0,
                token1,
                liquidity: *liquidity,
                price_lower: *price_lower,
                price_upper: *price_upper,
            },
            ExternalPosition::LendingDeposit(LendingPosition { asset, amount, .. }) => {
                Holding::Deposit {
                    asset,
                    amount: *amount,
                }
            }
            ExternalPosition::LendingBorrow(LendingPosition { asset, amount, .. }) => {
                Holding::Borrow {
                    asset,
                    amount: *amount,
                }
            }
        }
    }
}

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
