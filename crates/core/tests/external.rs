//! Positions held in other protocols (docs/MODEL.md section 12): expected values from the
//! closed forms of the section and hand calculations written out beside them.

use pmargin_core::external::{lp_amounts, Holding};
use pmargin_core::{margin_report, Book, Market, Params, Portfolio, ReportOptions};
use proptest::prelude::*;

/// ETH at 225, USDC at 1; a small grid: three price steps (-10%, 0, +10%) and the extremes
/// (+-20%) at cover 0.35.
const MARKET: &str = r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"ETH": 225, "USDC": 1}}"#;
const PARAMS: &str = r#"{"version": 1,
  "underlyings": {"ETH": {"price_scan_range": 0.1, "vol_scan_up": 0.1, "vol_scan_down": 0.1,
                          "standard_im_rate": 0.1, "standard_mm_rate": 0.05}},
  "collateral": {"USDC": {"haircut": 0}, "ETH": {"haircut": 0.07, "underlying": "ETH"}},
  "grid": {"price_steps": 3},
  "external_protocols": {"uniswap-v3": {"haircut": 0.05}, "aave-v3": {"haircut": 0.03}}}"#;

/// L = 1000 on [100, 400] (square roots 10 and 20).
const LP: &str = r#"{"kind": "uniswap_v3_lp", "protocol": "uniswap-v3", "token0": "ETH",
  "token1": "USDC", "liquidity": 1000, "price_lower": 100, "price_upper": 400}"#;

/// The LP's value at ETH price `p` (USDC at 1), in the closed form of the section's amounts
/// inside the range: `x p + y = L (2 sqrt p - p / sqrt pb - sqrt pa)`.
fn lp_value_inside(p: f64) -> f64 {
    1000.0 * (2.0 * p.sqrt() - p / 20.0 - 10.0)
}

fn portfolio(accounts: &str) -> String {
    format!(r#"{{"accounts": [{accounts}]}}"#)
}

fn report(accounts: &str) -> pmargin_core::MarginReport {
    let p = Portfolio::parse("portfolio.json", &portfolio(accounts)).unwrap();
    let m = Market::parse("market.json", MARKET).unwrap();
    let params = Params::parse("params.json", PARAMS).unwrap();
    margin_report(&p, &m, &params, None, ReportOptions::default()).unwrap()
}

fn close(got: f64, want: f64, tolerance: f64, what: &str) {
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: got {got}, expected {want}"
    );
}

/// L = 1000, [100, 400]: below (p = 50) all token0, `L (1/10 - 1/20) = 50`; above (p = 900)
/// all token1, `L (20 - 10) = 10000`; inside (p = 225, root 15) `x = L (1/15 - 1/20) = 16.667`,
/// `y = L (15 - 10) = 5000`.
#[test]
fn lp_amounts_in_the_three_regions() {
    let (x, y) = lp_amounts(1000.0, 100.0, 400.0, 50.0);
    close(x, 50.0, 1e-9, "below: x");
    assert_eq!(y, 0.0);
    let (x, y) = lp_amounts(1000.0, 100.0, 400.0, 900.0);
    assert_eq!(x, 0.0);
    close(y, 10_000.0, 1e-9, "above: y");
    let (x, y) = lp_amounts(1000.0, 100.0, 400.0, 225.0);
    close(x, 1000.0 / 60.0, 1e-9, "inside: x");
    close(y, 5000.0, 1e-9, "inside: y");
    // At the edges the regions meet.
    for edge in [100.0, 400.0] {
        let (a, b) = (
            lp_amounts(1000.0, 100.0, 400.0, edge * (1.0 - 1e-12)),
            lp_amounts(1000.0, 100.0, 400.0, edge * (1.0 + 1e-12)),
        );
        close(a.0, b.0, 1e-6, "x continuous");
        close(a.1, b.1, 1e-6, "y continuous");
    }
}

/// The LP is short gamma: inside its range `V'' = -L / (2 p^1.5)` (from the closed form), and
/// outside it is linear (`V'' = 0`); a numeric second difference of the implementation's value
/// agrees.
#[test]
fn lp_value_is_concave_with_the_closed_form_curvature() {
    let lp = Holding::Lp {
        token0: 0usize,
        token1: 1usize,
        liquidity: 1000.0,
        price_lower: 100.0,
        price_upper: 400.0,
    };
    let value = |p: f64| lp.value(|a| if a == 0 { p } else { 1.0 });
    let h = 0.01;
    for p in [120.0, 225.0, 300.0, 380.0] {
        let second = (value(p + h) - 2.0 * value(p) + value(p - h)) / (h * h);
        let closed = -1000.0 / (2.0 * p.powf(1.5));
        close(second, closed, 1e-4 * closed.abs().max(1e-3), "curvature");
        assert!(second < 0.0);
        close(value(p), lp_value_inside(p), 1e-9, "value");
    }
    for p in [50.0, 90.0, 500.0, 900.0] {
        let second = (value(p + h) - 2.0 * value(p) + value(p - h)) / (h * h);
        close(second, 0.0, 1e-5, "linear outside the range");
    }
}

/// 10 ETH deposited at 225: value 2250; margin balance 2250 x (1 - 0.03) x (1 - 0.07) =
/// 2029.725. A borrow of 1000 USDC: -1000 in both.
#[test]
fn a_deposit_takes_two_haircuts_and_a_borrow_counts_in_full() {
    let r = report(
        r#"{"id": "d", "external": [
          {"kind": "lending_deposit", "protocol": "aave-v3", "asset": "ETH", "amount": 10},
          {"kind": "lending_borrow", "protocol": "aave-v3", "asset": "USDC", "amount": 1000}]}"#,
    );
    let a = &r.accounts[0];
    close(a.equity, 2250.0 - 1000.0, 1e-9, "equity");
    close(a.margin_balance, 2029.725 - 1000.0, 1e-9, "margin balance");
    assert_eq!(a.external.len(), 2);
    close(a.external[0].margin_value, 2029.725, 1e-9, "deposit");
    close(a.external[1].margin_value, -1000.0, 1e-12, "borrow");
    close(
        a.external[1].amounts["USDC"],
        -1000.0,
        1e-12,
        "borrow amount",
    );
    // The deposit is 10 ETH: its grid loss at -10% is 225; the standard margin and the
    // add-ons do not count it.
    close(a.grid_risk, 225.0, 1e-9, "grid");
    assert_eq!(a.standard_initial_margin, 0.0);
}

/// By hand, with the closed form above (ETH at 225, value 8750):
/// - LP alone: -10% (202.5) loses 8750 - 8335.499 = 414.501; -20% (180) loses 917.184 x 0.35 =
///   321.01; the up moves gain. Grid risk 414.501.
/// - Hedged with a short perpetual of its delta, x = 50/3 ETH at 225 (gains 375 at -10%, 750 at
///   -20%): -10% loses 39.501, +10% loses 375 - 339.265 = 35.735, -20% loses
///   (917.184 - 750) x 0.35 = 58.514, +20% loses (750 - 613.354) x 0.35 = 47.826.
///   Grid risk 58.514.
#[test]
fn an_lp_hedged_with_a_short_perpetual_has_lower_grid_risk() {
    let hedge = 50.0 / 3.0;
    let r = report(&format!(
        r#"{{"id": "alone", "external": [{LP}]}},
           {{"id": "hedged", "external": [{LP}],
             "positions": [{{"instrument": "ETH-PERPETUAL", "size": -{hedge}, "entry_price": 225}}]}}"#
    ));
    let v0 = lp_value_inside(225.0);
    close(v0, 8750.0, 1e-9, "value today");
    let loss = |m: f64| v0 - lp_value_inside(225.0 * (1.0 + m));
    let alone = &r.accounts[0];
    close(alone.grid_risk, loss(-0.1), 1e-9, "alone");
    close(alone.grid_risk, 414.501, 1e-3, "alone, by hand");
    assert_eq!(
        alone.worst_scenario.as_deref(),
        Some("single ETH -1/1 vol+")
    );
    let hedged = &r.accounts[1];
    let hedged_loss = |m: f64, w: f64| w * (loss(m) + hedge * 225.0 * m);
    close(hedged.grid_risk, hedged_loss(-0.2, 0.35), 1e-9, "hedged");
    close(hedged.grid_risk, 58.514, 1e-3, "hedged, by hand");
    assert!(hedged.grid_risk < alone.grid_risk / 5.0);
    assert_eq!(hedged.scanning_risk["ETH"], hedged.grid_risk);
    // Token amounts today are the section's.
    close(alone.external[0].amounts["ETH"], 1000.0 / 60.0, 1e-9, "x");
    close(alone.external[0].amounts["USDC"], 5000.0, 1e-9, "y");
}

/// One account with everything, by hand: 10,000 USDC; the LP (value 8750, margin 8750 x 0.95 =
/// 8312.5); short 50/3 ETH-PERPETUAL at 225 (no P&L today); 10 ETH deposited (2250, margin
/// 2029.725); 1000 USDC borrowed.
/// equity = 10000 + 8750 + 2250 - 1000 = 20000; margin balance = 10000 + 8312.5 + 2029.725 -
/// 1000 = 19342.225.
/// Scenarios (P&L of LP + perp + deposit): -10%: -414.501 + 375 - 225 = -264.501;
/// -20% x 0.35: (-917.184 + 750 - 450) x 0.35 = -216.014; +10%: 339.265 - 375 + 225 > 0;
/// +20%: 613.354 - 750 + 450 > 0. Grid risk = IM = 264.501; MM = 198.376; healthy.
/// The standard margin counts the perpetual only: 50/3 x 225 x 0.10 = 375.
#[test]
fn one_full_account_by_hand() {
    let r = report(&format!(
        r#"{{"id": "all", "balances": {{"USDC": 10000}},
            "positions": [{{"instrument": "ETH-PERPETUAL", "size": -16.666666666666668, "entry_price": 225}}],
            "external": [{LP},
              {{"kind": "lending_deposit", "protocol": "aave-v3", "asset": "ETH", "amount": 10}},
              {{"kind": "lending_borrow", "protocol": "aave-v3", "asset": "USDC", "amount": 1000}}]}}"#
    ));
    let a = &r.accounts[0];
    close(a.equity, 20_000.0, 1e-9, "equity");
    close(a.margin_balance, 19_342.225, 1e-9, "margin balance");
    close(a.grid_risk, 264.501, 1e-3, "grid risk");
    close(a.initial_margin, a.grid_risk, 0.0, "IM");
    close(a.maintenance_margin, 0.75 * a.grid_risk, 1e-12, "MM");
    assert_eq!(a.status, "healthy");
    close(a.standard_initial_margin, 375.0, 1e-9, "standard IM");
    assert_eq!(a.addons, 0.0);
    // The down liquidation price: the LP's value falls with ETH; the perpetual gains. Today's
    // cushion is far from zero, and the search finds where it crosses (or nothing).
    assert!(a.liquidation_prices.contains_key("ETH"));
}

/// Scanning risk and liquidation prices of an account with an LP on two non-stable tokens
/// (ETH/BTC): its value is not a sum over one underlying, and the tandem move (both up) leaves
/// its price, and its composition, unchanged, so it only gains or loses the common move.
#[test]
fn an_lp_on_two_moving_tokens_is_revalued_jointly() {
    let market =
        r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"ETH": 3000, "BTC": 60000, "USDC": 1}}"#;
    let params = r#"{"version": 1,
      "underlyings": {
        "ETH": {"price_scan_range": 0.1, "vol_scan_up": 0.1, "vol_scan_down": 0.1, "standard_im_rate": 0.1, "standard_mm_rate": 0.05},
        "BTC": {"price_scan_range": 0.1, "vol_scan_up": 0.1, "vol_scan_down": 0.1, "standard_im_rate": 0.1, "standard_mm_rate": 0.05}},
      "collateral": {"USDC": {}, "ETH": {"underlying": "ETH"}, "BTC": {"underlying": "BTC"}},
      "grid": {"price_steps": 3, "extreme_cover": 0.0, "decoupling_fraction": 0.0},
      "external_protocols": {"uniswap-v3": {"haircut": 0}}}"#;
    // ETH in BTC: 0.05 today, range [0.04, 0.0625] (roots 0.2, 0.25); L = 100: x = 100 (1/sqrt
    // 0.05 - 4) = 47.2136 ETH, y = 100 (sqrt 0.05 - 0.2) = 2.36068 BTC; value 283,282.
    let lp = r#"{"kind": "uniswap_v3_lp", "protocol": "uniswap-v3", "token0": "ETH", "token1": "BTC",
      "liquidity": 100, "price_lower": 0.04, "price_upper": 0.0625}"#;
    let p = Portfolio::parse(
        "p.json",
        &portfolio(&format!(r#"{{"id": "x", "external": [{lp}]}}"#)),
    )
    .unwrap();
    let r = margin_report(
        &p,
        &Market::parse("m.json", market).unwrap(),
        &Params::parse("params.json", params).unwrap(),
        None,
        ReportOptions::default(),
    )
    .unwrap();
    let a = &r.accounts[0];
    let value = |eth: f64, btc: f64| {
        let (x, y) = lp_amounts(100.0, 0.04, 0.0625, eth / btc);
        x * eth + y * btc
    };
    let v0 = value(3000.0, 60000.0);
    close(a.equity, v0, 1e-6, "value");
    close(v0, 283_282.0, 1.0, "value by hand");
    // Single ETH -10% (BTC held): the worst single move on ETH.
    let eth_down = v0 - value(2700.0, 60000.0);
    let btc_down = v0 - value(3000.0, 54000.0);
    close(a.scanning_risk["ETH"], eth_down, 1e-6, "ETH scanning risk");
    close(a.scanning_risk["BTC"], btc_down, 1e-6, "BTC scanning risk");
    // Tandem -10%: the pool's price does not move, so the loss is 10% of the value.
    let tandem = 0.1 * v0;
    close(
        a.grid_risk,
        tandem.max(eth_down).max(btc_down),
        1e-6,
        "grid risk",
    );
    assert_eq!(a.worst_scenario.as_deref(), Some("tandem -1/1 vol+"));
}

/// The FHS moves the tokens' underlyings jointly: with a two-day history the one scenario is
/// ETH's return, and the LP's loss is its exact revaluation there.
#[test]
fn fhs_revalues_the_lp_at_the_historical_move() {
    let history =
        pmargin_core::History::parse("h.csv", "date,ETH\n2024-01-01,100\n2024-01-02,90\n").unwrap();
    let mut params = Params::parse("params.json", PARAMS).unwrap();
    params.statistical.filtered = false;
    let p = Portfolio::parse(
        "p.json",
        &portfolio(&format!(r#"{{"id": "x", "external": [{LP}]}}"#)),
    )
    .unwrap();
    let r = margin_report(
        &p,
        &Market::parse("m.json", MARKET).unwrap(),
        &params,
        Some(&history),
        ReportOptions::default(),
    )
    .unwrap();
    // Unfiltered, one day: the move is exp(ln 0.9) - 1 = -10%.
    let loss = lp_value_inside(225.0) - lp_value_inside(225.0 * 0.9);
    close(r.accounts[0].es, loss, 1e-6, "ES");
    close(
        r.accounts[0].statistical_risk,
        loss,
        1e-6,
        "statistical risk",
    );
}

fn scaled(k: f64, reverse: bool) -> String {
    let mut external = [
        format!(
            r#"{{"kind": "uniswap_v3_lp", "protocol": "uniswap-v3", "token0": "ETH", "token1": "USDC",
               "liquidity": {}, "price_lower": 150, "price_upper": 260}}"#,
            1000.0 * k
        ),
        format!(
            r#"{{"kind": "lending_deposit", "protocol": "aave-v3", "asset": "ETH", "amount": {}}}"#,
            7.0 * k
        ),
        format!(
            r#"{{"kind": "lending_borrow", "protocol": "aave-v3", "asset": "USDC", "amount": {}}}"#,
            900.0 * k
        ),
    ];
    if reverse {
        external.reverse();
    }
    format!(r#"{{"id": "s", "external": [{}]}}"#, external.join(","))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Scaling liquidity and amounts by `k` scales every figure of the external positions by
    /// `k` (the value is linear in them; the grid's losses too); their order changes nothing.
    #[test]
    fn external_figures_scale_and_ignore_order(k in 0.01f64..100.0, reverse in any::<bool>()) {
        let one = report(&scaled(1.0, false));
        let many = report(&scaled(k, reverse));
        let (a, b) = (&one.accounts[0], &many.accounts[0]);
        for (x, y, what) in [
            (a.equity, b.equity, "equity"),
            (a.margin_balance, b.margin_balance, "margin balance"),
            (a.grid_risk, b.grid_risk, "grid risk"),
            (a.initial_margin, b.initial_margin, "IM"),
        ] {
            prop_assert!((k * x - y).abs() <= 1e-9 * (k * x).abs().max(1.0), "{}: {} vs {}", what, k * x, y);
        }
        let same = report(&scaled(1.0, true));
        prop_assert_eq!(same.accounts[0].grid_risk, a.grid_risk);
        prop_assert!((same.accounts[0].margin_balance - a.margin_balance).abs() < 1e-9);
    }
}

/// Each bad input is refused with an error naming its field.
#[test]
fn bad_external_inputs_name_their_field() {
    let m = Market::parse("market.json", MARKET).unwrap();
    let params = Params::parse("params.json", PARAMS).unwrap();
    let bad = |entry: &str| {
        let text = portfolio(&format!(r#"{{"id": "a", "external": [{entry}]}}"#));
        match Portfolio::parse("portfolio.json", &text) {
            Err(e) => e,
            Ok(p) => Book::build(&p, &m, &params).expect_err(entry),
        }
    };
    let lp = |field: &str, value: &str| {
        let mut v: serde_json::Value = serde_json::from_str(LP).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    };
    let cases = [
        (lp("kind", "\"uniswap_v4_lp\""), "kind"),
        (lp("price_upper", "90"), "price_upper"),
        (lp("price_upper", "100"), "price_upper"),
        (lp("price_lower", "0"), "price_lower"),
        (lp("price_lower", "-5"), "price_lower"),
        (lp("liquidity", "0"), "liquidity"),
        (lp("liquidity", "-1"), "liquidity"),
        (lp("protocol", "\"sushi\""), "protocol"),
        (lp("token1", "\"DAI\""), "token1"),
        (lp("token0", "\"DAI\""), "token0"),
        (lp("tick", "5"), "tick"),
        (
            r#"{"kind": "lending_deposit", "protocol": "aave-v3", "asset": "ETH", "amount": -1}"#
                .into(),
            "amount",
        ),
        (
            r#"{"kind": "lending_borrow", "protocol": "aave-v3", "asset": "SOL", "amount": 1}"#
                .into(),
            "asset",
        ),
        (
            r#"{"kind": "lending_borrow", "protocol": "aave-v3", "amount": 1}"#.into(),
            "",
        ),
    ];
    for (entry, field) in cases {
        let err = bad(&entry);
        let want = if field.is_empty() {
            "accounts[0].external[0]".to_string()
        } else {
            format!("accounts[0].external[0].{field}")
        };
        assert_eq!(err.path, want, "{entry}: {err}");
        assert_eq!(err.account.as_deref(), Some("a"), "{err}");
    }
    for (haircut, path) in [("1", "haircut"), ("-0.1", "haircut"), ("1.5", "haircut")] {
        let text = PARAMS.replace(r#""haircut": 0.05}"#, &format!(r#""haircut": {haircut}}}"#));
        let err = Params::parse("params.json", &text).unwrap_err();
        assert_eq!(
            err.path,
            format!("external_protocols.uniswap-v3.{path}"),
            "{err}"
        );
    }
    let text = PARAMS.replace(
        r#""haircut": 0.05}"#,
        r#""haircut": 0.05, "attester": "0x12"}"#,
    );
    let err = Params::parse("params.json", &text).unwrap_err();
    assert_eq!(err.path, "external_protocols.uniswap-v3.attester");
    let text = PARAMS.replace(r#""haircut": 0.05}"#, r#""haircut": 0.05, "fee": 1}"#);
    let err = Params::parse("params.json", &text).unwrap_err();
    assert_eq!(err.path, "external_protocols.uniswap-v3.fee");
}
