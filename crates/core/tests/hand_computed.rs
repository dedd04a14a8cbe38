//! Worked examples: small books whose requirements are computed by hand (in the comments)
//! or with the test's own Black-76 (tests/common), checked against `margin_report`.
//!
//! Default grid: n = 7 price steps (thirds of the range), extremes at 2 x range with cover
//! 0.35, decoupling fraction 0.5. BTC range 10%, ETH 12%; spot BTC 60,000, ETH 3,000.

mod common;

use common::*;
use pmargin_core::Status;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Linear books
// ---------------------------------------------------------------------------------------------

#[test]
fn short_btc_perpetual_scanning_risk_is_size_times_mark_times_range() {
    // -2 BTC-PERPETUAL entered at 60,000, mark = spot = 60,000, 20,000 USDC.
    // Full range up (+10%): loss = 2 x 60,000 x 0.10 = 12,000.
    // Extreme up (+20%) at cover 0.35: 0.35 x 2 x 60,000 x 0.20 = 8,400 < 12,000.
    let a = one(
        json!({"USDC": 20000}),
        vec![linear("BTC-PERPETUAL", -2.0, 60000.0)],
        NO_LIQ,
    );
    assert_close(a.equity, 20000.0, "equity = 20,000 + (-2)(60,000 - 60,000)");
    assert_close(a.margin_balance, 20000.0, "USDC has no haircut");
    assert_close(a.scanning_risk["BTC"], 12000.0, "scanning risk");
    assert_close(
        a.grid_risk,
        12000.0,
        "grid risk (one underlying: = scanning risk)",
    );
    assert_eq!(a.worst_scenario.as_deref(), Some("single BTC 1/1 vol+"));
    assert_close(a.initial_margin, 12000.0, "IM = grid");
    assert_close(a.maintenance_margin, 9000.0, "MM = 0.75 x 12,000");
    assert_eq!(a.status, Status::Healthy);
    assert_eq!(a.scanning_risk.len(), 1);

    // With cover 0.6 the extreme wins: 0.6 x 2 x 60,000 x 0.20 = 14,400 > 12,000.
    let p = portfolio(vec![account(
        "a",
        json!({"USDC": 20000}),
        vec![linear("BTC-PERPETUAL", -2.0, 60000.0)],
    )]);
    let prm = params_with(|v| v["grid"] = json!({ "extreme_cover": 0.6 }));
    let a = run(&p, &market(), &prm, NO_LIQ).accounts.remove(0);
    assert_close(a.grid_risk, 14400.0, "extreme-driven grid risk");
    assert_eq!(a.worst_scenario.as_deref(), Some("single BTC extreme up"));
}

#[test]
fn perpetual_mark_overrides_spot() {
    // Mark 60,100: equity = 20,000 + (-2)(60,100 - 60,000) = 19,800;
    // scanning risk = 2 x 60,100 x 0.10 = 12,020; standard IM = 2 x 60,100 x 0.10 = 12,020.
    let p = portfolio(vec![account(
        "a",
        json!({"USDC": 20000}),
        vec![linear("BTC-PERPETUAL", -2.0, 60000.0)],
    )]);
    let m = market_with(|v| v["marks"] = json!({ "BTC-PERPETUAL": 60100 }));
    let a = run(&p, &m, &params(), NO_LIQ).accounts.remove(0);
    assert_close(a.equity, 19800.0, "equity");
    assert_close(a.grid_risk, 12020.0, "grid risk");
    assert_close(a.standard_initial_margin, 12020.0, "standard IM");
    assert_close(
        a.standard_maintenance_margin,
        6010.0,
        "standard MM = 2 x 60,100 x 0.05",
    );
}

#[test]
fn long_spot_btc_balance_with_haircut() {
    // 2 BTC at 60,000 and 1,000 USDC.
    // equity = 2 x 60,000 + 1,000 = 121,000
    // margin balance = 2 x 60,000 x (1 - 0.05) + 1,000 = 114,000 + 1,000 = 115,000
    // The balance is a long exposure: full range down loses 2 x 60,000 x 0.10 = 12,000.
    let a = one(json!({"BTC": 2.0, "USDC": 1000}), vec![], NO_LIQ);
    assert_close(a.equity, 121000.0, "equity");
    assert_close(a.margin_balance, 115000.0, "margin balance");
    assert_close(
        a.scanning_risk["BTC"],
        12000.0,
        "scanning risk of the spot balance",
    );
    assert_close(a.grid_risk, 12000.0, "grid risk");
    assert_eq!(a.worst_scenario.as_deref(), Some("single BTC -1/1 vol+"));
    assert_close(
        a.standard_initial_margin,
        0.0,
        "no positions, no standard margin",
    );

    // A USDC borrow is valued in full, no haircut: 114,000 - 50,000 = 64,000.
    let a = one(json!({"BTC": 2.0, "USDC": -50000}), vec![], NO_LIQ);
    assert_close(a.equity, 70000.0, "equity with a borrow");
    assert_close(a.margin_balance, 64000.0, "margin balance with a borrow");

    // A BTC borrow is also valued in full (it would *gain* from a haircut otherwise):
    // equity = margin balance = 100,000 - 60,000 = 40,000; short 1 BTC: full up loses 6,000.
    let a = one(json!({"BTC": -1.0, "USDC": 100000}), vec![], NO_LIQ);
    assert_close(a.equity, 40000.0, "equity, BTC borrow");
    assert_close(
        a.margin_balance,
        40000.0,
        "margin balance, BTC borrow: no haircut",
    );
    assert_close(a.grid_risk, 6000.0, "grid risk of a 1 BTC borrow");
    assert_eq!(a.worst_scenario.as_deref(), Some("single BTC 1/1 vol+"));
}

#[test]
fn stable_asset_haircut_applies_and_never_moves() {
    // USDT is stable with a 2% haircut: 10,000 USDT -> margin balance 9,800, no exposure.
    let p = portfolio(vec![account("a", json!({"USDT": 10000}), vec![])]);
    let prm = params_with(|v| v["collateral"]["USDT"] = json!({ "haircut": 0.02 }));
    let m = market_with(|v| v["prices"]["USDT"] = json!(1.0));
    let a = run(&p, &m, &prm, WITH_LIQ).accounts.remove(0);
    assert_close(a.equity, 10000.0, "equity");
    assert_close(a.margin_balance, 9800.0, "margin balance");
    assert_close(a.grid_risk, 0.0, "a stable balance has no grid risk");
    assert!(a.scanning_risk.is_empty() && a.liquidation_prices.is_empty());
    assert_eq!(a.worst_scenario, None);
    assert_eq!(a.capital_efficiency, None, "IM is 0");
    assert_eq!(
        a.status,
        Status::Healthy,
        "no positions, no requirement: healthy"
    );
}

#[test]
fn btc_perpetual_hedged_by_spot_has_no_grid_risk() {
    // 2 BTC spot and -2 BTC-PERPETUAL at 60,000: every scenario's P&L is
    // 2 x 60,000 x m - 2 x 60,000 x m = 0.
    // Standard margin still charges the perp alone: 2 x 60,000 x 0.10 = 12,000.
    let a = one(
        json!({"BTC": 2.0}),
        vec![linear("BTC-PERPETUAL", -2.0, 60000.0)],
        NO_LIQ,
    );
    assert_close(a.equity, 120000.0, "equity");
    assert_close(a.margin_balance, 114000.0, "margin balance");
    assert_close(a.grid_risk, 0.0, "grid risk");
    assert_close(a.scanning_risk["BTC"], 0.0, "scanning risk");
    assert_close(a.initial_margin, 0.0, "IM");
    assert_close(a.standard_initial_margin, 12000.0, "standard IM");
    assert_eq!(
        a.capital_efficiency, None,
        "capital efficiency is null when IM is 0"
    );
    assert_eq!(a.status, Status::Healthy);
}

/// Bob's book: +1.5 BTC-PERPETUAL @ 59,000, -30 ETH-PERPETUAL @ 3,050, 40,000 USDC.
fn bob_like() -> pmargin_core::Portfolio {
    portfolio(vec![account(
        "bob",
        json!({"USDC": 40000}),
        vec![
            linear("BTC-PERPETUAL", 1.5, 59000.0),
            linear("ETH-PERPETUAL", -30.0, 3050.0),
        ],
    )])
}

#[test]
fn two_underlyings_where_decoupling_sets_the_grid_risk() {
    // Notionals: BTC long 1.5 x 60,000 = 90,000 (R 10%), ETH short 30 x 3,000 = 90,000 (R 12%).
    // single BTC: full down  -> 90,000 x 0.10 = 9,000       (extreme 0.35 x 0.20 x 90,000 = 6,300)
    // single ETH: full up    -> 90,000 x 0.12 = 10,800      (extreme 0.35 x 0.24 x 90,000 = 7,560)
    // tandem f=+1:  BTC +9,000, ETH -10,800 -> loss 1,800   (extreme 0.35 x 2 x 1,800 = 1,260)
    // decoupling with delta = 0.8, BTC down 8% and ETH up 9.6%:
    //               90,000 x 0.08 + 90,000 x 0.096 = 7,200 + 8,640 = 15,840  <- the worst
    let prm = params_with(|v| v["grid"] = json!({ "decoupling_fraction": 0.8 }));
    let a = run(&bob_like(), &market(), &prm, NO_LIQ).accounts.remove(0);
    assert_close(a.scanning_risk["BTC"], 9000.0, "scanning BTC");
    assert_close(a.scanning_risk["ETH"], 10800.0, "scanning ETH");
    assert_close(a.grid_risk, 15840.0, "grid risk from decoupling");
    let label = a.worst_scenario.clone().unwrap();
    assert!(label.starts_with("decoupling"), "{label}");
    assert!(
        label == "decoupling BTC down, others up" || label == "decoupling ETH up, others down",
        "{label}"
    );
    assert_close(a.initial_margin, 15840.0, "IM");
    assert_close(a.maintenance_margin, 11880.0, "MM = 0.75 x 15,840");

    // delta = 0.6: 90,000 x 0.06 + 90,000 x 0.072 = 5,400 + 6,480 = 11,880 > 10,800.
    let prm = params_with(|v| v["grid"] = json!({ "decoupling_fraction": 0.6 }));
    let a = run(&bob_like(), &market(), &prm, NO_LIQ).accounts.remove(0);
    assert_close(
        a.grid_risk,
        11880.0,
        "grid risk from decoupling at delta 0.6",
    );
    assert!(a.worst_scenario.unwrap().starts_with("decoupling"));

    // Default delta = 0.5: decoupling = 4,500 + 5,400 = 9,900 < 10,800, so single ETH wins
    // (with a linear book and delta <= 0.5, decoupling is at most the mean of the two singles).
    let a = run(&bob_like(), &market(), &params(), NO_LIQ)
        .accounts
        .remove(0);
    assert_close(a.grid_risk, 10800.0, "grid risk, default delta");
    assert_eq!(a.worst_scenario.as_deref(), Some("single ETH 1/1 vol+"));
}

#[test]
fn three_underlyings_decoupling_names_the_odd_one_out() {
    // +1 BTC perp (60,000, R 10%), -20 ETH perp (60,000, R 12%), -200 SOL perp (30,000, R 20%).
    // singles: BTC 6,000, ETH 7,200, SOL 6,000.
    // tandem f=+1: -6,000 + 7,200 + 6,000 = 7,200 (extreme: 0.35 x 2 x 7,200 = 5,040).
    // decoupling (0.5) "BTC down, others up": 3,000 + 3,600 + 3,000 = 9,600  <- the worst
    //            "ETH up, others down": 3,600 + 3,000 - 3,000 = 3,600
    //            "SOL up, others down": 3,000 + 3,000 - 3,600 = 2,400
    let a = one(
        json!({"USDC": 50000}),
        vec![
            linear("BTC-PERPETUAL", 1.0, 60000.0),
            linear("ETH-PERPETUAL", -20.0, 3000.0),
            linear("SOL-PERPETUAL", -200.0, 150.0),
        ],
        NO_LIQ,
    );
    assert_close(a.scanning_risk["BTC"], 6000.0, "scanning BTC");
    assert_close(a.scanning_risk["ETH"], 7200.0, "scanning ETH");
    assert_close(a.scanning_risk["SOL"], 6000.0, "scanning SOL");
    assert_close(a.grid_risk, 9600.0, "grid risk");
    assert_eq!(
        a.worst_scenario.as_deref(),
        Some("decoupling BTC down, others up")
    );

    // Flip BTC to short: "BTC up, others down" is now the odd one out:
    // BTC -1: +5% loses 3,000; ETH -20 and SOL -200 gain 3,600 and 3,000 when they fall: -3,600.
    // Instead the worst is tandem up: 6,000 + 7,200 + 6,000 = 19,200.
    let a = one(
        json!({"USDC": 50000}),
        vec![
            linear("BTC-PERPETUAL", -1.0, 60000.0),
            linear("ETH-PERPETUAL", -20.0, 3000.0),
            linear("SOL-PERPETUAL", -200.0, 150.0),
        ],
        NO_LIQ,
    );
    assert_close(a.grid_risk, 19200.0, "grid risk, all short");
    assert_eq!(a.worst_scenario.as_deref(), Some("tandem 1/1 vol+"));

    // Long BTC and ETH, short SOL: "SOL up, others down" = 6,000 x 0.5 x 3 ... by hand:
    // BTC +1 down 5%: 3,000; ETH +20 down 6%: 3,600; SOL -200 up 10%: 3,000 -> 9,600.
    let a = one(
        json!({"USDC": 50000}),
        vec![
            linear("BTC-PERPETUAL", 1.0, 60000.0),
            linear("ETH-PERPETUAL", 20.0, 3000.0),
            linear("SOL-PERPETUAL", -200.0, 150.0),
        ],
        NO_LIQ,
    );
    // singles 6,000 / 7,200 / 6,000; tandem down: 6,000 + 7,200 - 6,000 = 7,200.
    assert_close(a.grid_risk, 9600.0, "grid risk, SOL decoupled");
    assert_eq!(
        a.worst_scenario.as_deref(),
        Some("decoupling SOL up, others down")
    );
}

#[test]
fn long_btc_and_long_eth_is_driven_by_tandem_full_range_down() {
    // +1 BTC perp (60,000 notional, R 10%) and +20 ETH perp (60,000 notional, R 12%), 30,000 USDC.
    // single BTC full down 6,000; single ETH full down 7,200;
    // tandem full down: 6,000 + 7,200 = 13,200; tandem extreme down 0.35 x (12,000 + 14,400) = 9,240;
    // decoupling (0.5): |3,000 - 3,600| = 600 at most.
    let a = one(
        json!({"USDC": 30000}),
        vec![
            linear("BTC-PERPETUAL", 1.0, 60000.0),
            linear("ETH-PERPETUAL", 20.0, 3000.0),
        ],
        NO_LIQ,
    );
    assert_close(a.scanning_risk["BTC"], 6000.0, "scanning BTC");
    assert_close(a.scanning_risk["ETH"], 7200.0, "scanning ETH");
    assert_close(a.grid_risk, 13200.0, "grid risk = tandem");
    assert_eq!(a.worst_scenario.as_deref(), Some("tandem -1/1 vol+"));
    // Standard: 60,000 x 0.10 + 60,000 x 0.10 = 12,000: portfolio margin is *higher* here.
    assert_close(a.standard_initial_margin, 12000.0, "standard IM");
    assert_close(
        a.capital_efficiency.unwrap(),
        12000.0 / 13200.0,
        "capital efficiency",
    );
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

#[test]
fn short_call_grid_risk_is_the_max_of_sixteen_black76_revaluations() {
    // as_of 24 Nov 2026 20:00 UTC, expiry 27 Dec 2026 08:00 UTC: 32.5 days, T = 32.5 / 365.
    // Forward = marks["BTC-27DEC26"] = 60,450. Strike 62,000 lies between smile points
    // 60,000 (0.62) and 80,000 (0.64); linear in ln(K/F):
    //   w = ln(62,000/60,000) / ln(80,000/60,000) = 0.0327898 / 0.2876821 = 0.1139794
    //   sigma = 0.62 + 0.02 x 0.1139794 = 0.6222796
    //   C = Black-76(60,450, 62,000, 0.0890411, 0.6222796) = 3,795.84
    // 3 short calls: equity = 20,000 - 3 x 3,795.84 = 8,612.47.
    // Worst single scenario: +10% with vol +10 points, loss about 12,756.29.
    let t = 32.5 / 365.0;
    let f = 60450.0;
    let w = (62000f64 / 60000.0).ln() / (80000f64 / 60000.0).ln();
    let sigma = 0.62 + 0.02 * w;
    assert!((sigma - 0.6222796).abs() < 1e-7);
    let c = black76(true, f, 62000.0, t, sigma, 0.0);
    assert!((c - 3795.84).abs() < 0.01, "{c}");

    let p = portfolio(vec![account(
        "a",
        json!({"USDC": 20000}),
        vec![option("BTC-27DEC26-62000-C", -3.0)],
    )]);
    let m = market_with(|v| {
        v["as_of"] = json!("2026-11-24T20:00:00Z");
        v["marks"] = json!({ "BTC-27DEC26": 60450 });
        v["vols"]["BTC"] = json!({ "default": 0.60, "points": [
            { "expiry": "27DEC26", "strike": 50000, "iv": 0.68 },
            { "expiry": "27DEC26", "strike": 60000, "iv": 0.62 },
            { "expiry": "27DEC26", "strike": 80000, "iv": 0.64 } ] });
    });
    let a = run(&p, &m, &params(), NO_LIQ).accounts.remove(0);
    assert_close(a.equity, 20000.0 - 3.0 * c, "equity");
    assert_close(a.margin_balance, 20000.0 - 3.0 * c, "margin balance");

    let scenarios = sixteen(0.0, &[(true, -3.0, f, 62000.0, t, sigma)], 0.10, 0.10, 0.10);
    let (label, loss) = worst(&scenarios);
    assert_eq!(label, "1/1 vol+");
    assert!((loss - 12756.29).abs() < 0.01, "{loss}");
    assert_close(a.grid_risk, loss, "grid risk");
    assert_close(a.scanning_risk["BTC"], loss, "scanning risk");
    assert_eq!(a.worst_scenario.as_deref(), Some("single BTC 1/1 vol+"));
    // SOM = 0.01 x 3 x 60,000 = 1,800 (spot, not forward) < grid.
    assert_close(a.short_option_minimum, 1800.0, "short option minimum");
    assert_close(a.initial_margin, loss, "IM = grid");
    // Standard: OTM = 62,000 - 60,000 = 2,000; 0.15 x 60,000 - 2,000 = 7,000 > 6,000 floor;
    // 3 x 7,000 = 21,000. MM 3 x 0.075 x 60,000 = 13,500.
    assert_close(a.standard_initial_margin, 21000.0, "standard IM");
    assert_close(a.standard_maintenance_margin, 13500.0, "standard MM");
}

#[test]
fn low_vol_short_call_uses_the_vol_floor_in_every_vol_down_scenario() {
    // ivs 0.05 with a 10-point vol down shift: sigma' = max(0.05 - 0.10, 0.01) = 0.01.
    // T = 33/365, F = 60,000 (no future mark), strike 62,000, 3 short.
    let p = portfolio(vec![account(
        "a",
        json!({"USDC": 20000}),
        vec![option("BTC-27DEC26-62000-C", -3.0)],
    )]);
    let m = market_with(|v| v["ivs"] = json!({ "BTC-27DEC26-62000-C": 0.05 }));
    let a = run(&p, &m, &params(), NO_LIQ).accounts.remove(0);
    let c = black76(true, BTC, 62000.0, T_27DEC26, 0.05, 0.0);
    assert_close(a.equity, 20000.0 - 3.0 * c, "equity");
    let scenarios = sixteen(
        0.0,
        &[(true, -3.0, BTC, 62000.0, T_27DEC26, 0.05)],
        0.10,
        0.10,
        0.10,
    );
    let (label, loss) = worst(&scenarios);
    assert_eq!(label, "1/1 vol+");
    assert_close(a.grid_risk, loss, "grid risk");
    // Check one vol-down scenario really is priced at 0.01: +10%, vol- loss
    // = 3 x (C(66,000, 0.01) - C(60,000, 0.05)), about 3 x 4,000 - 3 x c.
    let down = &scenarios.iter().find(|(l, _)| l == "1/1 vol-").unwrap().1;
    let expect = 3.0 * (black76(true, 66000.0, 62000.0, T_27DEC26, 0.01, 0.0) - c);
    assert!((down - expect).abs() < 1e-9);
}

#[test]
fn vol_floor_is_decisive_for_a_long_low_vol_straddle() {
    // 100 long ETH-27DEC26-3000 C and P with iv 0.05; ETH range 1%, vol shifts 10 points.
    // ATM straddle value = 2 x Black-76(3,000, 3,000, 33/365, 0.05) = 2 x 17.993 = 35.986.
    // The worst scenario is "no price move, vol down": the vol goes to max(0.05 - 0.10, 0.01)
    // = 0.01, so the loss is 100 x (35.986 - 7.198) = 2,878.9. Flooring at 0 instead would
    // give the full 3,598.6, and dropping the floor would price at a negative vol.
    let p = portfolio(vec![account(
        "a",
        json!({"USDC": 10000}),
        vec![
            option("ETH-27DEC26-3000-C", 100.0),
            option("ETH-27DEC26-3000-P", 100.0),
        ],
    )]);
    let prm = params_with(|v| v["underlyings"]["ETH"] = underlying(0.01, 0.10, 0.10, 0.05));
    let m = market_with(|v| {
        v["ivs"] = json!({ "ETH-27DEC26-3000-C": 0.05, "ETH-27DEC26-3000-P": 0.05 })
    });
    let a = run(&p, &m, &prm, NO_LIQ).accounts.remove(0);
    let opts = [
        (true, 100.0, ETH, 3000.0, T_27DEC26, 0.05),
        (false, 100.0, ETH, 3000.0, T_27DEC26, 0.05),
    ];
    let (label, loss) = worst(&sixteen(0.0, &opts, 0.01, 0.10, 0.10));
    assert_eq!(label, "0/1 vol-");
    let by_hand = 100.0
        * 2.0
        * (black76(true, ETH, 3000.0, T_27DEC26, 0.05, 0.0)
            - black76(true, ETH, 3000.0, T_27DEC26, 0.01, 0.0));
    assert_close(loss, by_hand, "the test's own grid");
    assert!((loss - 2878.9).abs() < 0.1, "{loss}");
    assert_close(a.grid_risk, loss, "grid risk");
    assert_eq!(a.worst_scenario.as_deref(), Some("single ETH 0/1 vol-"));
    assert_close(a.short_option_minimum, 0.0, "long options have no SOM");
    assert_close(
        a.standard_initial_margin,
        0.0,
        "long options have no standard margin",
    );
}

#[test]
fn option_at_expiry_is_worth_intrinsic() {
    // BTC-24NOV26-50000-C at 24 Nov 2026 08:00: T = 0, value = max(60,000 - 50,000, 0) = 10,000.
    // Scenarios are intrinsic too: full down 10,000 - 4,000 = 6,000 loss,
    // extreme down 0.35 x (10,000 - 0) = 3,500. Grid = 6,000.
    let a = one(
        json!({"USDC": 1000}),
        vec![option("BTC-24NOV26-50000-C", 1.0)],
        NO_LIQ,
    );
    assert_close(a.equity, 11000.0, "equity");
    assert_close(a.grid_risk, 6000.0, "grid risk");
}

#[test]
fn rate_discounts_option_values() {
    // r = 5%: value = exp(-0.05 x 33/365) x undiscounted Black-76.
    let p = portfolio(vec![account(
        "a",
        json!({"USDC": 0}),
        vec![option("BTC-27DEC26-60000-P", 1.0)],
    )]);
    let m = market_with(|v| v["rate"] = json!(0.05));
    let a = run(&p, &m, &params(), NO_LIQ).accounts.remove(0);
    let undiscounted = black76(false, BTC, 60000.0, T_27DEC26, 0.60, 0.0);
    assert_close(
        a.equity,
        (-0.05 * T_27DEC26).exp() * undiscounted,
        "discounted put",
    );
}

// ---------------------------------------------------------------------------------------------
// Requirements and status
// ---------------------------------------------------------------------------------------------

/// 10 short BTC-27DEC26-20000-P: far out of the money (value about 5.5e-7), so the grid risk
/// is tiny (about 0.016) and the short option minimum 0.01 x 10 x 60,000 = 6,000 sets IM.
fn deep_otm_short_put(usdc: f64) -> pmargin_core::report::AccountReport {
    one(
        json!({"USDC": usdc}),
        vec![option("BTC-27DEC26-20000-P", -10.0)],
        NO_LIQ,
    )
}

#[test]
fn short_option_minimum_sets_initial_margin_and_mm_is_three_quarters() {
    let a = deep_otm_short_put(10000.0);
    let opts = [(false, -10.0, BTC, 20000.0, T_27DEC26, 0.60)];
    let (_, grid) = worst(&sixteen(0.0, &opts, 0.10, 0.10, 0.10));
    assert!(grid > 0.0 && grid < 0.02, "{grid}");
    assert_close(a.grid_risk, grid, "grid risk");
    assert_close(a.short_option_minimum, 6000.0, "SOM = 0.01 x 10 x 60,000");
    assert_eq!(a.statistical_risk, 0.0, "no history, no statistical risk");
    assert_close(a.initial_margin, 6000.0, "IM = max(grid, stat, SOM) = SOM");
    assert_close(a.maintenance_margin, 4500.0, "MM = 0.75 x 6,000");
    // Standard: OTM = 40,000; 9,000 - 40,000 < 0, so the 0.10 x 60,000 floor: 10 x 6,000.
    assert_close(a.standard_initial_margin, 60000.0, "standard IM");
    assert_close(
        a.capital_efficiency.unwrap(),
        10.0,
        "capital efficiency 60,000 / 6,000",
    );
}

#[test]
fn status_follows_margin_balance_against_im_and_mm() {
    // IM = 6,000, MM = 4,500; the puts are worth 10 x 5.5e-7, so margin balance = USDC - 6e-6.
    assert_eq!(deep_otm_short_put(6000.01).status, Status::Healthy);
    assert_eq!(deep_otm_short_put(5000.0).status, Status::Restricted);
    assert_eq!(deep_otm_short_put(4500.01).status, Status::Restricted);
    assert_eq!(deep_otm_short_put(4499.99).status, Status::Liquidatable);
    assert_eq!(deep_otm_short_put(1.0).status, Status::Liquidatable);
    assert_eq!(deep_otm_short_put(-1.0).status, Status::Bankrupt);
    // Without positions: healthy at any non-negative balance, bankrupt below 0.
    assert_eq!(
        one(json!({"USDC": 0}), vec![], NO_LIQ).status,
        Status::Healthy
    );
    assert_eq!(one(json!({}), vec![], NO_LIQ).status, Status::Healthy);
    assert_eq!(
        one(json!({"USDC": -5}), vec![], NO_LIQ).status,
        Status::Bankrupt
    );
}

#[test]
fn status_serialises_in_lower_case() {
    let a = deep_otm_short_put(5000.0);
    let v = serde_json::to_value(&a).unwrap();
    assert_eq!(v["status"], json!("restricted"));
    assert_eq!(v["capital_efficiency"], json!(10.0));
    let hedged = one(
        json!({"BTC": 1.0}),
        vec![linear("BTC-PERPETUAL", -1.0, 60000.0)],
        NO_LIQ,
    );
    assert_eq!(
        serde_json::to_value(&hedged).unwrap()["capital_efficiency"],
        serde_json::Value::Null
    );
}

#[test]
fn perpetual_statuses_at_the_thresholds() {
    // -1 BTC perp at 60,000: IM 6,000, MM 4,500; equity = USDC.
    let st = |usdc: f64| {
        one(
            json!({"USDC": usdc}),
            vec![linear("BTC-PERPETUAL", -1.0, 60000.0)],
            NO_LIQ,
        )
    };
    let a = st(6000.0);
    assert_close(a.initial_margin, 6000.0, "IM");
    assert_eq!(a.status, Status::Healthy, "margin balance == IM is healthy");
    assert_eq!(st(5999.99).status, Status::Restricted);
    assert_eq!(
        st(4500.0).status,
        Status::Restricted,
        "margin balance == MM is restricted"
    );
    assert_eq!(st(4499.99).status, Status::Liquidatable);
    assert_eq!(
        st(0.0).status,
        Status::Liquidatable,
        "0 is liquidatable, not bankrupt"
    );
    assert_eq!(st(-0.01).status, Status::Bankrupt);
}

// ---------------------------------------------------------------------------------------------
// Standard margin
// ---------------------------------------------------------------------------------------------

#[test]
fn standard_margin_position_by_position() {
    // Market: BTC-PERPETUAL mark 60,100; BTC-27DEC26 mark 60,450; ETH futures at spot 3,000.
    //  -2 BTC-PERPETUAL:         IM 2 x 60,100 x 0.10 = 12,020     MM 2 x 60,100 x 0.05 = 6,010
    //  +3 BTC-27DEC26:           IM 3 x 60,450 x 0.10 = 18,135     MM 9,067.5
    // -10 ETH-27DEC26:           IM 10 x 3,000 x 0.10 =  3,000     MM 1,500
    //  -2 BTC-27DEC26-62000-C:   OTM 2,000: 0.15 x 60,000 - 2,000 = 7,000 > 6,000
    //                            IM 2 x 7,000 = 14,000             MM 2 x 4,500 = 9,000
    //  -1 BTC-27DEC26-45000-P:   OTM 15,000: 9,000 - 15,000 < 6,000 floor
    //                            IM 6,000                          MM 4,500
    //  -1 BTC-27DEC26-70000-P:   in the money, OTM 0: IM 9,000     MM 4,500
    //  +4 BTC-27DEC26-50000-C:   long option: 0
    // -20 ETH-27DEC26-3300-C:    OTM 300: 0.15 x 3,000 - 300 = 150 < 300 floor: 20 x 300 = 6,000
    //                            MM 20 x 225 = 4,500
    // Total IM = 12,020 + 18,135 + 3,000 + 14,000 + 6,000 + 9,000 + 0 + 6,000 = 68,155
    // Total MM = 6,010 + 9,067.5 + 1,500 + 9,000 + 4,500 + 4,500 + 0 + 4,500 = 39,077.5
    let p = portfolio(vec![account(
        "std",
        json!({"USDC": 500000}),
        vec![
            linear("BTC-PERPETUAL", -2.0, 60000.0),
            linear("BTC-27DEC26", 3.0, 60000.0),
            linear("ETH-27DEC26", -10.0, 3000.0),
            option("BTC-27DEC26-62000-C", -2.0),
            option("BTC-27DEC26-45000-P", -1.0),
            option("BTC-27DEC26-70000-P", -1.0),
            option("BTC-27DEC26-50000-C", 4.0),
            option("ETH-27DEC26-3300-C", -20.0),
        ],
    )]);
    let m = market_with(|v| v["marks"] = json!({ "BTC-PERPETUAL": 60100, "BTC-27DEC26": 60450 }));
    let a = run(&p, &m, &params(), NO_LIQ).accounts.remove(0);
    assert_close(a.standard_initial_margin, 68155.0, "standard IM");
    assert_close(a.standard_maintenance_margin, 39077.5, "standard MM");
    assert!(a.initial_margin > 0.0);
    assert_close(
        a.capital_efficiency.unwrap(),
        68155.0 / a.initial_margin,
        "capital efficiency",
    );
    // SOM: 0.01 x (2 + 1 + 1) x 60,000 + 0.01 x 20 x 3,000 = 2,400 + 600 = 3,000.
    assert_close(a.short_option_minimum, 3000.0, "short option minimum");
    // Equity (futures P&L at their marks): -2 x 100 + 3 x 450 + 0 = 1,150 plus option values.
    let t = T_27DEC26;
    let opt = -2.0 * black76(true, 60450.0, 62000.0, t, 0.60, 0.0)
        - black76(false, 60450.0, 45000.0, t, 0.60, 0.0)
        - black76(false, 60450.0, 70000.0, t, 0.60, 0.0)
        + 4.0 * black76(true, 60450.0, 50000.0, t, 0.60, 0.0)
        - 20.0 * black76(true, 3000.0, 3300.0, t, 0.70, 0.0);
    assert_close(a.equity, 500000.0 + 1150.0 + opt, "equity");
}
