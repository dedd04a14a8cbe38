//! Data bundled into the binary, so that `pmargin backtest` and `pmargin calibrate` run with
//! no file at all: the repository's daily closes, the real market series of `data/real/`
//! (provenance in `data/README.md` and each folder's `PROVENANCE.txt`), the reference
//! parameter set and the recommended version 2 set derived from them.

use crate::{err, Error, Result};
use chrono::NaiveDate;
use pmargin_core::{History, Params};
use std::collections::BTreeMap;

/// Daily closes of BTC and ETH, 2015-08-07 .. 2021-11-24 (2298 rows). A `static`, not a
/// `const`: the sim and server demos use it too, and a `const` would be copied into each
/// crate that names it, so the binary would carry the file once per user.
pub static HISTORY_CSV: &str = include_str!("../../../data/history.csv");
/// The name errors and reports quote for [`HISTORY_CSV`].
pub const HISTORY_NAME: &str = "bundled data/history.csv";

/// Daily closes of BTC and ETH, 2015-08-07 .. 2023-08-29 (2941 rows): `history.csv` to
/// 2021-11-23, then Yahoo Finance's BTC-USD and ETH-USD of `data/real/stablecoins/usdc_2021_2023`.
pub static BTC_ETH_CSV: &str = include_str!("../../../data/btc_eth.csv");
pub const BTC_ETH_NAME: &str = "bundled data/btc_eth.csv";

/// Daily BTC closes, 2011-08-18 .. 2025-09-24 (5152 rows, Bitstamp then Coinbase).
pub const BTC_LONG_CSV: &str = include_str!("../../../data/btc_long.csv");
pub const BTC_LONG_NAME: &str = "bundled data/btc_long.csv";

/// Deribit DVOL (30-day implied vol index, percent), daily OHLC, newest row first.
pub const BTC_DVOL_CSV: &str = include_str!("../../../data/real/dvol/btc_dvol.csv");
pub const ETH_DVOL_CSV: &str = include_str!("../../../data/real/dvol/eth_dvol.csv");
/// Binance BTCUSDT perpetual funding: daily mean of the 8-hour rates.
pub const FUNDING_CSV: &str = include_str!("../../../data/real/funding/funding_rates_daily.csv");
/// Deribit BTC-PERPETUAL daily candles (08:00 to 08:00 UTC), newest row first.
pub const PERP_CSV: &str =
    include_str!("../../../data/real/perp_deribit_btc_daily/BTC-PERPETUAL.csv");
/// Yahoo Finance BTC-USD daily OHLC (00:00 to 24:00 UTC), 2021-01-01 .. 2023-08-29.
pub const SPOT_OHLC_CSV: &str =
    include_str!("../../../data/real/stablecoins/usdc_2021_2023/BTC-USD.csv");
/// Yahoo Finance stablecoin dailies: to 2022-11 and 2021-01 .. 2023-08.
pub const USDC_CSV: &str = include_str!("../../../data/real/stablecoins/USDC-USD.csv");
pub const USDC_2023_CSV: &str =
    include_str!("../../../data/real/stablecoins/usdc_2021_2023/USDC-USD.csv");
pub const USDT_CSV: &str = include_str!("../../../data/real/stablecoins/USDT-USD.csv");
pub const USDT_2023_CSV: &str =
    include_str!("../../../data/real/stablecoins/usdc_2021_2023/USDT-USD.csv");
pub const USTC_CSV: &str = include_str!("../../../data/real/stablecoins/USTC-USD.csv");

/// Reference parameter set for BTC and ETH (the docs/FORMATS.md example ranges, 1-day horizon,
/// version 1): the base the recommended set is derived from.
pub const PARAMS_V1_JSON: &str = include_str!("../data/params.json");
pub const PARAMS_V1_NAME: &str = "bundled crates/backtest/data/params.json";

/// The recommended version 2 set (`pmargin calibrate --recommend` on the bundled data), the
/// default of `pmargin backtest` and `pmargin calibrate`.
pub const PARAMS_JSON: &str = include_str!("../../../data/params/recommended.json");
/// The name errors and reports quote for [`PARAMS_JSON`].
pub const PARAMS_NAME: &str = "bundled data/params/recommended.json";

pub fn history() -> Result<History> {
    Ok(History::parse(HISTORY_NAME, HISTORY_CSV)?)
}

/// The histories a default backtest runs on, longest first: each portfolio runs on the first
/// one that has all its underlyings (BTC alone on `btc_long.csv`, BTC with ETH on
/// `btc_eth.csv`).
pub fn backtest_histories() -> Result<Vec<History>> {
    Ok(vec![
        History::parse(BTC_LONG_NAME, BTC_LONG_CSV)?,
        History::parse(BTC_ETH_NAME, BTC_ETH_CSV)?,
    ])
}

pub fn params() -> Result<Params> {
    Ok(Params::parse(PARAMS_NAME, PARAMS_JSON)?)
}

pub fn params_v1() -> Result<Params> {
    Ok(Params::parse(PARAMS_V1_NAME, PARAMS_V1_JSON)?)
}

/// A daily series, dates ascending.
#[derive(Debug, Clone, PartialEq)]
pub struct Daily<T> {
    pub source: String,
    pub dates: Vec<NaiveDate>,
    pub values: Vec<T>,
}

impl<T: Copy> Daily<T> {
    pub fn get(&self, date: NaiveDate) -> Option<T> {
        self.dates.binary_search(&date).ok().map(|i| self.values[i])
    }

    /// The values of the dates in `[from, to]`.
    pub fn between(&self, from: NaiveDate, to: NaiveDate) -> Vec<T> {
        self.dates
            .iter()
            .zip(&self.values)
            .filter(|(d, _)| **d >= from && **d <= to)
            .map(|(_, v)| *v)
            .collect()
    }
}

/// Reads the columns `names` of a CSV with a header whose date column is `date_column` (only
/// its first 10 characters count, so `2026-01-30 08:00:00` is a date). Rows with a `null`
/// cell are skipped (Yahoo Finance marks its gaps so); rows come out in ascending date order,
/// whatever the file's order.
pub fn read_columns<const N: usize>(
    source: &str,
    text: &str,
    date_column: &str,
    names: [&str; N],
) -> Result<Daily<[f64; N]>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| Error(format!("{source}: empty file")))?;
    let header: Vec<&str> = header.split(',').map(str::trim).collect();
    let index = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| Error(format!("{source}: line 1: no column `{name}`")))
    };
    let date_at = index(date_column)?;
    let mut at = [0usize; N];
    for (slot, name) in at.iter_mut().zip(names) {
        *slot = index(name)?;
    }
    let mut rows: Vec<(NaiveDate, [f64; N])> = Vec::new();
    'line: for (i, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let cell = |k: usize| {
            cells
                .get(k)
                .copied()
                .ok_or_else(|| Error(format!("{source}: line {}: too few cells", i + 1)))
        };
        let d = cell(date_at)?;
        let date = d
            .get(..10)
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            .ok_or_else(|| {
                Error(format!(
                    "{source}: line {}.{date_column}: `{d}` is not a date",
                    i + 1
                ))
            })?;
        let mut values = [0.0; N];
        for (k, (&col, name)) in at.iter().zip(names).enumerate() {
            let c = cell(col)?;
            if c == "null" {
                continue 'line;
            }
            values[k] = c
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    Error(format!(
                        "{source}: line {}.{name}: `{c}` is not a number",
                        i + 1
                    ))
                })?;
        }
        rows.push((date, values));
    }
    rows.sort_by_key(|(d, _)| *d);
    if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
        return err(format!("{source}: the date {} appears twice", w[0].0));
    }
    if rows.is_empty() {
        return err(format!("{source}: no data row"));
    }
    Ok(Daily {
        source: source.to_string(),
        dates: rows.iter().map(|(d, _)| *d).collect(),
        values: rows.into_iter().map(|(_, v)| v).collect(),
    })
}

fn single(daily: Daily<[f64; 1]>) -> Daily<f64> {
    Daily {
        source: daily.source,
        dates: daily.dates,
        values: daily.values.into_iter().map(|[v]| v).collect(),
    }
}

/// Implied vol levels (annualised fractions) per underlying and date: the backtest's source
/// of option vols where it has the date.
#[derive(Debug, Clone, PartialEq)]
pub struct ImpliedVols {
    /// What the vols are, for the report's `vol_rule`.
    pub source: String,
    pub series: BTreeMap<String, Daily<f64>>,
}

impl ImpliedVols {
    pub fn get(&self, underlying: &str, date: NaiveDate) -> Option<f64> {
        self.series.get(underlying).and_then(|s| s.get(date))
    }
}

/// The daily DVOL close of an index file, as a fraction (47.53 -> 0.4753).
pub fn dvol(source: &str, text: &str) -> Result<Daily<f64>> {
    let mut d = single(read_columns(source, text, "date", ["close"])?);
    for (date, v) in d.dates.iter().zip(d.values.iter_mut()) {
        if *v <= 0.0 {
            return err(format!("{source}: {date}: DVOL must be positive, got {v}"));
        }
        *v /= 100.0;
    }
    Ok(d)
}

/// Deribit's BTC and ETH DVOL, from 2021-03-24.
pub fn bundled_dvol() -> Result<ImpliedVols> {
    Ok(ImpliedVols {
        source: "Deribit DVOL (30-day implied vol index, daily close; bundled data/real/dvol)"
            .to_string(),
        series: BTreeMap::from([
            (
                "BTC".to_string(),
                dvol("bundled data/real/dvol/btc_dvol.csv", BTC_DVOL_CSV)?,
            ),
            (
                "ETH".to_string(),
                dvol("bundled data/real/dvol/eth_dvol.csv", ETH_DVOL_CSV)?,
            ),
        ]),
    })
}

/// Everything `pmargin calibrate --recommend` derives the version 2 set from.
#[derive(Debug, Clone)]
pub struct RealData {
    /// Daily closes per underlying, each from its longest bundled history.
    pub closes: BTreeMap<String, History>,
    /// Implied vol index per underlying (fractions).
    pub dvol: BTreeMap<String, Daily<f64>>,
    /// Funding: mean 8-hour rate of each day (BTC).
    pub funding: Daily<f64>,
    /// Perpetual daily candles `[low, high]`, keyed by the candle's opening day (BTC).
    pub perp: Daily<[f64; 2]>,
    /// Spot daily `[low, high]` (BTC).
    pub spot: Daily<[f64; 2]>,
    /// Stablecoin daily closes by asset: every bundled file of that coin.
    pub stablecoins: BTreeMap<String, Vec<Daily<f64>>>,
}

/// The bundled real data (see `data/README.md`).
pub fn real_data() -> Result<RealData> {
    let yahoo = |name: &str, text: &str| -> Result<Daily<f64>> {
        Ok(single(read_columns(
            &format!("bundled data/real/stablecoins/{name}"),
            text,
            "Date",
            ["Close"],
        )?))
    };
    Ok(RealData {
        closes: BTreeMap::from([
            (
                "BTC".to_string(),
                History::parse(BTC_LONG_NAME, BTC_LONG_CSV)?,
            ),
            (
                "ETH".to_string(),
                History::parse(BTC_ETH_NAME, BTC_ETH_CSV)?,
            ),
        ]),
        dvol: bundled_dvol()?.series,
        funding: single(read_columns(
            "bundled data/real/funding/funding_rates_daily.csv",
            FUNDING_CSV,
            "date",
            ["funding_mean"],
        )?),
        perp: read_columns(
            "bundled data/real/perp_deribit_btc_daily/BTC-PERPETUAL.csv",
            PERP_CSV,
            "date",
            ["low", "high"],
        )?,
        spot: read_columns(
            "bundled data/real/stablecoins/usdc_2021_2023/BTC-USD.csv",
            SPOT_OHLC_CSV,
            "Date",
            ["Low", "High"],
        )?,
        stablecoins: BTreeMap::from([
            (
                "USDC".to_string(),
                vec![
                    yahoo("USDC-USD.csv", USDC_CSV)?,
                    yahoo("usdc_2021_2023/USDC-USD.csv", USDC_2023_CSV)?,
                ],
            ),
            (
                "USDT".to_string(),
                vec![
                    yahoo("USDT-USD.csv", USDT_CSV)?,
                    yahoo("usdc_2021_2023/USDT-USD.csv", USDT_2023_CSV)?,
                ],
            ),
            ("USTC".to_string(), vec![yahoo("USTC-USD.csv", USTC_CSV)?]),
        ]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_series_match_the_provenance_spot_checks() {
        let d = real_data().unwrap();
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        // PROVENANCE.txt spot checks.
        assert_eq!(d.dvol["BTC"].get(day("2021-05-19")), Some(1.2483));
        assert_eq!(d.dvol["BTC"].get(day("2022-11-09")), Some(1.1472));
        assert_eq!(d.dvol["ETH"].get(day("2021-05-19")), Some(1.5827));
        assert_eq!(d.dvol["BTC"].dates[0], day("2021-03-24"));
        assert_eq!(d.perp.get(day("2020-03-12")), Some([3605.0, 7464.5]));
        assert_eq!(d.perp.get(day("2022-11-09")).map(|v| v[0]), Some(15413.0));
        let usdc = &d.stablecoins["USDC"][1];
        assert!((usdc.get(day("2023-03-11")).unwrap() - 0.9715).abs() < 1e-4);
        let ust = &d.stablecoins["USTC"][0];
        assert!((ust.get(day("2022-05-13")).unwrap() - 0.1540).abs() < 1e-4);
        assert!((d.funding.get(day("2020-03-13")).unwrap() + 0.00127).abs() < 1e-5);
        let eth = &d.closes["ETH"];
        assert_eq!(eth.dates.last().copied(), Some(day("2023-08-29")));
        let btc = &d.closes["BTC"];
        assert_eq!(btc.dates.last().copied(), Some(day("2025-09-24")));
    }

    #[test]
    fn reader_names_the_bad_cell() {
        let e =
            read_columns("x.csv", "date,close\n2024-01-01,abc\n", "date", ["close"]).unwrap_err();
        assert!(e.0.contains("x.csv: line 2.close"), "{e}");
        let e = read_columns("x.csv", "date,open\n2024-01-01,1\n", "date", ["close"]).unwrap_err();
        assert!(e.0.contains("no column `close`"), "{e}");
        let d = read_columns(
            "x.csv",
            "date,close\n2024-01-02,2\n2024-01-01,null\n2023-12-31,1\n",
            "date",
            ["close"],
        )
        .unwrap();
        assert_eq!(d.values, vec![[1.0], [2.0]]);
    }
}
