//! A venue's confidence (Pyth's `conf`) through the oracle into the market's `confidence` and the
//! oracle add-on of docs/MODEL.md section 11, and the sources' weights in the index's median.

use pmargin_core::{Market, Params, Portfolio};
use pmargin_engine::oracle::OracleConfig;
use pmargin_engine::{Engine, EngineConfig, Event};

// Oracle add-on on BTC: `oracle_confidence_multiple` 2 x confidence x G, G the gross units.
const PARAMS: &str = r#"{"version": 2,
  "underlyings": {"BTC": {"price_scan_range": 0.10, "vol_scan_up": 0.10, "vol_scan_down": 0.10,
                          "standard_im_rate": 0.10, "standard_mm_rate": 0.05,
                          "oracle_confidence_multiple": 2}},
  "collateral": {"USDC": {"haircut": 0.0}}}"#;
const MARKET: &str = r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"BTC": 60000, "USDC": 1}}"#;
// a: long 3 perpetuals (G = 3); b: short 3 (G = 3).
const BOOK: &str = r#"{"accounts": [
  {"id": "a", "balances": {"USDC": 100000}, "positions": [{"instrument": "BTC-PERPETUAL", "size": 3, "entry_price": 60000}]},
  {"id": "b", "balances": {"USDC": 100000}, "positions": [{"instrument": "BTC-PERPETUAL", "size": -3, "entry_price": 60000}]},
  {"id": "liquidator", "balances": {"USDC": 1000000}}]}"#;

fn engine() -> Engine {
    let config = EngineConfig {
        oracle: Some(OracleConfig {
            min_sources: 2,
            circuit_breaker: 0.5,
            ..OracleConfig::default()
        }),
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

fn quote(source: &str, price: f64, ts_ms: i64, confidence: Option<f64>) -> Event {
    Event::Quote {
        source: source.into(),
        underlying: "BTC".into(),
        price,
        ts_ms,
        confidence,
        weight: None,
    }
}

fn im(e: &Engine, account: &str) -> f64 {
    e.risk(account).unwrap().initial_margin
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// The figures the engine keeps are the ones a full recomputation gives.
fn assert_cached_is_full(e: &Engine) {
    let full = e.full_requirements().unwrap();
    let cached = e.cached_requirements();
    for (f, c) in full.iter().zip(&cached) {
        assert!(close(f.initial_margin, c.initial_margin), "{f:?} {c:?}");
        assert!(
            close(f.maintenance_margin, c.maintenance_margin),
            "{f:?} {c:?}"
        );
    }
}

#[test]
fn a_pyth_confidence_moves_the_oracle_add_on_by_its_formula() {
    let mut e = engine();
    e.apply(&quote("deribit", 60_000.0, 1_000, None));
    e.apply(&quote("binance", 60_000.0, 1_000, None));
    assert!(!e.liquidations_suspended("BTC"));
    assert_eq!(e.market().confidence.get("BTC"), None);
    let (a0, b0) = (im(&e, "a"), im(&e, "b"));

    // Pyth at the same price with conf 45: the index stays 60,000 and the add-on is
    // 2 x 45 x 3 = 270 on each side.
    let out = e.apply(&quote("pyth", 60_000.0, 2_000, Some(45.0)));
    assert!(
        !out.iter()
            .any(|o| matches!(o, pmargin_engine::Output::Rejected { .. })),
        "{out:?}"
    );
    assert_eq!(e.market().prices["BTC"], 60_000.0);
    assert_eq!(e.market().confidence.get("BTC"), Some(&45.0));
    assert!(close(im(&e, "a") - a0, 270.0), "{} {}", im(&e, "a"), a0);
    assert!(close(im(&e, "b") - b0, 270.0));
    assert_cached_is_full(&e);

    // Pyth narrows to 30: 2 x 30 x 3 = 180.
    e.apply(&quote("pyth", 60_000.0, 3_000, Some(30.0)));
    assert!(close(im(&e, "a") - a0, 180.0));
    // A second source with a wider band: the index's confidence is the largest of its
    // sources', 50: 2 x 50 x 3 = 300.
    e.apply(&quote("pyth-2", 60_000.0, 3_500, Some(50.0)));
    assert_eq!(
        e.oracle().unwrap().state("BTC").unwrap().confidence,
        Some(50.0)
    );
    assert!(close(im(&e, "a") - a0, 300.0));
    assert_cached_is_full(&e);
}

#[test]
fn a_confidence_with_a_price_move_re_margins_every_account_exactly() {
    let mut e = engine();
    e.apply(&quote("deribit", 60_000.0, 1_000, None));
    e.apply(&quote("binance", 60_000.0, 1_000, None));
    // Deribit 60,300, Binance 60,000, Pyth 60,120 with conf 80: the median 60,120 moves the
    // index and the confidence together (the tick's screening would hold the confidence).
    e.apply(&quote("deribit", 60_300.0, 2_000, None));
    e.apply(&quote("pyth", 60_120.0, 2_000, Some(80.0)));
    assert_eq!(e.market().prices["BTC"], 60_120.0);
    assert_eq!(e.market().confidence.get("BTC"), Some(&80.0));
    assert_cached_is_full(&e);
    let add_on = |e: &Engine| {
        let mut without = e.clone();
        without.apply(&quote("pyth", 60_120.0, 2_001, Some(0.0)));
        im(e, "a") - im(&without, "a")
    };
    // 2 x 80 x 3.
    assert!(close(add_on(&e), 480.0), "{}", add_on(&e));
}

#[test]
fn a_stale_confidence_source_leaves_the_last_confidence_in_place() {
    let mut e = engine();
    e.apply(&quote("deribit", 60_000.0, 1_000, None));
    e.apply(&quote("pyth", 60_000.0, 1_000, Some(45.0)));
    e.apply(&quote("binance", 60_000.0, 1_000, None));
    assert_eq!(e.market().confidence.get("BTC"), Some(&45.0));
    // 20 s later Pyth is stale (max_age 10 s): the index of Deribit and Binance gives no
    // confidence, and the market keeps the last one.
    e.apply(&quote("deribit", 60_010.0, 21_000, None));
    e.apply(&quote("binance", 60_010.0, 21_000, None));
    assert_eq!(e.market().prices["BTC"], 60_010.0);
    let state = e.oracle().unwrap().state("BTC").unwrap();
    assert_eq!(state.confidence, None);
    assert_eq!(e.market().confidence.get("BTC"), Some(&45.0));
    assert_cached_is_full(&e);
}

#[test]
fn weighted_sources_move_the_median_by_hand() {
    let mut e = engine();
    let weighted = |source: &str, price: f64, weight: f64| Event::Quote {
        source: source.into(),
        underlying: "BTC".into(),
        price,
        ts_ms: 1_000,
        confidence: None,
        weight: Some(weight),
    };
    // 60,000 (w 1), 60,300 (w 1), 60,600 (w 3): total 5, half 2.5; the cumulative weight is 1,
    // 2, 5 in price order and first passes 2.5 at 60,600 (the plain median would be 60,300).
    e.apply(&weighted("a", 60_000.0, 1.0));
    e.apply(&weighted("b", 60_300.0, 1.0));
    e.apply(&weighted("c", 60_600.0, 3.0));
    assert_eq!(e.market().prices["BTC"], 60_600.0);
    // c down to weight 1: the plain median, 60,300.
    e.apply(&weighted("c", 60_600.0, 1.0));
    assert_eq!(e.market().prices["BTC"], 60_300.0);
    // a at weight 2.5 (b 1, c 1): half 2.25, passed at 60,000. Then c at 1.5: total 5, half
    // 2.5, reached exactly at 60,000: the mean of 60,000 and 60,300.
    e.apply(&weighted("a", 60_000.0, 2.5));
    assert_eq!(e.market().prices["BTC"], 60_000.0);
    e.apply(&weighted("c", 60_600.0, 1.5));
    assert_eq!(e.market().prices["BTC"], 60_150.0);
    // A weight that is not positive is refused, naming the field.
    let out = e.apply(&weighted("c", 60_600.0, 0.0));
    assert!(format!("{out:?}").contains("weight"), "{out:?}");
}

#[test]
fn quotes_without_confidence_keep_their_bytes_and_snapshots_restore_with_it() {
    let plain = quote("a", 1.0, 0, None);
    assert_eq!(
        serde_json::to_string(&plain).unwrap(),
        r#"{"type":"quote","source":"a","underlying":"BTC","price":1.0,"ts_ms":0}"#
    );
    let read: Event = serde_json::from_str(
        r#"{"type":"quote","source":"a","underlying":"BTC","price":1.0,"ts_ms":0}"#,
    )
    .unwrap();
    assert_eq!(read, plain);
    let with: Event = serde_json::from_str(
        r#"{"type":"quote","source":"a","underlying":"BTC","price":1.0,"ts_ms":0,"confidence":2.5,"weight":3}"#,
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&with).unwrap()["confidence"],
        serde_json::json!(2.5)
    );

    // An oracle that never saw a confidence or a weight serializes as it did before them.
    let mut e = engine();
    e.apply(&quote("deribit", 60_000.0, 1_000, None));
    e.apply(&quote("binance", 60_000.0, 1_000, None));
    let text = serde_json::to_string(e.oracle().unwrap()).unwrap();
    assert!(
        !text.contains("confidence") && !text.contains("weight"),
        "{text}"
    );
    // One that did restores to the same engine.
    e.apply(&quote("pyth", 60_000.0, 2_000, Some(45.0)));
    let snapshot = e.snapshot();
    let text = serde_json::to_string(&snapshot).unwrap();
    let restored = Engine::restore(serde_json::from_str(&text).unwrap()).unwrap();
    assert_eq!(restored.snapshot(), snapshot);
    assert_eq!(restored.market().confidence.get("BTC"), Some(&45.0));
    assert!(close(im(&restored, "a"), im(&e, "a")));
}
