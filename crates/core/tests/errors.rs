//! Bad inputs: every class of error names the right file, JSON path and account, and the
//! whole report fails (no partial report).

mod common;

use common::*;
use pmargin_core::{margin_report, History, InputError, Market, Params, Portfolio};
use serde_json::{json, Value};

#[track_caller]
fn expect(err: InputError, file: &str, path: &str, account: Option<&str>) {
    assert_eq!(
        (err.file.as_str(), err.path.as_str(), err.account.as_deref()),
        (file, path, account),
        "{err}"
    );
    let shown = err.to_string();
    assert!(shown.starts_with(file), "{shown}");
    if let Some(a) = account {
        assert!(shown.contains(a), "the message names the account: {shown}");
    }
}

fn portfolio_text(accounts: Vec<Value>) -> String {
    json!({ "accounts": accounts }).to_string()
}

/// Margins a portfolio (with a harmless first account) against default params and a market.
fn margin_err(accounts: Vec<Value>, market: Market, params: Params) -> InputError {
    let mut all = vec![account(
        "ok",
        json!({"USDC": 1}),
        vec![linear("BTC-PERPETUAL", 1.0, 60000.0)],
    )];
    all.extend(accounts);
    let p = portfolio(all);
    margin_report(&p, &market, &params, None, NO_LIQ).unwrap_err()
}

#[test]
fn unknown_fields_are_rejected_by_path() {
    let text = portfolio_text(vec![
        account("a", json!({}), vec![]),
        json!({ "id": "b", "positions": [ { "instrument": "BTC-PERPETUAL", "sise": 1, "entry_price": 1 } ] }),
    ]);
    expect(
        Portfolio::parse("portfolio.json", &text).unwrap_err(),
        "portfolio.json",
        "accounts[1].positions[0].sise",
        Some("b"),
    );

    let text = portfolio_text(vec![json!({ "id": "c", "balance": { "USDC": 1 } })]);
    expect(
        Portfolio::parse("portfolio.json", &text).unwrap_err(),
        "portfolio.json",
        "accounts[0].balance",
        Some("c"),
    );

    let mut m = market_value();
    m["spot"] = json!(1);
    expect(
        Market::parse("market.json", &m.to_string()).unwrap_err(),
        "market.json",
        "spot",
        None,
    );

    let mut m = market_value();
    m["vols"]["ETH"] = json!({ "defualt": 0.7 });
    expect(
        Market::parse("market.json", &m.to_string()).unwrap_err(),
        "market.json",
        "vols.ETH.defualt",
        None,
    );

    let mut p = params_value();
    p["underlyings"]["BTC"]["vol_scan_upp"] = json!(0.1);
    expect(
        Params::parse("params.json", &p.to_string()).unwrap_err(),
        "params.json",
        "underlyings.BTC.vol_scan_upp",
        None,
    );

    let mut p = params_value();
    p["grid"] = json!({ "price_step": 9 });
    expect(
        Params::parse("params.json", &p.to_string()).unwrap_err(),
        "params.json",
        "grid.price_step",
        None,
    );

    let toml = "version = 1\nsom_rte = 0.02\n[underlyings.BTC]\nprice_scan_range = 0.1\nvol_scan_up = 0.1\nvol_scan_down = 0.1\nstandard_im_rate = 0.1\nstandard_mm_rate = 0.05\n";
    expect(
        Params::parse("risk.toml", toml).unwrap_err(),
        "risk.toml",
        "som_rte",
        None,
    );
}

#[test]
fn negative_zero_and_non_finite_numbers_are_rejected() {
    let mut m = market_value();
    m["prices"]["BTC"] = json!(-60000);
    expect(
        Market::parse("market.json", &m.to_string()).unwrap_err(),
        "market.json",
        "prices.BTC",
        None,
    );
    let mut m = market_value();
    m["prices"]["ETH"] = json!(0);
    expect(
        Market::parse("market.json", &m.to_string()).unwrap_err(),
        "market.json",
        "prices.ETH",
        None,
    );
    let mut m = market_value();
    m["marks"] = json!({ "BTC-27DEC26": -1 });
    expect(
        Market::parse("market.json", &m.to_string()).unwrap_err(),
        "market.json",
        "marks.BTC-27DEC26",
        None,
    );
    let mut m = market_value();
    m["vols"]["BTC"]["default"] = json!(-0.6);
    expect(
        Market::parse("market.json", &m.to_string()).unwrap_err(),
        "market.json",
        "vols.BTC.default",
        None,
    );
    let mut m = market_value();
    m["ivs"] = json!({ "BTC-27DEC26-60000-C": 0.0 });
    expect(
        Market::parse("market.json", &m.to_string()).unwrap_err(),
        "market.json",
        "ivs.BTC-27DEC26-60000-C",
        None,
    );

    // A negative entry price, by account.
    let text = portfolio_text(vec![account(
        "neg",
        json!({}),
        vec![linear("BTC-27DEC26", 1.0, -5.0)],
    )]);
    expect(
        Portfolio::parse("portfolio.json", &text).unwrap_err(),
        "portfolio.json",
        "accounts[0].positions[0].entry_price",
        Some("neg"),
    );

    // JSON cannot spell infinity; an overflowing literal is refused by the JSON reader (the
    // message gives line and column rather than a field path).
    let text = market_value().to_string().replace("60000.0", "1e999");
    assert!(text.contains("1e999"));
    let err = Market::parse("market.json", &text).unwrap_err();
    assert_eq!(err.file, "market.json");
    assert!(
        err.message.contains("invalid JSON") && err.message.contains("line"),
        "{err}"
    );
    let text = portfolio_text(vec![account(
        "inf",
        json!({}),
        vec![linear("BTC-PERPETUAL", 1.0, 1.0)],
    )])
    .replace("\"size\":1.0", "\"size\":1e999");
    assert!(text.contains("1e999"), "{text}");
    assert_eq!(
        Portfolio::parse("portfolio.json", &text).unwrap_err().file,
        "portfolio.json"
    );

    // TOML can spell inf and nan: refused by path.
    for bad in ["inf", "-inf", "nan"] {
        let toml = format!("version = 1\n[underlyings.BTC]\nprice_scan_range = 0.1\nvol_scan_up = {bad}\nvol_scan_down = 0.1\nstandard_im_rate = 0.1\nstandard_mm_rate = 0.05\n");
        expect(
            Params::parse("risk.toml", &toml).unwrap_err(),
            "risk.toml",
            "underlyings.BTC.vol_scan_up",
            None,
        );
    }
}

#[test]
fn option_without_any_vol_is_an_error() {
    // No vols entry for ETH at all.
    let m = market_with(|v| {
        v["vols"].as_object_mut().unwrap().remove("ETH");
    });
    let err = margin_err(
        vec![account(
            "carol",
            json!({}),
            vec![option("ETH-27DEC26-3000-C", -1.0)],
        )],
        m,
        params(),
    );
    expect(err, "market.json", "vols.ETH", Some("carol"));

    // An ETH surface without a default whose smile is for another expiry, and no ivs.
    let m = market_with(|v| {
        v["vols"]["ETH"] =
            json!({ "points": [ { "expiry": "26MAR27", "strike": 3000, "iv": 0.7 } ] });
    });
    let err = margin_err(
        vec![account(
            "dave",
            json!({}),
            vec![option("ETH-27DEC26-3000-P", 2.0)],
        )],
        m,
        params(),
    );
    expect(err, "market.json", "vols.ETH", Some("dave"));
    assert!(err_message_names(
        &margin_err(
            vec![account(
                "dave",
                json!({}),
                vec![option("ETH-27DEC26-3000-P", 2.0)]
            )],
            market_with(|v| v["vols"]["ETH"] = json!({})),
            params()
        ),
        "ETH-27DEC26-3000-P"
    ));

    // The same option is fine with an ivs entry.
    let m = market_with(|v| {
        v["vols"]["ETH"] = json!({});
        v["ivs"] = json!({ "ETH-27DEC26-3000-P": 0.7 });
    });
    let p = portfolio(vec![account(
        "dave",
        json!({}),
        vec![option("ETH-27DEC26-3000-P", 2.0)],
    )]);
    assert!(margin_report(&p, &m, &params(), None, NO_LIQ).is_ok());
}

fn err_message_names(err: &InputError, what: &str) -> bool {
    err.to_string().contains(what)
}

#[test]
fn duplicate_account_ids() {
    let text = portfolio_text(vec![
        account("alice", json!({}), vec![]),
        account("bob", json!({}), vec![]),
        account("alice", json!({}), vec![]),
    ]);
    expect(
        Portfolio::parse("portfolio.json", &text).unwrap_err(),
        "portfolio.json",
        "accounts[2].id",
        Some("alice"),
    );
}

#[test]
fn expiry_that_is_not_a_date() {
    for name in [
        "BTC-31FEB27",
        "BTC-30FEB27-60000-C",
        "BTC-27DXC26",
        "BTC-0JAN27",
    ] {
        let text = portfolio_text(vec![account(
            "e",
            json!({}),
            vec![json!({ "instrument": name, "size": 1, "entry_price": 1 })],
        )]);
        expect(
            Portfolio::parse("portfolio.json", &text).unwrap_err(),
            "portfolio.json",
            "accounts[0].positions[0].instrument",
            Some("e"),
        );
    }
    let mut m = market_value();
    m["vols"]["BTC"]["points"] = json!([{ "expiry": "31APR27", "strike": 60000, "iv": 0.6 }]);
    expect(
        Market::parse("market.json", &m.to_string()).unwrap_err(),
        "market.json",
        "vols.BTC.points[0].expiry",
        None,
    );
    let mut m = market_value();
    m["marks"] = json!({ "BTC-31JUN27": 60000 });
    expect(
        Market::parse("market.json", &m.to_string()).unwrap_err(),
        "market.json",
        "marks.BTC-31JUN27",
        None,
    );
}

#[test]
fn balance_asset_missing_from_collateral() {
    let m = market_with(|v| v["prices"]["DOGE"] = json!(0.1));
    let err = margin_err(
        vec![account("doge", json!({"USDC": 5, "DOGE": 100}), vec![])],
        m,
        params(),
    );
    // The portfolio holds the balance; the path points at it (the second account, index 1).
    expect(
        err,
        "portfolio.json",
        "accounts[1].balances.DOGE",
        Some("doge"),
    );
}

#[test]
fn history_dates_must_ascend() {
    let err = History::parse("history.csv", "date,BTC\n2024-01-02,1\n2024-01-01,2\n").unwrap_err();
    expect(err, "history.csv", "line 3.date", None);
    let err = History::parse(
        "history.csv",
        "date,BTC\n2024-01-01,1\n2024-01-02,2\n2024-01-02,3\n",
    )
    .unwrap_err();
    expect(err, "history.csv", "line 4.date", None);
    let err = History::parse("history.csv", "date,BTC\n2024-01-01,1\n2024/01/02,2\n").unwrap_err();
    expect(err, "history.csv", "line 3.date", None);
}

#[test]
fn instrument_whose_underlying_has_no_params() {
    let m = market_with(|v| v["prices"]["DOGE"] = json!(0.1));
    let err = margin_err(
        vec![account(
            "d",
            json!({}),
            vec![linear("DOGE-PERPETUAL", 1000.0, 0.1)],
        )],
        m,
        params(),
    );
    expect(err, "params.json", "underlyings.DOGE", Some("d"));
}

#[test]
fn missing_price() {
    // An ETH perpetual with no ETH price in the market.
    let m = market_with(|v| {
        v["prices"].as_object_mut().unwrap().remove("ETH");
    });
    let err = margin_err(
        vec![account(
            "x",
            json!({}),
            vec![linear("ETH-PERPETUAL", 1.0, 3000.0)],
        )],
        m,
        params(),
    );
    expect(err, "market.json", "prices.ETH", Some("x"));

    // A stable collateral asset with no price.
    let prm = params_with(|v| v["collateral"]["USDT"] = json!({ "haircut": 0.0 }));
    let err = margin_err(
        vec![account("y", json!({"USDT": 10}), vec![])],
        market(),
        prm,
    );
    expect(err, "market.json", "prices.USDT", Some("y"));

    // A SOL balance with no SOL price (the collateral asset and its underlying share the name).
    let m = market_with(|v| {
        v["prices"].as_object_mut().unwrap().remove("SOL");
    });
    let err = margin_err(vec![account("z", json!({"SOL": 10}), vec![])], m, params());
    expect(err, "market.json", "prices.SOL", Some("z"));
}

#[test]
fn options_may_not_carry_an_entry_price_and_linear_contracts_must() {
    let text = portfolio_text(vec![account(
        "o",
        json!({}),
        vec![json!({ "instrument": "BTC-27DEC26-60000-C", "size": 1, "entry_price": 5 })],
    )]);
    expect(
        Portfolio::parse("portfolio.json", &text).unwrap_err(),
        "portfolio.json",
        "accounts[0].positions[0].entry_price",
        Some("o"),
    );
    let text = portfolio_text(vec![account(
        "f",
        json!({}),
        vec![json!({ "instrument": "BTC-27DEC26", "size": 1 })],
    )]);
    expect(
        Portfolio::parse("portfolio.json", &text).unwrap_err(),
        "portfolio.json",
        "accounts[0].positions[0].entry_price",
        Some("f"),
    );
}
