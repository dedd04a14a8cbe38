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
//! ([`crate::external_risk`]). An account holds few of them; an account without any pays
//! nothing.

use crate::input::portfolio::{ExternalPosition, LendingPosition, LiquidityPosition};

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
