//! The market snapshot of one history row: spot = close, perpetual mark = spot, every
//! forward = spot, rate 0, and a flat option vol from the vol rule (crate documentation):
//! the implied vol index of the row's date where one is given (DVOL), else the EWMA rule.

use crate::data::ImpliedVols;
use crate::{Error, Result};
use chrono::{DateTime, NaiveDate, Utc};
use pmargin_core::input::market::{Market, VolSurface};
use pmargin_core::instrument::expiry_instant;
use pmargin_core::{History, Params};
use pmargin_stats::ewma::{ewma_variances, log_returns, SEED_WINDOW};
use pmargin_stats::StatsError;
use std::collections::BTreeMap;

/// Default floor of the flat option vol.
pub const DEFAULT_VOL_FLOOR: f64 = 0.20;
/// Days per year used to annualise the daily EWMA vol (crypto trades every day).
pub const ANNUALISATION_DAYS: f64 = 365.0;

/// Precomputed marks of a history: closes and the vol rule's vol on every row.
#[derive(Debug, Clone)]
pub struct DayMarkets {
    pub source: String,
    pub dates: Vec<NaiveDate>,
    /// (underlying, closes).
    pub closes: Vec<(String, Vec<f64>)>,
    /// (underlying, flat annualised vol on each row).
    pub vols: Vec<(String, Vec<f64>)>,
    /// (underlying, rows whose vol is the implied vol index rather than the EWMA rule).
    pub implied_rows: Vec<(String, usize)>,
    /// Prices of the collateral assets: (asset, Some(underlying)) or (asset, None) for stable.
    pub assets: Vec<(String, Option<String>)>,
}

/// Annualised flat vol of each row of `closes`, using only the returns up to that row:
/// `max(floor, sqrt(365 * s2))` with `s2` the EWMA forecast after the row's return.
pub fn vol_path(closes: &[f64], lambda: f64, floor: f64) -> pmargin_stats::Result<Vec<f64>> {
    let row = |s2: f64| (ANNUALISATION_DAYS * s2).sqrt().max(floor);
    if closes.len() < 2 {
        // No return yet: every row is the first, with no variance to annualise.
        return Ok(vec![row(0.0); closes.len()]);
    }
    let returns = log_returns(closes)?;
    let full = ewma_variances(&returns, lambda)?;
    let mut out = Vec::with_capacity(closes.len());
    out.push(row(0.0));
    for t in 1..closes.len() {
        let s2 = if t < SEED_WINDOW {
            // The seed averages the first min(30, N) returns: before row 30 the prefix has
            // its own seed, which must not peek at later returns.
            *ewma_variances(&returns[..t], lambda)?
                .last()
                .unwrap_or(&0.0)
        } else {
            // From row 30 on, the seed is the same for every prefix, and the recursion is
            // causal: entry t is the forecast after return t.
            full[t]
        };
        out.push(row(s2));
    }
    Ok(out)
}

impl DayMarkets {
    /// `implied`: where it has an underlying's vol on a row's date, that vol (flat across
    /// strikes and tenors) replaces the EWMA rule's; the index is published for the day, so it
    /// is known on the row's date and adds no look-ahead.
    pub fn new(
        history: &History,
        params: &Params,
        vol_floor: f64,
        implied: Option<&ImpliedVols>,
    ) -> Result<DayMarkets> {
        let lambda = params.statistical.ewma_lambda;
        let mut implied_rows = Vec::new();
        let vols = history
            .columns
            .iter()
            .map(|(n, c)| {
                let mut path = vol_path(c, lambda, vol_floor).map_err(|e| match e {
                    StatsError::InvalidParameter { .. } => {
                        Error(format!("statistical.ewma_lambda: {e}"))
                    }
                    _ => Error(format!("{}: column {n}: {e}", history.source)),
                })?;
                let mut count = 0;
                if let Some(iv) = implied {
                    for (v, date) in path.iter_mut().zip(&history.dates) {
                        if let Some(x) = iv.get(n, *date) {
                            *v = x;
                            count += 1;
                        }
                    }
                }
                implied_rows.push((n.clone(), count));
                Ok((n.clone(), path))
            })
            .collect::<Result<_>>()?;
        Ok(DayMarkets {
            source: history.source.clone(),
            dates: history.dates.clone(),
            closes: history.columns.clone(),
            vols,
            implied_rows,
            assets: params
                .collateral
                .iter()
                .map(|(a, c)| (a.clone(), c.underlying.clone()))
                .collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.dates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dates.is_empty()
    }

    /// Spots of every underlying on row `t`.
    pub fn spots(&self, t: usize) -> BTreeMap<String, f64> {
        self.closes.iter().map(|(n, c)| (n.clone(), c[t])).collect()
    }

    /// The instant of row `t`'s snapshot: its date at 08:00 UTC, the same clock as expiries,
    /// so that a 30-day option has exactly 30/365 years left on the day it is struck.
    pub fn as_of(&self, t: usize) -> DateTime<Utc> {
        expiry_instant(self.dates[t])
    }

    /// The market snapshot of row `t`.
    pub fn market(&self, t: usize) -> Market {
        let spots = self.spots(t);
        let mut prices = spots.clone();
        for (asset, underlying) in &self.assets {
            let price = match underlying {
                Some(u) => match spots.get(u) {
                    Some(p) => *p,
                    // An asset moving with an underlying the history lacks has no price: the
                    // book names it if a portfolio holds it.
                    None => continue,
                },
                None => 1.0,
            };
            prices.entry(asset.clone()).or_insert(price);
        }
        Market {
            source: format!("{} row {} ({})", self.source, t + 1, self.dates[t]),
            as_of: self.as_of(t),
            rate: 0.0,
            prices,
            perpetual_marks: BTreeMap::new(),
            future_marks: BTreeMap::new(),
            vols: self
                .vols
                .iter()
                .map(|(n, v)| {
                    (
                        n.clone(),
                        VolSurface {
                            default: Some(v[t]),
                            points: Vec::new(),
                        },
                    )
                })
                .collect(),
            ivs: BTreeMap::new(),
            confidence: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vol_uses_only_past_returns() {
        let closes: Vec<f64> = (0..80)
            .map(|i| 100.0 * (1.0 + 0.03 * ((i * 7 % 5) as f64 - 2.0)).abs())
            .collect();
        let full = vol_path(&closes, 0.94, 0.0).unwrap();
        for t in [0, 1, 5, 29, 30, 31, 60, 79] {
            let prefix = vol_path(&closes[..=t], 0.94, 0.0).unwrap();
            assert_eq!(prefix[t], full[t], "row {t}");
        }
        assert_eq!(full[0], 0.0);
        assert!(vol_path(&closes, 0.94, 0.2)
            .unwrap()
            .iter()
            .all(|v| *v >= 0.2));
    }
}
