//! Liquidation prices (docs/MODEL.md section 6): for each underlying the account is exposed to,
//! the nearest spot below and above today's at which its margin balance would fall below
//! maintenance margin.
//!
//! Only the one underlying moves (its spot, forwards and marks scaled together, vols held);
//! the requirement is recomputed in full at every trial price, because an option book's
//! requirement moves with the price as much as its balance does. The search steps outward in
//! 400 equal steps (down to almost zero, up to ten times today's price), stops at the first
//! step below maintenance and bisects between it and the step before.

use crate::account::{Evaluator, ExposureSums};
use crate::arrays::RiskArrays;
use crate::book::{Book, BookAccount};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

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
    let searches: Vec<(usize, usize, f64)> = (0..account.exposures.len())
        .flat_map(|e| {
            [
                (e, account.exposures[e], SCALE_FLOOR),
                (e, account.exposures[e], SCALE_CEILING),
            ]
        })
        .collect();
    let found: Vec<Option<f64>> = searches
        .par_iter()
        .map(|&(e, u, end)| {
            // Everything but `u` is fixed while `u` moves: sum it once.
            let mut scratch = Vec::new();
            let mut others = evaluator.fixed_part(account);
            for (f, &v) in account.exposures.iter().enumerate() {
                if f != e {
                    evaluator.add_underlying(account, f, v, 1.0, &mut others, &mut scratch);
                }
            }
            let mut partial = others.clone();
            let mut cushion = |x: f64| {
                partial.clone_from(&others);
                evaluator.add_underlying(account, e, u, x, &mut partial, &mut scratch);
                let r = evaluator.finish(account, &partial);
                Cushion {
                    value: r.margin_balance - r.maintenance_margin,
                    scale: r.margin_balance.abs() + r.maintenance_margin,
                }
            };
            let slope = if skip_proven_steps {
                cushion_slope_bound(evaluator, account, u)
            } else {
                f64::INFINITY
            };
            search(&mut cushion, end, slope).map(|x| x * book.underlyings[u].spot)
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

/// Steps from 1 towards `end`; returns the crossing scale, bisected to 1e-12 relative.
///
/// A step is only evaluated when the cushion at the last evaluated step, less what the slope
/// bound allows it to fall over the distance, does not already prove it positive: skipped steps
/// are provably above maintenance, so the first crossing step, and the bisection from it, are
/// exactly those of evaluating all 400 steps.
fn search(cushion: &mut impl FnMut(f64) -> Cushion, end: f64, slope: f64) -> Option<f64> {
    let step = (end - 1.0) / SEARCH_STEPS as f64;
    let slope = slope * (1.0 + 1e-9);
    let mut previous = 1.0;
    let mut known = (1.0, cushion(1.0));
    for i in 1..=SEARCH_STEPS {
        let x = if i == SEARCH_STEPS {
            end
        } else {
            1.0 + step * i as f64
        };
        let (at, c) = known;
        let guaranteed = c.value - slope * (x - at).abs();
        // Rounding allowance: the evaluated cushion carries errors of order 1e-12 of its terms.
        // (A NaN bound proves nothing, so the step is evaluated.)
        let proven_above = guaranteed > 1e-9 * c.scale.max(1.0);
        if !proven_above {
            let now = cushion(x);
            if now.value < 0.0 {
                return Some(bisect(&mut |x| cushion(x).value < 0.0, previous, x));
            }
            known = (x, now);
        }
        previous = x;
    }
    None
}

/// `good` is a scale above maintenance, `bad` one below; narrows the bracket around the switch.
fn bisect(below: &mut impl FnMut(f64) -> bool, mut good: f64, mut bad: f64) -> f64 {
    while (bad - good).abs() > BISECTION_TOLERANCE * good.abs().max(bad.abs()) {
        let mid = 0.5 * (good + bad);
        if mid == good || mid == bad {
            break;
        }
        if below(mid) {
            bad = mid;
        } else {
            good = mid;
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
    fn search_finds_a_threshold_between_steps() {
        // Below maintenance whenever the scale falls under 0.7731.
        // Cushion x - 0.7731: below maintenance under 0.7731, slope exactly 1.
        let mut line = |x: f64| Cushion {
            value: x - 0.7731,
            scale: 1.0,
        };
        let x = search(&mut line, SCALE_FLOOR, 1.0).unwrap();
        assert!((x - 0.7731).abs() < 1e-11);
        assert_eq!(search(&mut line, SCALE_CEILING, 1.0), None);
        let mut above = |x: f64| Cushion {
            value: 9.99 - x,
            scale: 1.0,
        };
        assert!((search(&mut above, SCALE_CEILING, 1.0).unwrap() - 9.99).abs() < 1e-10);
    }

    #[test]
    fn search_takes_the_first_crossing_not_the_deepest() {
        // A cushion with slope at most 20 that dips below zero only on (0.90, 0.95) and again
        // under 0.5: the first window wins, skipped steps or not.
        let mut dip = |x: f64| {
            let value = if x > 0.5 {
                (20.0 * (x - 0.925).abs() - 0.5).min(1.0)
            } else {
                -1.0
            };
            Cushion { value, scale: 1.0 }
        };
        let x = search(&mut dip, SCALE_FLOOR, 20.0).unwrap();
        assert!((x - 0.95).abs() < 1e-11, "{x}");
    }
}
