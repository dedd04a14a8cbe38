//! Shared test fixtures (cargo feature `testkit`, enabled only from the dev-dependencies of the
//! crates whose tests use it): the one-BTC book that engine, simulation and service tests start
//! from, written once so that a change to its figures reaches every test that relies on them.
//!
//! Hand figures the tests build on: under [`ONE_BTC_PARAMS`] a position of `q` BTC at spot `S`
//! needs an initial margin of `0.10 q S` (the grid's full scan range, no options) and a
//! maintenance margin of `0.75` of that.

/// One underlying, BTC: 10% scan range, 10-point vol scans, standard IM 10% and MM 5%; USDC
/// as collateral at no haircut. Every other parameter takes its default (version 1 model).
pub const ONE_BTC_PARAMS: &str = r#"{"version": 1,
  "underlyings": {"BTC": {"price_scan_range": 0.10, "vol_scan_up": 0.10, "vol_scan_down": 0.10,
                          "standard_im_rate": 0.10, "standard_mm_rate": 0.05}},
  "collateral": {"USDC": {"haircut": 0.0}}}"#;

/// BTC at 60,000 with a flat 60% vol, USDC at 1, on 2026-11-24 08:00 UTC.
pub const ONE_BTC_MARKET: &str = r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"BTC": 60000, "USDC": 1},
  "vols": {"BTC": {"default": 0.6}}}"#;

/// a: long 1 BTC-PERPETUAL at 60,000 with 7,000 USDC. At 57,000 its margin balance is 4,000
/// against a maintenance margin of 0.75 x 5,700 = 4,275: liquidatable (it crosses near
/// 57,300). b: the short side, with 100,000 USDC. liquidator: 1,000,000 USDC and no position.
pub const ONE_BTC_BOOK: &str = r#"{"accounts": [
  {"id": "a", "balances": {"USDC": 7000}, "positions": [{"instrument": "BTC-PERPETUAL", "size": 1, "entry_price": 60000}]},
  {"id": "b", "balances": {"USDC": 100000}, "positions": [{"instrument": "BTC-PERPETUAL", "size": -1, "entry_price": 60000}]},
  {"id": "liquidator", "balances": {"USDC": 1000000}}]}"#;

/// Liquidation across protocols (issue 20): BTC and ETH, scan ranges 15 % and 10 %, no
/// history and no add-ons (so `initial = grid risk`, `maintenance = 0.75 x initial`); ETH
/// collateral cut 10 %, USDC 0; Aave (`aave-v3`) and Uniswap v3 (`uniswap-v3`) each cut 5 %.
pub const SEIZE_PARAMS: &str = r#"{"version": 1,
  "underlyings": {
    "BTC": {"price_scan_range": 0.15, "vol_scan_up": 0.1, "vol_scan_down": 0.1,
            "standard_im_rate": 0.1, "standard_mm_rate": 0.05},
    "ETH": {"price_scan_range": 0.10, "vol_scan_up": 0.1, "vol_scan_down": 0.1,
            "standard_im_rate": 0.1, "standard_mm_rate": 0.05}},
  "collateral": {"USDC": {"haircut": 0.0}, "ETH": {"haircut": 0.10, "underlying": "ETH"}},
  "external_protocols": {"aave-v3": {"haircut": 0.05}, "uniswap-v3": {"haircut": 0.05}}}"#;

/// Under [`SEIZE_PARAMS`], account `a`: 1,000 USDC, long 1 BTC perpetual from 60,000 and 5 ETH
/// deposited on Aave. With BTC at 46,000 and ETH at 3,000 its margin balance is
/// 1,000 - 14,000 + 15,000 x 0.95 x 0.90 = -175, and once its perpetual is closed 13/33 of the
/// deposit restores maintenance (crates/engine/tests/seize.rs works it out).
pub const SEIZE_ACCOUNT: &str = r#"{"id": "a", "balances": {"USDC": 1000},
  "positions": [{"instrument": "BTC-PERPETUAL", "size": 1, "entry_price": 60000}],
  "external": [{"kind": "lending_deposit", "protocol": "aave-v3", "asset": "ETH", "amount": 5}]}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{margin_report, Market, Params, Portfolio, ReportOptions};

    #[test]
    fn the_fixture_parses_and_has_the_documented_figures() {
        let p = Portfolio::parse("testkit book", ONE_BTC_BOOK).unwrap();
        let m = Market::parse("testkit market", ONE_BTC_MARKET).unwrap();
        let r = Params::parse("testkit params", ONE_BTC_PARAMS).unwrap();
        let report = margin_report(&p, &m, &r, None, ReportOptions::default()).unwrap();
        let a = &report.accounts[0];
        // 0.10 x 1 x 60,000 = 6,000 IM, 4,500 MM; 7,000 USDC and no P&L yet.
        assert!(
            (a.initial_margin - 6_000.0).abs() < 1e-9,
            "{}",
            a.initial_margin
        );
        assert!((a.maintenance_margin - 4_500.0).abs() < 1e-9);
        assert!((a.margin_balance - 7_000.0).abs() < 1e-9);
    }
}
