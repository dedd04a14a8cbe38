//! External positions in the real-time engine (docs/MODEL.md section 12): the engine's
//! figures after ticks and changes equal a fresh evaluation of its portfolio, and a refused
//! change changes nothing.

use pmargin_core::input::portfolio::ExternalPosition;
use pmargin_core::{Market, Params, Portfolio};
use pmargin_engine::{Engine, EngineConfig, Event};

const PARAMS: &str = r#"{"version": 1,
  "underlyings": {"ETH": {"price_scan_range": 0.10, "vol_scan_up": 0.10, "vol_scan_down": 0.10,
                          "standard_im_rate": 0.10, "standard_mm_rate": 0.05}},
  "collateral": {"USDC": {"haircut": 0.0}, "ETH": {"haircut": 0.07, "underlying": "ETH"}},
  "external_protocols": {"uniswap-v3": {"haircut": 0.05}}}"#;
const MARKET: &str = r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"ETH": 225, "USDC": 1}}"#;
const LP: &str = r#"{"kind": "uniswap_v3_lp", "protocol": "uniswap-v3", "token0": "ETH",
  "token1": "USDC", "liquidity": 1000, "price_lower": 100, "price_upper": 400}"#;

fn engine() -> Engine {
    let accounts = format!(
        r#"{{"accounts": [{{"id": "lp", "balances": {{"USDC": 500}}, "external": [{LP}]}},
                          {{"id": "plain", "balances": {{"USDC": 1000, "ETH": 2}}}}]}}"#
    );
    let portfolio = Portfolio::parse("p.json", &accounts).unwrap();
    let market = Market::parse("m.json", MARKET).unwrap();
    let params = Params::parse("r.json", PARAMS).unwrap();
    Engine::new(&portfolio, &market, &params, EngineConfig::default()).unwrap()
}

fn same_as_fresh(e: &Engine) {
    let fresh = e.full_requirements().unwrap();
    let cached = e.cached_requirements();
    for (f, c) in fresh.iter().zip(&cached) {
        assert!(
            (f.margin_balance - c.margin_balance).abs() < 1e-6
                && (f.initial_margin - c.initial_margin).abs() < 1e-6
                && f.status == c.status,
            "{f:?} vs {c:?}"
        );
    }
}

/// The LP is worth 8750 at 225 (margin 8312.5); after ticks the engine's figures are a fresh
/// evaluation's (the LP is revalued, never screened), including through a tick that leaves
/// its range and comes back.
#[test]
fn ticks_revalue_the_lp_exactly() {
    let mut e = engine();
    let lp = e.risk("lp").unwrap();
    assert!((lp.margin_balance - (500.0 + 8312.5)).abs() < 1e-9);
    for p in [226.0, 230.0, 90.0, 450.0, 224.0, 225.0] {
        e.apply(&Event::Price {
            underlying: "ETH".into(),
            price: p,
        });
        same_as_fresh(&e);
    }
    // Back at 225: the same figures as at the start.
    assert!((e.risk("lp").unwrap().margin_balance - lp.margin_balance).abs() < 1e-9);
}

/// Replacing the positions re-margins the account; an unknown protocol or token is refused
/// and changes nothing; a new account can be opened by its external positions.
#[test]
fn set_external_replaces_and_refuses_without_change() {
    let mut e = engine();
    let mut out = Vec::new();
    e.set_external_into("lp", &[], &mut out).unwrap();
    let r = e.risk("lp").unwrap();
    assert!((r.margin_balance - 500.0).abs() < 1e-9);
    assert_eq!(e.account("lp").unwrap().external.len(), 0);
    let position: ExternalPosition = serde_json::from_str(LP).unwrap();
    let mut bad = position.clone();
    if let ExternalPosition::UniswapV3Lp(lp) = &mut bad {
        lp.token1 = "DAI".into();
    }
    let err = e.set_external_into("lp", &[position.clone(), bad], &mut out);
    assert!(format!("{:?}", err.unwrap_err()).contains("external[1].token1"));
    assert_eq!(e.account("lp").unwrap().external.len(), 0);
    e.set_external_into("new", std::slice::from_ref(&position), &mut out)
        .unwrap();
    let r = e.risk("new").unwrap();
    assert!((r.margin_balance - 8312.5).abs() < 1e-9);
    assert_eq!(e.account("new").unwrap().external, vec![position]);
    same_as_fresh(&e);
}
