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
            let mut below = |x: f64| {
                partial.clone_from(&others);
                evaluator.add_underlying(account, e, u, x, &mut partial, &mut scratch);
                evaluator.finish(account, &partial).below_maintenance()
            };
            search(&mut below, end).map(|x| x * book.underlyings[u].spot)
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

/// Steps from 1 towards `end`; returns the crossing scale, bisected to 1e-12 relative.
fn search(below: &mut impl FnMut(f64) -> bool, end: f64) -> Option<f64> {
    let step = (end - 1.0) / SEARCH_STEPS as f64;
    let mut previous = 1.0;
    for i in 1..=SEARCH_STEPS {
        let x = if i == SEARCH_STEPS {
            end
        } else {
            1.0 + step * i as f64
        };
        if below(x) {
            return Some(bisect(below, previous, x));
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
    fn search_finds_a_threshold_between_steps() {
        // Below maintenance whenever the scale falls under 0.7731.
        let mut below = |x: f64| x < 0.7731;
        let x = search(&mut below, SCALE_FLOOR).unwrap();
        assert!((x - 0.7731).abs() < 1e-11);
        assert_eq!(search(&mut below, SCALE_CEILING), None);
        let mut above = |x: f64| x > 9.99;
        assert!((search(&mut above, SCALE_CEILING).unwrap() - 9.99).abs() < 1e-10);
    }

    #[test]
    fn search_takes_the_first_crossing_not_the_deepest() {
        // Below maintenance only on (0.90, 0.95) and under 0.5: the first window wins.
        let mut below = |x: f64| (x > 0.90 && x < 0.95) || x < 0.5;
        let x = search(&mut below, SCALE_FLOOR).unwrap();
        assert!((x - 0.95).abs() < 1e-11, "{x}");
    }
}
