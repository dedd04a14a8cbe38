//! Shared fixtures for the integration tests: small input builders, an independent Black-76,
//! and tolerance helpers.
//!
//! Nothing here calls into the engine's numerics: expected values in the tests are computed
//! with the formulas below (or by hand in comments), never read back from the code under test.

#![allow(dead_code)]

use pmargin_core::report::AccountReport;
use pmargin_core::{
    margin_report, History, InputError, MarginReport, Market, Params, Portfolio, ReportOptions,
};
use serde_json::{json, Value};

/// As of 24 Nov 2026 08:00 UTC: `27DEC26` expiries are exactly 33 days away.
pub const AS_OF: &str = "2026-11-24T08:00:00Z";
pub const BTC: f64 = 60_000.0;
pub const ETH: f64 = 3_000.0;
pub const SOL: f64 = 150.0;
/// Year fraction from `AS_OF` to 27 Dec 2026 08:00 UTC: 33 days / 365.
pub const T_27DEC26: f64 = 33.0 / 365.0;

/// The contract tolerance of docs/MODEL.md: 1e-9 relative or 1e-6 absolute, whichever is looser.
#[track_caller]
pub fn assert_close(actual: f64, expected: f64, what: &str) {
    let tol = (1e-9 * expected.abs()).max(1e-6);
    assert!(
        (actual - expected).abs() <= tol,
        "{what}: got {actual}, expected {expected} (diff {:e}, tol {tol:e})",
        actual - expected
    );
}

/// Tolerance for figures that come out of a root finder: 1e-6 relative.
#[track_caller]
pub fn assert_close_rel(actual: f64, expected: f64, rel: f64, what: &str) {
    let tol = rel * expected.abs().max(1e-300);
    assert!(
        (actual - expected).abs() <= tol,
        "{what}: got {actual}, expected {expected} (rel diff {:e})",
        (actual - expected) / expected
    );
}

/// Standard normal CDF, `0.5 erfc(-x / sqrt 2)`: accurate in both tails.
pub fn norm_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Textbook Black-76 with `D = exp(-r T)`, intrinsic at or past expiry.
pub fn black76(call: bool, f: f64, k: f64, t: f64, sigma: f64, r: f64) -> f64 {
    if t <= 0.0 {
        return if call {
            (f - k).max(0.0)
        } else {
            (k - f).max(0.0)
        };
    }
    let d = (-r * t).exp();
    let sd = sigma * t.sqrt();
    let d1 = ((f / k).ln() + 0.5 * sigma * sigma * t) / sd;
    let d2 = d1 - sd;
    if call {
        d * (f * norm_cdf(d1) - k * norm_cdf(d2))
    } else {
        d * (k * norm_cdf(-d2) - f * norm_cdf(-d1))
    }
}

/// Price moves as fractions of the range for n = 7: thirds, from -1 to 1.
pub const THIRDS: [f64; 7] = [-1.0, -2.0 / 3.0, -1.0 / 3.0, 0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0];

/// One underlying's scan parameters with the same range for price and both vol directions.
pub fn underlying(range: f64, vol: f64, im: f64, mm: f64) -> Value {
    json!({ "price_scan_range": range, "vol_scan_up": vol, "vol_scan_down": vol,
            "standard_im_rate": im, "standard_mm_rate": mm })
}

/// The example parameter set: BTC 10%/10 vol points, ETH 12%/12 points, SOL 20%/20 points;
/// isolated IM 10%, MM 5%; collateral USDC (stable), BTC (5% haircut), ETH (7%), SOL (10%).
pub fn params_value() -> Value {
    json!({
        "version": 1,
        "underlyings": {
            "BTC": underlying(0.10, 0.10, 0.10, 0.05),
            "ETH": underlying(0.12, 0.12, 0.10, 0.05),
            "SOL": underlying(0.20, 0.20, 0.10, 0.05)
        },
        "collateral": {
            "USDC": { "haircut": 0.0 },
            "BTC":  { "haircut": 0.05, "underlying": "BTC" },
            "ETH":  { "haircut": 0.07, "underlying": "ETH" },
            "SOL":  { "haircut": 0.10, "underlying": "SOL" }
        }
    })
}

pub fn params_with(edit: impl FnOnce(&mut Value)) -> Params {
    let mut v = params_value();
    edit(&mut v);
    Params::parse("params.json", &v.to_string()).expect("test params parse")
}

pub fn params() -> Params {
    params_with(|_| {})
}

/// BTC 60,000, ETH 3,000, SOL 150, USDC 1; vols: BTC default 0.60, ETH 0.70, SOL 0.90.
pub fn market_value() -> Value {
    json!({
        "as_of": AS_OF,
        "rate": 0.0,
        "prices": { "BTC": BTC, "ETH": ETH, "SOL": SOL, "USDC": 1.0 },
        "marks": {},
        "vols": { "BTC": { "default": 0.60 }, "ETH": { "default": 0.70 }, "SOL": { "default": 0.90 } },
        "ivs": {}
    })
}

pub fn market_with(edit: impl FnOnce(&mut Value)) -> Market {
    let mut v = market_value();
    edit(&mut v);
    Market::parse("market.json", &v.to_string()).expect("test market parses")
}

pub fn market() -> Market {
    market_with(|_| {})
}

/// A perpetual or future position.
pub fn linear(instrument: &str, size: f64, entry: f64) -> Value {
    json!({ "instrument": instrument, "size": size, "entry_price": entry })
}

/// An option position (no entry price: the premium is in the balances).
pub fn option(instrument: &str, size: f64) -> Value {
    json!({ "instrument": instrument, "size": size })
}

pub fn account(id: &str, balances: Value, positions: Vec<Value>) -> Value {
    json!({ "id": id, "balances": balances, "positions": positions })
}

pub fn portfolio(accounts: Vec<Value>) -> Portfolio {
    let text = json!({ "accounts": accounts }).to_string();
    Portfolio::parse("portfolio.json", &text).expect("test portfolio parses")
}

pub const NO_LIQ: ReportOptions = ReportOptions {
    liquidation_prices: false,
};
pub const WITH_LIQ: ReportOptions = ReportOptions {
    liquidation_prices: true,
};

pub fn run(p: &Portfolio, m: &Market, params: &Params, opts: ReportOptions) -> MarginReport {
    margin_report(p, m, params, None, opts).expect("margin report")
}

pub fn run_hist(
    p: &Portfolio,
    m: &Market,
    params: &Params,
    h: &History,
) -> Result<MarginReport, InputError> {
    margin_report(p, m, params, Some(h), NO_LIQ)
}

/// Report of a single account with default params and market.
pub fn one(balances: Value, positions: Vec<Value>, opts: ReportOptions) -> AccountReport {
    let p = portfolio(vec![account("a", balances, positions)]);
    run(&p, &market(), &params(), opts).accounts.remove(0)
}

pub fn find<'a>(r: &'a MarginReport, id: &str) -> &'a AccountReport {
    r.accounts
        .iter()
        .find(|a| a.id == id)
        .unwrap_or_else(|| panic!("no account {id}"))
}

/// Scenario loss of a single-underlying book under one (move, vol shift, weight): the test's
/// own revaluation of docs/MODEL.md section 3. `linear_notional` is the sum of size x mark of
/// perpetuals/futures and amount x price of non-stable balances; options are
/// `(is_call, size, forward, strike, t, vol)`.
pub fn book_loss(
    linear_notional: f64,
    options: &[(bool, f64, f64, f64, f64, f64)],
    m: f64,
    dv: f64,
    w: f64,
) -> f64 {
    let mut pnl = linear_notional * m;
    for &(call, size, f, k, t, vol) in options {
        let v0 = black76(call, f, k, t, vol, 0.0);
        let v1 = black76(call, f * (1.0 + m), k, t, (vol + dv).max(0.01), 0.0);
        pnl += size * (v1 - v0);
    }
    -w * pnl
}

/// The 16 single scenarios of a one-underlying book for n = 7, k = 2, c = 0.35, as
/// `(label, loss)`, labels in the report's words.
pub fn sixteen(
    linear_notional: f64,
    options: &[(bool, f64, f64, f64, f64, f64)],
    range: f64,
    vol_up: f64,
    vol_down: f64,
) -> Vec<(String, f64)> {
    let labels = ["-1/1", "-2/3", "-1/3", "0/1", "1/3", "2/3", "1/1"];
    let mut out = Vec::new();
    for (f, label) in THIRDS.iter().zip(labels) {
        out.push((
            format!("{label} vol+"),
            book_loss(linear_notional, options, f * range, vol_up, 1.0),
        ));
        out.push((
            format!("{label} vol-"),
            book_loss(linear_notional, options, f * range, -vol_down, 1.0),
        ));
    }
    out.push((
        "extreme up".into(),
        book_loss(linear_notional, options, 2.0 * range, 0.0, 0.35),
    ));
    out.push((
        "extreme down".into(),
        book_loss(linear_notional, options, -2.0 * range, 0.0, 0.35),
    ));
    out
}

pub fn worst(scenarios: &[(String, f64)]) -> (String, f64) {
    scenarios
        .iter()
        .fold((String::new(), f64::NEG_INFINITY), |acc, (l, v)| {
            if *v > acc.1 {
                (l.clone(), *v)
            } else {
                acc
            }
        })
}
