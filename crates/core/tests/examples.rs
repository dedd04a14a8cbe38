//! The repository's examples (`examples/*.json`) run end to end, with alice, bob and carol
//! checked against figures computed by hand or with the test's own Black-76.

mod common;

use common::*;
use pmargin_core::{margin_report, Market, Params, Portfolio, ReportOptions, Status};
use std::path::{Path, PathBuf};

const FILES: [&str; 3] = ["portfolio.json", "market.json", "params.json"];

/// The examples ship with the repository, so a missing file is a broken checkout, not a
/// reason to skip.
fn examples_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for name in FILES {
        assert!(
            dir.join(name).is_file(),
            "{} is missing: the examples test needs the repository's examples/",
            dir.join(name).display()
        );
    }
    dir
}

fn read(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(dir: &Path) -> (Portfolio, Market, Params) {
    (
        Portfolio::parse("portfolio.json", &read(dir, "portfolio.json")).unwrap(),
        Market::parse("market.json", &read(dir, "market.json")).unwrap(),
        Params::parse("params.json", &read(dir, "params.json")).unwrap(),
    )
}

#[test]
fn report_header_and_account_order() {
    let dir = examples_dir();
    let (p, m, prm) = load(&dir);
    let r = margin_report(&p, &m, &prm, None, NO_LIQ).unwrap();
    assert_eq!(r.as_of, "2026-11-24T08:00:00Z");
    assert_eq!(r.params_version, 1);
    let ids: Vec<&str> = r.accounts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["alice", "bob", "carol"]);
}

#[test]
fn bob_in_full() {
    // +1.5 BTC-PERPETUAL @ 59,000, -30 ETH-PERPETUAL @ 3,050, 40,000 USDC. No perp marks:
    // marks are spot, BTC 60,000 and ETH 3,000.
    //   equity = 40,000 + 1.5 x 1,000 + (-30) x (-50) = 43,000 = margin balance (USDC only)
    //   single BTC: 90,000 x 0.10 = 9,000 (full down); single ETH: 90,000 x 0.12 = 10,800 (full up)
    //   tandem: 90,000 x (0.12 - 0.10) = 1,800 at most
    //   decoupling (0.5): BTC down 5% and ETH up 6%: 4,500 + 5,400 = 9,900 < 10,800
    //   grid = 10,800 (single ETH 1/1 vol+), IM = 10,800, MM = 8,100, SOM 0
    //   standard IM = 90,000 x 0.10 x 2 = 18,000; MM = 9,000; efficiency 18,000 / 10,800
    //   liquidation (see tests/liquidation.rs): BTC down 60,000 x 55,100 / 90,000,
    //   ETH up 3,000 x 133,000 / 98,100.
    let dir = examples_dir();
    let (p, m, prm) = load(&dir);
    let r = margin_report(&p, &m, &prm, None, ReportOptions::default()).unwrap();
    let bob = find(&r, "bob");
    assert_close(bob.equity, 43000.0, "equity");
    assert_close(bob.margin_balance, 43000.0, "margin balance");
    assert_close(bob.scanning_risk["BTC"], 9000.0, "scanning BTC");
    assert_close(bob.scanning_risk["ETH"], 10800.0, "scanning ETH");
    assert_close(bob.grid_risk, 10800.0, "grid risk");
    assert_eq!(bob.worst_scenario.as_deref(), Some("single ETH 1/1 vol+"));
    assert_close(bob.short_option_minimum, 0.0, "SOM");
    assert_close(bob.statistical_risk, 0.0, "no history");
    assert_close(bob.initial_margin, 10800.0, "IM");
    assert_close(bob.maintenance_margin, 8100.0, "MM");
    assert_eq!(bob.status, Status::Healthy);
    assert_close(bob.standard_initial_margin, 18000.0, "standard IM");
    assert_close(bob.standard_maintenance_margin, 9000.0, "standard MM");
    assert_close(
        bob.capital_efficiency.unwrap(),
        18000.0 / 10800.0,
        "capital efficiency",
    );
    let btc = bob.liquidation_prices["BTC"];
    let eth = bob.liquidation_prices["ETH"];
    assert_close_rel(
        btc.down.unwrap(),
        60000.0 * 55100.0 / 90000.0,
        1e-6,
        "BTC down",
    );
    assert_eq!(btc.up, None);
    assert_close_rel(eth.up.unwrap(), 3000.0 * 133000.0 / 98100.0, 1e-6, "ETH up");
    assert_eq!(eth.down, None);

    // The decoupling scenarios are there: raise the fraction to 0.6 and they set the grid:
    // 90,000 x 0.06 + 90,000 x 0.072 = 11,880 > 10,800.
    let mut v: serde_json::Value = serde_json::from_str(&read(&dir, "params.json")).unwrap();
    v["grid"]["decoupling_fraction"] = serde_json::json!(0.6);
    let prm6 = Params::parse("params.json", &v.to_string()).unwrap();
    let r = margin_report(&p, &m, &prm6, None, NO_LIQ).unwrap();
    let bob = find(&r, "bob");
    assert_close(bob.grid_risk, 11880.0, "grid risk at delta 0.6");
    assert!(bob
        .worst_scenario
        .as_deref()
        .unwrap()
        .starts_with("decoupling"));
}

#[test]
fn alice_options_against_own_black76() {
    // USDC 250,000, 2 BTC; -2 BTC-PERPETUAL @ 61,000; +5 BTC-27DEC26-60000-P; -5 BTC-27DEC26-80000-C.
    // Forward 60,450 (the future's mark), T = 33/365. Vols from the smile: 60,000 is a point
    // (0.62); 80,000 is the outermost point (0.64).
    //   equity = 250,000 + 120,000 + (-2)(60,000 - 61,000) + 5 P - 5 C = 372,000 + 5 (P - C)
    //   margin balance = 250,000 + 114,000 + 2,000 + 5 (P - C)
    // The perp and the BTC balance cancel in every scenario (-2 x 60,000 m + 2 x 60,000 m),
    // so the grid is the options' alone.
    //   SOM = 0.01 x 5 x 60,000 = 3,000
    //   standard IM: perp 2 x 60,000 x 0.10 = 12,000; call OTM 20,000: 9,000 - 20,000 < 6,000
    //   floor -> 5 x 6,000 = 30,000; total 42,000. MM 6,000 + 5 x 4,500 = 28,500.
    let dir = examples_dir();
    let (p, m, prm) = load(&dir);
    let r = margin_report(&p, &m, &prm, None, NO_LIQ).unwrap();
    let a = find(&r, "alice");
    let (f, t) = (60450.0, T_27DEC26);
    let put = black76(false, f, 60000.0, t, 0.62, 0.0);
    let call = black76(true, f, 80000.0, t, 0.64, 0.0);
    assert_close(a.equity, 372000.0 + 5.0 * (put - call), "equity");
    assert_close(
        a.margin_balance,
        366000.0 + 5.0 * (put - call),
        "margin balance",
    );
    let opts = [
        (false, 5.0, f, 60000.0, t, 0.62),
        (true, -5.0, f, 80000.0, t, 0.64),
    ];
    let (label, grid) = worst(&sixteen(0.0, &opts, 0.10, 0.10, 0.10));
    assert_close(a.grid_risk, grid, "grid risk");
    assert_close(a.scanning_risk["BTC"], grid, "scanning risk");
    assert_eq!(
        a.worst_scenario.as_deref(),
        Some(format!("single BTC {label}").as_str())
    );
    assert_close(a.short_option_minimum, 3000.0, "SOM");
    assert_close(a.initial_margin, grid.max(3000.0), "IM");
    assert_close(a.maintenance_margin, 0.75 * grid.max(3000.0), "MM");
    assert_close(a.standard_initial_margin, 42000.0, "standard IM");
    assert_close(a.standard_maintenance_margin, 28500.0, "standard MM");
}

#[test]
fn carol_short_straddle_against_own_black76() {
    // USDC 12,000, 10 ETH (7% haircut); -10 ETH-27DEC26-3000-C and -P, vol 0.70 (default),
    // F = spot 3,000 (no ETH future mark), T = 33/365.
    //   equity = 12,000 + 30,000 - 10 (C + P); margin balance = 12,000 + 27,900 - 10 (C + P)
    //   the ETH balance moves: linear notional 10 x 3,000 = 30,000; range 12%, vol 12 points
    //   SOM = 0.01 x 20 x 3,000 = 600
    //   standard: at the money, OTM 0: 20 x 0.15 x 3,000 = 9,000; MM 20 x 0.075 x 3,000 = 4,500
    let dir = examples_dir();
    let (p, m, prm) = load(&dir);
    let r = margin_report(&p, &m, &prm, None, NO_LIQ).unwrap();
    let c = find(&r, "carol");
    let t = T_27DEC26;
    let (call, put) = (
        black76(true, 3000.0, 3000.0, t, 0.70, 0.0),
        black76(false, 3000.0, 3000.0, t, 0.70, 0.0),
    );
    // At the money forward, call = put (put-call parity with F = K).
    assert!((call - put).abs() < 1e-9);
    assert_close(c.equity, 42000.0 - 10.0 * (call + put), "equity");
    assert_close(
        c.margin_balance,
        39900.0 - 10.0 * (call + put),
        "margin balance",
    );
    let opts = [
        (true, -10.0, 3000.0, 3000.0, t, 0.70),
        (false, -10.0, 3000.0, 3000.0, t, 0.70),
    ];
    let (label, grid) = worst(&sixteen(30000.0, &opts, 0.12, 0.12, 0.12));
    assert_close(c.grid_risk, grid, "grid risk");
    assert_eq!(
        c.worst_scenario.as_deref(),
        Some(format!("single ETH {label}").as_str())
    );
    assert_close(c.short_option_minimum, 600.0, "SOM");
    assert_close(c.initial_margin, grid.max(600.0), "IM");
    assert_close(c.standard_initial_margin, 9000.0, "standard IM");
    assert_close(c.standard_maintenance_margin, 4500.0, "standard MM");
    assert_close(
        c.capital_efficiency.unwrap(),
        9000.0 / grid.max(600.0),
        "capital efficiency",
    );
}

#[test]
fn the_example_params_equal_the_defaults_of_a_minimal_set() {
    // Every section but version and underlyings may be left out; the example spells out the
    // defaults, so the two must margin the example identically.
    let dir = examples_dir();
    let (p, m, prm) = load(&dir);
    let mut v: serde_json::Value = serde_json::from_str(&read(&dir, "params.json")).unwrap();
    let obj = v.as_object_mut().unwrap();
    for key in [
        "grid",
        "statistical",
        "som_rate",
        "mm_fraction",
        "short_option_im_base",
        "short_option_im_floor",
        "short_option_mm",
    ] {
        obj.remove(key);
    }
    let minimal = Params::parse("params.json", &v.to_string()).unwrap();
    let a = margin_report(&p, &m, &prm, None, NO_LIQ).unwrap();
    let b = margin_report(&p, &m, &minimal, None, NO_LIQ).unwrap();
    assert_eq!(a, b);
}
