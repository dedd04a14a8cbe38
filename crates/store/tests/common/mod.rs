//! Shared by the store's tests: a genesis engine, a deterministic event stream, comparisons.
#![allow(dead_code)]

use pmargin_core::{Market, Params, Portfolio};
use pmargin_engine::oracle::OracleConfig;
use pmargin_engine::{Engine, EngineConfig, Event};
use pmargin_store::{ServiceState, State, Store};
use std::path::{Path, PathBuf};

const PORTFOLIO: &str = include_str!("../../../../examples/portfolio.json");
const MARKET: &str = include_str!("../../../../examples/market.json");
const PARAMS: &str = include_str!("../../../../examples/params.json");

pub fn genesis() -> Engine {
    genesis_with(None)
}

pub fn genesis_with(oracle: Option<OracleConfig>) -> Engine {
    let portfolio = Portfolio::parse("portfolio.json", PORTFOLIO).unwrap();
    let market = Market::parse("market.json", MARKET).unwrap();
    let params = Params::parse("params.json", PARAMS).unwrap();
    let config = EngineConfig {
        insurance_fund: 25_000.0,
        oracle,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(&portfolio, &market, &params, config).unwrap();
    e.ensure_settlement_asset().unwrap();
    e
}

/// SplitMix64: a small seeded generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const ACCOUNTS: &[&str] = &["alice", "bob", "carol", "dave", "erin", "frank"];

/// Event number `i` (1-based) of a deterministic stream: a function of `i` alone, so a process
/// that restarts mid-stream goes on with the same events. Deposits, withdrawals, trades in
/// perpetuals, a future and options, price and vol moves, marks, funding, a parameter change,
/// liquidation rounds; some are refused by the engine, as in life.
pub fn event(i: u64) -> Event {
    let mut r = Rng(i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xC0FFEE);
    let s = |x: &str| x.to_string();
    // Prices wander with i but stay in a band, so the book sees losses and recoveries.
    let btc = 60_000.0 * (1.0 + 0.12 * (i as f64 * 0.071).sin() + 0.01 * (r.unit() - 0.5));
    let eth = 3_000.0 * (1.0 + 0.15 * (i as f64 * 0.053).cos() + 0.01 * (r.unit() - 0.5));
    if i <= 4 {
        // Fund the new accounts first.
        let account = ["dave", "erin", "frank", "liquidator"][(i - 1) as usize];
        return Event::Deposit {
            account: s(account),
            asset: s("USDC"),
            amount: 200_000.0,
        };
    }
    match r.below(100) {
        0..=9 => {
            let asset = r.pick(&["USDC", "USDC", "BTC", "ETH"]);
            let amount = match asset {
                "USDC" => (r.unit() * 20_000.0).round() + 1.0,
                "BTC" => 0.01 + r.unit() * 0.2,
                _ => 0.1 + r.unit() * 3.0,
            };
            Event::Deposit {
                account: s(r.pick(ACCOUNTS)),
                asset: s(asset),
                amount,
            }
        }
        10..=14 => Event::Withdrawal {
            account: s(r.pick(ACCOUNTS)),
            asset: s("USDC"),
            amount: (r.unit() * 30_000.0).round() + 1.0,
        },
        15..=49 => {
            let (instrument, price) = match r.below(6) {
                0 | 1 => ("BTC-PERPETUAL", btc),
                2 => ("ETH-PERPETUAL", eth),
                3 => ("BTC-27DEC26", btc * 1.0075),
                4 => ("BTC-27DEC26-70000-C", 900.0 + r.unit() * 200.0),
                _ => ("ETH-27DEC26-3200-P", 250.0 + r.unit() * 50.0),
            };
            let account = r.pick(ACCOUNTS);
            let mut counterparty = r.pick(ACCOUNTS);
            if counterparty == account {
                counterparty = "liquidator";
            }
            let size = (r.unit() - 0.5)
                * if instrument.starts_with("ETH") {
                    20.0
                } else {
                    2.0
                };
            Event::Trade {
                account: s(account),
                instrument: s(instrument),
                size: if size == 0.0 { 0.1 } else { size },
                price: price * (1.0 + 0.002 * (r.unit() - 0.5)),
                fee: (r.unit() * 10.0).round(),
                counterparty: Some(s(counterparty)),
            }
        }
        50..=74 => {
            if r.below(2) == 0 {
                Event::Price {
                    underlying: s("BTC"),
                    price: btc,
                }
            } else {
                Event::Price {
                    underlying: s("ETH"),
                    price: eth,
                }
            }
        }
        75..=81 => {
            let instrument = if r.below(2) == 0 {
                None
            } else {
                Some(s("BTC-27DEC26-70000-C"))
            };
            Event::Vol {
                underlying: s("BTC"),
                vol: 0.45 + r.unit() * 0.4,
                instrument,
            }
        }
        82..=87 => Event::Mark {
            instrument: s("BTC-27DEC26"),
            price: btc * (1.0 + 0.01 * r.unit()),
        },
        88..=93 => Event::Funding {
            instrument: s("BTC-PERPETUAL"),
            rate: 0.0002 * (r.unit() - 0.5),
        },
        94..=95 => {
            let mut params: serde_json::Value = serde_json::from_str(PARAMS).unwrap();
            params["version"] = serde_json::json!(i);
            params["underlyings"]["BTC"]["price_scan_range"] =
                serde_json::json!(0.08 + 0.06 * r.unit());
            Event::ActivateParams {
                params: Box::new(Params::parse("activate_params", &params.to_string()).unwrap()),
            }
        }
        96 => Event::Settlement {
            instrument: s("ETH-27DEC26-3200-P"),
            price: eth,
        },
        _ => Event::Liquidate,
    }
}

/// Asserts two engines hold the same state, bit for bit: accounts, balances and positions, the
/// insurance fund, the cached requirements, market and parameters.
pub fn assert_same(a: &Engine, b: &Engine, what: &str) {
    assert_eq!(a.portfolio(), b.portfolio(), "{what}: portfolio");
    assert_eq!(
        a.insurance_fund().to_bits(),
        b.insurance_fund().to_bits(),
        "{what}: insurance fund {} vs {}",
        a.insurance_fund(),
        b.insurance_fund()
    );
    let (ra, rb) = (a.cached_requirements(), b.cached_requirements());
    assert_eq!(ra.len(), rb.len(), "{what}: number of accounts");
    for (i, (x, y)) in ra.iter().zip(&rb).enumerate() {
        let bits = |r: &pmargin_engine::AccountRisk| {
            [
                r.equity.to_bits(),
                r.margin_balance.to_bits(),
                r.initial_margin.to_bits(),
                r.maintenance_margin.to_bits(),
            ]
        };
        assert!(
            bits(x) == bits(y) && x.status == y.status,
            "{what}: account {i}: {x:?} vs {y:?}"
        );
    }
    assert_eq!(a.market(), b.market(), "{what}: market");
    let (mut pa, mut pb) = (a.params().clone(), b.params().clone());
    pa.source.clear();
    pb.source.clear();
    assert_eq!(pa, pb, "{what}: params");
    let sa: Vec<_> = a
        .book()
        .underlyings
        .iter()
        .map(|u| a.liquidations_suspended(&u.name))
        .collect();
    let sb: Vec<_> = b
        .book()
        .underlyings
        .iter()
        .map(|u| b.liquidations_suspended(&u.name))
        .collect();
    assert_eq!(sa, sb, "{what}: suspended");
}

/// A fresh directory under the system's temp directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "pmargin-store-{name}-{}-{nanos}",
            std::process::id()
        ));
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A snapshot of `engine` (the service's part is the service's business; here a placeholder).
pub fn snapshot(engine: &Engine) -> State {
    State::capture(
        engine,
        ServiceState {
            stream_next: 1,
            events_applied: engine.sequence(),
            events_rejected: 0,
        },
    )
}

/// The engine after the last stored event, as the service rebuilds it at start: the latest
/// snapshot restored (`genesis()` without one), then every later event applied.
pub fn recover(
    store: &Store,
    genesis: impl FnOnce() -> Engine,
) -> pmargin_store::Result<(Engine, u64)> {
    let (mut engine, from) = match store.latest_snapshot()? {
        Some((seq, state)) => (state.restore()?, seq),
        None => (genesis(), 0),
    };
    let mut last = from;
    store.for_each_event_after(from, |e| {
        engine.apply(&e.event);
        last = e.seq;
        Ok(())
    })?;
    Ok((engine, last))
}

/// The whole log replayed from `genesis()`, ignoring snapshots: what [`recover`] must equal.
pub fn replay(
    store: &Store,
    genesis: impl FnOnce() -> Engine,
) -> pmargin_store::Result<(Engine, u64)> {
    let mut engine = genesis();
    let mut last = 0;
    store.for_each_event_after(0, |e| {
        engine.apply(&e.event);
        last = e.seq;
        Ok(())
    })?;
    Ok((engine, last))
}
