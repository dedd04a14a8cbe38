//! docs/MODEL.md version 2, sections 9-11, against hand calculations and closed forms: vol shocks
//! scaled by tenor, extended price moves, and the four contingency add-ons, including their
//! recomputation in the liquidation-price search; every new field validated by path; and the
//! version 1 results unchanged when the new parameters are left at their defaults.

mod common;

use common::*;
use pmargin_core::report::AccountReport;
use pmargin_core::{
    margin_report, Book, Evaluator, InputError, Market, Params, Portfolio, RiskArrays, Status,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// The example parameters with BTC's underlying entry extended by `fields`.
fn btc_params(fields: Value) -> Params {
    params_with(|v| {
        for (k, x) in fields.as_object().expect("an object").clone() {
            v["underlyings"]["BTC"][k] = x;
        }
    })
}

fn single(balances: Value, positions: Vec<Value>, prm: &Params, m: &Market) -> AccountReport {
    let p = portfolio(vec![account("a", balances, positions)]);
    run(&p, m, prm, NO_LIQ).accounts.remove(0)
}

/// The largest of `max(0, losses)`, as the grid takes it.
fn grid_of(losses: &[f64]) -> f64 {
    losses.iter().fold(0.0f64, |m, l| m.max(*l))
}

// ---------------------------------------------------------------------------------------------
// Section 9: vol shocks scaled by tenor
// ---------------------------------------------------------------------------------------------

/// Deribit's `(30 / days)^0.3`, by hand: for 2 days, 15^0.3 = exp(0.3 x 2.7080502) =
/// exp(0.8124151) = 2.253343; for 365 days, (30/365)^0.3 = exp(0.3 x -2.4987004) =
/// exp(-0.7496101) = 0.472551. (The figures below take the formula to full precision.)
const S_2_DAYS: f64 = 2.253343;
const S_1_YEAR: f64 = 0.472551;

#[test]
fn a_two_day_option_takes_a_larger_vol_shock_than_a_one_year_option() {
    let (s2, s365) = (15f64.powf(0.3), (30.0f64 / 365.0).powf(0.3));
    assert!((s2 - S_2_DAYS).abs() < 1e-6 && (s365 - S_1_YEAR).abs() < 1e-6);
    let prm = btc_params(json!({ "vol_power_short": 0.3, "vol_power_long": 0.3 }));
    // AS_OF is 24 Nov 2026 08:00: 26NOV26 is 2 days away, 24NOV27 365 days (2027 has no
    // 29 February). Long at-the-money calls at vol 60%, BTC range 10%, vol scan 10 points:
    // the scanning risk is the worst of the 16 scenarios with the vol shift s x 0.10.
    for (name, days, s) in [
        ("BTC-26NOV26-60000-C", 2.0, s2),
        ("BTC-24NOV27-60000-C", 365.0, s365),
    ] {
        let t = days / 365.0;
        let a = single(
            json!({"USDC": 100000}),
            vec![option(name, 1.0)],
            &prm,
            &market(),
        );
        let options = [(true, 1.0, BTC, 60000.0, t, 0.60)];
        let scenarios = sixteen(0.0, &options, 0.10, 0.10 * s, 0.10 * s);
        let losses: Vec<f64> = scenarios.iter().map(|(_, l)| *l).collect();
        assert_close(a.scanning_risk["BTC"], grid_of(&losses), name);
        assert_close(a.grid_risk, grid_of(&losses), name);
        // And not the unscaled figure.
        let plain: Vec<f64> = sixteen(0.0, &options, 0.10, 0.10, 0.10)
            .iter()
            .map(|(_, l)| *l)
            .collect();
        assert!(
            (grid_of(&plain) - a.grid_risk).abs() > 1.0,
            "{name}: scaled"
        );
    }
}

#[test]
fn the_short_power_applies_under_the_tenor_and_the_floor_in_days_applies_first() {
    // Short power 0.3 under 30 days, long power 0.1 from 30 days, floor 7 days:
    // the 2-day option counts as 7 days: s = (30/7)^0.3 = exp(0.3 x 1.4552872) = 1.547416;
    // the 1-year option takes the long power: s = (30/365)^0.1 = exp(-0.2498700) = 0.778902.
    let (s7, s365) = ((30.0f64 / 7.0).powf(0.3), (30.0f64 / 365.0).powf(0.1));
    assert!((s7 - 1.547416).abs() < 1e-6 && (s365 - 0.778902).abs() < 1e-6);
    let prm = btc_params(json!({
        "vol_power_short": 0.3, "vol_power_long": 0.1, "vol_min_days": 7, "vol_tenor_days": 30
    }));
    for (name, days, s) in [
        ("BTC-26NOV26-60000-P", 2.0, s7),
        ("BTC-24NOV27-60000-P", 365.0, s365),
    ] {
        let a = single(
            json!({"USDC": 100000}),
            vec![option(name, -1.0)],
            &prm,
            &market(),
        );
        let options = [(false, -1.0, BTC, 60000.0, days / 365.0, 0.60)];
        let losses: Vec<f64> = sixteen(0.0, &options, 0.10, 0.10 * s, 0.10 * s)
            .iter()
            .map(|(_, l)| *l)
            .collect();
        assert_close(a.grid_risk, grid_of(&losses), name);
    }
}

#[test]
fn an_expired_option_takes_no_vol_and_is_intrinsic_in_every_scenario() {
    // BTC-20NOV26-50000-C expired 4 days ago: worth max(F - K, 0) = 10,000 and, per contract,
    // moves exactly like the forward above the strike: the worst loss of a long one is the
    // full range down, 6,000 (60,000 x 0.9 = 54,000 > 50,000), whatever the vol powers.
    let prm = btc_params(json!({ "vol_power_short": 0.3, "vol_power_long": 0.3 }));
    let a = single(
        json!({"USDC": 0}),
        vec![option("BTC-20NOV26-50000-C", 1.0)],
        &prm,
        &market(),
    );
    assert_close(a.equity, 10000.0, "intrinsic value");
    assert_close(a.grid_risk, 6000.0, "full range down");
}

// ---------------------------------------------------------------------------------------------
// Section 10: extended price moves
// ---------------------------------------------------------------------------------------------

fn with_extended(moves: Value) -> Params {
    params_with(|v| v["grid"] = json!({ "extended_moves": moves }))
}

#[test]
fn an_extended_move_on_a_short_perpetual_is_the_move_times_notional_times_cover() {
    // -1 BTC-PERPETUAL at mark 60,000. Extended +50% with cover 0.3: loss 0.3 x 60,000 x 0.5 =
    // 9,000, above the full range up (6,000) and the extreme (0.35 x 12,000 = 4,200).
    let prm = with_extended(json!([{ "move": 0.5, "vol": "up", "cover": 0.3 }]));
    let a = single(
        json!({"USDC": 20000}),
        vec![linear("BTC-PERPETUAL", -1.0, 60000.0)],
        &prm,
        &market(),
    );
    assert_close(a.scanning_risk["BTC"], 9000.0, "scanning risk");
    assert_close(a.grid_risk, 9000.0, "grid risk");
    assert_close(a.initial_margin, 9000.0, "IM");
    assert_eq!(
        a.worst_scenario.as_deref(),
        Some("single BTC extended +0.5 vol up")
    );
    // A 66% fall (cover and vol by default: 1, none) on a long one: 60,000 x 0.66 = 39,600.
    let prm = with_extended(json!([{ "move": -0.66 }]));
    let a = single(
        json!({"USDC": 50000}),
        vec![linear("BTC-PERPETUAL", 1.0, 60000.0)],
        &prm,
        &market(),
    );
    assert_close(a.grid_risk, 39600.0, "-66%");
    assert_eq!(
        a.worst_scenario.as_deref(),
        Some("single BTC extended -0.66 vol none")
    );
}

#[test]
fn an_extended_move_moves_every_underlying_at_once_in_the_tandem_family() {
    // +1 BTC-PERPETUAL (60,000) and +10 ETH-PERPETUAL (3,000): -50% on both at once loses
    // 30,000 + 15,000 = 45,000; alone, BTC's loses 30,000 (its scanning risk), ETH's 15,000.
    let prm = with_extended(json!([{ "move": -0.5, "cover": 1 }]));
    let a = single(
        json!({"USDC": 100000}),
        vec![
            linear("BTC-PERPETUAL", 1.0, 60000.0),
            linear("ETH-PERPETUAL", 10.0, 3000.0),
        ],
        &prm,
        &market(),
    );
    assert_close(a.scanning_risk["BTC"], 30000.0, "BTC single");
    assert_close(a.scanning_risk["ETH"], 15000.0, "ETH single");
    assert_close(a.grid_risk, 45000.0, "tandem");
    assert_eq!(
        a.worst_scenario.as_deref(),
        Some("tandem extended -0.5 vol none")
    );
    let prm = with_extended(json!([{ "move": 3, "vol": "down", "cover": 0.1 }]));
    let a = single(
        json!({"USDC": 100000}),
        vec![
            linear("BTC-PERPETUAL", -1.0, 60000.0),
            linear("ETH-PERPETUAL", -10.0, 3000.0),
        ],
        &prm,
        &market(),
    );
    // Fourfold rise, cover 0.1: 0.1 x 3 x (60,000 + 30,000) = 27,000.
    assert_close(a.grid_risk, 27000.0, "tandem +3");
    assert_eq!(
        a.worst_scenario.as_deref(),
        Some("tandem extended +3 vol down")
    );
}

#[test]
fn an_extended_move_shocks_an_option_with_the_tenor_scaled_vol() {
    // -1 BTC-26NOV26-60000-P (2 days, vol 60%), Deribit's powers: -66% with vol up and cover
    // 0.3 loses 0.3 x (V(20,400; 0.6 + 0.1 s) - V(60,000; 0.6)), s = 15^0.3.
    let prm = params_with(|v| {
        v["underlyings"]["BTC"]["vol_power_short"] = json!(0.3);
        v["underlyings"]["BTC"]["vol_power_long"] = json!(0.3);
        v["grid"] = json!({ "extended_moves": [{ "move": -0.66, "vol": "up", "cover": 0.3 }] });
    });
    let t = 2.0 / 365.0;
    let a = single(
        json!({"USDC": 100000}),
        vec![option("BTC-26NOV26-60000-P", -1.0)],
        &prm,
        &market(),
    );
    let s = 15f64.powf(0.3);
    let extended = -0.3
        * -(black76(false, 20400.0, 60000.0, t, 0.6 + 0.1 * s, 0.0)
            - black76(false, BTC, 60000.0, t, 0.6, 0.0));
    let options = [(false, -1.0, BTC, 60000.0, t, 0.60)];
    let mut losses: Vec<f64> = sixteen(0.0, &options, 0.10, 0.10 * s, 0.10 * s)
        .iter()
        .map(|(_, l)| *l)
        .collect();
    losses.push(extended);
    // About 0.3 x 39,600 = 11,880, far above the range's losses.
    assert!(extended > 11000.0, "{extended}");
    assert_close(a.grid_risk, grid_of(&losses), "grid risk");
    assert_eq!(
        a.worst_scenario.as_deref(),
        Some("single BTC extended -0.66 vol up")
    );
}

#[test]
fn the_scenario_table_lists_the_extended_rows() {
    let prm =
        with_extended(json!([{ "move": -0.66, "vol": "down", "cover": 0.3 }, { "move": 1.5 }]));
    let p = portfolio(vec![account(
        "a",
        json!({"USDC": 100000}),
        vec![
            linear("BTC-PERPETUAL", 1.0, 60000.0),
            linear("ETH-PERPETUAL", -10.0, 3000.0),
        ],
    )]);
    let book = Book::build(&p, &market(), &prm).unwrap();
    let arrays = RiskArrays::compute(&book, None).unwrap();
    let table = Evaluator::new(&book, &arrays)
        .scenario_table(&book.accounts[0])
        .unwrap();
    let row = |label: &str| {
        table
            .scenarios
            .iter()
            .find(|s| s.label == label)
            .unwrap_or_else(|| panic!("no row {label}"))
    };
    // 16 single rows + 2 extended per underlying, 18 tandem, 4 decoupling.
    assert_eq!(table.scenarios.len(), 2 * 18 + 18 + 4);
    let r = row("single BTC extended -0.66 vol down");
    assert_eq!((r.price_move, r.weight), (-0.66, 0.3));
    assert_close(r.loss, 0.3 * 60000.0 * 0.66, "BTC -66%");
    let r = row("single ETH extended +1.5 vol none");
    assert_close(r.loss, 10.0 * 3000.0 * 1.5, "ETH +150% on a short");
    let r = row("tandem extended +1.5 vol none");
    assert_eq!(r.price_move, 1.5);
    assert_close(r.loss, -60000.0 * 1.5 + 45000.0, "tandem +150%");
    assert!(table.scenarios.iter().filter(|s| s.worst).count() == 1);
}

// ---------------------------------------------------------------------------------------------
// Section 11: the contingency add-ons
// ---------------------------------------------------------------------------------------------

#[test]
fn a_spot_perpetual_basis_trade_is_charged_the_basis_contingency() {
    // Long 5M of spot BTC (83.333... BTC at 60,000) against -83.333... BTC-PERPETUAL: every
    // grid scenario nets to zero, so v1 charges nothing. Basis 1%: 0.01 x 60,000 x
    // min(83.333, 83.333) = 50,000, all of the initial margin.
    let units = 5e6 / BTC;
    let prm = btc_params(json!({ "basis_contingency": 0.01 }));
    let a = single(
        json!({"USDC": 0, "BTC": units}),
        vec![linear("BTC-PERPETUAL", -units, 60000.0)],
        &prm,
        &market(),
    );
    assert!(a.grid_risk.abs() < 1e-6, "{}", a.grid_risk);
    assert_close(a.addon_breakdown.basis, 50000.0, "basis");
    assert_close(a.addons, 50000.0, "addons");
    assert_close(a.initial_margin, 50000.0, "IM = grid 0 + 50,000");
    assert_close(a.maintenance_margin, 37500.0, "MM");
    // Without the parameter: nothing.
    let v1 = single(
        json!({"USDC": 0, "BTC": units}),
        vec![linear("BTC-PERPETUAL", -units, 60000.0)],
        &params(),
        &market(),
    );
    assert_eq!(v1.addons, 0.0);
    assert!(v1.initial_margin < 1e-6);
}

#[test]
fn a_futures_calendar_is_charged_on_the_smaller_side_at_spot() {
    // +3 BTC-27DEC26 (mark 60,450) and -2 BTC-PERPETUAL and 0.5 BTC: L+ = 3.5, L- = 2;
    // basis 1% of spot (not the mark): 0.01 x 60,000 x 2 = 1,200. ETH: +10 perp, -4 ETH
    // future, basis 2%: 0.02 x 3,000 x 4 = 240. Total 1,440.
    let prm = params_with(|v| {
        v["underlyings"]["BTC"]["basis_contingency"] = json!(0.01);
        v["underlyings"]["ETH"]["basis_contingency"] = json!(0.02);
    });
    let m = market_with(|v| v["marks"] = json!({ "BTC-27DEC26": 60450 }));
    let a = single(
        json!({"USDC": 100000, "BTC": 0.5}),
        vec![
            linear("BTC-27DEC26", 3.0, 60450.0),
            linear("BTC-PERPETUAL", -2.0, 60000.0),
            linear("ETH-PERPETUAL", 10.0, 3000.0),
            linear("ETH-26MAR27", -4.0, 3000.0),
        ],
        &prm,
        &m,
    );
    assert_close(a.addon_breakdown.basis, 1440.0, "basis");
    assert_close(a.addons, 1440.0, "addons");
    let rest = a
        .grid_risk
        .max(a.statistical_risk)
        .max(a.short_option_minimum);
    assert_close(a.initial_margin, rest + 1440.0, "IM = max(...) + addons");
}

#[test]
fn the_option_contingency_counts_short_contracts_only() {
    // -10 and +4 calls: 0.02 x 60,000 x 10 = 12,000 (the long calls do not net).
    let prm = btc_params(json!({ "option_contingency": 0.02 }));
    let a = single(
        json!({"USDC": 500000}),
        vec![
            option("BTC-27DEC26-60000-C", -10.0),
            option("BTC-27DEC26-70000-C", 4.0),
        ],
        &prm,
        &market(),
    );
    assert_close(a.addon_breakdown.option, 12000.0, "option contingency");
    assert_close(a.addons, 12000.0, "addons");
    assert_eq!(
        (
            a.addon_breakdown.basis,
            a.addon_breakdown.oracle,
            a.addon_breakdown.liquidity
        ),
        (0.0, 0.0, 0.0)
    );
    // The short option minimum is 0.01 x 10 x 60,000 = 6,000; IM = max(grid, 6,000) + 12,000.
    assert_close(a.short_option_minimum, 6000.0, "SOM");
    assert_close(a.initial_margin, a.grid_risk.max(6000.0) + 12000.0, "IM");
}

#[test]
fn the_oracle_add_on_is_confidence_times_gross_units() {
    // BTC: -2 perp, +5 calls, 1 BTC balance: G = 2 + 5 + 1 = 8; confidence 45 USD, multiple 2:
    // 2 x 45 x 8 = 720. ETH has confidence but no multiple: nothing.
    let prm = btc_params(json!({ "oracle_confidence_multiple": 2.0 }));
    let m = market_with(|v| v["confidence"] = json!({ "BTC": 45.0, "ETH": 3.0 }));
    let a = single(
        json!({"USDC": 100000, "BTC": 1.0}),
        vec![
            linear("BTC-PERPETUAL", -2.0, 60000.0),
            option("BTC-27DEC26-60000-C", 5.0),
            linear("ETH-PERPETUAL", 10.0, 3000.0),
        ],
        &prm,
        &m,
    );
    assert_close(a.addon_breakdown.oracle, 720.0, "oracle");
    assert_close(a.addons, 720.0, "addons");
    // No confidence in the market: 0.
    let a = single(
        json!({"USDC": 100000, "BTC": 1.0}),
        vec![linear("BTC-PERPETUAL", -2.0, 60000.0)],
        &prm,
        &market(),
    );
    assert_eq!(a.addons, 0.0);
}

#[test]
fn the_liquidity_add_on_closes_the_net_delta_by_the_square_root_law() {
    // +10 BTC-PERPETUAL; +20 BTC-27DEC26-60000-C (33 days, vol 60%, F = 60,000):
    // d1 = 0.5 x 0.6 x sqrt(33/365) = 0.0902052, delta = N(d1) = 0.535938;
    // +3 BTC-20NOV26-50000-C, expired in the money: delta 1; +4 BTC-20NOV26-50000-P, expired
    // out of the money: 0; -2 BTC-20NOV26-70000-P, expired in the money: -1 each, +2 in all.
    // Delta = 10 + 20 x 0.535938 + 3 + 0 + 2 = 25.718762; coefficient 0.5, adv 1,000:
    // 0.5 x 60,000 x 25.718762 x sqrt(0.025718762) = 123,735.6 (by hand, to 5 digits).
    let t = T_27DEC26;
    let d1 = 0.5 * 0.6 * t.sqrt();
    assert!((d1 - 0.0902052).abs() < 1e-7);
    let call_delta = norm_cdf(d1);
    assert!((call_delta - 0.535938).abs() < 1e-6);
    let delta: f64 = 10.0 + 20.0 * call_delta + 3.0 + 0.0 + 2.0;
    let expected = 0.5 * BTC * delta * (delta / 1000.0).sqrt();
    assert!((expected - 123735.6).abs() < 0.5, "{expected}");
    let prm = btc_params(json!({ "liquidity_coefficient": 0.5, "adv": 1000 }));
    let a = single(
        json!({"USDC": 1e6}),
        vec![
            linear("BTC-PERPETUAL", 10.0, 60000.0),
            option("BTC-27DEC26-60000-C", 20.0),
            option("BTC-20NOV26-50000-C", 3.0),
            option("BTC-20NOV26-50000-P", 4.0),
            option("BTC-20NOV26-70000-P", -2.0),
        ],
        &prm,
        &market(),
    );
    assert_close(a.addon_breakdown.liquidity, expected, "liquidity");
    assert_close(a.addons, expected, "addons");
    // A delta-neutral book: nothing to close.
    let a = single(
        json!({"USDC": 1e6, "BTC": 2.0}),
        vec![linear("BTC-PERPETUAL", -2.0, 60000.0)],
        &prm,
        &market(),
    );
    assert!(a.addon_breakdown.liquidity.abs() < 1e-6);
    // A put's delta is -D N(-d1), here with a rate: r = 5%, D = exp(-0.05 T); -20 puts:
    // Delta = -20 x -D N(-d1) = 20 D N(-d1), d1 = 0.5 x 0.6 sqrt(T) (F = K, the rate does not
    // enter d1).
    let m = market_with(|v| v["rate"] = json!(0.05));
    let a = single(
        json!({"USDC": 1e6}),
        vec![option("BTC-27DEC26-60000-P", -20.0)],
        &prm,
        &m,
    );
    let delta = 20.0 * (-0.05 * t).exp() * norm_cdf(-d1);
    assert_close(
        a.addon_breakdown.liquidity,
        0.5 * BTC * delta * (delta / 1000.0).sqrt(),
        "put",
    );
}

#[test]
fn all_four_add_ons_add_up_over_underlyings_and_reach_the_report_json() {
    let prm = params_with(|v| {
        v["underlyings"]["BTC"]["option_contingency"] = json!(0.01);
        v["underlyings"]["BTC"]["basis_contingency"] = json!(0.01);
        v["underlyings"]["BTC"]["oracle_confidence_multiple"] = json!(1.0);
        v["underlyings"]["ETH"]["liquidity_coefficient"] = json!(0.2);
        v["underlyings"]["ETH"]["adv"] = json!(400);
    });
    let m = market_with(|v| v["confidence"] = json!({ "BTC": 30.0 }));
    // BTC: -3 calls (option 0.01 x 60,000 x 3 = 1,800), +2 perp and 1.5 BTC vs -1 future
    // (basis 0.01 x 60,000 x 1 = 600), G = 3 + 2 + 1 + 1.5 = 7.5 (oracle 30 x 7.5 = 225).
    // ETH: +100 perp: 0.2 x 3,000 x 100 x sqrt(100 / 400) = 30,000.
    let p = portfolio(vec![account(
        "a",
        json!({"USDC": 500000, "BTC": 1.5}),
        vec![
            option("BTC-27DEC26-60000-C", -3.0),
            linear("BTC-PERPETUAL", 2.0, 60000.0),
            linear("BTC-27DEC26", -1.0, 60000.0),
            linear("ETH-PERPETUAL", 100.0, 3000.0),
        ],
    )]);
    let report = run(&p, &m, &prm, NO_LIQ);
    let a = &report.accounts[0];
    assert_close(a.addon_breakdown.option, 1800.0, "option");
    assert_close(a.addon_breakdown.basis, 600.0, "basis");
    assert_close(a.addon_breakdown.oracle, 225.0, "oracle");
    assert_close(a.addon_breakdown.liquidity, 30000.0, "liquidity");
    assert_close(a.addons, 32625.0, "sum");
    let v = serde_json::to_value(&report).unwrap();
    let b = &v["accounts"][0]["addon_breakdown"];
    assert_eq!(
        b.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["basis", "liquidity", "option", "oracle"]
    );
    assert!((v["accounts"][0]["addons"].as_f64().unwrap() - 32625.0).abs() < 1e-6);
}

// ---------------------------------------------------------------------------------------------
// Liquidation prices with the add-ons recomputed at each trial price
// ---------------------------------------------------------------------------------------------

#[test]
fn the_basis_contingency_scales_with_spot_in_the_liquidation_search() {
    // 83.333 BTC (5M at 60,000, haircut 5%), -83.333 perp, -4M USDC borrowed; basis 1%.
    // With Q = 5M, at spot 60,000 x: mb(x) = -4M + 0.95 Q x - Q (x - 1) = 1M - 0.05 Q x =
    // 1M - 250,000 x; MM = 0.75 x 0.01 Q x = 37,500 x. mb = MM at x = 1M / 287,500 =
    // 3.4782609: up at 208,695.65; down, mb only rises and MM only falls: none.
    let units = 5e6 / BTC;
    let prm = btc_params(json!({ "basis_contingency": 0.01 }));
    let p = portfolio(vec![account(
        "a",
        json!({"USDC": -4e6, "BTC": units}),
        vec![linear("BTC-PERPETUAL", -units, 60000.0)],
    )]);
    let a = run(&p, &market(), &prm, WITH_LIQ).accounts.remove(0);
    let lp = a.liquidation_prices["BTC"];
    assert_close_rel(lp.up.unwrap(), 60000.0 * 1e6 / 287500.0, 1e-6, "up");
    assert!((lp.up.unwrap() - 208695.65).abs() < 0.01);
    assert_eq!(lp.down, None);
    // Without the add-on the account is never liquidated on BTC: mb = MM = 0 only at x = 4.
    let v1 = run(&p, &market(), &params(), WITH_LIQ).accounts.remove(0);
    assert_close_rel(
        v1.liquidation_prices["BTC"].up.unwrap(),
        240000.0,
        1e-6,
        "v1",
    );
}

/// The account re-margined with BTC (spot, its marks and its balance price) at `price`.
fn at_btc_price(p: &Portfolio, prm: &Params, m: &Value, price: f64) -> AccountReport {
    let mut v = m.clone();
    let ratio = price / BTC;
    v["prices"]["BTC"] = json!(price);
    if let Some(marks) = v["marks"].as_object_mut() {
        for (name, mark) in marks.iter_mut() {
            if name.starts_with("BTC-") {
                *mark = json!(mark.as_f64().unwrap() * ratio);
            }
        }
    }
    let m = Market::parse("market.json", &v.to_string()).unwrap();
    run(p, &m, prm, NO_LIQ).accounts.remove(0)
}

#[test]
fn liquidation_prices_with_every_add_on_hold_when_the_account_is_margined_there() {
    // An option book with every add-on: at each liquidation price found, margining the account
    // anew with BTC there puts its margin balance at its maintenance margin (to the search's
    // 1e-6), and a hair inside it is still above maintenance.
    let prm = params_with(|v| {
        let b = &mut v["underlyings"]["BTC"];
        b["option_contingency"] = json!(0.01);
        b["basis_contingency"] = json!(0.02);
        b["oracle_confidence_multiple"] = json!(3.0);
        b["liquidity_coefficient"] = json!(0.3);
        b["adv"] = json!(200);
        b["vol_power_short"] = json!(0.3);
        b["vol_power_long"] = json!(0.3);
        v["grid"] = json!({ "extended_moves": [{ "move": -0.5, "cover": 0.2 }, { "move": 1.0, "vol": "up", "cover": 0.1 }] });
    });
    let mut mv = market_value();
    mv["marks"] = json!({ "BTC-27DEC26": 60450 });
    mv["confidence"] = json!({ "BTC": 50.0 });
    let m = Market::parse("market.json", &mv.to_string()).unwrap();
    let p = portfolio(vec![account(
        "a",
        json!({"USDC": 60000, "BTC": 1.0}),
        vec![
            option("BTC-27DEC26-60000-C", -6.0),
            option("BTC-27DEC26-50000-P", -4.0),
            linear("BTC-27DEC26", 3.0, 60450.0),
            linear("BTC-PERPETUAL", -1.0, 60000.0),
        ],
    )]);
    let a = run(&p, &m, &prm, WITH_LIQ).accounts.remove(0);
    assert!(a.addon_breakdown.liquidity > 0.0 && a.addon_breakdown.basis > 0.0);
    assert_eq!(a.status, Status::Healthy, "{a:?}");
    let lp = a.liquidation_prices["BTC"];
    let mut found = 0;
    for (price, inside) in [(lp.down, 1.0 + 1e-7), (lp.up, 1.0 - 1e-7)] {
        let Some(price) = price else { continue };
        found += 1;
        let there = at_btc_price(&p, &prm, &mv, price);
        let gap = there.margin_balance - there.maintenance_margin;
        assert!(
            gap.abs() <= 1e-6 * there.margin_balance.abs().max(there.maintenance_margin),
            "at {price}: mb {} mm {}",
            there.margin_balance,
            there.maintenance_margin
        );
        let near = at_btc_price(&p, &prm, &mv, price * inside);
        assert!(
            near.margin_balance > near.maintenance_margin,
            "inside {price}"
        );
    }
    assert!(found >= 1, "{lp:?}");
}

// ---------------------------------------------------------------------------------------------
// Validation: every bad field is refused by its path
// ---------------------------------------------------------------------------------------------

fn params_err(edit: impl FnOnce(&mut Value)) -> InputError {
    let mut v = params_value();
    edit(&mut v);
    Params::parse("params.json", &v.to_string()).unwrap_err()
}

#[test]
fn every_bad_version_2_parameter_is_refused_naming_its_field() {
    let btc = |field: &'static str, value: Value| {
        move |v: &mut Value| v["underlyings"]["BTC"][field] = value
    };
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(btc("vol_tenor_days", json!(0))),
            "underlyings.BTC.vol_tenor_days",
        ),
        (
            Box::new(btc("vol_min_days", json!(-1))),
            "underlyings.BTC.vol_min_days",
        ),
        (
            Box::new(btc("vol_power_short", json!(-0.3))),
            "underlyings.BTC.vol_power_short",
        ),
        (
            Box::new(btc("vol_power_long", json!(-1))),
            "underlyings.BTC.vol_power_long",
        ),
        (
            Box::new(btc("option_contingency", json!(-0.01))),
            "underlyings.BTC.option_contingency",
        ),
        (
            Box::new(btc("basis_contingency", json!(-1))),
            "underlyings.BTC.basis_contingency",
        ),
        (
            Box::new(btc("oracle_confidence_multiple", json!(-2))),
            "underlyings.BTC.oracle_confidence_multiple",
        ),
        (
            Box::new(btc("liquidity_coefficient", json!(-0.1))),
            "underlyings.BTC.liquidity_coefficient",
        ),
        (Box::new(btc("adv", json!(-5))), "underlyings.BTC.adv"),
        (
            Box::new(btc("vol_tenor_dayz", json!(30))),
            "underlyings.BTC.vol_tenor_dayz",
        ),
        // The liquidity coefficient set without a volume to divide by.
        (
            Box::new(btc("liquidity_coefficient", json!(0.1))),
            "underlyings.BTC.adv",
        ),
        (
            Box::new(|v: &mut Value| {
                v["underlyings"]["ETH"]["liquidity_coefficient"] = json!(0.1);
                v["underlyings"]["ETH"]["adv"] = json!(0);
            }),
            "underlyings.ETH.adv",
        ),
    ];
    for (edit, path) in cases {
        let err = params_err(edit);
        assert_eq!(
            (err.file.as_str(), err.path.as_str()),
            ("params.json", path),
            "{err}"
        );
    }
    let extended =
        |moves: Value| move |v: &mut Value| v["grid"] = json!({ "extended_moves": moves });
    for (moves, path) in [
        (json!([{ "move": -1 }]), "grid.extended_moves[0].move"),
        (json!([{ "move": -1.5 }]), "grid.extended_moves[0].move"),
        (
            json!([{ "move": 0.5 }, { "move": 0 }]),
            "grid.extended_moves[1].move",
        ),
        (
            json!([{ "move": 0.5, "vol": "sideways" }]),
            "grid.extended_moves[0].vol",
        ),
        (
            json!([{ "move": 0.5, "cover": 0 }]),
            "grid.extended_moves[0].cover",
        ),
        (
            json!([{ "move": 0.5, "cover": 1.5 }]),
            "grid.extended_moves[0].cover",
        ),
        (
            json!([{ "move": 0.5, "cover": -0.2 }]),
            "grid.extended_moves[0].cover",
        ),
        (
            json!([{ "move": 0.5, "moev": 1 }]),
            "grid.extended_moves[0].moev",
        ),
        (json!([{ "cover": 0.5 }]), "grid.extended_moves[0]"),
    ] {
        let err = params_err(extended(moves.clone()));
        assert_eq!(err.path, path, "{moves}: {err}");
    }
    // A move above -1, not 0, with cover in (0, 1] is accepted; vol and cover default.
    let p = with_extended(json!([{ "move": -0.99 }, { "move": 9, "vol": "down", "cover": 1 }]));
    let e = &p.grid.extended_moves;
    assert_eq!((e[0].price_move, e[0].cover), (-0.99, 1.0));
    assert_eq!(e[0].vol, pmargin_core::input::params::VolDirection::None);
    assert_eq!(e[1].vol, pmargin_core::input::params::VolDirection::Down);
}

#[test]
fn a_negative_confidence_is_refused_naming_its_field() {
    let mut m = market_value();
    m["confidence"] = json!({ "BTC": -1.0 });
    let err = Market::parse("market.json", &m.to_string()).unwrap_err();
    assert_eq!(
        (err.file.as_str(), err.path.as_str()),
        ("market.json", "confidence.BTC")
    );
    m["confidence"] = json!({ "BTC": "high" });
    let err = Market::parse("market.json", &m.to_string()).unwrap_err();
    assert_eq!(err.path, "confidence.BTC", "{err}");
    m["confidence"] = json!({ "BTC": 0.0, "ETH": 12.5 });
    assert_eq!(
        Market::parse("market.json", &m.to_string())
            .unwrap()
            .confidence["ETH"],
        12.5
    );
}

// ---------------------------------------------------------------------------------------------
// Version 1 unchanged at the defaults
// ---------------------------------------------------------------------------------------------

/// Every version 2 parameter written out at its default, and a market confidence that no
/// multiple uses.
fn explicit_defaults() -> (Params, Market) {
    let prm = params_with(|v| {
        for u in ["BTC", "ETH", "SOL"] {
            let e = &mut v["underlyings"][u];
            e["vol_tenor_days"] = json!(30);
            e["vol_power_short"] = json!(0);
            e["vol_power_long"] = json!(0);
            e["vol_min_days"] = json!(1);
            e["option_contingency"] = json!(0);
            e["basis_contingency"] = json!(0);
            e["oracle_confidence_multiple"] = json!(0);
            e["liquidity_coefficient"] = json!(0);
            e["adv"] = json!(0);
        }
        v["grid"] = json!({ "extended_moves": [] });
    });
    let m = market_with(|v| {
        v["marks"] = json!({ "BTC-PERPETUAL": 60100, "BTC-27DEC26": 60450, "SOL-27DEC26": 151 });
        v["confidence"] = json!({ "BTC": 40.0, "ETH": 2.0, "SOL": 0.1 });
    });
    (prm, m)
}

#[test]
fn parameters_at_their_defaults_write_out_as_version_1() {
    let (prm, _) = explicit_defaults();
    // The same set, and written without a version 2 field (so its governance hash is kept).
    assert_eq!(prm.underlyings, params().underlyings);
    assert_eq!(prm.grid, params().grid);
    let text = prm.to_json_pretty();
    for field in [
        "vol_tenor_days",
        "vol_power",
        "contingency",
        "adv",
        "extended_moves",
    ] {
        assert!(!text.contains(field), "{field} in {text}");
    }
    let with = with_extended(json!([{ "move": 0.5 }]));
    assert!(with.to_json_pretty().contains("extended_moves"));
}

const NAMES: [&str; 10] = [
    "BTC-PERPETUAL",
    "BTC-27DEC26",
    "ETH-PERPETUAL",
    "SOL-27DEC26",
    "BTC-27DEC26-50000-P",
    "BTC-27DEC26-60000-C",
    "BTC-26NOV26-62000-C",
    "BTC-20NOV26-55000-P",
    "ETH-27DEC26-3200-C",
    "SOL-27DEC26-120-P",
];

fn book() -> impl Strategy<Value = Vec<(usize, f64)>> {
    prop::collection::vec((0..NAMES.len(), -20.0..20.0f64), 1..6)
}

fn book_json(id: &str, positions: &[(usize, f64)], usdc: f64, btc: f64, eth: f64) -> Value {
    let positions = positions
        .iter()
        .map(|&(i, size)| {
            if NAMES[i].ends_with("-C") || NAMES[i].ends_with("-P") {
                option(NAMES[i], size)
            } else {
                linear(NAMES[i], size, 60000.0)
            }
        })
        .collect();
    account(
        id,
        json!({ "USDC": usdc, "BTC": btc, "ETH": eth }),
        positions,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// With every version 2 parameter at its default (written out, or left out), each figure of
    /// the report, liquidation prices included, is the same to the bit.
    #[test]
    fn version_2_at_its_defaults_is_version_1_bit_for_bit(
        books in prop::collection::vec((book(), 0.0..3e6f64, -2.0..4.0f64, -20.0..40.0f64), 1..4)
    ) {
        let accounts: Vec<Value> = books
            .iter()
            .enumerate()
            .map(|(k, (b, usdc, btc, eth))| book_json(&format!("a{k}"), b, *usdc, *btc, *eth))
            .collect();
        let p = portfolio(accounts);
        let (v2, m2) = explicit_defaults();
        let m1 = market_with(|v| {
            v["marks"] = json!({ "BTC-PERPETUAL": 60100, "BTC-27DEC26": 60450, "SOL-27DEC26": 151 });
        });
        let one = margin_report(&p, &m1, &params(), None, WITH_LIQ).unwrap();
        let two = margin_report(&p, &m2, &v2, None, WITH_LIQ).unwrap();
        // (JSON text: it tells -0.0 from 0.0.)
        prop_assert_eq!(
            serde_json::to_string(&one).unwrap(),
            serde_json::to_string(&two).unwrap()
        );
        for a in &two.accounts {
            prop_assert_eq!(a.addons, 0.0);
        }
    }

    /// An extended move that repeats the extreme up and down (BTC: 2 x 10% = 20%, cover 0.35,
    /// no vol) changes no figure of a BTC book: the grid reads every slot the same way.
    #[test]
    fn extended_moves_repeating_the_extremes_change_nothing(
        positions in prop::collection::vec((0..NAMES.len(), -20.0..20.0f64), 1..6),
        usdc in 0.0..3e6f64,
        btc in -2.0..4.0f64,
    ) {
        let positions: Vec<(usize, f64)> = positions
            .into_iter()
            .filter(|(i, _)| NAMES[*i].starts_with("BTC"))
            .collect();
        let p = portfolio(vec![book_json("a", &positions, usdc, btc, 0.0)]);
        let m = market();
        let repeated = with_extended(json!([
            { "move": 0.2, "cover": 0.35 }, { "move": -0.2, "vol": "none", "cover": 0.35 }
        ]));
        let one = run(&p, &m, &params(), WITH_LIQ).accounts.remove(0);
        let two = run(&p, &m, &repeated, WITH_LIQ).accounts.remove(0);
        let bits = |a: &AccountReport| {
            [a.grid_risk, a.initial_margin, a.maintenance_margin, a.scanning_risk.get("BTC").copied().unwrap_or(0.0)]
                .map(f64::to_bits)
        };
        prop_assert_eq!(bits(&one), bits(&two));
        prop_assert_eq!(one.liquidation_prices, two.liquidation_prices);
    }
}
