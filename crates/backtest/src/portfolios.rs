//! Backtest portfolios: the bundled reference set, re-struck every day, and user portfolios
//! held constant.
//!
//! An option must exist on every day of a backtest, so a reference option is a *rolling*
//! instrument: on each row it is a fresh contract with a fixed time to expiry and a strike set
//! relative to that row's spot (see the crate documentation for the rule). Sizes are set from a
//! USD notional at that row's spot, so that every portfolio is comparable (about $1m) across a
//! history in which BTC went from $200 to $65,000.

use chrono::{Datelike, NaiveDate};
use pmargin_core::input::portfolio::{Account, Portfolio, Position};
use pmargin_core::instrument::{Instrument, Kind, OptionKind};
use std::collections::BTreeMap;

/// Notional of each reference leg, in USD at the day's spot.
pub const REFERENCE_NOTIONAL: f64 = 1_000_000.0;

/// One leg of a rolling portfolio, re-created on every row from that row's spot.
#[derive(Debug, Clone, PartialEq)]
pub enum Leg {
    /// `notional / spot` units of `asset` (a non-stable collateral asset moving with
    /// `underlying`), held as a balance.
    Spot {
        asset: String,
        underlying: String,
        notional: f64,
    },
    /// `notional / spot` perpetual contracts (negative: short) entered at the spot.
    Perpetual { underlying: String, notional: f64 },
    /// `notional / spot` option contracts (negative: short) expiring `days` calendar days
    /// after the row's date at 08:00 UTC, with strike `spot * (1 + moneyness)` rounded to 6 significant digits.
    Option {
        underlying: String,
        side: OptionKind,
        days: u32,
        moneyness: f64,
        notional: f64,
    },
}

impl Leg {
    pub fn underlying(&self) -> &str {
        match self {
            Leg::Spot { underlying, .. }
            | Leg::Perpetual { underlying, .. }
            | Leg::Option { underlying, .. } => underlying,
        }
    }
}

/// What a backtest portfolio holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Holdings {
    /// Re-struck every row (the reference set).
    Rolling(Vec<Leg>),
    /// A user account, held constant.
    Fixed(Account),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BacktestPortfolio {
    pub id: String,
    pub description: String,
    pub holdings: Holdings,
}

impl BacktestPortfolio {
    /// Underlyings the portfolio needs prices for.
    pub fn underlyings(&self) -> Vec<String> {
        let mut out: Vec<String> = match &self.holdings {
            Holdings::Rolling(legs) => legs.iter().map(|l| l.underlying().to_string()).collect(),
            Holdings::Fixed(a) => a
                .positions
                .iter()
                .map(|p| p.instrument.underlying.clone())
                .collect(),
        };
        out.sort();
        out.dedup();
        out
    }

    /// The account this portfolio holds on a row with the given date and spots.
    pub fn account_on(&self, date: NaiveDate, spots: &BTreeMap<String, f64>) -> Account {
        match &self.holdings {
            Holdings::Fixed(a) => a.clone(),
            Holdings::Rolling(legs) => {
                let mut balances = BTreeMap::new();
                let mut positions = Vec::new();
                for leg in legs {
                    let spot = spots.get(leg.underlying()).copied().unwrap_or(f64::NAN);
                    match leg {
                        Leg::Spot {
                            asset, notional, ..
                        } => {
                            *balances.entry(asset.clone()).or_insert(0.0) += notional / spot;
                        }
                        Leg::Perpetual {
                            underlying,
                            notional,
                        } => positions.push(Position {
                            instrument: Instrument {
                                name: format!("{underlying}-PERPETUAL"),
                                underlying: underlying.clone(),
                                expiry: None,
                                kind: Kind::Perpetual,
                            },
                            size: notional / spot,
                            entry_price: Some(spot),
                        }),
                        Leg::Option {
                            underlying,
                            side,
                            days,
                            moneyness,
                            notional,
                        } => {
                            let expiry = date + chrono::Days::new(u64::from(*days));
                            let strike = round_significant(spot * (1.0 + moneyness), 6);
                            positions.push(Position {
                                instrument: option_instrument(underlying, expiry, strike, *side),
                                size: notional / spot,
                                entry_price: None,
                            });
                        }
                    }
                }
                Account {
                    id: self.id.clone(),
                    balances,
                    positions,
                    external: Vec::new(),
                }
            }
        }
    }
}

/// `x` rounded to `digits` significant digits: rolling strikes are listed prices, not
/// floating-point noise (`5000 * 1.1` gives the strike 5500, not 5500.000000000001).
pub fn round_significant(x: f64, digits: i32) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.log10().floor() as i32);
    (x * scale).round() / scale
}

/// An option instrument named as docs/MODEL.md section 1 does (`BTC-6SEP15-305.5-C`); the strike
/// is printed in full so that two strikes never share a name.
pub fn option_instrument(
    underlying: &str,
    expiry: NaiveDate,
    strike: f64,
    side: OptionKind,
) -> Instrument {
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    let code = format!(
        "{}{}{:02}",
        expiry.day(),
        MONTHS[expiry.month0() as usize],
        expiry.year().rem_euclid(100)
    );
    let c = match side {
        OptionKind::Call => "C",
        OptionKind::Put => "P",
    };
    Instrument {
        name: format!("{underlying}-{code}-{strike}-{c}"),
        underlying: underlying.to_string(),
        expiry: Some(expiry),
        kind: Kind::Option { strike, side },
    }
}

/// The bundled reference set, each leg worth [`REFERENCE_NOTIONAL`] at the day's spot:
///
/// | id | holdings |
/// |---|---|
/// | `long_spot` | long BTC held as a balance |
/// | `short_perp` | short BTC-PERPETUAL |
/// | `short_strangle` | short 30-day BTC put at -10% and call at +10% |
/// | `risk_reversal` | long 30-day BTC call at +10%, short 30-day put at -10% |
/// | `calendar_spread` | short 30-day at-the-money BTC call, long 90-day one |
/// | `btc_eth_pair` | long BTC-PERPETUAL, short ETH-PERPETUAL |
pub fn reference_portfolios() -> Vec<BacktestPortfolio> {
    let n = REFERENCE_NOTIONAL;
    let btc = || "BTC".to_string();
    let opt = |side, days, moneyness, notional| Leg::Option {
        underlying: btc(),
        side,
        days,
        moneyness,
        notional,
    };
    let p = |id: &str, description: &str, legs: Vec<Leg>| BacktestPortfolio {
        id: id.to_string(),
        description: description.to_string(),
        holdings: Holdings::Rolling(legs),
    };
    use OptionKind::{Call, Put};
    vec![
        p(
            "long_spot",
            "long $1m BTC spot (balance)",
            vec![Leg::Spot {
                asset: btc(),
                underlying: btc(),
                notional: n,
            }],
        ),
        p(
            "short_perp",
            "short $1m BTC-PERPETUAL",
            vec![Leg::Perpetual {
                underlying: btc(),
                notional: -n,
            }],
        ),
        p(
            "short_strangle",
            "short 30d BTC 90% put + 110% call, $1m each",
            vec![opt(Put, 30, -0.10, -n), opt(Call, 30, 0.10, -n)],
        ),
        p(
            "risk_reversal",
            "long 30d BTC 110% call, short 30d 90% put, $1m each",
            vec![opt(Call, 30, 0.10, n), opt(Put, 30, -0.10, -n)],
        ),
        p(
            "calendar_spread",
            "short 30d ATM BTC call, long 90d ATM call, $1m each",
            vec![opt(Call, 30, 0.0, -n), opt(Call, 90, 0.0, n)],
        ),
        p(
            "btc_eth_pair",
            "long $1m BTC-PERPETUAL, short $1m ETH-PERPETUAL",
            vec![
                Leg::Perpetual {
                    underlying: btc(),
                    notional: n,
                },
                Leg::Perpetual {
                    underlying: "ETH".to_string(),
                    notional: -n,
                },
            ],
        ),
    ]
}

/// Every account of a user portfolio file, held constant. Ids are prefixed `user:` only if
/// they collide with a reference id.
pub fn user_portfolios(portfolio: &Portfolio) -> Vec<BacktestPortfolio> {
    let reference: Vec<String> = reference_portfolios().into_iter().map(|p| p.id).collect();
    portfolio
        .accounts
        .iter()
        .map(|a| {
            let id = if reference.contains(&a.id) {
                format!("user:{}", a.id)
            } else {
                a.id.clone()
            };
            BacktestPortfolio {
                id: id.clone(),
                description: format!("{} from {}, held constant", a.id, portfolio.source),
                holdings: Holdings::Fixed(Account { id, ..a.clone() }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_legs_are_struck_from_the_day_spot() {
        let refs = reference_portfolios();
        assert_eq!(refs.len(), 6);
        let strangle = refs.iter().find(|p| p.id == "short_strangle").unwrap();
        let date = NaiveDate::from_ymd_opt(2020, 3, 12).unwrap();
        let spots = BTreeMap::from([("BTC".to_string(), 5000.0)]);
        let a = strangle.account_on(date, &spots);
        assert_eq!(a.positions.len(), 2);
        let put = &a.positions[0];
        assert_eq!(put.instrument.name, "BTC-11APR20-4500-P");
        assert_eq!(put.size, -200.0);
        // The name parses back to the same instrument.
        assert_eq!(
            Instrument::parse(&put.instrument.name).unwrap(),
            put.instrument
        );
        let call = &a.positions[1];
        assert_eq!(call.instrument.name, "BTC-11APR20-5500-C");
        assert_eq!(
            Instrument::parse(&call.instrument.name).unwrap(),
            call.instrument
        );
    }
}
