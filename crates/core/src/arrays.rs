//! Risk arrays: every instrument's scenario P&L, computed once per market snapshot.
//!
//! This is the "compute once, query many times" half of the engine. Options are repriced
//! here and nowhere else on the normal path: an account's losses are then only sums of these
//! arrays weighted by its position sizes.

use crate::book::Book;
use crate::error::Result;
use crate::fhs::FhsScenarios;
use crate::grid::{fill_asset, fill_instrument, fill_instrument_windowed, GridShape, WindowSlope};
use rayon::prelude::*;

/// Shocks `(price move, vol shift)` that every instrument of an underlying is revalued under.
pub type Shocks = Vec<(f64, f64)>;

#[derive(Debug, Clone)]
pub struct RiskArrays {
    pub shape: GridShape,
    pub width: usize,
    /// Grid shocks per underlying (indexed like `Book::underlyings`).
    pub grid_shocks: Vec<Shocks>,
    /// Filtered-historical shocks per underlying; `None` where the history lacks it.
    pub fhs_shocks: Option<Vec<Option<Shocks>>>,
    /// Scenario count of the historical simulation (0 without history).
    pub fhs_count: usize,
    /// Today's value of one contract of each instrument.
    pub values: Vec<f64>,
    /// Today's delta of one contract of each option as the liquidity add-on counts it
    /// ([`crate::book::OptionMark::delta`]); 0 for perpetuals and futures (whose delta is 1 and is
    /// counted apart).
    pub deltas: Vec<f64>,
    /// `grid[i * width + s]`: P&L of one contract of instrument `i` in slot `s`.
    pub grid: Vec<f64>,
    /// `asset_grid[a * width + s]`: P&L of one unit of asset `a` (zero for stable assets).
    pub asset_grid: Vec<f64>,
    /// Each slot's weight (the extremes' cover, 1 elsewhere).
    pub slot_weights: Vec<f64>,
    /// Each instrument's slope bounds near today's prices (options only; zero otherwise).
    pub slopes: Vec<WindowSlope>,
    /// `fhs[i * fhs_count + t]`, zero rows for instruments the history does not cover.
    pub fhs: Vec<f64>,
    pub asset_fhs: Vec<f64>,
}

impl RiskArrays {
    pub fn compute(book: &Book, history: Option<&FhsScenarios>) -> Result<RiskArrays> {
        let shape = GridShape::new(&book.params.grid);
        let width = shape.width();
        let grid_shocks: Vec<Shocks> = book.underlyings.iter().map(|u| shape.shocks(u)).collect();
        let fhs_shocks = history.map(|h| {
            book.underlyings
                .iter()
                .map(|u| {
                    h.moves_of(&u.name)
                        .map(|m| m.iter().map(|&m| (m, 0.0)).collect())
                })
                .collect::<Vec<Option<Shocks>>>()
        });
        let fhs_count = history.map_or(0, |h| h.count);
        let rate = book.rate;
        let values = book
            .instruments
            .iter()
            .map(|i| i.value_at(1.0, rate))
            .collect();
        let deltas = book
            .instruments
            .iter()
            .map(|i| i.delta_at(1.0, rate))
            .collect();

        let slot_weights = shape.weights();
        let mut grid = vec![0.0; book.instruments.len() * width];
        let mut slopes = vec![WindowSlope::default(); book.instruments.len()];
        grid.par_chunks_mut(width)
            .zip(&mut slopes)
            .zip(&book.instruments)
            .for_each(|((row, slope), inst)| {
                let shocks = &grid_shocks[inst.underlying];
                *slope = fill_instrument_windowed(inst, shocks, &slot_weights, rate, row);
            });
        let mut asset_grid = vec![0.0; book.assets.len() * width];
        for (row, asset) in asset_grid.chunks_mut(width).zip(&book.assets) {
            if let Some(u) = asset.underlying {
                fill_asset(asset, 1.0, &grid_shocks[u], row);
            }
        }
        let mut fhs = vec![0.0; book.instruments.len() * fhs_count];
        let mut asset_fhs = vec![0.0; book.assets.len() * fhs_count];
        if let (Some(shocks), true) = (&fhs_shocks, fhs_count > 0) {
            fhs.par_chunks_mut(fhs_count)
                .zip(&mut slopes)
                .zip(&book.instruments)
                .for_each(|((row, slope), inst)| {
                    if let Some(s) = &shocks[inst.underlying] {
                        fill_instrument(inst, 1.0, s, rate, row);
                        *slope = slope.covering(inst, s, rate);
                    }
                });
            for (row, asset) in asset_fhs.chunks_mut(fhs_count).zip(&book.assets) {
                if let Some(s) = asset.underlying.and_then(|u| shocks[u].as_ref()) {
                    fill_asset(asset, 1.0, s, row);
                }
            }
        }
        Ok(RiskArrays {
            shape,
            width,
            grid_shocks,
            fhs_shocks,
            fhs_count,
            values,
            deltas,
            grid,
            asset_grid,
            slot_weights,
            slopes,
            fhs,
            asset_fhs,
        })
    }

    /// Recomputes the arrays of underlying `u`'s instruments and coin balances after
    /// [`Book::remark_underlying`]; every other row stays as it is.
    pub fn refresh_underlying(&mut self, book: &Book, u: usize) {
        self.extend(book);
        let (width, n_fhs, rate) = (self.width, self.fhs_count, book.rate);
        for (i, inst) in book
            .instruments
            .iter()
            .enumerate()
            .filter(|(_, p)| p.underlying == u)
        {
            self.fill_instrument_rows(i, inst, rate, width, n_fhs);
        }
        for (a, asset) in book.assets.iter().enumerate() {
            if asset.underlying == Some(u) {
                self.fill_asset_rows(a, asset);
            }
        }
    }

    /// Adds rows for instruments and assets the book gained since these arrays were computed.
    pub fn extend(&mut self, book: &Book) {
        let (width, n_fhs, rate) = (self.width, self.fhs_count, book.rate);
        for i in self.values.len()..book.instruments.len() {
            self.values.push(0.0);
            self.deltas.push(0.0);
            self.slopes.push(WindowSlope::default());
            self.grid.extend(std::iter::repeat_n(0.0, width));
            self.fhs.extend(std::iter::repeat_n(0.0, n_fhs));
            self.fill_instrument_rows(i, &book.instruments[i], rate, width, n_fhs);
        }
        for a in self.asset_grid.len() / width.max(1)..book.assets.len() {
            self.asset_grid.extend(std::iter::repeat_n(0.0, width));
            self.asset_fhs.extend(std::iter::repeat_n(0.0, n_fhs));
            self.fill_asset_rows(a, &book.assets[a]);
        }
    }

    /// Grid and historical rows of one unit of a coin asset (stable assets keep zero rows).
    fn fill_asset_rows(&mut self, a: usize, asset: &crate::book::Asset) {
        let (width, n_fhs) = (self.width, self.fhs_count);
        let Some(u) = asset.underlying else { return };
        fill_asset(
            asset,
            1.0,
            &self.grid_shocks[u],
            &mut self.asset_grid[a * width..(a + 1) * width],
        );
        if let Some(s) = self.fhs_shocks.as_ref().and_then(|s| s[u].as_ref()) {
            fill_asset(
                asset,
                1.0,
                s,
                &mut self.asset_fhs[a * n_fhs..(a + 1) * n_fhs],
            );
        }
    }

    fn fill_instrument_rows(
        &mut self,
        i: usize,
        inst: &crate::book::Priced,
        rate: f64,
        width: usize,
        n_fhs: usize,
    ) {
        self.values[i] = inst.value_at(1.0, rate);
        self.deltas[i] = inst.delta_at(1.0, rate);
        let u = inst.underlying;
        self.slopes[i] = fill_instrument_windowed(
            inst,
            &self.grid_shocks[u],
            &self.slot_weights,
            rate,
            &mut self.grid[i * width..(i + 1) * width],
        );
        if let Some(s) = self.fhs_shocks.as_ref().and_then(|s| s[u].as_ref()) {
            fill_instrument(
                inst,
                1.0,
                s,
                rate,
                &mut self.fhs[i * n_fhs..(i + 1) * n_fhs],
            );
            self.slopes[i] = self.slopes[i].covering(inst, s, rate);
        }
    }

    pub fn has_history(&self) -> bool {
        self.fhs_shocks.is_some()
    }
}
