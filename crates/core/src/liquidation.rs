//! Liquidation prices (docs/MODEL.md section 6): for each underlying the account is exposed to,
//! the nearest spot below and above today's at which its margin balance would fall below
//! maintenance margin.
//!
//! Only the one underlying moves (its spot, forwards and marks scaled together, vols held);
//! the requirement is recomputed in full at every trial price, because an option book's
//! requirement moves with the price as much as its balance does. The search steps outward in
//! 400 equal steps (down to almost zero, up to ten times today's price), stops at the first
//! step below maintenance and bisects between it and the step before.

use crate::account::{Evaluator, ExposureSums, Partial};
use crate::arrays::RiskArrays;
use crate::book::{Book, BookAccount};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

mod ladder;
mod narrowing;
pub use ladder::Ladder;
use narrowing::Narrowing;

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
            searcher.search(account, e, direction, (&others, true), None)
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
        if below_maintenance_today {
            let none = LiquidationPrice {
                down: None,
                up: None,
            };
            out.resize(account.exposures.len(), none);
            return;
        }
        if self.skip_proven_steps {
            status_slope_bounds_into(self.evaluator, &self.factors, account, &mut self.bounds);
        }
        // Without a historical series (summed over every exposure), a search on exposure `e`
        // sums `e`'s row and sums anew at every trial, so the account as it is today serves
        // as every search's start, and its cushion today as every search's step 0 (the same
        // sums in the same order as clearing `e` and summing it again at today's scale).
        let today = (!self.evaluator.arrays.has_history()).then(|| {
            let mut today = self.evaluator.fixed_part(account);
            for (e, &u) in account.exposures.iter().enumerate() {
                self.evaluator
                    .add_underlying(account, e, u, 1.0, &mut today, &mut self.scratch);
            }
            let cushion = cushion_of(self.evaluator, account, &today);
            (today, cushion)
        });
        for e in 0..account.exposures.len() {
            let owned;
            // A search leaves every exposure but its own as it found it, and puts its own
            // back from `others`: only the account's first search copies `today` whole.
            let (others, start, whole) = match &today {
                Some((today, cushion)) => (today, Some(*cushion), e == 0),
                None => {
                    owned = others_than(self.evaluator, account, e);
                    (&owned, None, true)
                }
            };
            out.push(LiquidationPrice {
                down: self.search(account, e, 0, (others, whole), start),
                up: self.search(account, e, 1, (others, false), start),
            });
        }
    }

    /// The crossing spot of exposure `e` in `direction` (0 down, 1 up), `others` holding
    /// every other exposure in today's market; `today`, where given, is the account's cushion
    /// today (else it is evaluated). Unless `whole`, the searcher's sums already hold
    /// `others` (each search puts its exposure back when it ends).
    fn search(
        &mut self,
        account: &BookAccount,
        e: usize,
        direction: usize,
        (others, whole): (&Partial, bool),
        today: Option<Cushion>,
    ) -> Option<f64> {
        let evaluator = self.evaluator;
        let u = account.exposures[e];
        let ladder = self.ladder;
        let mut partial = self.partial.take().unwrap_or_else(|| others.clone());
        let scratch = &mut self.scratch;
        if let Some(ladder) = ladder {
            ladder.prepare(evaluator, account, u, direction);
        }
        let (width, series) = (evaluator.arrays.width, evaluator.arrays.has_history());
        // Only exposure `e`'s row and sums change from one trial to the next: without a
        // historical series (summed over every exposure), zeroing that row restores `others`.
        if whole {
            partial.clone_from(others);
        }
        // The slope bounds do not cover external positions (a liquidity position's value is
        // concave, and not a sum over one underlying): an account holding any tries every step.
        let skip = self.skip_proven_steps && account.external.is_empty();
        let mut narrowing = Narrowing::default();
        let mut cushion = |x: f64, step: Option<usize>| {
            if step.is_none() && skip && !series {
                if let Some(c) =
                    narrowing.cushion(evaluator, account, (e, u, x), &mut partial, scratch)
                {
                    return c;
                }
            }
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
            let (c, grid_risk) = cushion_and_grid_risk(evaluator, account, &partial);
            // The narrowing starts from the step that crossed (summed from the ladder, no
            // option priced) and moves its start to each trial it sums in full, every one
            // closer to the crossing than the one before. (There is a grid risk alone only
            // without a history.)
            if let Some(grid_risk) = grid_risk.filter(|_| skip && (step.is_none() || c.value < 0.0))
            {
                narrowing.keep(evaluator, account, (e, u, x), &partial, grid_risk);
            }
            c
        };
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
        let found = search(&mut cushion, today, ENDS[direction], slope, &between);
        partial.restore_exposure(others, e, width);
        self.partial = Some(partial);
        found.map(|x| x * evaluator.book.underlyings[u].spot)
    }
}

/// The cushion of the account summed in `partial`: the margin balance and maintenance margin
/// of [`Evaluator::finish`], the same sums in the same order (so the same numbers, bit for
/// bit), without the rest of the requirement (scanning risks, the worst scenario's name).
fn cushion_of(evaluator: &Evaluator<'_>, account: &BookAccount, partial: &Partial) -> Cushion {
    cushion_and_grid_risk(evaluator, account, partial).0
}

/// [`cushion_of`], and the grid risk it was computed from where it was computed alone (not
/// with a history or external positions, which take the full evaluation).
fn cushion_and_grid_risk(
    evaluator: &Evaluator<'_>,
    account: &BookAccount,
    partial: &Partial,
) -> (Cushion, Option<f64>) {
    let arrays = evaluator.arrays;
    if arrays.has_history() || !account.external.is_empty() {
        // The tail of the historical series, or external positions: the full evaluation.
        let r = evaluator.finish(account, partial);
        let cushion = Cushion {
            value: r.margin_balance - r.maintenance_margin,
            scale: r.margin_balance.abs() + r.maintenance_margin,
        };
        return (cushion, None);
    }
    let k = account.exposures.len();
    let grid_risk = grid_risk_of(&arrays.shape, &arrays.slot_weights, k, partial.rows());
    (cushion_with(evaluator, partial, grid_risk), Some(grid_risk))
}

/// [`cushion_of`] without a history or external positions, the grid risk given.
fn cushion_with(evaluator: &Evaluator<'_>, partial: &Partial, grid_risk: f64) -> Cushion {
    let params = &evaluator.book.params;
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

/// [`crate::grid::evaluate`]'s `grid_risk` alone: the same losses compared in the same order
/// (the first loss taken as it is, a later one only when strictly larger, so a NaN first loss
/// stays), and each slot's total summed in exposure order. The hottest loop of the search:
/// rows are walked whole rather than indexed slot by slot.
fn grid_risk_of(shape: &crate::grid::GridShape, weights: &[f64], k: usize, rows: &[f64]) -> f64 {
    let (width, scan) = (shape.width(), shape.scan_width());
    if k == 0 || scan == 0 {
        return 0.0;
    }
    let rows = &rows[..k * width];
    let weights = &weights[..scan];
    let mut worst_loss = -weights[0] * rows[0];
    for row in rows.chunks_exact(width) {
        for (pnl, w) in row[..scan].iter().zip(weights) {
            let loss = -w * pnl;
            if loss > worst_loss {
                worst_loss = loss;
            }
        }
    }
    if k > 1 {
        // Each slot's total: the first exposure's P&L, then the others added in order (what
        // `sum` gives: it starts from -0.0, and -0.0 + x is x).
        let mut totals = [0.0f64; 64];
        let mut by_slot = Vec::new();
        let totals: &mut [f64] = if scan <= totals.len() {
            &mut totals[..scan]
        } else {
            by_slot.resize(scan, 0.0);
            &mut by_slot
        };
        let mut each = rows.chunks_exact(width);
        if let Some(first) = each.next() {
            totals.copy_from_slice(&first[..scan]);
        }
        for row in each {
            for (t, pnl) in totals.iter_mut().zip(&row[..scan]) {
                *t += pnl;
            }
        }
        for (t, w) in totals.iter().zip(weights) {
            let loss = -w * t;
            if loss > worst_loss {
                worst_loss = loss;
            }
        }
        let (up, down) = (shape.decoupling_up(), shape.decoupling_down());
        let total_up: f64 = rows.chunks_exact(width).map(|r| r[up]).sum();
        let total_down: f64 = rows.chunks_exact(width).map(|r| r[down]).sum();
        for row in rows.chunks_exact(width) {
            let (own_up, own_down) = (row[up], row[down]);
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
    worst_loss.max(0.0)
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
    today: Option<Cushion>,
    end: f64,
    slope: f64,
    drop: &dyn Fn(usize, usize) -> f64,
) -> Option<f64> {
    let slope = slope * (1.0 + 1e-9);
    let mut known = (1.0, 0, today.unwrap_or_else(|| cushion(1.0, Some(0))));
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
        // it is the step a walk through every one of them would stop at. The last step is
        // tried first: most searches end there, all proven, in one look rather than a
        // halving's nine, each a read of bounds the cache seldom holds.
        let (mut lo, mut hi) = if proven_above(SEARCH_STEPS) {
            (SEARCH_STEPS + 1, SEARCH_STEPS + 1)
        } else {
            (i, SEARCH_STEPS)
        };
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
mod tests;
