//! A synthetic book for sizing and benchmarks: many accounts over five underlyings and a
//! realistic option chain, generated from a seed so every run measures the same book.
//!
//! Shape (as the performance targets are stated): 5 underlyings, 500 option instruments
//! (5 expiries x 10 strikes x call/put per underlying) plus each underlying's perpetual and
//! futures, and 10 positions per account.

use crate::book::{Book, BookAccount, BookPosition};
use crate::error::Result;
use crate::input::market::Market;
use crate::input::params::Params;
use crate::input::portfolio::{Account, Portfolio, Position};
use crate::instrument::Instrument;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

const UNDERLYINGS: [(&str, f64, f64); 5] = [
    ("BTC", 60000.0, 0.60),
    ("ETH", 3000.0, 0.70),
    ("SOL", 150.0, 0.90),
    ("XRP", 0.6, 0.85),
    ("DOGE", 0.15, 1.00),
];
const EXPIRIES: [&str; 5] = ["27DEC26", "29JAN27", "26FEB27", "26MAR27", "25JUN27"];
const STRIKE_MONEYNESS: [f64; 10] = [0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5];
pub const POSITIONS_PER_ACCOUNT: usize = 10;

/// The market and parameters the synthetic book is margined with.
pub fn market_and_params() -> Result<(Market, Params)> {
    market_and_params_of(false)
}

/// [`market_and_params`] with every part of MODEL.md version 2 on: vol shocks scaled by tenor
/// (Deribit's `(30 / days)^0.3` under 30 days, 0.15 beyond), three extended moves, the option,
/// basis and oracle add-ons on every underlying (with an oracle confidence of 5 basis points of
/// spot) and the liquidity add-on on BTC, ETH and SOL, for tests and benchmarks of version 2
/// beside version 1.
pub fn market_and_params_v2() -> Result<(Market, Params)> {
    market_and_params_of(true)
}

fn market_and_params_of(v2: bool) -> Result<(Market, Params)> {
    let (market, params) = market_and_params_json(v2);
    Ok((
        Market::parse("synthetic market", &market.to_string())?,
        Params::parse("synthetic params", &params.to_string())?,
    ))
}

/// The synthetic market snapshot and parameter set in their file formats (docs/FORMATS.md),
/// version 2's with `v2`.
pub fn market_and_params_json(v2: bool) -> (serde_json::Value, serde_json::Value) {
    let mut prices = serde_json::Map::new();
    let mut vols = serde_json::Map::new();
    let mut underlyings = serde_json::Map::new();
    let mut confidence = serde_json::Map::new();
    let mut collateral = serde_json::Map::new();
    collateral.insert("USDC".into(), serde_json::json!({ "haircut": 0.0 }));
    prices.insert("USDC".into(), 1.0.into());
    for (name, spot, vol) in UNDERLYINGS {
        prices.insert(name.into(), spot.into());
        vols.insert(name.into(), serde_json::json!({ "default": vol }));
        let range = 0.08 + 0.1 * vol;
        let mut entry = serde_json::json!({ "price_scan_range": range, "vol_scan_up": 0.1,
            "vol_scan_down": 0.1, "standard_im_rate": 0.1, "standard_mm_rate": 0.05 });
        if v2 {
            for (field, value) in [
                ("vol_power_short", 0.3),
                ("vol_power_long", 0.15),
                ("option_contingency", 0.01),
                ("basis_contingency", 0.005),
                ("oracle_confidence_multiple", 1.0),
            ] {
                entry[field] = value.into();
            }
            // The liquidity add-on on three of the five (a fill on an underlying with it is
            // never screened: the other two keep the screened fills exercised).
            if spot >= 100.0 {
                entry["liquidity_coefficient"] = 0.1.into();
                // About 2 billion USD a day.
                entry["adv"] = (2e9 / spot).into();
            }
            confidence.insert(name.into(), (5e-4 * spot).into());
        }
        underlyings.insert(name.into(), entry);
        collateral.insert(
            name.into(),
            serde_json::json!({ "haircut": 0.1, "underlying": name }),
        );
    }
    let market = serde_json::json!({ "as_of": "2026-11-24T08:00:00Z", "prices": prices,
        "vols": vols, "confidence": confidence });
    let mut params =
        serde_json::json!({ "version": 1, "underlyings": underlyings, "collateral": collateral });
    if v2 {
        params["grid"] = serde_json::json!({ "extended_moves": [
            { "move": -0.3, "vol": "up", "cover": 0.5 },
            { "move": 0.4, "vol": "down", "cover": 0.4 },
            { "move": -0.6, "cover": 0.2 }
        ] });
    }
    (market, params)
}

/// Every instrument of the synthetic universe: per underlying, the perpetual, one future per
/// expiry, and 100 options.
pub fn instruments() -> Vec<Instrument> {
    let mut out = Vec::new();
    for (name, spot, _) in UNDERLYINGS {
        out.push(format!("{name}-PERPETUAL"));
        for expiry in EXPIRIES {
            out.push(format!("{name}-{expiry}"));
            for m in STRIKE_MONEYNESS {
                let strike = round_strike(spot * m);
                out.push(format!("{name}-{expiry}-{strike}-C"));
                out.push(format!("{name}-{expiry}-{strike}-P"));
            }
        }
    }
    out.iter()
        .filter_map(|n| Instrument::parse(n).ok())
        .collect()
}

/// Four significant figures, printed without exponent: 0.105, 54000.
fn round_strike(x: f64) -> String {
    let digits = 3 - x.log10().floor() as i32;
    let scale = 10f64.powi(digits);
    let rounded = (x * scale).round() / scale;
    format!("{rounded}")
}

/// A book of `accounts` accounts with [`POSITIONS_PER_ACCOUNT`] positions each. Built directly
/// in index form so that a million positions cost tens of megabytes, not hundreds.
pub fn book(accounts: usize, seed: u64) -> Result<Book> {
    book_of(accounts, seed, market_and_params()?)
}

/// [`book`] margined with [`market_and_params_v2`].
pub fn book_v2(accounts: usize, seed: u64) -> Result<Book> {
    book_of(accounts, seed, market_and_params_v2()?)
}

fn book_of(accounts: usize, seed: u64, (market, params): (Market, Params)) -> Result<Book> {
    let universe = instruments();
    // One account holding everything once makes the builder price the whole universe.
    let catalogue = Portfolio {
        source: "synthetic book".into(),
        accounts: vec![Account {
            id: "catalogue".into(),
            balances: BTreeMap::from([("USDC".to_string(), 0.0)]),
            positions: universe
                .iter()
                .map(|i| Position {
                    instrument: i.clone(),
                    size: 0.0,
                    entry_price: (!i.is_option()).then_some(0.0),
                })
                .collect(),
            external: Vec::new(),
        }],
    };
    let mut book = Book::build(&catalogue, &market, &params)?;
    let usdc = book.accounts[0].balances[0].asset;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut uniform = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let n = book.instruments.len();
    book.accounts = (0..accounts)
        .map(|a| {
            let mut positions = Vec::with_capacity(POSITIONS_PER_ACCOUNT);
            let mut notional = 0.0;
            for _ in 0..POSITIONS_PER_ACCOUNT {
                let instrument = ((uniform() * n as f64) as usize).min(n - 1);
                let inst = &book.instruments[instrument];
                let spot = book.underlyings[inst.underlying].spot;
                // Roughly $10k-$100k of notional per position, either side.
                let size = (10_000.0 + 90_000.0 * uniform()) / spot
                    * if uniform() < 0.5 { -1.0 } else { 1.0 };
                notional += size.abs() * spot;
                let entry_price = if inst.option.is_some() {
                    0.0
                } else {
                    inst.forward * (0.95 + 0.1 * uniform())
                };
                positions.push(BookPosition {
                    instrument,
                    underlying: inst.underlying,
                    size,
                    entry_price,
                });
            }
            let mut exposures: Vec<usize> = positions.iter().map(|p| p.underlying).collect();
            exposures.sort_unstable();
            exposures.dedup();
            BookAccount {
                id: format!("acct-{a:07}"),
                positions,
                balances: vec![crate::book::BookBalance {
                    asset: usdc,
                    amount: notional * (0.05 + 0.3 * uniform()),
                }],
                exposures,
                external: Vec::new(),
            }
        })
        .collect();
    Ok(book)
}

/// Writes the book's accounts as a portfolio file (docs/FORMATS.md), one account a line, so
/// the command line can be timed on the book the benchmarks use.
pub fn write_portfolio(book: &Book, out: &mut impl std::io::Write) -> std::io::Result<()> {
    out.write_all(b"{\"accounts\": [\n")?;
    for (i, a) in book.accounts.iter().enumerate() {
        let balances: serde_json::Map<String, serde_json::Value> = a
            .balances
            .iter()
            .map(|b| (book.assets[b.asset].name.clone(), b.amount.into()))
            .collect();
        let positions: Vec<serde_json::Value> = a
            .positions
            .iter()
            .map(|p| {
                let input = book.position_input(p);
                let mut v = serde_json::json!({
                    "instrument": input.instrument.name, "size": input.size });
                if let Some(e) = input.entry_price {
                    v["entry_price"] = e.into();
                }
                v
            })
            .collect();
        let account = serde_json::json!({
            "id": a.id, "balances": balances, "positions": positions });
        if i > 0 {
            out.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut *out, &account)?;
    }
    out.write_all(b"\n]}\n")
}

/// A book's accounts in the input format, so an engine can be built from them.
/// `balance(i, asset)` scales account `i`'s balance of `asset` (0 drops it) and `keep(i,
/// underlying)` decides which of its positions stay. An account `liquidator` holding
/// `liquidator_usdc` of USDC is added last, to take over liquidated positions.
pub fn portfolio(
    book: &Book,
    balance: impl Fn(usize, &str) -> f64,
    keep: impl Fn(usize, &str) -> bool,
    liquidator_usdc: f64,
) -> Portfolio {
    let mut accounts: Vec<Account> = book
        .accounts
        .iter()
        .enumerate()
        .map(|(i, a)| Account {
            id: a.id.clone(),
            balances: a
                .balances
                .iter()
                .filter_map(|b| {
                    let name = &book.assets[b.asset].name;
                    let scale = balance(i, name);
                    (scale != 0.0).then(|| (name.clone(), b.amount * scale))
                })
                .collect(),
            positions: a
                .positions
                .iter()
                .filter(|p| keep(i, &book.underlyings[p.underlying].name))
                .map(|p| book.position_input(p))
                .collect(),
            external: Vec::new(),
        })
        .collect();
    accounts.push(Account {
        id: "liquidator".into(),
        balances: BTreeMap::from([("USDC".to_string(), liquidator_usdc)]),
        positions: Vec::new(),
        external: Vec::new(),
    });
    Portfolio {
        source: "synthetic".into(),
        accounts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn universe_has_500_options_on_5_underlyings() {
        let u = instruments();
        assert_eq!(u.iter().filter(|i| i.is_option()).count(), 500);
        assert_eq!(u.len(), 500 + 5 * 6);
        assert_eq!(round_strike(0.15 * 0.7), "0.105");
        assert_eq!(round_strike(60000.0 * 0.95), "57000");
    }

    #[test]
    fn the_same_seed_gives_the_same_book() {
        let a = book(50, 7).unwrap();
        let b = book(50, 7).unwrap();
        assert_eq!(a.accounts.len(), 50);
        assert!(a
            .accounts
            .iter()
            .zip(&b.accounts)
            .all(|(x, y)| x.positions == y.positions));
        assert!(a
            .accounts
            .iter()
            .all(|x| x.positions.len() == POSITIONS_PER_ACCOUNT));
    }
}
