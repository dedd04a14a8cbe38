//! Risk arrays: every instrument's scenario P&L, computed once per market snapshot.
//!
//! This is the "compute once, query many times" half of the engine. Options are repriced
//! here and nowhere else on the normal path: an account's losses are then only sums of these
//! arrays weighted by its position sizes.

use crate::book::Book;
use crate::error::Result;
use crate::fhs::FhsScenarios;
use crate::grid::{fill_asset, fill_instrument, GridShape};
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
    /// `grid[i * width + s]`: P&L of one contract of instrument `i` in slot `s`.
    pub grid: Vec<f64>,
    /// `asset_grid[a * width + s]`: P&L of one unit of asset `a` (zero for stable assets).
    pub asset_grid: Vec<f64>,
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

        let mut grid = vec![0.0; book.instruments.len() * width];
        grid.par_chunks_mut(width)
            .zip(&book.instruments)
            .for_each(|(row, inst)| {
                fill_instrument(inst, 1.0, &grid_shocks[inst.underlying], rate, row)
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
                .zip(&book.instruments)
                .for_each(|(row, inst)| {
                    if let Some(s) = &shocks[inst.underlying] {
                        fill_instrument(inst, 1.0, s, rate, row);
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
            grid,
            asset_grid,
            fhs,
            asset_fhs,
        })
    }

    pub fn has_history(&self) -> bool {
        self.fhs_shocks.is_some()
    }
}
