//! The oracle in front of the engine: quotes become index prices, and an untrusted index
//! suspends liquidations instead of acting on a bad print.

use pmargin_core::{Market, Params, Portfolio};
use pmargin_engine::oracle::OracleConfig;
use pmargin_engine::{Engine, EngineConfig, Event, Output};

const PARAMS: &str = r#"{"version": 1,
  "underlyings": {"BTC": {"price_scan_range": 0.10, "vol_scan_up": 0.10, "vol_scan_down": 0.10,
                          "standard_im_rate": 0.10, "standard_mm_rate": 0.05}},
  "collateral": {"USDC": {"haircut": 0.0}}}"#;
const MARKET: &str = r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"BTC": 60000, "USDC": 1}}"#;
// a: long 1 BTC at 60,000 with 7,000 USDC. At 57,000 its margin balance is 4,000 against a
// maintenance margin of 0.75 x 5,700 = 4,275: liquidatable.
const BOOK: &str = r#"{"accounts": [
  {"id": "a", "balances": {"USDC": 7000}, "positions": [{"instrument": "BTC-PERPETUAL", "size": 1, "entry_price": 60000}]},
  {"id": "b", "balances": {"USDC": 100000}, "positions": [{"instrument": "BTC-PERPETUAL", "size": -1, "entry_price": 60000}]},
  {"id": "liquidator", "balances": {"USDC": 1000000}}]}"#;

fn engine(oracle: OracleConfig) -> Engine {
    let config = EngineConfig {
        oracle: Some(oracle),
        ..EngineConfig::default()
    };
    let mut e = Engine::new(
        &Portfolio::parse("p.json", BOOK).unwrap(),
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

fn liquidated(out: &[Output]) -> bool {
    out.iter()
        .any(|o| matches!(o, Output::LiquidationFill { .. }))
}

#[test]
fn quorum_loss_suspends_liquidations_and_recovery_resumes_them() {
    let config = OracleConfig {
        min_sources: 2,
        max_age_ms: 10_000,
        circuit_breaker: 0.5,
        ..OracleConfig::default()
    };
    let mut e = engine(config);
    // Two venues agree on 60,000: the index is fresh.
    e.apply(&quote("venue-a", 60000.0, 1_000));
    let out = e.apply(&quote("venue-b", 60000.0, 1_000));
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::LiquidationsSuspended {
                suspended: false,
                ..
            }
        )),
        "{out:?}"
    );
    // Much later only one venue quotes 57,000: venue-b is stale, quorum is lost. The engine keeps
    // the last good price, suspends liquidations on BTC, and does not liquidate.
    let out = e.apply(&quote("venue-a", 57000.0, 60_000));
    assert!(e.liquidations_suspended("BTC"));
    assert!(!liquidated(&out), "{out:?}");
    assert_eq!(e.market().prices["BTC"], 60000.0);
    // venue-b confirms 57,000: quorum is back, the index moves, liquidations resume and act.
    let out = e.apply(&quote("venue-b", 57000.0, 60_500));
    assert!(!e.liquidations_suspended("BTC"));
    assert_eq!(e.market().prices["BTC"], 57000.0);
    assert!(liquidated(&out), "{out:?}");
}

#[test]
fn a_one_venue_spike_needs_confirmation() {
    let config = OracleConfig {
        min_sources: 1,
        circuit_breaker: 0.04,
        ..OracleConfig::default()
    };
    let mut e = engine(config);
    e.apply(&quote("venue-a", 60000.0, 1_000));
    // A 5% drop breaches the 4% circuit breaker: held until a second update confirms it.
    let out = e.apply(&quote("venue-a", 57000.0, 2_000));
    assert_eq!(e.market().prices["BTC"], 60000.0);
    assert!(!liquidated(&out));
    let out = e.apply(&quote("venue-a", 57000.0, 3_000));
    assert_eq!(e.market().prices["BTC"], 57000.0);
    assert!(liquidated(&out), "{out:?}");
}

#[test]
fn without_an_oracle_quotes_are_refused() {
    let mut e = Engine::new(
        &Portfolio::parse("p.json", BOOK).unwrap(),
        &Market::parse("m.json", MARKET).unwrap(),
        &Params::parse("r.json", PARAMS).unwrap(),
        EngineConfig::default(),
    )
    .unwrap();
    assert!(matches!(
        &e.apply(&quote("venue-a", 1.0, 1))[..],
        [Output::Rejected { .. }]
    ));
}

#[test]
fn a_spike_cannot_be_borrowed_against_with_a_stable_price() {
    use pmargin_engine::oracle::StablePriceConfig;
    // a: 7,000 USDC, long 1 BTC at 60,000. BTC jumps to 66,000 (confirmed by two venues).
    //   At the index: equity = 7,000 + 6,000 = 13,000; IM = 66,000 x 10% = 6,600.
    //   Withdrawing 5,000 leaves 8,000 >= 6,600: allowed without a stable price.
    //   The stable price moves at most 0.01% a second: 10 s after the first print it is
    //   60,000 x 1.001 = 60,060, so the margin balance counted for IM is
    //   7,000 + 60 - 5,000 = 2,060 < 6,600: refused.
    let run = |stable: Option<StablePriceConfig>| {
        let config = OracleConfig {
            min_sources: 2,
            circuit_breaker: 0.5,
            stable_price: stable,
            ..OracleConfig::default()
        };
        let mut e = engine(config);
        e.apply(&quote("venue-a", 60000.0, 0));
        e.apply(&quote("venue-b", 60000.0, 0));
        e.apply(&quote("venue-a", 66000.0, 10_000));
        e.apply(&quote("venue-b", 66000.0, 10_000));
        assert_eq!(e.market().prices["BTC"], 66000.0);
        e.apply(&Event::Withdrawal {
            account: "a".into(),
            asset: "USDC".into(),
            amount: 5000.0,
        })
    };
    assert!(run(None)
        .iter()
        .all(|o| !matches!(o, Output::Rejected { .. })));
    let out = run(Some(StablePriceConfig {
        max_move_per_second: 0.0001,
    }));
    match &out[..] {
        [Output::Rejected {
            required: Some(r),
            available: Some(v),
            ..
        }] => {
            assert!(
                (r - 6600.0).abs() < 1e-6 && (v - 2060.0).abs() < 1e-6,
                "{r} {v}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
