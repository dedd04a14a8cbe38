//! The snapshot state: what is needed to re-create an [`Engine`] as it was after a given event.
//!
//! The engine has no serialisable form of its own, so a snapshot keeps the inputs the engine
//! is built from (accounts, market, parameter set, configuration with the insurance fund as it
//! stands) plus the little state outside them (whether the settlement asset is in the book,
//! which underlyings have liquidations suspended). Restoring builds a fresh engine from them,
//! exactly as the engine itself does when a new parameter set is activated.
//!
//! Two things cannot be carried this way and are recorded so the caller can tell:
//! - the oracle's internal state (quote windows, stable prices, health): a snapshot of an engine
//!   with an oracle is not [`State::restorable`], and recovery replays the log from genesis;
//! - the engine's event counter ([`Engine::sequence`]): kept in [`State::engine_sequence`], but
//!   a restored engine counts from zero (the store's sequence number is the authority).

use crate::{Result, StoreError};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use pmargin_core::input::market::{SmilePoint, VolSurface};
use pmargin_core::input::portfolio::{Account, Position};
use pmargin_core::instrument::Instrument;
use pmargin_core::{Market, Params, Portfolio};
use pmargin_engine::{Engine, EngineConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the [`State`] document; a snapshot of another format is refused on restore.
pub const STATE_FORMAT: u32 = 1;

/// A snapshot of the engine after some event (serde JSON in the `snapshots` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub format: u32,
    /// [`Engine::sequence`] when captured (informational: a restored engine counts from zero).
    pub engine_sequence: u64,
    /// The engine's configuration, with `insurance_fund` set to the fund at capture.
    pub config: EngineConfig,
    pub portfolio: PortfolioState,
    pub market: MarketState,
    pub params: Params,
    /// Whether the settlement asset was in the engine's book (`Engine::ensure_settlement_asset`).
    pub settlement_asset_in_book: bool,
    /// Underlyings whose liquidations were suspended.
    pub suspended: Vec<String>,
    /// The engine had an oracle: its internal state is not captured (see the module docs).
    pub has_oracle: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortfolioState {
    pub source: String,
    pub accounts: Vec<AccountState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountState {
    pub id: String,
    pub balances: BTreeMap<String, f64>,
    pub positions: Vec<PositionState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionState {
    pub instrument: String,
    pub size: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_price: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketState {
    pub source: String,
    /// RFC 3339, UTC, to the nanosecond where needed.
    pub as_of: String,
    pub rate: f64,
    pub prices: BTreeMap<String, f64>,
    pub perpetual_marks: BTreeMap<String, f64>,
    pub future_marks: Vec<FutureMark>,
    pub vols: BTreeMap<String, SurfaceState>,
    pub ivs: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FutureMark {
    pub underlying: String,
    /// `YYYY-MM-DD`.
    pub expiry: String,
    pub mark: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurfaceState {
    pub default: Option<f64>,
    pub points: Vec<PointState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointState {
    /// `YYYY-MM-DD`.
    pub expiry: String,
    pub strike: f64,
    pub iv: f64,
}

const DATE: &str = "%Y-%m-%d";

fn date(field: &str, s: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s, DATE)
        .map_err(|e| StoreError::Corrupt(format!("snapshot: {field}: `{s}` is not a date ({e})")))
}

impl State {
    /// Captures the engine's current state.
    pub fn capture(engine: &Engine) -> State {
        let portfolio = engine.portfolio();
        let market = engine.market();
        let book = engine.book();
        let mut config = engine.config().clone();
        config.insurance_fund = engine.insurance_fund();
        State {
            format: STATE_FORMAT,
            engine_sequence: engine.sequence(),
            has_oracle: engine.oracle().is_some(),
            settlement_asset_in_book: book
                .assets
                .iter()
                .any(|a| a.name == config.settlement_asset),
            suspended: book
                .underlyings
                .iter()
                .map(|u| u.name.clone())
                .filter(|u| engine.liquidations_suspended(u))
                .collect(),
            config,
            portfolio: PortfolioState {
                source: portfolio.source,
                accounts: portfolio
                    .accounts
                    .into_iter()
                    .map(|a| AccountState {
                        id: a.id,
                        balances: a.balances,
                        positions: a
                            .positions
                            .into_iter()
                            .map(|p| PositionState {
                                instrument: p.instrument.name,
                                size: p.size,
                                entry_price: p.entry_price,
                            })
                            .collect(),
                    })
                    .collect(),
            },
            market: MarketState {
                source: market.source.clone(),
                as_of: market.as_of.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                rate: market.rate,
                prices: market.prices.clone(),
                perpetual_marks: market.perpetual_marks.clone(),
                future_marks: market
                    .future_marks
                    .iter()
                    .map(|((u, d), m)| FutureMark {
                        underlying: u.clone(),
                        expiry: d.format(DATE).to_string(),
                        mark: *m,
                    })
                    .collect(),
                vols: market
                    .vols
                    .iter()
                    .map(|(u, s)| {
                        let points = s
                            .points
                            .iter()
                            .map(|p| PointState {
                                expiry: p.expiry.format(DATE).to_string(),
                                strike: p.strike,
                                iv: p.iv,
                            })
                            .collect();
                        (
                            u.clone(),
                            SurfaceState {
                                default: s.default,
                                points,
                            },
                        )
                    })
                    .collect(),
                ivs: market.ivs.clone(),
            },
            params: engine.params().clone(),
        }
    }

    /// Whether [`State::restore`] gives back the engine (false with an oracle: its quote
    /// windows and stable prices are not captured).
    pub fn restorable(&self) -> bool {
        self.format == STATE_FORMAT && !self.has_oracle
    }

    /// The portfolio, market and parameter set as the engine's input types.
    pub fn inputs(&self) -> Result<(Portfolio, Market, Params)> {
        let mut accounts = Vec::with_capacity(self.portfolio.accounts.len());
        for a in &self.portfolio.accounts {
            let mut positions = Vec::with_capacity(a.positions.len());
            for p in &a.positions {
                let instrument = Instrument::parse(&p.instrument).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "snapshot: account {}: instrument {}: {e}",
                        a.id, p.instrument
                    ))
                })?;
                positions.push(Position {
                    instrument,
                    size: p.size,
                    entry_price: p.entry_price,
                });
            }
            accounts.push(Account {
                id: a.id.clone(),
                balances: a.balances.clone(),
                positions,
            });
        }
        let portfolio = Portfolio {
            source: self.portfolio.source.clone(),
            accounts,
        };
        let m = &self.market;
        let as_of: DateTime<Utc> = DateTime::parse_from_rfc3339(&m.as_of)
            .map_err(|e| StoreError::Corrupt(format!("snapshot: market.as_of `{}`: {e}", m.as_of)))?
            .with_timezone(&Utc);
        let mut future_marks = BTreeMap::new();
        for f in &m.future_marks {
            future_marks.insert(
                (
                    f.underlying.clone(),
                    date("market.future_marks", &f.expiry)?,
                ),
                f.mark,
            );
        }
        let mut vols = BTreeMap::new();
        for (u, s) in &m.vols {
            let mut points = Vec::with_capacity(s.points.len());
            for p in &s.points {
                points.push(SmilePoint {
                    expiry: date("market.vols", &p.expiry)?,
                    strike: p.strike,
                    iv: p.iv,
                });
            }
            vols.insert(
                u.clone(),
                VolSurface {
                    default: s.default,
                    points,
                },
            );
        }
        let market = Market {
            source: m.source.clone(),
            as_of,
            rate: m.rate,
            prices: m.prices.clone(),
            perpetual_marks: m.perpetual_marks.clone(),
            future_marks,
            vols,
            ivs: m.ivs.clone(),
        };
        let mut params = self.params.clone();
        params.source = "snapshot".into();
        Ok((portfolio, market, params))
    }

    /// Re-creates the engine. Refused if the snapshot is not [`State::restorable`].
    pub fn restore(&self) -> Result<Engine> {
        if self.format != STATE_FORMAT {
            return Err(StoreError::Corrupt(format!(
                "snapshot: format {} is not {STATE_FORMAT}",
                self.format
            )));
        }
        if self.has_oracle {
            return Err(StoreError::NotRestorable(
                "the engine has an oracle, whose state a snapshot does not hold".into(),
            ));
        }
        let (portfolio, market, params) = self.inputs()?;
        let mut engine = Engine::new(&portfolio, &market, &params, self.config.clone())
            .map_err(|e| StoreError::Engine(e.to_string()))?;
        if self.settlement_asset_in_book {
            engine
                .ensure_settlement_asset()
                .map_err(|e| StoreError::Engine(e.to_string()))?;
        }
        for u in &self.suspended {
            // Suspending only marks the underlying: no liquidation round runs, nothing changes.
            engine.set_liquidations_suspended(u, true);
        }
        Ok(engine)
    }
}
