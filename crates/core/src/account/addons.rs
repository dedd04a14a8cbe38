//! The contingency add-ons of docs/MODEL.md section 11: what an underlying's holdings count
//! for in them, and how fast they move with its price.

use crate::book::{AddonRates, Book, BookAccount};
use crate::grid;
use serde::Serialize;

/// The four contingency add-ons of docs/MODEL.md section 11, in USD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AddonBreakdown {
    pub option: f64,
    pub basis: f64,
    pub oracle: f64,
    pub liquidity: f64,
}

impl AddonBreakdown {
    pub fn total(&self) -> f64 {
        self.option + self.basis + self.oracle + self.liquidity
    }

    pub(super) fn add(&mut self, other: &AddonBreakdown) {
        self.option += other.option;
        self.basis += other.basis;
        self.oracle += other.oracle;
        self.liquidity += other.liquidity;
    }
}

/// What one underlying's holdings count for in the add-ons: short option contracts, long and
/// short linear units (perpetuals, futures and coin balances in units `b`), gross units and
/// net delta; and, for the liquidity add-on's slope, its options' bound on how fast their
/// deltas move.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AddonTally {
    short_options: f64,
    long_linear: f64,
    short_linear: f64,
    gross: f64,
    delta: f64,
    has_options: bool,
    /// The most the net delta can be in size: linear units, and options' sizes times their
    /// largest delta.
    gross_delta: f64,
    /// Sum over options of [`grid::delta_slope_bound`]: the most the net delta moves per unit
    /// of log price.
    gamma: f64,
    /// Whether the liquidity add-on is set (only it reads the options' deltas), and whether
    /// the slopes are wanted (`gross_delta` and `gamma` are summed for them alone).
    with_delta: bool,
    slopes: bool,
}

impl AddonTally {
    /// An empty tally; `with_delta` and `slopes` as the fields of those names.
    pub(super) fn new(with_delta: bool, slopes: bool) -> Self {
        AddonTally {
            with_delta,
            slopes,
            ..AddonTally::default()
        }
    }

    /// Adds a position of `size` contracts (`option` its option, if it is one); `delta` gives
    /// its delta at the prices summed at, read only where the liquidity add-on is set.
    #[inline]
    pub(super) fn position(
        &mut self,
        size: f64,
        option: Option<&crate::book::OptionMark>,
        rate: f64,
        delta: impl FnOnce() -> f64,
    ) {
        if size == 0.0 {
            return;
        }
        let Some(o) = option else {
            self.linear(size);
            return;
        };
        if size < 0.0 {
            self.short_options -= size;
        }
        self.gross += size.abs();
        if self.with_delta {
            self.delta += size * delta();
            self.has_options = true;
            if self.slopes {
                self.gross_delta += size.abs() * grid::delta_bound(o, rate);
                self.gamma += size.abs() * grid::delta_slope_bound(o, rate);
            }
        }
    }

    pub(super) fn linear(&mut self, units: f64) {
        if units > 0.0 {
            self.long_linear += units;
        } else {
            self.short_linear -= units;
        }
        self.gross += units.abs();
        self.gross_delta += units.abs();
        self.delta += units;
    }

    /// The add-ons with the underlying at `spot`, and bounds on how fast they move per unit of
    /// relative move of its prices: near today's (within [`grid::SLOPE_WINDOW`]) and anywhere.
    ///
    /// The option and basis add-ons are `spot` times units that do not move (a coin balance's
    /// units `b` do not: its price and the spot scale together), so each moves by its own value
    /// per unit of relative move; the oracle add-on does not move. The liquidity add-on
    /// `L(x) = k S x |Delta(x)|^1.5 / sqrt(adv)`, with `Delta` fixed when the underlying has no
    /// option, moves the same way. With options, `dL/dx = k S / sqrt(adv) (|Delta|^1.5 +
    /// 1.5 |Delta|^0.5 x dDelta/dx)` and `|x dDelta/dx| <= Gamma` (the `gamma` above) at any
    /// price, so `L` moves by at most `k S / sqrt(adv) (Dmax^1.5 + 1.5 Dmax^0.5 Gamma)`, with
    /// `Dmax` the most `|Delta|` can be: anywhere, `gross_delta`; within the window,
    /// `|Delta(1)| + Gamma w / (1 - w)` (and `x <= 1 + w`).
    pub(super) fn finish(
        &self,
        rates: &AddonRates,
        spot: f64,
        confidence: f64,
    ) -> (AddonBreakdown, f64, f64) {
        let magnitude = self.delta.abs();
        let liquidity = if rates.liquidity > 0.0 {
            rates.liquidity * spot * magnitude * (magnitude / rates.adv).sqrt()
        } else {
            0.0
        };
        let addons = AddonBreakdown {
            option: rates.option * spot * self.short_options,
            basis: rates.basis * spot * self.long_linear.min(self.short_linear),
            oracle: rates.oracle_multiple * confidence * self.gross,
            liquidity,
        };
        let moving = addons.option + addons.basis;
        if !self.slopes {
            // Not summed: NaN, which proves nothing if it is ever read.
            (addons, f64::NAN, f64::NAN)
        } else if rates.liquidity > 0.0 && self.has_options {
            let w = grid::SLOPE_WINDOW;
            let per_unit = rates.liquidity * spot / rates.adv.sqrt();
            let bound = |most: f64, scale: f64| {
                per_unit * (most * most.sqrt() + scale * 1.5 * most.sqrt() * self.gamma)
            };
            let anywhere = bound(self.gross_delta, 1.0);
            let g = self.gamma / (1.0 - w);
            let near = bound(magnitude + g * w, (1.0 + w) / (1.0 - w)).min(anywhere);
            // (Rounding allowance on the bounds' own arithmetic; an infinite gamma, of an
            // option at or past expiry, leaves them infinite.)
            let slack = 1.0 + 1e-9;
            (addons, moving + near * slack, moving + anywhere * slack)
        } else {
            (addons, moving + liquidity, moving + liquidity)
        }
    }
}

/// For the liquidity add-on of a fill screened without evaluating the account: the most the
/// account's net delta on underlying `u` can be in size at any price (perpetual, future and
/// coin units, and options' sizes times their largest delta), and the most it moves per unit
/// of log price (the options' [`grid::delta_slope_bound`]s).
pub fn delta_bounds(book: &Book, account: &BookAccount, u: usize) -> (f64, f64) {
    let (mut gross, mut gamma) = (0.0, 0.0);
    for p in account.positions.iter().filter(|p| p.underlying == u) {
        match &book.instruments[p.instrument].option {
            None => gross += p.size.abs(),
            Some(o) if p.size != 0.0 => {
                gross += p.size.abs() * grid::delta_bound(o, book.rate);
                gamma += p.size.abs() * grid::delta_slope_bound(o, book.rate);
            }
            Some(_) => {}
        }
    }
    let spot = book.underlyings[u].spot;
    for b in &account.balances {
        let asset = &book.assets[b.asset];
        if asset.underlying == Some(u) {
            gross += (b.amount * asset.price / spot).abs();
        }
    }
    (gross, gamma)
}
