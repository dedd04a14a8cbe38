//! Monte Carlo statistical risk of one account: 50 option positions on BTC, ETH and SOL,
//! 10,000 simulated paths, on 2 threads. Timed: `mc_scenarios` (estimates + simulation),
//! `RiskArrays::compute` (every option repriced with Black-76 in every path and grid slot)
//! and the account's requirement. Target: under 50 ms.

use criterion::{criterion_group, criterion_main, Criterion};
use pmargin_core::montecarlo::mc_scenarios;
use pmargin_core::{Book, Evaluator, History, Market, Params, Portfolio, RiskArrays};
use serde_json::json;
use std::fmt::Write;
use std::hint::black_box;

const SPOTS: [(&str, f64, f64); 3] = [
    ("BTC", 60_000.0, 0.03),
    ("ETH", 3_000.0, 0.04),
    ("SOL", 150.0, 0.06),
];

/// 500 days of three correlated random walks from a fixed-seed xorshift generator.
fn history() -> History {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut normal = move || {
        let (u, v) = (uniform(), uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    };
    let mut text = String::from("date,BTC,ETH,SOL\n");
    let mut prices: Vec<f64> = SPOTS.iter().map(|s| s.1).collect();
    let start = chrono::NaiveDate::from_ymd_opt(2025, 7, 12).expect("date");
    for day in 0..500u64 {
        let date = start + chrono::Days::new(day);
        write!(text, "{date}").unwrap();
        for p in &prices {
            write!(text, ",{p:.6}").unwrap();
        }
        text.push('\n');
        let market = normal();
        for (p, s) in prices.iter_mut().zip(SPOTS) {
            let x = s.2 * (0.7 * market + 0.71 * normal());
            *p *= x.exp();
        }
    }
    History::parse("synthetic.csv", &text).expect("synthetic history")
}

fn inputs() -> (Portfolio, Market, Params) {
    let u = |r: f64| {
        json!({ "price_scan_range": r, "vol_scan_up": r, "vol_scan_down": r,
                "standard_im_rate": 0.1, "standard_mm_rate": 0.05 })
    };
    let params = json!({
        "version": 1,
        "underlyings": { "BTC": u(0.10), "ETH": u(0.12), "SOL": u(0.20) },
        "collateral": { "USDC": { "haircut": 0.0 } },
        "statistical": { "model": "mc", "mc_paths": 10_000 }
    });
    let market = json!({
        "as_of": "2026-11-24T08:00:00Z",
        "rate": 0.0,
        "prices": { "BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0, "USDC": 1.0 },
        "vols": { "BTC": { "default": 0.55 }, "ETH": { "default": 0.65 }, "SOL": { "default": 0.85 } }
    });
    // 3 expiries x 6 strikes per underlying, taken round-robin: 50 distinct options, a third
    // of them short.
    let expiries = ["27DEC26", "26MAR27", "25JUN27"];
    let moneyness = [0.7, 0.85, 0.95, 1.05, 1.15, 1.3];
    let mut positions = Vec::new();
    for slot in 0..18 {
        for (k, (name, spot, _)) in SPOTS.iter().enumerate() {
            if positions.len() < 50 {
                let (expiry, m) = (expiries[slot / 6], moneyness[slot % 6]);
                let side = if m < 1.0 { "P" } else { "C" };
                let sign = if (slot + k) % 3 == 0 { -1.0 } else { 1.0 };
                positions.push(json!({
                    "instrument": format!("{name}-{expiry}-{}-{side}", (spot * m).round()),
                    "size": sign * 6_000.0 / spot,
                }));
            }
        }
    }
    let portfolio = json!({ "accounts": [{ "id": "desk", "balances": { "USDC": 1_000_000.0 },
                                           "positions": positions }] });
    (
        Portfolio::parse("portfolio.json", &portfolio.to_string()).expect("portfolio"),
        Market::parse("market.json", &market.to_string()).expect("market"),
        Params::parse("params.json", &params.to_string()).expect("params"),
    )
}

fn montecarlo(c: &mut Criterion) {
    let history = history();
    let (portfolio, market, params) = inputs();
    let book = Book::build(&portfolio, &market, &params).expect("book");
    let account = &book.accounts[0];
    let options = account.positions.len();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("pool");
    let mut group = c.benchmark_group("montecarlo");
    group.sample_size(30);
    group.bench_function(
        format!("es_{options}_options_3_underlyings_10k_paths_2_threads"),
        |b| {
            b.iter(|| {
                pool.install(|| {
                    let (scenarios, _) =
                        mc_scenarios(&history, &params.statistical).expect("scenarios");
                    let arrays = RiskArrays::compute(&book, Some(&scenarios)).expect("arrays");
                    let req = Evaluator::new(&book, &arrays)
                        .requirement(account)
                        .expect("requirement");
                    black_box(req.es)
                })
            })
        },
    );
    // Breakdown: the simulation alone, and the revaluation of the 50 options under it.
    group.bench_function("mc_scenarios_only_10k_paths", |b| {
        b.iter(|| pool.install(|| black_box(mc_scenarios(&history, &params.statistical))))
    });
    let (scenarios, _) = mc_scenarios(&history, &params.statistical).expect("scenarios");
    group.bench_function("risk_arrays_only_10k_paths_2_threads", |b| {
        b.iter(|| pool.install(|| black_box(RiskArrays::compute(&book, Some(&scenarios)))))
    });
    group.finish();
}

criterion_group!(benches, montecarlo);
criterion_main!(benches);
