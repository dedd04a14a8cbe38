//! Liquidation prices (MODEL.md section 6): for each underlying the account is exposed to,
//! the nearest spot below and above today's at which its margin balance would fall below
//! maintenance margin.
//!
//! Only the one underlying moves (its spot, forwards and marks scaled together, vols held);
//! the requirement is recomputed in full at every trial price, because an option book's
//! requirement moves with the price as much as its balance does. The search steps outward in
//! 400 equal steps (down to almost zero, up to ten times today's price), stops at the first
//! step below maintenance and bisects between it and the step before.

use crate::account::Evaluator;
use crate::book::BookAccount;
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
    let requirement = grid.max(statistical).max(som);
    notional + book.params.mm_fraction * requirement
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
        use crate::{synthetic, Evaluator, RiskArrays};
        let book = synthetic::book(120, 11).unwrap();
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
