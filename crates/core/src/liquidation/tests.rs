use super::*;

#[test]
fn grid_risk_alone_is_that_of_the_grid_evaluation() {
    // Rows of 1 to 5 exposures with zeros of both signs, NaNs (first and later) and
    // infinities among ordinary P&Ls: the grid risk is `grid::evaluate`'s, bit for bit.
    use crate::{synthetic, RiskArrays};
    let book = synthetic::book_v2(4, 3).unwrap();
    let arrays = RiskArrays::compute(&book, None).unwrap();
    let (shape, width) = (&arrays.shape, arrays.width);
    let specials = [
        0.0,
        -0.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e-300,
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for trial in 0..4000 {
        let k = 1 + trial % 5;
        let rows: Vec<f64> = (0..k * width)
            .map(|_| match next() % 10 {
                0 => specials[(next() % 6) as usize],
                r => (r as f64 - 5.0) * 1e3 * ((next() % 1000) as f64 / 999.0),
            })
            .collect();
        let exposures: Vec<usize> = (0..k).collect();
        let full = crate::grid::evaluate(shape, &exposures, &rows).grid_risk;
        let alone = grid_risk_of(shape, &arrays.slot_weights, k, &rows);
        assert_eq!(alone.to_bits(), full.to_bits(), "{rows:?}");
    }
}

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
            checked += assert_moves_within_bounds(&evaluator, account, &bounds, &today, &scales);
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
                    let delta = (inst.value_at(1.0 + 1e-6, rate) - inst.value_at(1.0 - 1e-6, rate))
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
            checked += assert_moves_within_bounds(&evaluator, account, &bounds, &today, &scales);
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
    let x = search(&mut line, None, SCALE_FLOOR, 1.0, &|_, _| f64::INFINITY).unwrap();
    assert!((x - 0.7731).abs() < 1e-11);
    assert_eq!(
        search(&mut line, None, SCALE_CEILING, 1.0, &|_, _| f64::INFINITY),
        None
    );
    let mut above = |x: f64, _: Option<usize>| Cushion {
        value: 9.99 - x,
        scale: 1.0,
    };
    let x = search(&mut above, None, SCALE_CEILING, 1.0, &|_, _| f64::INFINITY).unwrap();
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
    let x = search(&mut dip, None, SCALE_FLOOR, 20.0, &|_, _| f64::INFINITY).unwrap();
    assert!((x - 0.95).abs() < 1e-11, "{x}");
}
