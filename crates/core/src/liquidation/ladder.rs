//! The liquidation-price search's steps priced once for the whole book (see [`Ladder`]).

use super::{step_scale, step_scale_or_one, ENDS, SEARCH_STEPS};
use crate::account::{Evaluator, Repriced};
use crate::arrays::RiskArrays;
use crate::book::{Book, BookAccount};
use crate::grid::fill_instrument;
use rayon::prelude::*;
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
    /// `drops[2 i + direction]`: how far one contract of instrument `i` can move the cushion
    /// against a long holder and against a short one, from today (step 0) to each step, and
    /// the largest value it takes. A long holding's margin balance falls by its size times
    /// the sum of its value's falls, a short one's by the sum of its rises (an option's or a
    /// future's value only moves one way with the price, so a move in the holder's favour
    /// costs nothing), and the maintenance margin rises by at most its size times the sum of
    /// `mm_fraction max_s w_s |dP_s|` over the steps (its grid P&Ls, each slot by its
    /// weight). Only step scales are ever compared, so these bound the cushion between steps
    /// far tighter than a slope bound that holds at every price; and each only grows with the
    /// step, as the search's halving needs.
    drops: Vec<OnceLock<Drops>>,
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
        let n = 2 * book.instruments.len();
        Ladder {
            columns: (0..n).map(|_| OnceLock::new()).collect(),
            drops: (0..n).map(|_| OnceLock::new()).collect(),
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
        for p in account.positions.iter().filter(|p| p.underlying == u) {
            self.ensure(evaluator, p.instrument, direction);
        }
    }

    /// Computes every column not yet computed, in parallel: a batch that will read them all
    /// computes them up front, rather than one search waiting on another's column.
    pub fn fill(&self, evaluator: &Evaluator<'_>) {
        (0..self.columns.len()).into_par_iter().for_each(|c| {
            self.ensure(evaluator, c / 2, c % 2);
        });
    }

    /// Instrument `i`'s column and drops in `direction`, computed if they are not yet.
    fn ensure(&self, evaluator: &Evaluator<'_>, i: usize, direction: usize) {
        let (book, arrays) = (evaluator.book, evaluator.arrays);
        let (rate, width) = (book.rate, self.width);
        let Some(inst) = book.instruments.get(i) else {
            return;
        };
        let u = inst.underlying;
        let with_delta = book.underlyings[u].addons.liquidity != 0.0;
        let Some(cell) = self.columns.get(2 * i + direction) else {
            return;
        };
        let column = cell.get_or_init(|| {
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
        self.drops[2 * i + direction].get_or_init(|| {
            let mm = book.params.mm_fraction;
            let weights = &arrays.slot_weights;
            let today_grid = &arrays.grid[i * width..(i + 1) * width];
            let mut before = today_grid;
            let mut value = arrays.values[i];
            let mut largest = value.abs();
            let (mut long, mut short) = (0.0, 0.0);
            let mut against = [(); 2].map(|()| {
                let mut sums = Vec::with_capacity(SEARCH_STEPS + 1);
                sums.push(0.0);
                sums
            });
            for record in column.chunks_exact(2 + width) {
                let grid = &record[2..];
                let moved = mm
                    * grid
                        .iter()
                        .zip(before)
                        .zip(weights)
                        .fold(0.0f64, |m, ((a, b), w)| m.max(w * (a - b).abs()));
                let change = record[0] - value;
                long += (-change).max(0.0) + moved;
                short += change.max(0.0) + moved;
                against[0].push(long);
                against[1].push(short);
                value = record[0];
                largest = largest.max(value.abs());
                before = grid;
            }
            let [long, short] = against.map(Vec::into_boxed_slice);
            Drops {
                long,
                short,
                largest,
            }
        });
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
        let (mut per_scale, mut rounding) = (0.0, 0.0);
        for p in account.positions.iter().filter(|p| p.underlying == u) {
            let drops = self.drops.get(2 * p.instrument + direction)?.get()?;
            let against = if p.size > 0.0 {
                &drops.long
            } else {
                &drops.short
            };
            holdings.push((p.size.abs(), &**against));
            // Rounding: of the value sums the bound stands for, and of its own.
            rounding += 1e-9 * p.size.abs() * 2.0 * drops.largest;
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
            rounding,
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

/// One column's drops ([`Ladder`]): against a long holder and against a short one, step by
/// step from today, and the largest value the contract takes.
pub(super) struct Drops {
    long: Box<[f64]>,
    short: Box<[f64]>,
    largest: f64,
}

/// [`Ladder::drop_bound`]: per holding its size and the drops against it, and what moves
/// linearly with the scale or stays fixed.
pub(super) struct DropBound<'l> {
    holdings: Vec<(f64, &'l [f64])>,
    per_scale: f64,
    rounding: f64,
    end: f64,
}

impl DropBound<'_> {
    /// How far the cushion can fall from step `j` to step `i` (`j < i`).
    pub(super) fn between(&self, j: usize, i: usize) -> f64 {
        let held: f64 = self
            .holdings
            .iter()
            .map(|(size, against)| size * (against[i] - against[j]))
            .sum();
        let dx = (step_scale_or_one(self.end, i) - step_scale_or_one(self.end, j)).abs();
        held + self.rounding + self.per_scale * dx
    }
}
