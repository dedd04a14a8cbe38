//! Filtered historical simulation (docs/MODEL.md section 5) on hand-built histories.
//!
//! The history is built from chosen daily ratios `P_t / P_{t-1}`, so with `filtered = false`
//! every scenario move is that ratio minus one and the losses of a perpetual are read off by
//! hand. With `filtered = true` the EWMA and the z-scores are recomputed here, independently.

mod common;

use common::*;
use pmargin_core::History;
use serde_json::json;

/// 34 daily ratios (35 closes). Drops: 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.98;
/// rises: 1.04, 1.03, 1.02 (three times).
const RATIOS: [f64; 34] = [
    1.01, 0.99, 1.005, 0.995, 1.02, 0.92, 1.0, 1.015, 0.985, 1.03, 0.97, 1.01, 0.94, 1.0, 0.99,
    1.01, 1.02, 0.98, 1.0, 0.95, 1.005, 0.995, 1.01, 0.99, 1.04, 0.96, 1.0, 1.01, 0.99, 1.02, 0.98,
    1.0, 1.01, 0.99,
];

/// Closes from 40,000 by the ratios, dated from 2024-01-01.
fn closes(ratios: &[f64], start: f64) -> Vec<f64> {
    let mut p = vec![start];
    for r in ratios {
        let last = *p.last().unwrap();
        p.push(last * r);
    }
    p
}

fn csv(columns: &[(&str, Vec<f64>)]) -> String {
    let n = columns[0].1.len();
    let mut s = String::from("date");
    for (name, _) in columns {
        s.push(',');
        s.push_str(name);
    }
    s.push('\n');
    let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    for i in 0..n {
        s.push_str(
            &(start + chrono::Days::new(i as u64))
                .format("%Y-%m-%d")
                .to_string(),
        );
        for (_, v) in columns {
            s.push_str(&format!(",{:?}", v[i]));
        }
        s.push('\n');
    }
    s
}

fn history(ratios: &[f64]) -> History {
    History::parse("history.csv", &csv(&[("BTC", closes(ratios, 40000.0))])).unwrap()
}

fn stat_params(alpha: f64, filtered: bool, horizon: u32) -> pmargin_core::Params {
    params_with(
        |v| v["statistical"] = json!({ "confidence": alpha, "horizon_days": horizon, "filtered": filtered, "ewma_lambda": 0.94 }),
    )
}

fn perp(size: f64, usdc: f64) -> pmargin_core::Portfolio {
    portfolio(vec![account(
        "a",
        json!({"USDC": usdc}),
        vec![linear("BTC-PERPETUAL", size, 60000.0)],
    )])
}

#[test]
fn unfiltered_var_and_es_are_order_statistics_of_the_losses() {
    // Long 1 BTC perp at 60,000: loss_t = -60,000 (ratio_t - 1).
    // Largest losses: 0.92 -> 4,800; 0.94 -> 3,600; 0.95 -> 3,000; 0.96 -> 2,400; 0.97 -> 1,800.
    let h = history(&RATIOS);
    let cases = [
        // alpha, q = max(1, ceil(34 (1 - alpha))), var, es
        (0.90, 4, 2400.0, (4800.0 + 3600.0 + 3000.0 + 2400.0) / 4.0), // 3.4 -> 4: es 3,450
        (0.95, 2, 3600.0, (4800.0 + 3600.0) / 2.0),                   // 1.7 -> 2: es 4,200
        (0.99, 1, 4800.0, 4800.0),                                    // 0.34 -> 1
    ];
    for (alpha, _q, var, es) in cases {
        let r = run_hist(
            &perp(1.0, 20000.0),
            &market(),
            &stat_params(alpha, false, 1),
            &h,
        )
        .unwrap();
        let a = &r.accounts[0];
        assert_close(a.var, var, &format!("var at {alpha}"));
        assert_close(a.es, es, &format!("es at {alpha}"));
        assert_close(a.statistical_risk, es, "statistical risk = max(0, es)");
        // Grid 6,000 exceeds every es here: IM stays the grid risk.
        assert_close(a.initial_margin, 6000.0, "IM = max(grid, stat, som)");
    }

    // Short 2 BTC perps: the rises hurt. loss_t = 120,000 (ratio_t - 1):
    // 1.04 -> 4,800; 1.03 -> 3,600; 1.02 -> 2,400 (x3). alpha 0.9, q = 4:
    // var = 2,400, es = (4,800 + 3,600 + 2,400 + 2,400) / 4 = 3,300.
    let r = run_hist(
        &perp(-2.0, 20000.0),
        &market(),
        &stat_params(0.90, false, 1),
        &h,
    )
    .unwrap();
    assert_close(r.accounts[0].var, 2400.0, "var, short");
    assert_close(r.accounts[0].es, 3300.0, "es, short");
}

#[test]
fn tail_count_rounds_to_nine_decimals_before_the_ceiling() {
    // First 20 returns (21 closes), alpha 0.95: 20 x (1 - 0.95) = 1.0000000000000009 in f64,
    // which is 1 after rounding to 9 decimals: q = 1, not 2.
    // Drops among the first 20 ratios: 0.92 (4,800), 0.94 (3,600), 0.95 (3,000).
    // black_box: the point is the run-time f64 product, not a constant the compiler folds.
    let product = std::hint::black_box(20.0f64) * (1.0 - std::hint::black_box(0.95f64));
    assert!(
        product > 1.0,
        "the product really is above 1 in f64: {product}"
    );
    let h = history(&RATIOS[..20]);
    let r = run_hist(
        &perp(1.0, 20000.0),
        &market(),
        &stat_params(0.95, false, 1),
        &h,
    )
    .unwrap();
    assert_close(r.accounts[0].var, 4800.0, "var with q = 1");
    assert_close(
        r.accounts[0].es,
        4800.0,
        "es with q = 1 (q = 2 would give 4,200)",
    );
}

#[test]
fn statistical_risk_sets_initial_margin_when_the_history_has_a_crash() {
    // Replace the 0.92 day by 0.85: loss 60,000 x 0.15 = 9,000 > grid 6,000.
    // alpha 0.99: q = 1, es = 9,000 = IM; MM = 6,750.
    let mut ratios = RATIOS;
    ratios[5] = 0.85;
    let r = run_hist(
        &perp(1.0, 20000.0),
        &market(),
        &stat_params(0.99, false, 1),
        &history(&ratios),
    )
    .unwrap();
    let a = &r.accounts[0];
    assert_close(a.grid_risk, 6000.0, "grid");
    assert_close(a.statistical_risk, 9000.0, "statistical risk");
    assert_close(a.initial_margin, 9000.0, "IM = statistical risk");
    assert_close(a.maintenance_margin, 6750.0, "MM");
}

#[test]
fn horizon_scales_the_log_return_by_its_square_root() {
    // h = 4, unfiltered: x = 2 r, move = ratio^2 - 1. Worst: 0.92^2 = 0.8464, loss 60,000 x 0.1536
    // = 9,216; alpha 0.99 -> q = 1.
    let r = run_hist(
        &perp(1.0, 20000.0),
        &market(),
        &stat_params(0.99, false, 4),
        &history(&RATIOS),
    )
    .unwrap();
    assert_close(r.accounts[0].es, 9216.0, "es at 4 days");
}

#[test]
fn spot_balance_is_simulated_like_a_perpetual() {
    // 1 BTC balance (price 60,000): the same losses as a long perp. alpha 0.9: es 3,450.
    let p = portfolio(vec![account("a", json!({"BTC": 1.0}), vec![])]);
    let r = run_hist(
        &p,
        &market(),
        &stat_params(0.90, false, 1),
        &history(&RATIOS),
    )
    .unwrap();
    assert_close(r.accounts[0].es, 3450.0, "es of a spot balance");
    assert_close(r.accounts[0].var, 2400.0, "var of a spot balance");
}

/// The test's own EWMA filter: returns the scenario moves `exp(x_t) - 1`.
fn filtered_moves(closes: &[f64], lambda: f64, horizon: f64) -> Vec<f64> {
    let r: Vec<f64> = (1..closes.len())
        .map(|t| (closes[t] / closes[t - 1]).ln())
        .collect();
    let n = r.len();
    let seed = n.min(30);
    // s2[0] is s2_1 (mean square of the first 30 returns); s2[t] = s2_{t+1}.
    let mut s2 = vec![r[..seed].iter().map(|x| x * x).sum::<f64>() / seed as f64];
    for t in 0..n {
        let prev = s2[t];
        s2.push(lambda * prev + (1.0 - lambda) * r[t] * r[t]);
    }
    let today = s2[n].sqrt();
    (0..n)
        .map(|t| (r[t] / s2[t].sqrt() * today * horizon.sqrt()).exp() - 1.0)
        .collect()
}

/// var and es of losses, with q by docs/MODEL.md's rule.
fn var_es(mut losses: Vec<f64>, alpha: f64) -> (f64, f64) {
    losses.sort_by(|a, b| b.partial_cmp(a).unwrap());
    let raw = losses.len() as f64 * (1.0 - alpha);
    let q = (((raw * 1e9).round() / 1e9).ceil() as usize).max(1);
    (losses[q - 1], losses[..q].iter().sum::<f64>() / q as f64)
}

#[test]
fn filtered_scenarios_rescale_by_the_ewma_vol() {
    let c = closes(&RATIOS, 40000.0);
    for (alpha, horizon) in [(0.90, 1u32), (0.95, 2)] {
        let moves = filtered_moves(&c, 0.94, horizon as f64);
        let losses: Vec<f64> = moves.iter().map(|m| -60000.0 * m).collect();
        let (var, es) = var_es(losses, alpha);
        // The filter changes the numbers: the unfiltered es at 0.9 would be 3,450.
        assert!((es - 3450.0).abs() > 10.0 || horizon != 1, "{es}");
        let r = run_hist(
            &perp(1.0, 20000.0),
            &market(),
            &stat_params(alpha, true, horizon),
            &history(&RATIOS),
        )
        .unwrap();
        assert_close(
            r.accounts[0].var,
            var,
            &format!("filtered var at {alpha}, h {horizon}"),
        );
        assert_close(
            r.accounts[0].es,
            es,
            &format!("filtered es at {alpha}, h {horizon}"),
        );
    }
    // With fewer than 30 returns the seed is the mean square of all of them.
    let c = closes(&RATIOS[..12], 40000.0);
    let losses: Vec<f64> = filtered_moves(&c, 0.94, 1.0)
        .iter()
        .map(|m| -60000.0 * m)
        .collect();
    let (var, es) = var_es(losses, 0.9);
    let r = run_hist(
        &perp(1.0, 20000.0),
        &market(),
        &stat_params(0.9, true, 1),
        &history(&RATIOS[..12]),
    )
    .unwrap();
    assert_close(r.accounts[0].var, var, "filtered var, 12 returns");
    assert_close(r.accounts[0].es, es, "filtered es, 12 returns");
}

#[test]
fn joint_moves_across_underlyings_and_options_revalued_at_held_vol() {
    // BTC and ETH on the same dates; ETH ratios are BTC's in reverse order.
    // Account: +1 BTC perp, -20 ETH perp, +2 BTC-27DEC26-60000-P (vol 0.60 held).
    // loss_t = -(60,000 mb_t - 20 x 3,000 me_t + 2 (P(60,000 (1 + mb_t)) - P(60,000))).
    let mut eth_ratios = RATIOS;
    eth_ratios.reverse();
    let text = csv(&[
        ("BTC", closes(&RATIOS, 40000.0)),
        ("ETH", closes(&eth_ratios, 2000.0)),
    ]);
    let h = History::parse("history.csv", &text).unwrap();
    let p = portfolio(vec![account(
        "a",
        json!({"USDC": 50000}),
        vec![
            linear("BTC-PERPETUAL", 1.0, 60000.0),
            linear("ETH-PERPETUAL", -20.0, 3000.0),
            option("BTC-27DEC26-60000-P", 2.0),
        ],
    )]);
    let put = |f: f64| black76(false, f, 60000.0, T_27DEC26, 0.60, 0.0);
    for filtered in [false, true] {
        let (mb, me) = if filtered {
            (
                filtered_moves(&closes(&RATIOS, 40000.0), 0.94, 1.0),
                filtered_moves(&closes(&eth_ratios, 2000.0), 0.94, 1.0),
            )
        } else {
            (
                RATIOS.iter().map(|r| r - 1.0).collect(),
                eth_ratios.iter().map(|r| r - 1.0).collect::<Vec<_>>(),
            )
        };
        let losses: Vec<f64> = (0..34)
            .map(|t| {
                -(60000.0 * mb[t] - 60000.0 * me[t]
                    + 2.0 * (put(60000.0 * (1.0 + mb[t])) - put(60000.0)))
            })
            .collect();
        let (var, es) = var_es(losses, 0.9);
        let r = run_hist(&p, &market(), &stat_params(0.9, filtered, 1), &h).unwrap();
        assert_close(r.accounts[0].var, var, &format!("var, filtered {filtered}"));
        assert_close(r.accounts[0].es, es, &format!("es, filtered {filtered}"));
    }
}

#[test]
fn account_without_exposure_has_no_statistical_risk() {
    let p = portfolio(vec![account("cash", json!({"USDC": 100}), vec![])]);
    let r = run_hist(&p, &market(), &stat_params(0.9, true, 1), &history(&RATIOS)).unwrap();
    assert_eq!(
        (
            r.accounts[0].var,
            r.accounts[0].es,
            r.accounts[0].statistical_risk
        ),
        (0.0, 0.0, 0.0)
    );
}

#[test]
fn exposure_missing_from_the_history_is_an_error_naming_the_account() {
    // The history has BTC only; "eth-acct" holds an ETH perp. The whole report fails.
    let p = portfolio(vec![
        account(
            "btc-acct",
            json!({"USDC": 100}),
            vec![linear("BTC-PERPETUAL", 1.0, 60000.0)],
        ),
        account(
            "eth-acct",
            json!({"USDC": 100}),
            vec![linear("ETH-PERPETUAL", 1.0, 3000.0)],
        ),
    ]);
    let err = run_hist(
        &p,
        &market(),
        &stat_params(0.99, true, 1),
        &history(&RATIOS),
    )
    .unwrap_err();
    assert_eq!(err.account.as_deref(), Some("eth-acct"), "{err}");
    assert_eq!(err.file, "history.csv", "{err}");
    assert!(err.to_string().contains("ETH"), "{err}");
    assert!(err.to_string().contains("eth-acct"), "{err}");

    // An ETH *balance* is an exposure too.
    let p = portfolio(vec![account("eth-bal", json!({"ETH": 1.0}), vec![])]);
    let err = run_hist(
        &p,
        &market(),
        &stat_params(0.99, true, 1),
        &history(&RATIOS),
    )
    .unwrap_err();
    assert_eq!(err.account.as_deref(), Some("eth-bal"), "{err}");
}
