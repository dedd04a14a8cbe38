//! Worked examples of the engine's life cycle, numbers spelled out.

use pmargin_core::{Market, Params, Portfolio};
use pmargin_engine::{Engine, EngineConfig, Event, Output};

use pmargin_core::testkit::{ONE_BTC_MARKET as MARKET, ONE_BTC_PARAMS as PARAMS};

fn engine(accounts: &str, fund: f64) -> Engine {
    let portfolio = Portfolio::parse("p.json", accounts).unwrap();
    let market = Market::parse("m.json", MARKET).unwrap();
    let params = Params::parse("r.json", PARAMS).unwrap();
    let config = EngineConfig {
        insurance_fund: fund,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(&portfolio, &market, &params, config).unwrap();
    e.ensure_settlement_asset().unwrap();
    e
}

#[test]
fn trade_is_checked_against_initial_margin() {
    // 10,000 USDC; one BTC long needs 60,000 x 10% = 6,000 of IM: accepted. Two more
    // (3 BTC: IM 18,000 > 10,000) are refused with the figures.
    let mut e = engine(
        r#"{"accounts": [{"id": "a", "balances": {"USDC": 10000}}, {"id": "b", "balances": {"USDC": 1000000}}]}"#,
        0.0,
    );
    let buy = |size: f64| Event::Trade {
        account: "a".into(),
        instrument: "BTC-PERPETUAL".into(),
        size,
        price: 60000.0,
        fee: 0.0,
        counterparty: Some("b".into()),
    };
    assert!(e
        .apply(&buy(1.0))
        .iter()
        .all(|o| !matches!(o, Output::Rejected { .. })));
    assert_eq!(e.risk("a").unwrap().initial_margin, 6000.0);
    let out = e.apply(&buy(2.0));
    match &out[..] {
        [Output::Rejected {
            required: Some(r),
            available: Some(v),
            ..
        }] => {
            assert!(
                (r - 18000.0).abs() < 1e-9 && (v - 10000.0).abs() < 1e-9,
                "{r} {v}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // Reducing is always allowed, even when it leaves the account short of IM.
    let sell = Event::Trade {
        account: "a".into(),
        instrument: "BTC-PERPETUAL".into(),
        size: -0.5,
        price: 60000.0,
        fee: 0.0,
        counterparty: Some("b".into()),
    };
    assert!(e
        .apply(&sell)
        .iter()
        .all(|o| !matches!(o, Output::Rejected { .. })));
}

#[test]
fn a_crash_liquidates_and_value_is_conserved() {
    // a: long 1 BTC at 60,000 with 7,000 USDC; b: the short side. Insurance fund 1,000.
    let mut e = engine(
        r#"{"accounts": [
            {"id": "a", "balances": {"USDC": 7000}, "positions": [{"instrument": "BTC-PERPETUAL", "size": 1, "entry_price": 60000}]},
            {"id": "b", "balances": {"USDC": 100000}, "positions": [{"instrument": "BTC-PERPETUAL", "size": -1, "entry_price": 60000}]},
            {"id": "liquidator", "balances": {"USDC": 1000000}}]}"#,
        1000.0,
    );
    let total = e.total_value();
    // 7,000 + 100,000 + 1,000,000 + 1,000 = 1,108,000.
    assert_eq!(total, 1_108_000.0);
    // BTC 57,000: a's margin balance 4,000 < MM 0.75 x 5,700 = 4,275 -> liquidated.
    let out = e.apply(&Event::Price {
        underlying: "BTC".into(),
        price: 57000.0,
    });
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::LiquidationFill { account, .. } if account == "a")),
        "{out:?}"
    );
    let a = e.risk("a").unwrap();
    assert!(a.margin_balance >= a.initial_margin, "{a:?}");
    assert!((e.total_value() - total).abs() < 1e-6);
    // BTC 40,000: whatever a still holds is deep under water; it is closed out, the fund
    // pays what it can, and value is still conserved.
    let out = e.apply(&Event::Price {
        underlying: "BTC".into(),
        price: 40000.0,
    });
    assert!((e.total_value() - total).abs() < 1e-6, "{out:?}");
    assert!(
        e.risk("a").unwrap().margin_balance >= 0.0
            || out.iter().any(|o| matches!(o, Output::CloseOut { .. }))
    );
}
