//! The books, variants and event logs of the engine's benchmarks, shared by the criterion
//! bench (`benches/engine.rs`) and the one-shot replay run for instruction counts
//! (`examples/replay_once.rs`), so both time the same work.

use pmargin_core::book::Book;
use pmargin_core::input::portfolio::Portfolio;
use pmargin_core::synthetic;
use pmargin_engine::{Engine, EngineConfig, Event};

/// The synthetic book's accounts as a portfolio with their USDC only; `keep(i, underlying)`
/// decides which positions of account `i` are kept. A liquidator with ample USDC is added.
pub fn portfolio(book: &Book, keep: impl Fn(usize, &str) -> bool) -> Portfolio {
    let usdc_only = |_: usize, asset: &str| if asset == "USDC" { 1.0 } else { 0.0 };
    synthetic::portfolio(book, usdc_only, keep, 1e12)
}

/// Which model an engine margins with, and how its accounts are funded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Variant {
    V1,
    /// Version 2 on version 1's funding.
    V2SameCash,
    /// Version 2, each account funded to its version 1 health ([`equal_health`]).
    V2EqualHealth,
}

impl Variant {
    pub const V2: [Variant; 2] = [Variant::V2SameCash, Variant::V2EqualHealth];

    /// The suffix of the bench's name (version 1's benches keep their names).
    pub fn suffix(self) -> &'static str {
        match self {
            Variant::V1 => "",
            Variant::V2SameCash => "/v2_same_cash",
            Variant::V2EqualHealth => "/v2_equal_health",
        }
    }
}

pub fn engine(portfolio: &Portfolio, v2: bool) -> Engine {
    let (market, params) = if v2 {
        synthetic::market_and_params_v2()
    } else {
        synthetic::market_and_params()
    }
    .expect("synthetic market");
    let config = EngineConfig {
        insurance_fund: 1e9,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(portfolio, &market, &params, config).expect("engine");
    e.ensure_settlement_asset().expect("USDC");
    e
}

/// An engine over `portfolio` (funded as version 1's book) for `variant`.
pub fn engine_for(portfolio: &Portfolio, variant: Variant) -> Engine {
    match variant {
        Variant::V1 => engine(portfolio, false),
        Variant::V2SameCash => engine(portfolio, true),
        Variant::V2EqualHealth => engine(&equal_health(portfolio), true),
    }
}

/// `portfolio` with each account's USDC set so that its health `h = MB / MM` under version 2
/// is its health under version 1. USDC has no haircut, so the margin balance moves one for one
/// with it: the USDC that gives `MB2' = h1 x MM2` is `usdc + h1 x MM2 - MB2`. Accounts without
/// a requirement (the liquidator) keep theirs. An account already under water under version 1
/// (`h1 < 0`) would need negative USDC under version 2; it gets none (it fails either way, at
/// the first tick).
pub fn equal_health(portfolio: &Portfolio) -> Portfolio {
    let (v1, v2) = (engine(portfolio, false), engine(portfolio, true));
    let mut out = portfolio.clone();
    for account in &mut out.accounts {
        let (Some(r1), Some(r2)) = (v1.risk(&account.id), v2.risk(&account.id)) else {
            continue;
        };
        if r1.maintenance_margin <= 0.0 {
            continue;
        }
        let health = r1.margin_balance / r1.maintenance_margin;
        if let Some(usdc) = account.balances.get_mut("USDC") {
            *usdc = (*usdc + health * r2.maintenance_margin - r2.margin_balance).max(0.0);
        }
    }
    out
}

/// xorshift64: a fixed-seed generator, so every run replays the same log.
pub struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n - 1)
    }
}

/// `count` events: a share `ticks` of price ticks (random walk, +-0.2%), the rest trades at
/// the mark as the walk has moved it (the start's value with the underlying scaled, vols held),
/// so that fills stay inside the engine's price band (`max_fill_deviation`) as a venue's do.
pub fn event_log(e: &Engine, count: usize, ticks: f64) -> Vec<Event> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let ids: Vec<String> = e
        .account_ids()
        .filter(|id| *id != "liquidator")
        .map(str::to_string)
        .collect();
    let book = e.book();
    let instruments: Vec<(String, usize, f64)> = book
        .instruments
        .iter()
        .map(|i| {
            (
                i.instrument.name.clone(),
                i.underlying,
                book.underlyings[i.underlying].spot,
            )
        })
        .collect();
    let mut prices: Vec<(String, f64)> = book
        .underlyings
        .iter()
        .map(|u| (u.name.clone(), u.spot))
        .collect();
    (0..count)
        .map(|_| {
            if rng.uniform() < ticks {
                let u = rng.below(prices.len());
                prices[u].1 *= 1.0 + 0.004 * (rng.uniform() - 0.5);
                Event::Price {
                    underlying: prices[u].0.clone(),
                    price: prices[u].1,
                }
            } else {
                let a = rng.below(ids.len());
                let b = (a + 1 + rng.below(ids.len() - 1)) % ids.len();
                let k = rng.below(instruments.len());
                let (name, u, spot) = &instruments[k];
                let mark = book.instruments[k].value_at(prices[*u].1 / spot, book.rate);
                // About $1,000-$5,000 of notional, either side.
                let size = (1_000.0 + 4_000.0 * rng.uniform()) / spot
                    * if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
                Event::Trade {
                    account: ids[a].clone(),
                    instrument: name.clone(),
                    size,
                    price: mark,
                    fee: 0.0,
                    counterparty: Some(ids[b].clone()),
                }
            }
        })
        .collect()
}

/// The replay bench's book: 10,000 synthetic accounts (seed 11), every position kept.
pub fn replay_portfolio() -> Portfolio {
    let book = synthetic::book(10_000, 11).expect("book");
    portfolio(&book, |_, _| true)
}
