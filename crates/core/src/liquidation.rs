//! Liquidation prices (docs/MODEL.md section 6): for each underlying the account is exposed to,
//! the nearest spot below and above today's at which its margin balance would fall below
//! maintenance margin.
//!
//! Only the one underlying moves (its spot, forwards and marks scaled together, vols held);
//! the requirement is recomputed in full at every trial price, because an option book's
//! requirement moves with the price as much as its balance does. The search steps outward in
//! 400 equal steps (down to almost zero, up to ten times today's price), stops at the first
//! step below maintenance and bisects between it and the step before.

use crate::account::{Evaluator, ExposureSums, Partial, Repriced};
use crate::arrays::RiskArrays;
use crate::book::{Book, BookAccount};
use crate::grid::fill_instrument;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

pub const SEARCH_STEPS: usize = 400;
pub const SCALE_FLOOR: f64 = 1e-9;
pub const SCALE_CEILING: f64 = 10.0;
pub const BISECTION_TOLERANCE: f64 = 1e-12;

/// Spots at which the account would become liquidatable; `None` where no step crosses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LiquidationPrice {
    pub down: Option<f64>,
    pub up: Option<f64>,
}

/// Liquidation prices of every exposure, keyed by underlying name. Both sides are `None`
/// when the account is already below maintenance today.
pub fn liquidation_prices(
    evaluator: &Evaluator<'_>,
    account: &BookAccount,
    below_maintenance_today: bool,
) -> BTreeMap<String, LiquidationPrice> {
    prices(evaluator, account, below_maintenance_today, true)
}

/// `skip_proven_steps: false` evaluates every one of the 400 steps (the reference the skipping
/// search is tested against).
fn prices(
    evaluator: &Evaluator<'_>,
    account: &BookAccount,
    below_maintenance_today: bool,
    skip_proven_steps: bool,
) -> BTreeMap<String, LiquidationPrice> {
    let book = evaluator.book;
    let name = |u: usize| book.underlyings[u].name.clone();
    if below_maintenance_today {
        let none = LiquidationPrice {
            down: None,
            up: None,
        };
        return account.exposures.iter().map(|&u| (name(u), none)).collect();
    }
    // Every (exposure, direction) search is independent: run them in parallel.
    let searches: Vec<(usize, usize)> = (0..account.exposures.len())
        .flat_map(|e| [(e, 0), (e, 1)])
        .collect();
    let found: Vec<Option<f64>> = searches
        .par_iter()
        .map(|&(e, direction)| {
            let others = others_than(evaluator, account, e);
            let mut searcher = Searcher::new(evaluator, None, skip_proven_steps);
            if skip_proven_steps {
                let factors = &searcher.factors;
                status_slope_bounds_into(evaluator, factors, account, &mut searcher.bounds);
            }
            searcher.search(account, e, direction, &others)
        })
        .collect();
    account
        .exposures
        .iter()
        .enumerate()
        .map(|(e, &u)| {
            (
                name(u),
                LiquidationPrice {
                    down: found[2 * e],
                    up: found[2 * e + 1],
                },
            )
        })
        .collect()
}

/// Everything but exposure `e` in today's market (fixed while `e`'s underlying moves).
fn others_than(evaluator: &Evaluator<'_>, account: &BookAccount, e: usize) -> Partial {
    let mut scratch = Vec::new();
    let mut others = evaluator.fixed_part(account);
    for (f, &v) in account.exposures.iter().enumerate() {
        if f != e {
            evaluator.add_underlying(account, f, v, 1.0, &mut others, &mut scratch);
        }
    }
    others
}

/// The end of the search in each direction: down to almost zero, up to ten times.
const ENDS: [f64; 2] = [SCALE_FLOOR, SCALE_CEILING];

/// The scale of step `i` (1 to [`SEARCH_STEPS`]) towards `end`: the same number wherever it is
/// computed, so a rung of the ladder and a search agree on it bit for bit.
#[inline]
fn step_scale(end: f64, i: usize) -> f64 {
    if i == SEARCH_STEPS {
        end
    } else {
        1.0 + (end - 1.0) / SEARCH_STEPS as f64 * i as f64
    }
}

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
    columns: Vec<OnceLock<Box<[f64]>>>,
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
    fn prepare(
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
                    record[0] = inst.value_at(scale, rate);
                    if with_delta {
                        record[1] = inst.delta_at(scale, rate);
                    }
                    fill_instrument(inst, scale, &arrays.grid_shocks[u], rate, &mut record[2..]);
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
    fn drop_bound<'l>(
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
    fn step(&self, direction: usize, i: usize) -> Repriced<'_> {
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
struct DropBound<'l> {
    holdings: Vec<(f64, &'l [f64])>,
    per_scale: f64,
    end: f64,
}

impl DropBound<'_> {
    /// How far the cushion can fall from step `j` to step `i` (`j < i`).
    fn between(&self, j: usize, i: usize) -> f64 {
        let held: f64 = self
            .holdings
            .iter()
            .map(|(size, drops)| size * (drops[i] - drops[j]))
            .sum();
        let dx = (step_scale_or_one(self.end, i) - step_scale_or_one(self.end, j)).abs();
        held + self.per_scale * dx
    }
}

/// [`step_scale`], with step 0 today's scale.
fn step_scale_or_one(end: f64, i: usize) -> f64 {
    if i == 0 {
        1.0
    } else {
        step_scale(end, i)
    }
}

/// One account's liquidation-price searches, with the buffers they reuse.
pub struct Searcher<'e, 'a> {
    evaluator: &'e Evaluator<'a>,
    ladder: Option<&'e Ladder>,
    skip_proven_steps: bool,
    partial: Option<Partial>,
    scratch: Vec<f64>,
    /// [`slope_factors`] of the evaluator's arrays, and the account's status slope bounds.
    factors: Vec<(f64, f64)>,
    bounds: Vec<f64>,
}

impl<'e, 'a> Searcher<'e, 'a> {
    /// Without a ladder, every trial price reprices the account's instruments itself.
    pub fn new(
        evaluator: &'e Evaluator<'a>,
        ladder: Option<&'e Ladder>,
        skip_proven_steps: bool,
    ) -> Self {
        Searcher {
            evaluator,
            ladder,
            skip_proven_steps,
            partial: None,
            scratch: Vec::new(),
            factors: slope_factors(evaluator.arrays),
            bounds: Vec::new(),
        }
    }

    /// The liquidation prices of every exposure, in exposure order, each `(down, up)`; both
    /// `None` when the account is below maintenance today.
    pub fn prices(
        &mut self,
        account: &BookAccount,
        below_maintenance_today: bool,
        out: &mut Vec<LiquidationPrice>,
    ) {
        out.clear();
        if !below_maintenance_today && self.skip_proven_steps {
            status_slope_bounds_into(self.evaluator, &self.factors, account, &mut self.bounds);
        }
        for e in 0..account.exposures.len() {
            let price = if below_maintenance_today {
                LiquidationPrice {
                    down: None,
                    up: None,
                }
            } else {
                let others = others_than(self.evaluator, account, e);
                LiquidationPrice {
                    down: self.search(account, e, 0, &others),
                    up: self.search(account, e, 1, &others),
                }
            };
            out.push(price);
        }
    }

    /// The crossing spot of exposure `e` in `direction` (0 down, 1 up), `others` holding
    /// every other exposure in today's market.
    fn search(
        &mut self,
        account: &BookAccount,
        e: usize,
        direction: usize,
        others: &Partial,
    ) -> Option<f64> {
        let evaluator = self.evaluator;
        let u = account.exposures[e];
        let ladder = self.ladder;
        let mut partial = self.partial.take().unwrap_or_else(|| others.clone());
        let scratch = &mut self.scratch;
        if let Some(ladder) = ladder {
            ladder.prepare(evaluator, account, u, direction);
        }
        // Only exposure `e`'s row and sums change from one trial to the next: without a
        // historical series (summed over every exposure), zeroing that row restores `others`.
        partial.clone_from(others);
        let (width, series) = (evaluator.arrays.width, evaluator.arrays.has_history());
        let mut cushion = |x: f64, step: Option<usize>| {
            if series {
                partial.clone_from(others);
            } else {
                partial.clear_row(e, width);
            }
            match (ladder, step) {
                (Some(ladder), Some(i)) if i > 0 => {
                    let rung = ladder.step(direction, i);
                    evaluator.add_underlying_repriced(
                        account,
                        e,
                        u,
                        x,
                        rung,
                        &mut partial,
                        scratch,
                    );
                }
                _ => evaluator.add_underlying(account, e, u, x, &mut partial, scratch),
            }
            cushion_of(evaluator, account, &partial)
        };
        // The slope bounds do not cover external positions (a liquidity position's value is
        // concave, and not a sum over one underlying): an account holding any tries every step.
        let skip = self.skip_proven_steps && account.external.is_empty();
        let slope = if skip {
            // Two bounds on the same slope: the tighter holds. (The status bound nets hedges;
            // a NaN one is passed over by `min`.)
            cushion_slope_bound(evaluator, account, u).min(self.bounds[e])
        } else {
            f64::INFINITY
        };
        let drops = ladder
            .filter(|_| skip)
            .and_then(|l| l.drop_bound(evaluator, account, u, direction));
        let between =
            |j: usize, i: usize| drops.as_ref().map_or(f64::INFINITY, |d| d.between(j, i));
        let found = search(&mut cushion, ENDS[direction], slope, &between);
        self.partial = Some(partial);
        found.map(|x| x * evaluator.book.underlyings[u].spot)
    }
}

/// The cushion of the account summed in `partial`: the margin balance and maintenance margin
/// of [`Evaluator::finish`], the same sums in the same order (so the same numbers, bit for
/// bit), without the rest of the requirement (scanning risks, the worst scenario's name).
fn cushion_of(evaluator: &Evaluator<'_>, account: &BookAccount, partial: &Partial) -> Cushion {
    let (book, arrays) = (evaluator.book, evaluator.arrays);
    if arrays.has_history() || !account.external.is_empty() {
        // The tail of the historical series, or external positions: the full evaluation.
        let r = evaluator.finish(account, partial);
        return Cushion {
            value: r.margin_balance - r.maintenance_margin,
            scale: r.margin_balance.abs() + r.maintenance_margin,
        };
    }
    let params = &book.params;
    let (fixed, sums) = partial.sums();
    let mut margin_balance = fixed.margin_balance;
    let mut short_option_notional = 0.0;
    let mut addons = crate::account::AddonBreakdown::default();
    for sum in sums {
        margin_balance += sum.margin_balance;
        short_option_notional += sum.short_option_notional;
        addons.option += sum.addons.option;
        addons.basis += sum.addons.basis;
        addons.oracle += sum.addons.oracle;
        addons.liquidity += sum.addons.liquidity;
    }
    let k = account.exposures.len();
    let grid_risk = grid_risk_of(&arrays.shape, &arrays.slot_weights, k, partial.rows());
    // (No history: the statistical risk is 0.)
    let initial_margin = grid_risk
        .max(0.0)
        .max(params.som_rate * short_option_notional)
        + addons.total();
    let maintenance_margin = params.mm_fraction * initial_margin;
    Cushion {
        value: margin_balance - maintenance_margin,
        scale: margin_balance.abs() + maintenance_margin,
    }
}

/// [`crate::grid::evaluate`]'s `grid_risk` alone: the same losses compared in the same order.
fn grid_risk_of(shape: &crate::grid::GridShape, weights: &[f64], k: usize, rows: &[f64]) -> f64 {
    let width = shape.width();
    let scan = shape.scan_width();
    let mut any = false;
    let mut worst_loss = f64::NAN;
    for e in 0..k {
        let row = &rows[e * width..e * width + scan];
        for (pnl, w) in row.iter().zip(&weights[..scan]) {
            let loss = -w * pnl;
            if loss > worst_loss || !any {
                worst_loss = loss;
                any = true;
            }
        }
    }
    if k > 1 {
        for (s, w) in weights[..scan].iter().enumerate() {
            let total: f64 = (0..k).map(|e| rows[e * width + s]).sum();
            let loss = -w * total;
            if loss > worst_loss {
                worst_loss = loss;
            }
        }
        let (up, down) = (shape.decoupling_up(), shape.decoupling_down());
        let total_up: f64 = (0..k).map(|e| rows[e * width + up]).sum();
        let total_down: f64 = (0..k).map(|e| rows[e * width + down]).sum();
        for e in 0..k {
            let (own_up, own_down) = (rows[e * width + up], rows[e * width + down]);
            let loss = -(own_up + (total_down - own_down));
            if loss > worst_loss {
                worst_loss = loss;
            }
            let loss = -(own_down + (total_up - own_up));
            if loss > worst_loss {
                worst_loss = loss;
            }
        }
    }
    if any {
        worst_loss.max(0.0)
    } else {
        0.0
    }
}

/// The account's margin balance less its maintenance margin at some scale, and the size of
/// the numbers it was computed from (for a rounding allowance).
#[derive(Debug, Clone, Copy)]
struct Cushion {
    value: f64,
    scale: f64,
}

/// An upper bound on |d cushion / d x| for underlying `u`, valid for every scale.
///
/// Every term that moves with `x` is a sum over `u`'s holdings of `size x value(x F)` or of a
/// scenario P&L `size x (value(x F (1 + m)) - value(x F))`; an option's delta is at most 1 in size,
/// so the first moves at most `|size| F` per unit of `x` and the second at most
/// `|size| F (2 + |m|)`. Scenario weights are at most 1, and a maximum (grid risk) or an average
/// of the worst scenarios (expected shortfall) of such functions keeps their bound, so the
/// requirement, and the cushion, are Lipschitz in `x` with the constant returned here.
fn cushion_slope_bound(evaluator: &Evaluator<'_>, account: &BookAccount, u: usize) -> f64 {
    let book = evaluator.book;
    let mut notional = 0.0;
    let mut short_option_spot = 0.0;
    for p in account.positions.iter().filter(|p| p.underlying == u) {
        let inst = &book.instruments[p.instrument];
        notional += p.size.abs() * inst.forward;
        if inst.option.is_some() && p.size < 0.0 {
            short_option_spot += -p.size * book.underlyings[u].spot;
        }
    }
    for b in account
        .balances
        .iter()
        .filter(|b| book.assets[b.asset].underlying == Some(u))
    {
        notional += b.amount.abs() * book.assets[b.asset].price;
    }
    let largest_move =
        |shocks: &[(f64, f64)]| shocks.iter().fold(0.0f64, |m, (x, _)| m.max(x.abs()));
    let arrays = evaluator.arrays;
    let grid = (2.0 + largest_move(&arrays.grid_shocks[u])) * notional;
    let statistical = arrays
        .fhs_shocks
        .as_ref()
        .and_then(|s| s[u].as_ref())
        .map_or(0.0, |s| (2.0 + largest_move(s)) * notional);
    let som = book.params.som_rate * short_option_spot;
    // The add-ons are added to the largest of the rest (docs/MODEL.md section 11): their slope at
    // any price, from the exposure's sums, adds to its.
    let addons = if book.underlyings[u].addons.any() {
        let e = account.exposures.iter().position(|&v| v == u);
        e.map_or(0.0, |e| {
            evaluator.exposure_sums(account)[e].addon_slope_anywhere
        })
    } else {
        0.0
    };
    let requirement = grid.max(statistical).max(som) + addons;
    notional + book.params.mm_fraction * requirement
}

/// Per exposure (in `account.exposures` order), an upper bound on how fast each of the figures
/// that decide the account's status moves with that underlying's price: the margin balance,
/// the margin balance less maintenance margin and the margin balance less initial margin each
/// change by at most `sum_e bounds[e] x |x_e - 1|` when every exposure `e`'s prices (spot,
/// forwards, marks and coin collateral together, vols held) are scaled by `x_e`, all at once.
///
/// The derivation follows that of `cushion_slope_bound`, tighter on linear holdings:
/// - a perpetual, future or coin moves its value (after haircut) and each of its scenario P&Ls
///   `size x F x m` linearly in `x`, so they are summed with their signs (a hedge nets out);
/// - an option's delta in size lies in `[0, D]` for a call and `[-D, 0]` for a put
///   (`D = max(1, e^(-rT))`): its value moves by `size F (c + d)` per unit of `x`, with `c` the
///   middle of that range (`+-D/2`) and `|d| <= D/2`, so the middles are summed with the linear
///   holdings, with their signs (a delta-hedged book nets out), and only `|size| F D / 2` counts
///   in size; a scenario P&L `V(x F (1 + m)) - V(x F)` moves at most `|size| F D max(1 + m, 1)`,
///   its two deltas having the same sign;
/// - a grid slot's loss counts with the slot's weight (the extremes' `extreme_cover`);
/// - the short option minimum moves `som_rate x` the short options' spot notional;
/// - the add-ons, added to the rest, move as [`ExposureSums::addon_slope_anywhere`] says (by
///   their own value where they are spot times fixed units; the liquidity add-on of an
///   underlying with options by a bound from its gross delta and its options' gammas,
///   unbounded with an option at or past expiry).
///
/// The requirement (initial margin; maintenance is `mm_fraction <= 1` of it) is a maximum, or
/// a tail average, of scenario losses each of weight at most 1 that are sums of one row per
/// underlying, so it moves at most by the largest row bound, summed over underlyings.
/// The real-time engine uses it to skip re-margining accounts whose status a price tick
/// provably cannot change.
pub fn status_slope_bounds(evaluator: &Evaluator<'_>, account: &BookAccount) -> Vec<f64> {
    let mut bounds = Vec::new();
    status_slope_bounds_into(
        evaluator,
        &slope_factors(evaluator.arrays),
        account,
        &mut bounds,
    );
    bounds
}

/// Per underlying, how much a scenario row can move per unit of `x` and of notional:
/// `(linear, option)` factors, the largest over the grid slots (times their weights) and the
/// historical scenarios of `|m|` and of `max(1 + m, 1)` (`|1 + m| + 1` below -100%). They
/// depend on the risk arrays' shocks only: compute them once per parameter set.
pub fn slope_factors(arrays: &RiskArrays) -> Vec<(f64, f64)> {
    let option = crate::grid::option_row_factor;
    let weight = |s: usize| arrays.slot_weights[s];
    arrays
        .grid_shocks
        .iter()
        .enumerate()
        .map(|(u, shocks)| {
            let grid = shocks
                .iter()
                .enumerate()
                .fold((0.0f64, 0.0f64), |(l, o), (s, &(m, _))| {
                    (l.max(weight(s) * m.abs()), o.max(weight(s) * option(m)))
                });
            let history = arrays
                .fhs_shocks
                .as_ref()
                .and_then(|h| h[u].as_ref())
                .map_or((0.0f64, 0.0f64), |h| {
                    h.iter().fold((0.0f64, 0.0f64), |(l, o), &(m, _)| {
                        (l.max(m.abs()), o.max(option(m)))
                    })
                });
            (grid.0.max(history.0), grid.1.max(history.1))
        })
        .collect()
}

/// [`status_slope_bounds`] with the [`slope_factors`] of the evaluator's arrays given, written
/// into `bounds` (reused, so a hot path allocates nothing once it has grown).
pub fn status_slope_bounds_into(
    evaluator: &Evaluator<'_>,
    factors: &[(f64, f64)],
    account: &BookAccount,
    bounds: &mut Vec<f64>,
) {
    status_slope_parts_into(evaluator, factors, account, bounds, None);
}

/// [`status_slope_bounds_into`], also writing into `requirement` (when given) each exposure's
/// bound on how fast the requirement alone moves (initial margin; maintenance margin is a
/// fraction of it), per unit of relative move of that underlying's price. The rest of each
/// bound is the margin balance's.
pub fn status_slope_parts_into(
    evaluator: &Evaluator<'_>,
    factors: &[(f64, f64)],
    account: &BookAccount,
    bounds: &mut Vec<f64>,
    requirement: Option<&mut Vec<f64>>,
) {
    let sums = evaluator.exposure_sums(account);
    status_slope_parts_from(
        evaluator.book,
        factors,
        &account.exposures,
        &sums,
        false,
        bounds,
        requirement,
    );
}

/// [`status_slope_parts_into`] from the account's sums per exposure (as an evaluation leaves
/// them: [`crate::account::Kept::sums`]).
///
/// With `near_today`, the options' bounds are those near today's prices
/// ([`crate::grid::WindowSlope`]): they hold only while every exposure's prices stay within
/// [`crate::grid::SLOPE_WINDOW`] (relative) of those the sums were taken at, and are NaN for
/// sums not taken at today's prices.
pub fn status_slope_parts_from(
    book: &Book,
    factors: &[(f64, f64)],
    exposures: &[usize],
    sums: &[ExposureSums],
    near_today: bool,
    bounds: &mut Vec<f64>,
    mut requirement: Option<&mut Vec<f64>>,
) {
    let som_rate = book.params.som_rate;
    bounds.clear();
    if let Some(r) = requirement.as_deref_mut() {
        r.clear();
    }
    for (&u, sum) in exposures.iter().zip(sums) {
        let (linear_factor, option_factor) = factors[u];
        let (option_rows, centred, half) = if near_today {
            (sum.window_rows, sum.window_centred, sum.window_half)
        } else {
            (option_factor * sum.options, sum.centred, 0.5 * sum.options)
        };
        let rows = linear_factor * sum.linear.abs() + option_rows;
        // (`max` would pass a NaN over: bounds that do not hold stay NaN.)
        let som = if rows.is_nan() {
            f64::NAN
        } else {
            som_rate * sum.short_option_spot
        };
        // The options' middles net with the linear holdings; only half their range counts in
        // size.
        let balance = (sum.linear_balance + centred).abs() + half;
        // The add-ons are added to the largest of the rest, so their slope adds to its.
        let addon = if near_today {
            sum.addon_slope
        } else {
            sum.addon_slope_anywhere
        };
        let required = if addon != 0.0 {
            rows.max(som) + addon
        } else {
            rows.max(som)
        };
        bounds.push(balance + required);
        if let Some(r) = requirement.as_deref_mut() {
            r.push(required);
        }
    }
}

/// Steps from 1 towards `end`; returns the crossing scale, narrowed to 1e-12 relative.
/// `cushion(x, Some(i))` is the cushion at step `i` (0 for today), `cushion(x, None)` at a
/// scale between steps.
///
/// A step is only evaluated when the cushion at the last evaluated step, less what the slope
/// bound allows it to fall over the distance, does not already prove it positive: skipped steps
/// are provably above maintenance, so the first crossing step, and the narrowing from it, are
/// exactly those of evaluating all 400 steps.
///
/// `drop(j, i)` bounds how far the cushion can fall from step `j` to step `i` (infinite where
/// unknown): a step it proves above maintenance is skipped too.
fn search(
    cushion: &mut impl FnMut(f64, Option<usize>) -> Cushion,
    end: f64,
    slope: f64,
    drop: &dyn Fn(usize, usize) -> f64,
) -> Option<f64> {
    let slope = slope * (1.0 + 1e-9);
    let mut known = (1.0, 0, cushion(1.0, Some(0)));
    let mut i = 1;
    while i <= SEARCH_STEPS {
        let (at, at_step, c) = known;
        // Rounding allowance: the evaluated cushion carries errors of order 1e-12 of its terms.
        // (A NaN bound proves nothing, so the step is evaluated.)
        let allowance = 1e-9 * c.scale.max(1.0);
        let proven_above = |k: usize| {
            let guaranteed = c.value - slope * (step_scale(end, k) - at).abs();
            guaranteed > allowance || c.value - drop(at_step, k) * (1.0 + 1e-9) > allowance
        };
        // Both proofs only weaken as the step moves away from the one evaluated (the distance
        // and the drops only grow), so the first step they leave unproven is found by halving:
        // it is the step a walk through every one of them would stop at.
        let (mut lo, mut hi) = (i, SEARCH_STEPS + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if proven_above(mid) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let k = lo;
        if k > SEARCH_STEPS {
            break;
        }
        let x = step_scale(end, k);
        let now = cushion(x, Some(k));
        if now.value < 0.0 {
            // The cushion at the step before (skipped: evaluate it, from the ladder).
            let previous = step_scale_or_one(end, k - 1);
            let before = if at_step == k - 1 {
                c.value
            } else {
                cushion(previous, Some(k - 1)).value
            };
            return Some(narrow(
                &mut |x| cushion(x, None).value,
                previous,
                before,
                x,
                now.value,
            ));
        }
        known = (x, k, now);
        i = k + 1;
    }
    None
}

/// `good` is a scale above maintenance (cushion `at_good >= 0`), `bad` one below
/// (`at_bad < 0`); narrows the bracket around the switch until it is 1e-12 wide relative and
/// returns its middle, as bisection would, but in far fewer evaluations on a smooth cushion:
/// each trial is the Anderson-Bjorck regula falsi point (superlinear, and it moves both ends
/// of the bracket), with a bisection step whenever two trials have not halved the bracket, so
/// it never takes many more trials than bisection. Any bracket it returns holds a switch from
/// above to below maintenance, as bisection's does.
fn narrow(
    cushion: &mut impl FnMut(f64) -> f64,
    mut good: f64,
    at_good: f64,
    mut bad: f64,
    at_bad: f64,
) -> f64 {
    let (mut fg, mut fb) = (at_good, at_bad);
    // Which end the last trial kept (+1 good, -1 bad), and the width two trials ago.
    let mut kept = 0i8;
    let mut widths = [f64::INFINITY; 2];
    let mut trial = 0usize;
    while (bad - good).abs() > BISECTION_TOLERANCE * good.abs().max(bad.abs()) && trial < 4 * 64 {
        let width = (bad - good).abs();
        let mid = 0.5 * (good + bad);
        if mid == good || mid == bad {
            break;
        }
        let secant = good - fg * (bad - good) / (fb - fg);
        let x = if width > 0.5 * widths[trial % 2] || !(secant.is_finite()) {
            mid
        } else {
            // Keep the trial off the ends, where it would gain nothing.
            let margin = 0.25 * BISECTION_TOLERANCE * good.abs().max(bad.abs());
            let (lo, hi) = if good < bad { (good, bad) } else { (bad, good) };
            secant.clamp(lo + margin, hi - margin)
        };
        widths[trial % 2] = width;
        trial += 1;
        let at = cushion(x);
        if at < 0.0 {
            if kept == 1 {
                // Anderson-Bjorck: shrink the kept end's value so the next trial crosses.
                let m = 1.0 - at / fb;
                fg *= if m > 0.0 { m } else { 0.5 };
            }
            bad = x;
            fb = at;
            kept = 1;
        } else {
            if kept == -1 {
                let m = 1.0 - at / fg;
                fb *= if m > 0.0 { m } else { 0.5 };
            }
            good = x;
            fg = at;
            kept = -1;
        }
    }
    0.5 * (good + bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipping_proven_steps_gives_exactly_the_exhaustive_search() {
        // Synthetic books: options, futures and perpetuals on five underlyings, many accounts
        // close to their maintenance margin, so crossings occur at every distance.
        // Version 1, and version 2 with every add-on (recomputed at every step).
        use crate::{synthetic, Evaluator, RiskArrays};
        for book in [
            synthetic::book(120, 11).unwrap(),
            synthetic::book_v2(120, 11).unwrap(),
        ] {
            let arrays = RiskArrays::compute(&book, None).unwrap();
            let evaluator = Evaluator::new(&book, &arrays);
            let mut crossings = 0;
            for account in &book.accounts {
                let below = evaluator.requirement(account).unwrap().below_maintenance();
                let fast = prices(&evaluator, account, below, true);
                let slow = prices(&evaluator, account, below, false);
                assert_eq!(fast, slow, "account {}", account.id);
                crossings += fast
                    .values()
                    .filter(|p| p.down.is_some() || p.up.is_some())
                    .count();
            }
            assert!(
                crossings > 50,
                "the book must exercise crossings, got {crossings}"
            );
        }
    }

    /// Margin balance, and its excess over maintenance and over initial margin: the figures
    /// that decide an account's status.
    fn status_figures(r: &crate::account::Requirement) -> [f64; 3] {
        [
            r.margin_balance,
            r.margin_balance - r.maintenance_margin,
            r.margin_balance - r.initial_margin,
        ]
    }

    /// Asserts that scaling `account`'s exposures by `scales` moves each status figure from
    /// `today` by at most `sum bounds[e] x |scales[e] - 1|`; returns the figures checked.
    fn assert_moves_within_bounds(
        evaluator: &crate::Evaluator,
        account: &crate::book::BookAccount,
        bounds: &[f64],
        today: &[f64; 3],
        scales: &[f64],
    ) -> usize {
        let allowed: f64 = bounds
            .iter()
            .zip(scales)
            .map(|(l, x)| l * (x - 1.0).abs())
            .sum();
        let moved = status_figures(&evaluator.requirement_at_scales(account, scales).unwrap());
        for (t, m) in today.iter().zip(moved) {
            assert!(
                (m - t).abs() <= allowed * (1.0 + 1e-9) + 1e-6,
                "account {}: moved {} > {allowed} at {scales:?}",
                account.id,
                (m - t).abs()
            );
        }
        today.len()
    }

    #[test]
    fn status_figures_move_no_faster_than_their_slope_bounds() {
        // Every exposure of every synthetic account moved at once by up to 3%: the three
        // status figures move by no more than the bounds allow.
        use crate::synthetic;
        for book in [
            synthetic::book(60, 5).unwrap(),
            synthetic::book_v2(60, 5).unwrap(),
        ] {
            status_figures_move_within_bounds(&book);
        }
    }

    fn status_figures_move_within_bounds(book: &crate::Book) {
        use crate::{Evaluator, RiskArrays};
        let arrays = RiskArrays::compute(book, None).unwrap();
        let evaluator = Evaluator::new(book, &arrays);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for account in &book.accounts {
            let bounds = status_slope_bounds(&evaluator, account);
            assert_eq!(bounds.len(), account.exposures.len());
            let today = status_figures(&evaluator.requirement(account).unwrap());
            for _ in 0..8 {
                let scales: Vec<f64> = bounds
                    .iter()
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        1.0 + 0.06 * ((seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
                    })
                    .collect();
                assert_moves_within_bounds(&evaluator, account, &bounds, &today, &scales);
            }
        }
    }

    #[test]
    fn window_slope_bounds_with_every_add_on_hold_within_the_window() {
        // Version 2 (the liquidity add-on of option books bounded through their gammas): the
        // bounds near today's prices hold for every move of every exposure within the window.
        use crate::{synthetic, Evaluator, RiskArrays};
        let book = synthetic::book_v2(80, 23).unwrap();
        let arrays = RiskArrays::compute(&book, None).unwrap();
        let evaluator = Evaluator::new(&book, &arrays);
        let factors = slope_factors(&arrays);
        let mut seed = 0x51_7cc1_b727_220au64;
        let mut uniform = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut checked, mut with_liquidity) = (0, 0);
        for account in &book.accounts {
            let sums = evaluator.exposure_sums(account);
            with_liquidity += sums.iter().filter(|s| s.addons.liquidity > 0.0).count();
            let mut bounds = Vec::new();
            status_slope_parts_from(
                &book,
                &factors,
                &account.exposures,
                &sums,
                true,
                &mut bounds,
                None,
            );
            assert!(bounds.iter().all(|b| b.is_finite()), "{bounds:?}");
            let today = status_figures(&evaluator.requirement(account).unwrap());
            for trial in 0..16 {
                let reach = [0.001, 0.01, 0.039][trial % 3];
                let scales: Vec<f64> = bounds
                    .iter()
                    .map(|_| 1.0 + reach * 2.0 * (uniform() - 0.5))
                    .collect();
                checked +=
                    assert_moves_within_bounds(&evaluator, account, &bounds, &today, &scales);
            }
        }
        assert!(
            checked > 3000 && with_liquidity > 100,
            "{checked} {with_liquidity}"
        );
    }

    #[test]
    fn slope_bounds_hold_on_hedged_random_books() {
        // Random books of options delta-hedged (or not) with futures and perpetuals, long and
        // short, moved by up to 40% per exposure: each status figure moves by no more than
        // `sum_e bounds[e] |x_e - 1|` (the hedges net in the bound's value term, so this checks
        // the netting is sound, not only loose).
        use crate::book::{BookAccount, BookBalance, BookPosition};
        use crate::{synthetic, Evaluator, RiskArrays};
        let mut book = synthetic::book(1, 9).unwrap();
        let usdc = book.accounts[0].balances[0].asset;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut uniform = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let n = book.instruments.len();
        let rate = book.rate;
        book.accounts = (0..80)
            .map(|a| {
                let mut positions: Vec<BookPosition> = Vec::new();
                let mut add = |instrument: usize, size: f64| match positions
                    .iter_mut()
                    .find(|p| p.instrument == instrument)
                {
                    Some(p) => p.size += size,
                    None => positions.push(BookPosition {
                        instrument,
                        underlying: book.instruments[instrument].underlying,
                        size,
                        entry_price: if book.instruments[instrument].option.is_some() {
                            0.0
                        } else {
                            book.instruments[instrument].forward
                        },
                    }),
                };
                let count = 1 + (uniform() * 12.0) as usize;
                for _ in 0..count {
                    let i = ((uniform() * n as f64) as usize).min(n - 1);
                    let inst = &book.instruments[i];
                    let spot = book.underlyings[inst.underlying].spot;
                    let size =
                        (1e4 + 9e4 * uniform()) / spot * if uniform() < 0.5 { -1.0 } else { 1.0 };
                    add(i, size);
                    if inst.option.is_some() && a % 3 != 0 {
                        // Hedge the delta with the underlying's perpetual (the first of its
                        // instruments), exactly or not.
                        let h = 1e-6 * inst.forward;
                        let delta = (inst.value_at(1.0 + 1e-6, rate)
                            - inst.value_at(1.0 - 1e-6, rate))
                            / (2.0 * h);
                        let perp = book
                            .instruments
                            .iter()
                            .position(|p| p.underlying == inst.underlying && p.option.is_none())
                            .unwrap();
                        let miss = if a % 3 == 1 {
                            1.0
                        } else {
                            0.8 + 0.4 * uniform()
                        };
                        add(perp, -size * delta * miss);
                    }
                }
                positions.retain(|p| p.size != 0.0);
                let mut exposures: Vec<usize> = positions.iter().map(|p| p.underlying).collect();
                exposures.sort_unstable();
                exposures.dedup();
                BookAccount {
                    id: format!("hedged-{a}"),
                    positions,
                    balances: vec![BookBalance {
                        asset: usdc,
                        amount: 1e5 * uniform(),
                    }],
                    exposures,
                    external: Vec::new(),
                }
            })
            .collect();
        let arrays = RiskArrays::compute(&book, None).unwrap();
        let evaluator = Evaluator::new(&book, &arrays);
        let mut checked = 0;
        for account in &book.accounts {
            let bounds = status_slope_bounds(&evaluator, account);
            let today = status_figures(&evaluator.requirement(account).unwrap());
            for trial in 0..24 {
                let reach = [0.001, 0.01, 0.05, 0.4][trial % 4];
                let scales: Vec<f64> = bounds
                    .iter()
                    .map(|_| 1.0 + reach * 2.0 * (uniform() - 0.5))
                    .collect();
                checked +=
                    assert_moves_within_bounds(&evaluator, account, &bounds, &today, &scales);
            }
        }
        assert!(checked > 5_000);
    }

    #[test]
    fn the_ladder_gives_the_per_account_search_bit_for_bit() {
        // A random book (seeded), version 1 and version 2 (the liquidity add-on reads the
        // ladder's deltas): every liquidation price found reading the shared ladder, skipping
        // the steps its drops prove above maintenance, is the one found repricing each
        // account's instruments itself, and the one of evaluating every step, to the last bit.
        use crate::{synthetic, Evaluator, RiskArrays};
        for book in [
            synthetic::book(150, 2024).unwrap(),
            synthetic::book_v2(150, 77).unwrap(),
        ] {
            let arrays = RiskArrays::compute(&book, None).unwrap();
            let evaluator = Evaluator::new(&book, &arrays);
            let ladder = Ladder::new(&book, &arrays);
            let mut shared = Searcher::new(&evaluator, Some(&ladder), true);
            let mut alone = Searcher::new(&evaluator, None, true);
            // Every step evaluated: the reference both skipping searches must meet.
            let mut exhaustive = Searcher::new(&evaluator, Some(&ladder), false);
            let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
            let bits = |p: &[LiquidationPrice]| -> Vec<(Option<u64>, Option<u64>)> {
                p.iter()
                    .map(|p| (p.down.map(f64::to_bits), p.up.map(f64::to_bits)))
                    .collect()
            };
            let mut found = 0;
            for account in &book.accounts {
                let below = evaluator.requirement(account).unwrap().below_maintenance();
                shared.prices(account, below, &mut a);
                alone.prices(account, below, &mut b);
                assert_eq!(bits(&a), bits(&b), "account {}", account.id);
                exhaustive.prices(account, below, &mut c);
                assert_eq!(bits(&a), bits(&c), "account {}", account.id);
                // The parallel entry point agrees too.
                let map = liquidation_prices(&evaluator, account, below);
                let by_name: Vec<LiquidationPrice> = account
                    .exposures
                    .iter()
                    .map(|&u| map[&book.underlyings[u].name])
                    .collect();
                assert_eq!(bits(&by_name), bits(&a), "account {}", account.id);
                found += a
                    .iter()
                    .filter(|p| p.down.is_some() || p.up.is_some())
                    .count();
            }
            assert!(found > 60, "the book must exercise crossings, got {found}");
            // The columns were shared: at most one per instrument and direction was priced.
            let priced = ladder.columns.iter().filter(|r| r.get().is_some()).count();
            assert!(
                priced > 20 && priced <= 2 * book.instruments.len(),
                "{priced}"
            );
        }
    }

    #[test]
    fn the_lean_cushion_is_the_full_evaluation_bit_for_bit() {
        // Versions 1 and 2, every exposure of every account moved to several scales: the
        // cushion the search reads equals the one of the full requirement, to the last bit.
        use crate::{synthetic, Evaluator, RiskArrays};
        let mut checked = 0;
        for book in [
            synthetic::book(80, 31).unwrap(),
            synthetic::book_v2(80, 32).unwrap(),
        ] {
            let arrays = RiskArrays::compute(&book, None).unwrap();
            let evaluator = Evaluator::new(&book, &arrays);
            for account in &book.accounts {
                for (e, &u) in account.exposures.iter().enumerate() {
                    let others = others_than(&evaluator, account, e);
                    for x in [1.0, 0.37, 0.9981, 1.02, 2.5, 9.0] {
                        let mut partial = others.clone();
                        let mut scratch = Vec::new();
                        evaluator.add_underlying(account, e, u, x, &mut partial, &mut scratch);
                        let r = evaluator.finish(account, &partial);
                        let lean = cushion_of(&evaluator, account, &partial);
                        let full = r.margin_balance - r.maintenance_margin;
                        assert_eq!(lean.value.to_bits(), full.to_bits(), "{} x {x}", account.id);
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    #[test]
    fn narrowing_brackets_the_switch_as_bisection_does() {
        // Smooth, kinked and flat-then-steep cushions: the result lies within 1e-12 relative
        // of the true switch (0.7731, or the kink at 1.25), in far fewer trials than the 31 of
        // bisection on the smooth ones.
        type Case<'f> = (&'f dyn Fn(f64) -> f64, f64, f64, f64);
        let cases: [Case; 4] = [
            (&|x: f64| x - 0.7731, 0.7756, 0.7731, 0.7706),
            (
                &|x: f64| (x - 0.7731) * (3.0 + x * x),
                0.7756,
                0.7731,
                0.7706,
            ),
            (&|x: f64| 1.25 - x, 1.2, 1.25, 1.3),
            (
                &|x: f64| {
                    if x < 1.25 {
                        1e-9
                    } else {
                        -1e6 * (x - 1.25) - 1e-9
                    }
                },
                1.2,
                1.25,
                1.3,
            ),
        ];
        for (k, (f, good, root, bad)) in cases.into_iter().enumerate() {
            let mut trials = 0;
            let x = narrow(
                &mut |x| {
                    trials += 1;
                    f(x)
                },
                good,
                f(good),
                bad,
                f(bad),
            );
            assert!((x - root).abs() <= 1e-12 * root, "case {k}: {x} vs {root}");
            if k < 3 {
                assert!(trials < 15, "case {k}: {trials} trials");
            }
        }
    }

    #[test]
    fn search_finds_a_threshold_between_steps() {
        // Below maintenance whenever the scale falls under 0.7731.
        // Cushion x - 0.7731: below maintenance under 0.7731, slope exactly 1.
        let mut line = |x: f64, _: Option<usize>| Cushion {
            value: x - 0.7731,
            scale: 1.0,
        };
        let x = search(&mut line, SCALE_FLOOR, 1.0, &|_, _| f64::INFINITY).unwrap();
        assert!((x - 0.7731).abs() < 1e-11);
        assert_eq!(
            search(&mut line, SCALE_CEILING, 1.0, &|_, _| f64::INFINITY),
            None
        );
        let mut above = |x: f64, _: Option<usize>| Cushion {
            value: 9.99 - x,
            scale: 1.0,
        };
        let x = search(&mut above, SCALE_CEILING, 1.0, &|_, _| f64::INFINITY).unwrap();
        assert!((x - 9.99).abs() < 1e-10);
    }

    #[test]
    fn search_takes_the_first_crossing_not_the_deepest() {
        // A cushion with slope at most 20 that dips below zero only on (0.90, 0.95) and again
        // under 0.5: the first window wins, skipped steps or not.
        let mut dip = |x: f64, _: Option<usize>| {
            let value = if x > 0.5 {
                (20.0 * (x - 0.925).abs() - 0.5).min(1.0)
            } else {
                -1.0
            };
            Cushion { value, scale: 1.0 }
        };
        let x = search(&mut dip, SCALE_FLOOR, 20.0, &|_, _| f64::INFINITY).unwrap();
        assert!((x - 0.95).abs() < 1e-11, "{x}");
    }
}
