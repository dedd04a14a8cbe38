//! Cascade simulations checked by hand, conservation of value, the JSON fields, bad paths and
//! the market-impact model.

use pmargin_core::{Market, Params, Portfolio};
use pmargin_engine::EngineConfig;
use pmargin_sim::{build_engine, run, run_demo, DemoOptions, PricePath, SimReport};

// a: long 1 BTC at 60,000 with 7,000 USDC; b: the short side; the liquidator: 1,000,000 USDC.
use pmargin_core::testkit::{
    ONE_BTC_BOOK as PORTFOLIO, ONE_BTC_MARKET as MARKET, ONE_BTC_PARAMS as PARAMS,
};

fn hand(path: &str, impact: f64) -> SimReport {
    hand_book(PORTFOLIO, 1000.0, path, impact)
}

fn hand_book(accounts: &str, fund: f64, path: &str, impact: f64) -> SimReport {
    let portfolio = Portfolio::parse("p.json", accounts).unwrap();
    let market = Market::parse("m.json", MARKET).unwrap();
    let params = Params::parse("r.json", PARAMS).unwrap();
    let config = EngineConfig {
        insurance_fund: fund,
        ..EngineConfig::default()
    };
    let mut engine = build_engine(&portfolio, &market, &params, config).unwrap();
    let path = PricePath::parse("path.csv", path).unwrap();
    run(&mut engine, &path, impact, "hand").unwrap()
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-6 * b.abs().max(1.0), "{a} != {b}");
}

#[test]
fn crossing_maintenance_liquidates_in_two_steps() {
    // a's equity is 7,000 + (P - 60,000); IM 10% and MM 7.5% of 1 BTC x P.
    // 58,000: equity 5,000 >= MM 4,350 (below IM 5,800: restricted, not liquidated).
    // 57,000: equity 4,000 < MM 4,275: liquidated in steps of 25% of the position at the mark
    //   with a 1% penalty: 0.25 BTC (penalty 142.50) leaves equity 3,857.50 < IM 4,275;
    //   0.1875 BTC (penalty 106.875) leaves equity 3,750.625 >= IM 3,206.25. Two fills, and
    //   the fund grows by 249.375.
    let r = hand("step,BTC\n0,60000\n1,58000\n2,57000\n3,57000\n", 0.0);
    let t = &r.totals;
    assert_eq!(t.liquidations, 2);
    assert_eq!(
        r.steps.iter().map(|s| s.liquidations).collect::<Vec<_>>(),
        vec![0, 0, 2, 0]
    );
    close(t.insurance_fund_after - t.insurance_fund_before, 249.375);
    close(t.penalties, 249.375);
    close(t.liquidated_notional, (0.25 + 0.1875) * 57000.0);
    assert_eq!(
        (t.accounts_liquidated, t.accounts_closed, t.bad_debt),
        (1, 0, 0.0)
    );
    // 7,000 + 100,000 + 1,000,000 + 1,000.
    close(t.value_before, 1_108_000.0);
    close(t.value_after, 1_108_000.0);
    close(t.liquidator_pnl, 0.0);
}

#[test]
fn bankruptcy_is_paid_by_the_fund_then_socialised() {
    // After step 2 above, a holds 0.5625 BTC with equity 3,750.625 and the fund is 1,249.375.
    // 40,000: a's equity 3,750.625 - 0.5625 x 17,000 = -5,811.875: closed out (one transfer,
    // no penalty). The fund pays 1,249.375 (all it has); the 4,562.50 left is taken from b,
    // the profitable short, by auto-deleveraging. Value is unchanged throughout.
    let r = hand("step,BTC\n0,60000\n1,57000\n2,40000\n", 0.0);
    let t = &r.totals;
    assert_eq!(
        (t.liquidations, t.accounts_closed, t.accounts_deleveraged),
        (3, 1, 1)
    );
    close(t.bad_debt, 5811.875);
    close(t.insurance_paid, 1249.375);
    close(t.socialised_loss, 4562.5);
    close(t.uncovered_loss, 0.0);
    close(t.insurance_fund_after, 0.0);
    close(t.value_after, t.value_before);
    for s in &r.steps {
        close(s.total_value, t.value_before);
    }
}

#[test]
fn an_uncovered_deficit_is_counted_once() {
    // No fund; b's short was entered at 45,000, so at 40,000 its profit is only 5,000.
    // a at 40,000: equity 7,000 - 20,000 = -13,000. Closed out: 5,000 socialised from b, 8,000
    // uncovered (left as a's negative equity). The engine closes a out again in every later
    // round (same deficit); the report counts the bad debt and the account once.
    let book = r#"{"accounts": [
      {"id": "a", "balances": {"USDC": 7000}, "positions": [{"instrument": "BTC-PERPETUAL", "size": 1, "entry_price": 60000}]},
      {"id": "b", "balances": {"USDC": 100000}, "positions": [{"instrument": "BTC-PERPETUAL", "size": -1, "entry_price": 45000}]},
      {"id": "liquidator", "balances": {"USDC": 1000000}}]}"#;
    let r = hand_book(
        book,
        0.0,
        "step,BTC\n0,60000\n1,40000\n2,39000\n3,38000\n",
        0.0,
    );
    let t = &r.totals;
    assert_eq!((t.accounts_closed, t.liquidations), (1, 1));
    close(t.bad_debt, 13000.0);
    close(t.socialised_loss, 5000.0);
    close(t.insurance_paid, 0.0);
    close(t.uncovered_loss, 8000.0);
    close(t.value_after, t.value_before);
    assert_eq!(
        r.steps
            .iter()
            .map(|s| s.accounts_closed)
            .collect::<Vec<_>>(),
        vec![0, 1, 0, 0]
    );
}

#[test]
fn json_report_has_the_totals_fields() {
    let r = hand("step,BTC\n0,60000\n1,57000\n", 0.0);
    let v = serde_json::to_value(&r).unwrap();
    for field in [
        "value_before",
        "value_after",
        "insurance_fund_before",
        "insurance_fund_after",
        "bad_debt",
        "socialised_loss",
        "liquidations",
        "accounts_closed",
    ] {
        assert!(
            v["totals"][field].is_number(),
            "totals.{field} missing: {}",
            v["totals"]
        );
    }
    assert_eq!(v["steps"].as_array().unwrap().len(), 2);
    assert_eq!(v["steps"][1]["prices"]["BTC"], 57000.0);
}

#[test]
fn path_errors_name_the_file_and_line() {
    let e = PricePath::parse("crash.csv", "step,BTC\n0,60000\n1,-3\n").unwrap_err();
    assert!(e.to_string().starts_with("crash.csv:3:"), "{e}");
    // An underlying the parameter set does not know is refused at the header.
    let portfolio = Portfolio::parse("p.json", PORTFOLIO).unwrap();
    let market = Market::parse("m.json", MARKET).unwrap();
    let params = Params::parse("r.json", PARAMS).unwrap();
    let mut engine = build_engine(&portfolio, &market, &params, EngineConfig::default()).unwrap();
    let path = PricePath::parse("crash.csv", "step,BTC,DOGE\n0,60000,1\n").unwrap();
    let e = run(&mut engine, &path, 0.0, "x").unwrap_err();
    assert!(e.starts_with("crash.csv:1: underlying `DOGE`"), "{e}");
    assert!(run(
        &mut engine,
        &PricePath::parse("c.csv", "t,BTC\n0,1\n").unwrap(),
        -1.0,
        "x"
    )
    .is_err());
}

#[test]
fn impact_deepens_the_crash_monotonically() {
    // On the hand book the depth is a's 1 BTC (60,000): K = 0.05 turns the 14,250 sold at
    // 57,000 into a further 1.2% fall on the next step.
    let path = "step,BTC\n0,60000\n1,57000\n2,56000\n3,55000\n";
    let lows: Vec<f64> = [0.0, 0.05, 0.1]
        .iter()
        .map(|&k| hand(path, k).totals.lowest_price["BTC"])
        .collect();
    assert!(lows[0] > lows[1] && lows[1] > lows[2], "{lows:?}");
    close(lows[0], 55000.0);

    // The demo book, smaller: more impact, lower prices, more accounts liquidated and closed
    // out, more bad debt. (The number of fills can fall: deeper gaps close accounts out in one
    // go where a gentler path liquidates them step by step.)
    let small = |impact: f64| DemoOptions {
        accounts: 400,
        steps_per_day: 24,
        impact,
        ..DemoOptions::default()
    };
    let runs: Vec<SimReport> = [0.0, 0.25, 0.5, 1.0]
        .iter()
        .map(|&k| run_demo(&small(k)).unwrap())
        .collect();
    for w in runs.windows(2) {
        let (a, b) = (&w[0].totals, &w[1].totals);
        assert!(
            b.lowest_price["BTC"] < a.lowest_price["BTC"],
            "{:?} {:?}",
            a.lowest_price,
            b.lowest_price
        );
        assert!(b.lowest_price["ETH"] < a.lowest_price["ETH"]);
        assert!(b.final_price["BTC"] < a.final_price["BTC"]);
        assert!(
            b.accounts_liquidated >= a.accounts_liquidated
                && b.accounts_closed >= a.accounts_closed,
            "{a:?} {b:?}"
        );
        assert!(b.bad_debt >= a.bad_debt);
    }
    for r in &runs {
        close(r.totals.value_after, r.totals.value_before);
    }
}

#[test]
fn demo_conserves_value() {
    let r = run_demo(&DemoOptions::default()).unwrap();
    let t = &r.totals;
    assert_eq!(r.accounts, 10_000);
    assert_eq!(r.steps.len(), 2 * 96 + 1);
    assert!(
        ((t.value_after - t.value_before) / t.value_before).abs() < 1e-6,
        "{} vs {}",
        t.value_before,
        t.value_after
    );
    // The endpoints are the real closes.
    assert_eq!(r.steps[0].prices["BTC"], 7911.430176);
    assert_eq!(r.steps[96].prices["BTC"], 4970.788086);
    assert_eq!(r.steps[192].prices["ETH"], 133.201813);
    assert!(
        t.liquidations > 1000 && t.accounts_liquidated > 1000,
        "{t:?}"
    );
    // Same seed, same run.
    let again = run_demo(&DemoOptions::default()).unwrap();
    assert_eq!(
        serde_json::to_string(&again).unwrap(),
        serde_json::to_string(&r).unwrap()
    );
}
