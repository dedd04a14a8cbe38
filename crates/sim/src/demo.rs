//! The bundled scenario: the 2020-03-12 crash ("Black Thursday") on a synthetic closed book.
//!
//! ## The path
//!
//! The endpoints are real: the BTC and ETH daily closes of 2020-03-11, 2020-03-12 and
//! 2020-03-13 from `data/history.csv` (Yahoo Finance, bundled into the binary; BTC 7,911.43 ->
//! 4,970.79 -> 5,563.71, ETH 194.87 -> 112.35 -> 133.20). Between two closes the intraday shape
//! is **synthetic**: the log price is the straight line between the closes plus a Brownian
//! bridge (zero at both closes) with a daily volatility of 10% for BTC and 12% for ETH,
//! correlation 0.9, drawn from a ChaCha8 generator seeded with `seed`. So the same seed always
//! gives the same path, and every close is hit exactly. Labels read `2020-03-12 00:15` (the
//! trading day and the time since the previous close, UTC) and `2020-03-12 close`.
//!
//! ## The book
//!
//! `accounts` accounts in all, every one inside the simulation (a closed book):
//!
//! * **traders** (`t-00000`...): BTC perpetual only (60%), ETH perpetual only (25%) or both
//!   (15%); each leg long with probability 60% (the long bias of early 2020); notional
//!   log-normal with median $20,000 (sigma 1.0, clamped to $500..$2m), in lots of 0.001 BTC or
//!   0.01 ETH; entry within +-1% of the 2020-03-11 close; leverage log-uniform between 2x and
//!   the most the initial margin allows (25x on BTC, 20x on ETH), so the account's equity is
//!   `notional / leverage` and never below its initial margin at the start;
//! * **market makers** (`mm-000`..., one per 250 accounts): together they hold exactly the
//!   opposite of the traders' net position in each perpetual (integer lots, so each instrument
//!   nets to zero), entered at the 2020-03-11 close, at 2x-5x leverage;
//! * **the liquidator** (`liquidator`): takes every liquidated position at the mark; it holds
//!   USDC equal to the book's whole open interest.
//!
//! Collateral is USDC only. The parameter set ([`DEMO_PARAMS`]) scans BTC +-4% and ETH +-5%
//! (initial margin 4% / 5% of notional on a perpetual, maintenance 75% of that), and the
//! insurance fund starts at $2m ([`DEMO_INSURANCE_FUND`]). Because the book is closed and the
//! collateral is a stablecoin, every account's equity plus the fund is the same before and
//! after the crash, to rounding.

use crate::path::{PathStep, PricePath};
use pmargin_core::input::portfolio::{Account, Position};
use pmargin_core::instrument::Instrument;
use pmargin_core::{Market, Params, Portfolio};
use pmargin_engine::EngineConfig;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// The bundled daily closes (date,BTC,ETH).
pub use pmargin_backtest::data::HISTORY_CSV;

/// The closes the demo path runs through.
pub const DEMO_DATES: [&str; 3] = ["2020-03-11", "2020-03-12", "2020-03-13"];
pub const DEMO_ACCOUNTS: usize = 10_000;
pub const DEMO_STEPS_PER_DAY: usize = 96;
pub const DEMO_SEED: u64 = 20200312;
pub const DEMO_INSURANCE_FUND: f64 = 2_000_000.0;
/// Impact coefficient of `--demo` when `--impact` is not given.
pub const DEMO_IMPACT: f64 = 0.0;

pub const DEMO_PARAMS: &str = r#"{
  "version": 1,
  "underlyings": {
    "BTC": { "price_scan_range": 0.04, "vol_scan_up": 0.10, "vol_scan_down": 0.10,
             "standard_im_rate": 0.04, "standard_mm_rate": 0.03 },
    "ETH": { "price_scan_range": 0.05, "vol_scan_up": 0.10, "vol_scan_down": 0.10,
             "standard_im_rate": 0.05, "standard_mm_rate": 0.0375 }
  },
  "collateral": { "USDC": { "haircut": 0.0 } },
  "mm_fraction": 0.75
}"#;

const UNDERLYINGS: [&str; 2] = ["BTC", "ETH"];
const SCAN: [f64; 2] = [0.04, 0.05];
const LOT: [f64; 2] = [0.001, 0.01];
const DAILY_VOL: [f64; 2] = [0.10, 0.12];
const CORRELATION: f64 = 0.9;

/// The closes of `dates` (BTC, ETH) from the bundled history.
pub fn closes(dates: &[&str]) -> Result<Vec<[f64; 2]>, String> {
    dates
        .iter()
        .map(|d| {
            let (n, line) = HISTORY_CSV
                .lines()
                .enumerate()
                .find(|(_, l)| l.starts_with(&format!("{d},")))
                .ok_or_else(|| format!("bundled history: no row for {d}"))?;
            let cells: Vec<&str> = line.split(',').collect();
            let num = |i: usize| -> Result<f64, String> {
                cells
                    .get(i)
                    .and_then(|c| c.trim().parse::<f64>().ok())
                    .filter(|p| p.is_finite() && *p > 0.0)
                    .ok_or_else(|| {
                        format!("bundled history:{}: bad price in column {}", n + 1, i + 1)
                    })
            };
            Ok([num(1)?, num(2)?])
        })
        .collect()
}

struct Random(ChaCha8Rng);

impl Random {
    fn new(seed: u64) -> Random {
        Random(ChaCha8Rng::seed_from_u64(seed))
    }
    /// Uniform on (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.0.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller, one draw per call).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// The demo path: the real closes of [`DEMO_DATES`], `steps_per_day` synthetic steps between
/// each pair (see the module documentation).
pub fn demo_path(steps_per_day: usize, seed: u64) -> Result<PricePath, String> {
    if steps_per_day == 0 {
        return Err("steps per day must be at least 1".into());
    }
    let closes = closes(&DEMO_DATES)?;
    let mut rng = Random::new(seed ^ 0x5041_5448); // "PATH"
    let n = steps_per_day;
    let mut steps = vec![PathStep {
        label: format!("{} close", DEMO_DATES[0]),
        prices: closes[0].to_vec(),
    }];
    for day in 1..closes.len() {
        let (from, to) = (closes[day - 1], closes[day]);
        // Brownian motions W (one per underlying, correlated), turned into bridges.
        let mut w = vec![[0.0f64; 2]; n + 1];
        for k in 1..=n {
            let z0 = rng.normal();
            let z1 = CORRELATION * z0 + (1.0 - CORRELATION * CORRELATION).sqrt() * rng.normal();
            for (u, z) in [z0, z1].into_iter().enumerate() {
                w[k][u] = w[k - 1][u] + z * DAILY_VOL[u] / (n as f64).sqrt();
            }
        }
        for k in 1..=n {
            let s = k as f64 / n as f64;
            let prices = (0..2)
                .map(|u| {
                    if k == n {
                        to[u]
                    } else {
                        let line = from[u].ln() + s * (to[u].ln() - from[u].ln());
                        (line + w[k][u] - s * w[n][u]).exp()
                    }
                })
                .collect();
            let minutes = k * 1440 / n;
            let label = if k == n {
                format!("{} close", DEMO_DATES[day])
            } else {
                format!(
                    "{} {:02}:{:02}",
                    DEMO_DATES[day],
                    minutes / 60,
                    minutes % 60
                )
            };
            steps.push(PathStep { label, prices });
        }
    }
    Ok(PricePath {
        source: format!(
            "bundled: real closes {} (data/history.csv), synthetic intraday shape (seed {seed}, {n} steps per day)",
            DEMO_DATES.join(" -> ")
        ),
        underlyings: UNDERLYINGS.iter().map(|s| s.to_string()).collect(),
        steps,
    })
}

/// The inputs of the demo book.
pub struct DemoBook {
    pub portfolio: Portfolio,
    pub market: Market,
    pub params: Params,
    pub config: EngineConfig,
}

fn perpetual(u: usize) -> Instrument {
    Instrument::parse(&format!("{}-PERPETUAL", UNDERLYINGS[u])).expect("a valid perpetual name")
}

/// The synthetic closed book of `accounts` accounts (at least 3), seeded with `seed`, with the
/// insurance fund `insurance_fund` (see the module documentation).
pub fn demo_book(accounts: usize, seed: u64, insurance_fund: f64) -> Result<DemoBook, String> {
    if accounts < 3 {
        return Err(
            "the demo book needs at least 3 accounts (a trader, a market maker, the liquidator)"
                .into(),
        );
    }
    let start = closes(&DEMO_DATES[..1])?[0];
    let mut rng = Random::new(seed ^ 0x424f_4f4b); // "BOOK"
    let makers = (accounts / 250).max(1);
    let traders = accounts - 1 - makers;
    let mut list = Vec::with_capacity(accounts);
    let mut net_lots = [0i64; 2];
    let mut open_interest = [0.0f64; 2];
    for t in 0..traders {
        let pick = rng.uniform();
        let legs: &[usize] = if pick < 0.60 {
            &[0]
        } else if pick < 0.85 {
            &[1]
        } else {
            &[0, 1]
        };
        let mut positions = Vec::new();
        let (mut notional_total, mut im, mut upnl) = (0.0, 0.0, 0.0);
        for &u in legs {
            let side = if rng.uniform() < 0.60 { 1i64 } else { -1 };
            let notional = (20_000f64.ln() + rng.normal())
                .exp()
                .clamp(500.0, 2_000_000.0);
            let lots = ((notional / start[u] / LOT[u]).round() as i64).max(1) * side;
            let size = lots as f64 * LOT[u];
            let entry = start[u] * (1.0 + 0.02 * (rng.uniform() - 0.5));
            net_lots[u] += lots;
            if lots > 0 {
                open_interest[u] += size * start[u];
            }
            notional_total += size.abs() * start[u];
            im += size.abs() * start[u] * SCAN[u];
            upnl += size * (start[u] - entry);
            positions.push(Position {
                instrument: perpetual(u),
                size,
                entry_price: Some(entry),
            });
        }
        let max_leverage = notional_total / im;
        let leverage = (2f64.ln() + rng.uniform() * (max_leverage.ln() - 2f64.ln())).exp();
        let equity = (notional_total / leverage).max(im * 1.0001);
        list.push(Account {
            id: format!("t-{t:05}"),
            balances: BTreeMap::from([("USDC".to_string(), equity - upnl)]),
            positions,
            external: Vec::new(),
        });
    }
    // Market makers: the exact opposite of the traders' net, in integer lots.
    let weights: Vec<f64> = (0..makers).map(|_| 0.5 + rng.uniform()).collect();
    let weight_sum: f64 = weights.iter().sum();
    let mut maker_lots = vec![[0i64; 2]; makers];
    for u in 0..2 {
        let target = -net_lots[u];
        let mut given = 0i64;
        for (m, w) in weights.iter().enumerate() {
            let lots = if m + 1 == makers {
                target - given
            } else {
                (target as f64 * w / weight_sum).round() as i64
            };
            maker_lots[m][u] = lots;
            given += lots;
        }
    }
    for (m, lots) in maker_lots.iter().enumerate() {
        let leverage = 2.0 + 3.0 * rng.uniform();
        let mut positions = Vec::new();
        let mut notional = 0.0;
        for u in 0..2 {
            if lots[u] != 0 {
                let size = lots[u] as f64 * LOT[u];
                notional += size.abs() * start[u];
                if size > 0.0 {
                    open_interest[u] += size * start[u];
                }
                positions.push(Position {
                    instrument: perpetual(u),
                    size,
                    entry_price: Some(start[u]),
                });
            }
        }
        list.push(Account {
            id: format!("mm-{m:03}"),
            balances: BTreeMap::from([("USDC".to_string(), (notional / leverage).max(1000.0))]),
            positions,
            external: Vec::new(),
        });
    }
    let ample = ((open_interest[0] + open_interest[1]) / 1e6).ceil() * 1e6;
    list.push(Account {
        id: "liquidator".into(),
        balances: BTreeMap::from([("USDC".to_string(), ample.max(1e6))]),
        positions: Vec::new(),
        external: Vec::new(),
    });
    let market_json = format!(
        r#"{{"as_of": "2020-03-12T00:00:00Z", "prices": {{"BTC": {}, "ETH": {}, "USDC": 1}},
            "vols": {{"BTC": {{"default": 0.8}}, "ETH": {{"default": 0.9}}}}}}"#,
        start[0], start[1]
    );
    let market = Market::parse("demo market", &market_json).map_err(|e| e.to_string())?;
    let params = Params::parse("demo params", DEMO_PARAMS).map_err(|e| e.to_string())?;
    Ok(DemoBook {
        portfolio: Portfolio {
            source: format!("demo book ({accounts} accounts, seed {seed})"),
            accounts: list,
        },
        market,
        params,
        config: EngineConfig {
            insurance_fund,
            liquidator: "liquidator".into(),
            ..EngineConfig::default()
        },
    })
}
