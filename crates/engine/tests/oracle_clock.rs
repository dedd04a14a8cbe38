//! Issue 15 in the engine: the oracle's clock (`OracleTick`) makes a silent feed's index stale,
//! withdrawals priced on an untrusted index are refused, liabilities count at the higher of
//! index and stable price, refusals leave the sequence as it was (`apply_accepted`), and a
//! refused fill lists no new instrument.
//!
//! BTC is scanned +-10%, so a perpetual needs initial margin 10% of its notional at the index.

use pmargin_core::{Market, Params, Portfolio};
use pmargin_engine::engine::STALE_INDEX_REJECTION;
use pmargin_engine::oracle::{OracleConfig, StablePriceConfig};
use pmargin_engine::{Engine, EngineConfig, Event, Output};

const PARAMS: &str = r#"{"version": 1,
  "underlyings": {"BTC": {"price_scan_range": 0.10, "vol_scan_up": 0.10, "vol_scan_down": 0.10,
                          "standard_im_rate": 0.10, "standard_mm_rate": 0.05,
                          "max_fill_deviation": 0.5}},
  "collateral": {"USDC": {"haircut": 0.0}}}"#;
const MARKET: &str = r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"BTC": 60000, "USDC": 1},
  "vols": {"BTC": {"default": 0.6}}}"#;
const ACCOUNTS: &str = r#"{"accounts": [
  {"id": "short", "balances": {"USDC": 10000}, "positions": []},
  {"id": "maker", "balances": {"USDC": 1000000}, "positions": []},
  {"id": "poor", "balances": {"USDC": 100}, "positions": []}]}"#;

const T0: i64 = 1_800_000_000_000;

fn engine(stable_rate: Option<f64>) -> Engine {
    let config = EngineConfig {
        oracle: Some(OracleConfig {
            stable_price: stable_rate.map(|max_move_per_second| StablePriceConfig {
                max_move_per_second,
            }),
            ..OracleConfig::default()
        }),
        ..EngineConfig::default()
    };
    let mut e = Engine::new(
        &Portfolio::parse("p.json", ACCOUNTS).unwrap(),
        &Market::parse("m.json", MARKET).unwrap(),
        &Params::parse("r.json", PARAMS).unwrap(),
        config,
    )
    .unwrap();
    e.ensure_settlement_asset().unwrap();
    e
}

fn quote(source: &str, price: f64, ts_ms: i64) -> Event {
    Event::Quote {
        source: source.into(),
        underlying: "BTC".into(),
        price,
        ts_ms,
        confidence: None,
        weight: None,
    }
}

fn withdraw(account: &str, amount: f64) -> Event {
    Event::Withdrawal {
        account: account.into(),
        asset: "USDC".into(),
        amount,
    }
}

fn refusal(out: &[Output]) -> Option<(&str, Option<f64>, Option<f64>)> {
    out.iter().find_map(|o| match o {
        Output::Rejected {
            reason,
            required,
            available,
        } => Some((reason.as_str(), *required, *available)),
        _ => None,
    })
}

fn fresh_quotes(e: &mut Engine, price: f64, ts: i64) {
    for source in ["a", "b"] {
        let out = e.apply_accepted(&quote(source, price, ts));
        assert!(refusal(&out).is_none(), "{out:?}");
    }
}

#[test]
fn a_tick_past_max_age_makes_the_index_stale_and_refuses_withdrawals_until_quotes_return() {
    let mut e = engine(None);
    fresh_quotes(&mut e, 60_000.0, T0);
    assert!(!e.liquidations_suspended("BTC"));
    // Quotes are fresh for max_age_ms (10 s): no tick is due before.
    assert!(!e.oracle_tick_due(T0 + 10_000));
    assert!(e.oracle_tick_due(T0 + 10_001));
    let seq = e.sequence();
    let out = e.apply_accepted(&Event::OracleTick {
        now_ms: T0 + 10_001,
    });
    assert_eq!(
        out,
        vec![Output::LiquidationsSuspended {
            underlying: "BTC".into(),
            suspended: true
        }]
    );
    assert_eq!(
        e.sequence(),
        seq + 1,
        "a tick that changed something counts"
    );
    assert!(!e.oracle_tick_due(T0 + 20_000), "already stale");
    // "maker" holds no BTC: its withdrawals do not depend on the index.
    assert!(refusal(&e.apply_accepted(&withdraw("maker", 1.0))).is_none());
    let seq = e.sequence();
    // An account exposed to BTC cannot take collateral out at a dead feed's last print.
    let trade = Event::Trade {
        account: "short".into(),
        instrument: "BTC-PERPETUAL".into(),
        size: -0.1,
        price: 60_000.0,
        fee: 0.0,
        counterparty: Some("maker".into()),
    };
    assert!(refusal(&e.apply_accepted(&trade)).is_none());
    let seq_after_trade = e.sequence();
    assert_eq!(seq_after_trade, seq + 1);
    let out = e.apply_accepted(&withdraw("short", 1.0));
    let (reason, _, _) = refusal(&out).expect("refused");
    assert!(reason.starts_with(STALE_INDEX_REJECTION), "{reason}");
    assert_eq!(
        e.sequence(),
        seq_after_trade,
        "a refusal leaves the sequence"
    );
    assert_eq!(
        e.account("short").unwrap().balances.get("USDC").copied(),
        Some(10_000.0)
    );
    // The feed returns: liquidations resume, withdrawals go through.
    fresh_quotes(&mut e, 60_000.0, T0 + 30_000);
    assert!(!e.liquidations_suspended("BTC"));
    assert!(refusal(&e.apply_accepted(&withdraw("short", 1.0))).is_none());
}

#[test]
fn a_short_counts_its_liability_at_the_higher_stable_price_for_withdrawals() {
    // The stable price barely moves (1e-9 per second).
    let mut e = engine(Some(1e-9));
    fresh_quotes(&mut e, 60_000.0, T0);
    let short = Event::Trade {
        account: "short".into(),
        instrument: "BTC-PERPETUAL".into(),
        size: -1.0,
        price: 60_000.0,
        fee: 0.0,
        counterparty: Some("maker".into()),
    };
    assert!(refusal(&e.apply_accepted(&short)).is_none());
    // BTC falls 10% (inside the circuit breaker): the short gains 6,000 at the index.
    fresh_quotes(&mut e, 54_000.0, T0 + 1_000);
    let stable = e
        .oracle()
        .unwrap()
        .state("BTC")
        .unwrap()
        .stable_price
        .unwrap();
    assert!((stable - 60_000.0).abs() < 1e-3, "stable {stable}");
    let risk = e.risk("short").unwrap();
    assert!((risk.margin_balance - 16_000.0).abs() < 1e-6, "{risk:?}");
    assert!((risk.initial_margin - 5_400.0).abs() < 1e-6, "{risk:?}");
    // At the index it could withdraw 16,000 - 5,400 = 10,600; with its liability at the
    // stable price (about 60,000) its margin balance counts 10,000: 4,600 at most.
    let out = e.apply_accepted(&withdraw("short", 4_700.0));
    let (_, required, available) = refusal(&out).expect("refused");
    assert!((required.unwrap() - 5_400.0).abs() < 1e-6, "{out:?}");
    assert!((available.unwrap() - 5_300.0).abs() < 1e-3, "{out:?}");
    assert!(refusal(&e.apply_accepted(&withdraw("short", 4_500.0))).is_none());
}

#[test]
fn a_refused_fill_lists_no_new_instrument() {
    let mut e = engine(None);
    let future = "BTC-27DEC26";
    assert!(e.book().instrument_index(future).is_none());
    let listed = e.book().instruments.len();
    let fill = |account: &str| Event::Trade {
        account: account.into(),
        instrument: future.into(),
        size: 1.0,
        price: 60_000.0,
        fee: 0.0,
        counterparty: Some("maker".into()),
    };
    // 100 USDC cannot margin a bitcoin future (6,000 of initial margin).
    let seq = e.sequence();
    let out = e.apply_accepted(&fill("poor"));
    assert!(
        refusal(&out).is_some_and(|r| r.0.contains("below initial margin")),
        "{out:?}"
    );
    assert!(e.book().instrument_index(future).is_none());
    assert_eq!(e.book().instruments.len(), listed);
    assert_eq!(e.sequence(), seq);
    // Nor does a pre-trade check.
    assert!(e.check_trade("poor", future, 1.0, 60_000.0, 0.0).is_err());
    assert!(e.check_trade("maker", future, 1.0, 60_000.0, 0.0).is_ok());
    assert_eq!(e.book().instruments.len(), listed);
    // Sizes and prices beyond the maxima are refused before anything is priced.
    let huge = Event::Trade {
        account: "maker".into(),
        instrument: future.into(),
        size: 2e9,
        price: 60_000.0,
        fee: 0.0,
        counterparty: None,
    };
    assert!(refusal(&e.apply_accepted(&huge)).is_some_and(|r| r.0.contains("size")));
    assert_eq!(e.book().instruments.len(), listed);
    // An accepted fill lists it.
    let out = e.apply_accepted(&Event::Deposit {
        account: "poor".into(),
        asset: "USDC".into(),
        amount: 100_000.0,
    });
    assert!(refusal(&out).is_none());
    assert!(refusal(&e.apply_accepted(&fill("poor"))).is_none());
    assert!(e.book().instrument_index(future).is_some());
    assert_eq!(e.sequence(), seq + 2);
}
