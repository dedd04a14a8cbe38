//! `pmargin market from-deribit` on the two real chains (data/real/chain_btc_2020051*): the
//! snapshot parses as a market, hand-read points are where they belong, and margin on it
//! agrees with margin on an independent conversion of the same CSV written here (other rules:
//! each expiry's forward is the mean of its rows, each smile point the out-of-the-money
//! option's mark_iv, the index the mean of the rows).

use pmargin_core::report::ReportOptions;
use pmargin_core::{margin_report, Market, Params, Portfolio};
use pmargin_feeds::chain::read_chain;
use std::collections::BTreeMap;

fn data(path: &str) -> String {
    let path = format!("{}/../../data/real/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The cells of a CSV line, with `"..."` cells that hold commas (the dict-valued columns).
fn cells(line: &str) -> Vec<String> {
    let (mut out, mut cell, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cell)),
            _ => cell.push(c),
        }
    }
    out.push(cell);
    out
}

/// The independent conversion, as a market.json text.
fn independent_market(csv: &str) -> String {
    let mut lines = csv.lines();
    let header = cells(lines.next().unwrap());
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (name_c, fwd_c, iv_c, index_c, ts_c) = (
        col("instrument_name"),
        col("underlying_price"),
        col("mark_iv"),
        col("index_price"),
        col("timestamp"),
    );
    let mut forwards: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut index = Vec::new();
    let mut ivs: BTreeMap<(String, String), BTreeMap<char, f64>> = BTreeMap::new();
    let mut newest = 0i64;
    for line in lines {
        let c = cells(line);
        let parts: Vec<&str> = c[name_c].split('-').collect();
        let (expiry, strike, kind) = (parts[1], parts[2], parts[3].chars().next().unwrap());
        forwards
            .entry(expiry.into())
            .or_default()
            .push(c[fwd_c].parse().unwrap());
        index.push(c[index_c].parse::<f64>().unwrap());
        ivs.entry((expiry.into(), strike.into()))
            .or_default()
            .insert(kind, c[iv_c].parse::<f64>().unwrap() / 100.0);
        newest = newest.max(c[ts_c].parse().unwrap());
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let fwd: BTreeMap<String, f64> = forwards.iter().map(|(e, v)| (e.clone(), mean(v))).collect();
    let points: Vec<_> = ivs
        .iter()
        .map(|((expiry, strike), by_kind)| {
            let k: f64 = strike.parse().unwrap();
            let otm = if k >= fwd[expiry] { 'C' } else { 'P' };
            let iv = by_kind
                .get(&otm)
                .or_else(|| by_kind.values().next())
                .unwrap();
            serde_json::json!({ "expiry": expiry, "strike": k, "iv": iv })
        })
        .collect();
    let marks: BTreeMap<String, f64> = fwd.iter().map(|(e, f)| (format!("BTC-{e}"), *f)).collect();
    let as_of = chrono::DateTime::from_timestamp_millis(newest)
        .unwrap()
        .to_rfc3339();
    serde_json::json!({ "as_of": as_of, "prices": { "BTC": mean(&index), "USDC": 1.0 },
                        "marks": marks, "vols": { "BTC": { "points": points } } })
    .to_string()
}

fn converted_market(csv: &str) -> String {
    let mut m = serde_json::to_value(read_chain(csv).unwrap()).unwrap();
    m["prices"]["USDC"] = 1.0.into();
    m.to_string()
}

const PARAMS: &str = include_str!("../../cli/demo/params.json");

/// A short strangle, a long wing and a hedging future on the chain's expiries.
fn portfolio(front: &str, back: &str, atm: f64) -> String {
    let k = |x: f64| (x / 250.0).round() * 250.0;
    serde_json::json!({ "accounts": [
      { "id": "strangle", "balances": { "USDC": 200000 }, "positions": [
        { "instrument": format!("BTC-{front}-{}-C", k(atm * 1.1)), "size": -10 },
        { "instrument": format!("BTC-{front}-{}-P", k(atm * 0.9)), "size": -10 } ] },
      { "id": "calendar", "balances": { "USDC": 200000 }, "positions": [
        { "instrument": format!("BTC-{front}-{}-C", k(atm)), "size": -10 },
        { "instrument": format!("BTC-{back}-{}-C", k(atm)), "size": 10 },
        { "instrument": format!("BTC-{back}"), "size": -2, "entry_price": atm } ] }
    ]})
    .to_string()
}

fn initial_margins(market: &str, portfolio: &str) -> Vec<f64> {
    let market = Market::parse("market.json", market).unwrap();
    let portfolio = Portfolio::parse("portfolio.json", portfolio).unwrap();
    let params = Params::parse("params.json", PARAMS).unwrap();
    let report =
        margin_report(&portfolio, &market, &params, None, ReportOptions::default()).unwrap();
    report.accounts.iter().map(|a| a.initial_margin).collect()
}

fn check_chain(path: &str, front: &str, back: &str) {
    let csv = data(path);
    let ours = converted_market(&csv);
    let theirs = independent_market(&csv);
    let atm = Market::parse("m", &ours).unwrap().prices["BTC"];
    let book = portfolio(front, back, atm);
    let (a, b) = (
        initial_margins(&ours, &book),
        initial_margins(&theirs, &book),
    );
    for (x, y) in a.iter().zip(&b) {
        assert!(*x > 0.0 && x.is_finite());
        assert!(
            (x / y - 1.0).abs() < 0.01,
            "{path}: IM {x} (from-deribit) vs {y} (independent)"
        );
    }
}

#[test]
fn margin_on_the_converted_chain_agrees_with_an_independent_conversion() {
    check_chain(
        "chain_btc_20200514/btc_options_data.csv",
        "29MAY20",
        "26JUN20",
    );
    check_chain("chain_btc_20200521/options_data.csv", "29MAY20", "26JUN20");
}

#[test]
fn hand_read_points_of_the_2020_05_14_chain() {
    let m = read_chain(&data("chain_btc_20200514/btc_options_data.csv")).unwrap();
    // BTC-22MAY20-9250: put 76.87 %, call 77.02 % in the file; the point is their mean.
    let p = m.vols["BTC"]
        .points
        .iter()
        .find(|p| p.expiry == "22MAY20" && p.strike == 9250.0)
        .unwrap();
    assert!((p.iv - 0.76945).abs() < 1e-9, "{}", p.iv);
    // Every forward within the file's range of underlying_price for its expiry (PROVENANCE:
    // underlying 9344-9514), the index within 9344-9354, seven expiries, as_of 05:44 UTC.
    assert_eq!(m.marks.len(), 7);
    assert!(m.marks.values().all(|f| (9344.0..=9515.0).contains(f)));
    assert!((9344.0..=9354.0).contains(&m.prices["BTC"]));
    assert!(m.as_of.starts_with("2020-05-14T05:44"), "{}", m.as_of);
    // 310 options over 155 (expiry, strike) pairs: one point each.
    assert_eq!(m.vols["BTC"].points.len(), 155);
}
