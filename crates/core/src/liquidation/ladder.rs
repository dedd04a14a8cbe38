//! The liquidation-price search's steps priced once for the whole book (see [`Ladder`]).

use super::{step_scale, step_scale_or_one, ENDS, SEARCH_STEPS};
use crate::account::{Evaluator, Repriced};
use crate::arrays::RiskArrays;
use crate::book::{Book, BookAccount};
use crate::grid::fill_instrument;
use std::sync::OnceLock;

/// The search's steps, priced once for the whole book: for each instrument and direction, a
/// column of its records at every step's scale (its value, its delta where the liquidity
/// add-on needs it, and its grid row), step after step, so that a search walking outward reads
/// memory in order. A column is computed the first time an account holding the instrument
/// searches that way, then read by every other account holding it: an instrument is repriced
/// once per step, not once per account and step. A record holds exactly what [`Evaluator`]
/// computes when it reprices an instrument itself, so a search reading it finds the same
/// cushions, bit for bit.
pub struct Ladder {
    /// `columns[2 i + direction]`, `SEARCH_STEPS` records of `2 + width` each.
    pub(super) columns: Vec<OnceLock<Box<[f64]>>>,
    /// `drops[2 i + direction][k]`: the sum over steps 1 to `k` of how far one contract of
    /// instrument `i` can move the cushion from the step before (step 0 is today), by its
    /// records: `|dV| + mm_fraction max_s w_s |dP_s|` (its value and its grid P&Ls, each slot
    /// by its weight). Only step scales are ever compared, so these bound the cushion between
    /// steps far tighter than a slope bound that holds at every price.
    drops: Vec<OnceLock<Box<[f64]>>>,
    width: usize,
}

impl Ladder {
    /// The ladder, where it pays: a column prices an instrument at all 400 steps, which is only
    /// cheaper than repricing per account when each instrument is held many times.
    pub fn worth_it(book: &Book, arrays: &RiskArrays) -> Option<Ladder> {
        let positions: usize = book.accounts.iter().map(|a| a.positions.len()).sum();
        (positions >= 8 * book.instruments.len()).then(|| Ladder::new(book, arrays))
    }

    pub fn new(book: &Book, arrays: &RiskArrays) -> Ladder {
        let cells = || {
            (0..2 * book.instruments.len())
                .map(|_| OnceLock::new())
                .collect()
        };
        Ladder {
            columns: cells(),
            drops: cells(),
            width: arrays.width,
        }
    }

    /// Computes the columns of the account's instruments on `u` in `direction` that are not
    /// yet computed.
    pub(super) fn prepare(
        &self,
        evaluator: &Evaluator<'_>,
        account: &BookAccount,
        u: usize,
        direction: usize,
    ) {
        let (book, arrays) = (evaluator.book, evaluator.arrays);
        let (rate, width) = (book.rate, self.width);
        let with_delta = book.underlyings[u].addons.liquidity != 0.0;
        for p in account.positions.iter().filter(|p| p.underlying == u) {
            let Some(cell) = self.columns.get(2 * p.instrument + direction) else {
                continue;
            };
            cell.get_or_init(|| {
                let inst = &book.instruments[p.instrument];
                let stride = 2 + width;
                let mut column = vec![0.0; SEARCH_STEPS * stride];
                for (k, record) in column.chunks_exact_mut(stride).enumerate() {
                    let scale = step_scale(ENDS[direction], k + 1);
                    let (head, grid) = record.split_at_mut(2);
                    head[0] = fill_instrument(inst, scale, &arrays.grid_shocks[u], rate, grid);
                    if with_delta {
                        head[1] = inst.delta_at(scale, rate);
                    }
                }
                column.into_boxed_slice()
            });
            let Some(column) = cell.get() else {
                continue;
            };
            self.drops[2 * p.instrument + direction].get_or_init(|| {
                let i = p.instrument;
                let mm = book.params.mm_fraction;
                let weights = &arrays.slot_weights;
                let today_grid = &arrays.grid[i * width..(i + 1) * width];
                let mut before: (f64, &[f64]) = (arrays.values[i], today_grid);
                let mut total = 0.0;
                let mut drops = Vec::with_capacity(SEARCH_STEPS + 1);
                drops.push(0.0);
                for record in column.chunks_exact(2 + width) {
                    let grid = &record[2..];
                    let moved = grid
                        .iter()
                        .zip(before.1)
                        .zip(weights)
                        .fold(0.0f64, |m, ((a, b), w)| m.max(w * (a - b).abs()));
                    total += (record[0] - before.0).abs() + mm * moved;
                    drops.push(total);
                    before = (record[0], grid);
                }
                drops.into_boxed_slice()
            });
        }
    }

    /// A bound on how far the account's cushion can fall from step `j` to step `i` of a search
    /// on exposure `u` in `direction` (the drops of its holdings on `u` there, and the short
    /// option minimum's and its coins' moves, linear in the scale); `None` where the ladder
    /// does not hold every instrument or something else moves (an add-on, a historical
    /// series).
    pub(super) fn drop_bound<'l>(
        &'l self,
        evaluator: &Evaluator<'_>,
        account: &BookAccount,
        u: usize,
        direction: usize,
    ) -> Option<DropBound<'l>> {
        let (book, arrays) = (evaluator.book, evaluator.arrays);
        if arrays.has_history() || book.underlyings[u].addons.any() {
            return None;
        }
        let mm = book.params.mm_fraction;
        let spot = book.underlyings[u].spot;
        let mut holdings = Vec::new();
        let mut per_scale = 0.0;
        for p in account.positions.iter().filter(|p| p.underlying == u) {
            let drops = self.drops.get(2 * p.instrument + direction)?.get()?;
            holdings.push((p.size.abs(), &**drops));
            if p.size < 0.0 && book.instruments[p.instrument].option.is_some() {
                per_scale += mm * book.params.som_rate * -p.size * spot;
            }
        }
        let largest_move = arrays.grid_shocks[u]
            .iter()
            .zip(&arrays.slot_weights)
            .fold(0.0f64, |m, (&(move_, _), w)| m.max(w * move_.abs()));
        for b in &account.balances {
            let asset = &book.assets[b.asset];
            if asset.underlying == Some(u) {
                per_scale += (b.amount * asset.price).abs() * (1.0 + mm * largest_move);
            }
        }
        Some(DropBound {
            holdings,
            per_scale,
            end: ENDS[direction],
        })
    }

    /// The records of step `i` (1 to [`SEARCH_STEPS`]) in `direction`.
    pub(super) fn step(&self, direction: usize, i: usize) -> Repriced<'_> {
        let len = 2 + self.width;
        Repriced {
            columns: &self.columns,
            direction,
            offset: (i - 1) * len,
            len,
        }
    }
}

/// [`Ladder::drop_bound`]: per holding its size and its instrument's cumulative drops, and what
/// moves linearly with the scale.
pub(super) struct DropBound<'l> {
    holdings: Vec<(f64, &'l [f64])>,
    per_scale: f64,
    end: f64,
}

impl DropBound<'_> {
    /// How far the cushion can fall from step `j` to step `i` (`j < i`).
    pub(super) fn between(&self, j: usize, i: usize) -> f64 {
        let held: f64 = self
            .holdings
            .iter()
            .map(|(size, drops)| size * (drops[i] - drops[j]))
            .sum();
        let dx = (step_scale_or_one(self.end, i) - step_scale_or_one(self.end, j)).abs();
        held + self.per_scale * dx
    }
}
