//! A fill's price band (issue 15): a trade further than `max_fill_deviation` from the
//! instrument's mark is refused with nothing changed, the same way on every replay.

use pmargin_core::{Market, Params, Portfolio};
use pmargin_engine::engine::PRICE_BAND_REJECTION;
use pmargin_engine::{Engine, EngineConfig, Event, Output};

const PORTFOLIO: &str = r#"{"accounts": [
  {"id": "a", "balances": {"USDC": 1000000}},
  {"id": "b", "balances": {"USDC": 1000000}}]}"#;
const MARKET: &str = r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"BTC": 60000, "USDC": 1},
  "vols": {"BTC": {"default": 0.6}}}"#;

fn params(deviation: Option<f64>) -> String {
    let extra = deviation.map_or(String::new(), |d| format!(", \"max_fill_deviation\": {d}"));
    format!(
        r#"{{"version": 1, "underlyings": {{"BTC": {{"price_scan_range": 0.10, "vol_scan_up": 0.10,
          "vol_scan_down": 0.10, "standard_im_rate": 0.10, "standard_mm_rate": 0.05{extra}}}}},
          "collateral": {{"USDC": {{"haircut": 0.0}}}}}}"#
    )
}

fn engine(deviation: Option<f64>) -> Engine {
    let portfolio = Portfolio::parse("p.json", PORTFOLIO).unwrap();
    let market = Market::parse("m.json", MARKET).unwrap();
    let params = Params::parse("r.json", &params(deviation)).unwrap();
    let mut e = Engine::new(&portfolio, &market, &params, EngineConfig::default()).unwrap();
    e.ensure_settlement_asset().unwrap();
    e
}

fn fill(instrument: &str, price: f64) -> Event {
    Event::Trade {
        account: "a".into(),
        instrument: instrument.into(),
        size: 1.0,
        price,
        fee: 0.0,
        counterparty: Some("b".into()),
    }
}

fn band_rejection(out: &[Output]) -> bool {
    matches!(out, [Output::Rejected { reason, .. }] if reason.starts_with(PRICE_BAND_REJECTION))
}

#[test]
fn a_perpetual_fill_more_than_a_tenth_from_the_mark_is_refused_and_changes_nothing() {
    let mut e = engine(None);
    let before = (format!("{:?}", e.portfolio()), e.insurance_fund());
    // The perpetual is marked at spot, 60,000: the default band is [54,000, 66,000].
    for price in [0.0, 53_999.0, 66_001.0] {
        let out = e.apply(&fill("BTC-PERPETUAL", price));
        assert!(band_rejection(&out), "{price}: {out:?}");
        assert_eq!((format!("{:?}", e.portfolio()), e.insurance_fund()), before);
    }
    for price in [54_000.0, 66_000.0] {
        let out = e.apply(&fill("BTC-PERPETUAL", price));
        assert!(
            !out.iter().any(|o| matches!(o, Output::Rejected { .. })),
            "{price}: {out:?}"
        );
    }
}

#[test]
fn the_band_is_the_parameter_sets_and_applies_to_option_premiums() {
    // max_fill_deviation 0.5: [30,000, 90,000] for the perpetual.
    let mut e = engine(Some(0.5));
    assert!(!band_rejection(&e.apply(&fill("BTC-PERPETUAL", 31_000.0))));
    assert!(band_rejection(&e.apply(&fill("BTC-PERPETUAL", 29_000.0))));
    // The at-the-money call (33 days, 60% vol) is worth about 0.4 x 60,000 x 0.6 x sqrt(33/365)
    // = 4,330: a premium of 100 is far outside half of it either way, 4,000 inside.
    let call = "BTC-27DEC26-60000-C";
    assert!(band_rejection(&e.apply(&fill(call, 100.0))));
    assert!(!band_rejection(&e.apply(&fill(call, 4_000.0))));
}

#[test]
fn a_replay_refuses_the_same_fills() {
    let events: Vec<Event> = [58_000.0, 70_000.0, 61_000.0, 1.0, 60_500.0]
        .iter()
        .map(|&p| fill("BTC-PERPETUAL", p))
        .collect();
    let run = || {
        let mut e = engine(None);
        let refused: Vec<bool> = events
            .iter()
            .map(|ev| band_rejection(&e.apply(ev)))
            .collect();
        (refused, format!("{:?}", e.portfolio()))
    };
    let (refused, state) = run();
    assert_eq!(refused, [false, true, false, true, false]);
    assert_eq!(run(), (refused, state));
}
