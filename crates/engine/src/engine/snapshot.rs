//! Snapshots of the engine's state, for recovery: [`Engine::snapshot`] and
//! [`Engine::restore`].
//!
//! A snapshot holds what the events made of the engine and nothing it can recompute: the
//! configuration, the parameter set and the market, the book's instruments, assets and
//! underlying spots, every account's balances and positions (in the engine's order, which
//! fixes the order sums are taken in), the insurance fund, the sequence number, the
//! suspended underlyings, the accounts left with bad debt and the oracle's quotes, index
//! states and pending circuit-breaker candidates. Restoring rebuilds the risk arrays and
//! re-margins every account, which gives exactly the figures and statuses the engine had (the
//! incremental path always equals a full recompute), so restoring the snapshot taken after
//! event `k` and applying events `k+1..n` gives the outputs and the state, byte for byte, of
//! applying `1..n` from genesis.

use super::{account_index, Engine, EngineConfig, EngineError, Parts};
use crate::oracle::Oracle;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use pmargin_core::book::Book;
use pmargin_core::input::market::{SmilePoint, VolSurface};
use pmargin_core::input::portfolio::{Account, Portfolio, Position};
use pmargin_core::instrument::Instrument;
use pmargin_core::{Market, Params};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Version of the snapshot format; [`Engine::restore`] refuses any other.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Everything needed to rebuild an engine exactly (see the module documentation). Serializes
/// to JSON that round-trips every number exactly (`float_roundtrip`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSnapshot {
    pub format: u32,
    /// Events applied so far.
    pub sequence: u64,
    pub config: EngineConfig,
    /// The active parameter set, and the file name its errors quote.
    pub params: Params,
    pub params_source: String,
    pub market: MarketSnapshot,
    /// Every underlying of the book with its spot, in book order.
    pub underlyings: Vec<(String, f64)>,
    /// Every instrument the book has priced, in book order (some may be held by nobody).
    pub instruments: Vec<String>,
    /// Every collateral asset the book knows, in book order.
    pub assets: Vec<String>,
    /// Every account, in engine order.
    pub accounts: Vec<AccountSnapshot>,
    pub insurance_fund: f64,
    /// Underlyings whose liquidations are suspended.
    pub suspended: Vec<String>,
    /// Accounts left with a deficit nobody could cover.
    pub bad_debt: Vec<String>,
    pub oracle: Option<Oracle>,
    /// The attestations accepted (nonces used, expiries); left out when empty, so snapshots
    /// without any keep their bytes.
    #[serde(default, skip_serializing_if = "super::Attested::is_empty")]
    pub attested: super::Attested,
}

/// One account's holdings, in the engine's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSnapshot {
    pub id: String,
    /// `(asset, amount)`.
    pub balances: Vec<(String, f64)>,
    /// `(instrument, size, entry price)`; the entry price of an option is 0.
    pub positions: Vec<(String, f64, f64)>,
    /// Positions held in other protocols (docs/MODEL.md section 12); left out when there are
    /// none, so snapshots written before them keep their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<pmargin_core::input::portfolio::ExternalPosition>,
}

/// The market as the engine holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketSnapshot {
    pub source: String,
    /// RFC 3339, to the nanosecond.
    pub as_of: String,
    pub rate: f64,
    pub prices: BTreeMap<String, f64>,
    pub perpetual_marks: BTreeMap<String, f64>,
    /// `(underlying, expiry as YYYY-MM-DD, mark)`.
    pub future_marks: Vec<(String, String, f64)>,
    pub vols: BTreeMap<String, SurfaceSnapshot>,
    pub ivs: BTreeMap<String, f64>,
    /// The oracle's confidence per underlying (docs/MODEL.md section 11); left out when empty, so
    /// snapshots without it keep their bytes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub confidence: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurfaceSnapshot {
    pub default: Option<f64>,
    /// `(expiry as YYYY-MM-DD, strike, iv)`.
    pub points: Vec<(String, f64, f64)>,
}

const DATE: &str = "%Y-%m-%d";

impl MarketSnapshot {
    fn of(m: &Market) -> MarketSnapshot {
        MarketSnapshot {
            source: m.source.clone(),
            as_of: m.as_of.to_rfc3339_opts(SecondsFormat::Nanos, true),
            rate: m.rate,
            prices: m.prices.clone(),
            perpetual_marks: m.perpetual_marks.clone(),
            future_marks: m
                .future_marks
                .iter()
                .map(|((u, d), p)| (u.clone(), d.format(DATE).to_string(), *p))
                .collect(),
            vols: m
                .vols
                .iter()
                .map(|(u, s)| {
                    (
                        u.clone(),
                        SurfaceSnapshot {
                            default: s.default,
                            points: s
                                .points
                                .iter()
                                .map(|p| (p.expiry.format(DATE).to_string(), p.strike, p.iv))
                                .collect(),
                        },
                    )
                })
                .collect(),
            ivs: m.ivs.clone(),
            confidence: m.confidence.clone(),
        }
    }

    fn market(&self) -> Result<Market, EngineError> {
        let bad =
            |what: &str, e: String| EngineError::Config(format!("snapshot: market {what}: {e}"));
        let date = |s: &str| NaiveDate::parse_from_str(s, DATE).map_err(|e| bad(s, e.to_string()));
        Ok(Market {
            source: self.source.clone(),
            as_of: DateTime::parse_from_rfc3339(&self.as_of)
                .map_err(|e| bad("as_of", e.to_string()))?
                .with_timezone(&Utc),
            rate: self.rate,
            prices: self.prices.clone(),
            perpetual_marks: self.perpetual_marks.clone(),
            future_marks: self
                .future_marks
                .iter()
                .map(|(u, d, p)| Ok(((u.clone(), date(d)?), *p)))
                .collect::<Result<_, EngineError>>()?,
            vols: self
                .vols
                .iter()
                .map(|(u, s)| {
                    let points = s
                        .points
                        .iter()
                        .map(|(d, strike, iv)| {
                            Ok(SmilePoint {
                                expiry: date(d)?,
                                strike: *strike,
                                iv: *iv,
                            })
                        })
                        .collect::<Result<_, EngineError>>()?;
                    Ok((
                        u.clone(),
                        VolSurface {
                            default: s.default,
                            points,
                        },
                    ))
                })
                .collect::<Result<_, EngineError>>()?,
            ivs: self.ivs.clone(),
            confidence: self.confidence.clone(),
        })
    }
}

impl Engine {
    /// The engine's state, to rebuild it with [`Engine::restore`] (see the `snapshot` module).
    pub fn snapshot(&self) -> EngineSnapshot {
        let book = &self.book;
        EngineSnapshot {
            format: SNAPSHOT_FORMAT,
            sequence: self.sequence,
            config: self.config.clone(),
            params: book.params.clone(),
            params_source: book.params.source.clone(),
            market: MarketSnapshot::of(&self.market),
            underlyings: book
                .underlyings
                .iter()
                .map(|u| (u.name.clone(), u.spot))
                .collect(),
            instruments: book
                .instruments
                .iter()
                .map(|i| i.instrument.name.clone())
                .collect(),
            assets: book.assets.iter().map(|a| a.name.clone()).collect(),
            accounts: book
                .accounts
                .iter()
                .map(|a| AccountSnapshot {
                    id: a.id.clone(),
                    balances: a
                        .balances
                        .iter()
                        .map(|b| (book.assets[b.asset].name.clone(), b.amount))
                        .collect(),
                    positions: a
                        .positions
                        .iter()
                        .map(|p| {
                            (
                                book.instruments[p.instrument].instrument.name.clone(),
                                p.size,
                                p.entry_price,
                            )
                        })
                        .collect(),
                    external: a.external.iter().map(|x| book.external_input(x)).collect(),
                })
                .collect(),
            insurance_fund: self.insurance_fund,
            suspended: self
                .suspended
                .iter()
                .map(|&u| book.underlyings[u].name.clone())
                .collect(),
            bad_debt: self
                .bad_debt
                .iter()
                .map(|&a| book.accounts[a].id.clone())
                .collect(),
            oracle: self.oracle.clone(),
            attested: self.attested.clone(),
        }
    }

    /// Rebuilds the engine a snapshot was taken of: the same state, and the same outputs for
    /// every later event. Fails on a snapshot of another format or one that does not hold
    /// together (an unknown instrument, asset or underlying, an invalid oracle config).
    pub fn restore(snapshot: EngineSnapshot) -> Result<Engine, EngineError> {
        let s = snapshot;
        let bad = |what: String| EngineError::Config(format!("snapshot: {what}"));
        if s.format != SNAPSHOT_FORMAT {
            return Err(bad(format!(
                "format {} (this engine reads format {SNAPSHOT_FORMAT})",
                s.format
            )));
        }
        let market = s.market.market()?;
        let mut params = s.params;
        params.source = s.params_source;
        params
            .validate(&params.source.clone())
            .map_err(EngineError::Input)?;
        if let Some(o) = &s.oracle {
            Oracle::new(o.config().clone()).map_err(|e| bad(format!("oracle: {e}")))?;
        }
        let parse = |name: &str| Instrument::parse(name).map_err(|e| bad(format!("{name}: {e}")));
        let position = |instrument: Instrument, size: f64, entry: f64| Position {
            entry_price: (!instrument.is_option()).then_some(entry),
            instrument,
            size,
        };
        // A first, temporary account holding nothing of every instrument in the book's order
        // makes the rebuilt book price them in that order (it is removed once built).
        let mut accounts = vec![Account {
            id: String::new(),
            balances: BTreeMap::new(),
            positions: s
                .instruments
                .iter()
                .map(|name| Ok(position(parse(name)?, 0.0, 0.0)))
                .collect::<Result<_, EngineError>>()?,
            external: Vec::new(),
        }];
        for a in &s.accounts {
            accounts.push(Account {
                id: a.id.clone(),
                balances: a.balances.iter().cloned().collect(),
                positions: a
                    .positions
                    .iter()
                    .map(|(name, size, entry)| Ok(position(parse(name)?, *size, *entry)))
                    .collect::<Result<_, EngineError>>()?,
                external: a.external.clone(),
            });
        }
        let portfolio = Portfolio {
            source: "engine snapshot".into(),
            accounts,
        };
        let mut book = Book::build(&portfolio, &market, &params)?;
        book.accounts.remove(0);
        if book.instruments.len() != s.instruments.len() {
            return Err(bad(
                "an account holds an instrument the book does not list".into()
            ));
        }
        // Assets in the book's order; balances (a portfolio holds them by name) in the
        // account's order.
        for name in &s.assets {
            book.ensure_asset(name, &market)?;
        }
        let assets = s
            .assets
            .iter()
            .map(|name| {
                book.assets
                    .iter()
                    .find(|a| &a.name == name)
                    .cloned()
                    .ok_or_else(|| bad(format!("asset {name}")))
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        if assets.len() != book.assets.len() {
            return Err(bad(
                "an account holds an asset the book does not list".into()
            ));
        }
        book.assets = assets;
        for (account, snap) in book.accounts.iter_mut().zip(&s.accounts) {
            for (b, (name, amount)) in account.balances.iter_mut().zip(&snap.balances) {
                b.asset = s
                    .assets
                    .iter()
                    .position(|x| x == name)
                    .ok_or_else(|| bad(format!("asset {name}")))?;
                b.amount = *amount;
            }
        }
        if book.underlyings.len() != s.underlyings.len() {
            return Err(bad("underlyings do not match the parameter set".into()));
        }
        for (u, (name, spot)) in book.underlyings.iter_mut().zip(&s.underlyings) {
            if &u.name != name {
                return Err(bad(format!(
                    "underlying {name} is not in the parameter set"
                )));
            }
            u.spot = *spot;
        }
        let underlying = |name: &String| {
            book.underlying_index(name)
                .ok_or_else(|| bad(format!("underlying {name}")))
        };
        let suspended = s
            .suspended
            .iter()
            .map(underlying)
            .collect::<Result<BTreeSet<usize>, _>>()?;
        let accounts = account_index(&book);
        let bad_debt = s
            .bad_debt
            .iter()
            .map(|id| {
                accounts
                    .get(id)
                    .copied()
                    .ok_or_else(|| bad(format!("account {id}")))
            })
            .collect::<Result<BTreeSet<usize>, _>>()?;
        Engine::assemble(Parts {
            config: s.config,
            market,
            book,
            accounts,
            oracle: s.oracle,
            insurance_fund: s.insurance_fund,
            suspended,
            bad_debt,
            sequence: s.sequence,
            attested: s.attested,
        })
    }
}
