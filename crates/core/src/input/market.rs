//! The market snapshot: spot prices, marks of perpetuals and futures, and the vol surface.

use super::{check_finite, check_number, from_value, key_path, parse_json};
use crate::error::{InputError, Result};
use crate::instrument::{parse_expiry, Instrument, Kind};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMarket {
    as_of: String,
    #[serde(default)]
    rate: f64,
    prices: BTreeMap<String, f64>,
    #[serde(default)]
    marks: BTreeMap<String, f64>,
    #[serde(default)]
    vols: BTreeMap<String, RawSurface>,
    #[serde(default)]
    ivs: BTreeMap<String, f64>,
    #[serde(default)]
    confidence: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSurface {
    #[serde(default)]
    default: Option<f64>,
    #[serde(default)]
    points: Vec<RawPoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoint {
    expiry: String,
    strike: f64,
    iv: f64,
}

/// One smile point: the implied vol of a strike at an expiry.
#[derive(Debug, Clone, PartialEq)]
pub struct SmilePoint {
    pub expiry: NaiveDate,
    pub strike: f64,
    pub iv: f64,
}

/// An underlying's vols: smile points per expiry and a default for everything else.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VolSurface {
    pub default: Option<f64>,
    /// Sorted by expiry, then strike; no two points share both.
    pub points: Vec<SmilePoint>,
}

/// A validated market snapshot. `marks` are keyed by the parsed contract so that
/// `BTC-7MAR27` and `BTC-07MAR27` are the same future.
#[derive(Debug, Clone, PartialEq)]
pub struct Market {
    pub source: String,
    pub as_of: DateTime<Utc>,
    pub rate: f64,
    pub prices: BTreeMap<String, f64>,
    pub perpetual_marks: BTreeMap<String, f64>,
    pub future_marks: BTreeMap<(String, NaiveDate), f64>,
    pub vols: BTreeMap<String, VolSurface>,
    pub ivs: BTreeMap<String, f64>,
    /// The oracle's price uncertainty per underlying, in USD (docs/MODEL.md section 11; absent: 0).
    pub confidence: BTreeMap<String, f64>,
}

impl Market {
    pub fn parse(file: &str, text: &str) -> Result<Market> {
        let raw: RawMarket = from_value(file, parse_json(file, text)?)?;
        let as_of = DateTime::parse_from_rfc3339(&raw.as_of)
            .map_err(|e| InputError::new(file, "as_of", format!("not an RFC 3339 time ({e})")))?
            .with_timezone(&Utc);
        check_finite(file, "rate", raw.rate)?;
        if raw.rate.abs() > 1.0 {
            return Err(InputError::new(
                file,
                "rate",
                "must be between -1 and 1 (a fraction per year)",
            ));
        }
        for (asset, price) in &raw.prices {
            check_number(file, &key_path("prices", asset), *price, 0.0, true)?;
        }
        let mut perpetual_marks = BTreeMap::new();
        let mut future_marks = BTreeMap::new();
        for (name, mark) in &raw.marks {
            let path = key_path("marks", name);
            check_number(file, &path, *mark, 0.0, true)?;
            let inst = Instrument::parse(name).map_err(|e| InputError::new(file, &path, e))?;
            match (inst.kind, inst.expiry) {
                (Kind::Perpetual, _) => {
                    perpetual_marks.insert(inst.underlying, *mark);
                }
                (Kind::Future, Some(date)) => {
                    if future_marks.insert((inst.underlying, date), *mark).is_some() {
                        return Err(InputError::new(file, path, "a second mark for the same future"));
                    }
                }
                _ => {
                    return Err(InputError::new(
                        file,
                        path,
                        "marks are for perpetuals and futures; an option's value comes from its vol (give it in `ivs`)",
                    ))
                }
            }
        }
        let mut vols = BTreeMap::new();
        for (u, surface) in raw.vols {
            let base = key_path("vols", &u);
            if let Some(d) = surface.default {
                check_number(file, &format!("{base}.default"), d, 0.0, true)?;
            }
            let mut points = Vec::with_capacity(surface.points.len());
            for (i, p) in surface.points.iter().enumerate() {
                let path = format!("{base}.points[{i}]");
                let expiry = parse_expiry(&p.expiry)
                    .map_err(|e| InputError::new(file, format!("{path}.expiry"), e))?;
                check_number(file, &format!("{path}.strike"), p.strike, 0.0, true)?;
                check_number(file, &format!("{path}.iv"), p.iv, 0.0, true)?;
                points.push(SmilePoint {
                    expiry,
                    strike: p.strike,
                    iv: p.iv,
                });
            }
            points.sort_by(|a, b| a.expiry.cmp(&b.expiry).then(a.strike.total_cmp(&b.strike)));
            if let Some(w) = points
                .windows(2)
                .find(|w| w[0].expiry == w[1].expiry && w[0].strike == w[1].strike)
            {
                return Err(InputError::new(
                    file,
                    format!("{base}.points"),
                    format!(
                        "two points for strike {} at expiry {}",
                        w[0].strike, w[0].expiry
                    ),
                ));
            }
            vols.insert(
                u,
                VolSurface {
                    default: surface.default,
                    points,
                },
            );
        }
        for (name, iv) in &raw.ivs {
            let path = key_path("ivs", name);
            check_number(file, &path, *iv, 0.0, true)?;
            let inst = Instrument::parse(name).map_err(|e| InputError::new(file, &path, e))?;
            if !inst.is_option() {
                return Err(InputError::new(file, path, "ivs are for options only"));
            }
        }
        for (u, c) in &raw.confidence {
            check_number(file, &key_path("confidence", u), *c, 0.0, false)?;
        }
        Ok(Market {
            source: file.to_string(),
            as_of,
            rate: raw.rate,
            prices: raw.prices,
            perpetual_marks,
            future_marks,
            vols,
            ivs: raw.ivs,
            confidence: raw.confidence,
        })
    }

    /// The forward of an underlying at an expiry: the future's mark if given, else spot.
    pub fn forward(&self, underlying: &str, expiry: NaiveDate, spot: f64) -> f64 {
        self.future_marks
            .get(&(underlying.to_string(), expiry))
            .copied()
            .unwrap_or(spot)
    }

    /// Option implied vol (docs/MODEL.md section 1): its own `ivs` entry; else the smile of its
    /// expiry, linear in ln(K/F) between neighbouring strikes and flat beyond; else the default.
    pub fn option_vol(&self, inst: &Instrument, strike: f64, forward: f64) -> Option<f64> {
        if let Some(iv) = self.ivs.get(&inst.name) {
            return Some(*iv);
        }
        let surface = self.vols.get(&inst.underlying)?;
        let smile: Vec<&SmilePoint> = surface
            .points
            .iter()
            .filter(|p| Some(p.expiry) == inst.expiry)
            .collect();
        match smile.as_slice() {
            [] => surface.default,
            [only] => Some(only.iv),
            points => Some(interpolate_smile(points, strike, forward)),
        }
    }
}

/// Linear interpolation in log-moneyness; `points` are sorted by strike.
fn interpolate_smile(points: &[&SmilePoint], strike: f64, forward: f64) -> f64 {
    let x = (strike / forward).ln();
    let xs = |p: &SmilePoint| (p.strike / forward).ln();
    let first = points[0];
    let last = points[points.len() - 1];
    if x <= xs(first) {
        return first.iv;
    }
    if x >= xs(last) {
        return last.iv;
    }
    for w in points.windows(2) {
        let (x0, x1) = (xs(w[0]), xs(w[1]));
        if x <= x1 {
            return w[0].iv + (w[1].iv - w[0].iv) * (x - x0) / (x1 - x0);
        }
    }
    last.iv
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
      "as_of": "2026-11-24T08:00:00Z", "rate": 0.0,
      "prices": { "BTC": 60000, "ETH": 3000, "USDC": 1 },
      "marks":  { "BTC-27DEC26": 60450 },
      "vols": { "BTC": { "default": 0.60, "points": [
          { "expiry": "27DEC26", "strike": 50000, "iv": 0.68 },
          { "expiry": "27DEC26", "strike": 60000, "iv": 0.62 },
          { "expiry": "27DEC26", "strike": 80000, "iv": 0.64 } ] },
        "ETH": { "default": 0.70 } },
      "ivs": {} }"#;

    fn option(name: &str) -> (Instrument, f64) {
        let inst = Instrument::parse(name).unwrap();
        let Kind::Option { strike, .. } = inst.kind else {
            panic!()
        };
        (inst, strike)
    }

    #[test]
    fn smile_is_linear_in_log_moneyness_and_flat_outside() {
        let m = Market::parse("market.json", EXAMPLE).unwrap();
        let f = 60450.0;
        // Between 60000 (0.62) and 80000 (0.64): weight = ln(70000/60000) / ln(80000/60000)
        // = 0.1541507 / 0.2876821 = 0.5358333; iv = 0.62 + 0.02 * 0.5358333 = 0.6307167.
        let (i, k) = option("BTC-27DEC26-70000-C");
        let w = (70000f64 / 60000.0).ln() / (80000f64 / 60000.0).ln();
        assert!((m.option_vol(&i, k, f).unwrap() - (0.62 + 0.02 * w)).abs() < 1e-15);
        assert!((m.option_vol(&i, k, f).unwrap() - 0.6307167).abs() < 1e-6);
        let (i, k) = option("BTC-27DEC26-40000-P");
        assert_eq!(m.option_vol(&i, k, f), Some(0.68));
        let (i, k) = option("BTC-27DEC26-90000-C");
        assert_eq!(m.option_vol(&i, k, f), Some(0.64));
        let (i, k) = option("BTC-27DEC26-60000-P");
        assert_eq!(m.option_vol(&i, k, f), Some(0.62));
        // Another expiry has no smile: the default applies.
        let (i, k) = option("BTC-26MAR27-60000-P");
        assert_eq!(m.option_vol(&i, k, f), Some(0.60));
        assert_eq!(
            m.forward(
                "BTC",
                NaiveDate::from_ymd_opt(2026, 12, 27).unwrap(),
                60000.0
            ),
            60450.0
        );
    }

    #[test]
    fn bad_markets_name_the_field() {
        let cases = [
            (
                EXAMPLE.replace("\"BTC\": 60000", "\"BTC\": -60000"),
                "prices.BTC",
            ),
            (
                EXAMPLE.replace(
                    "\"as_of\": \"2026-11-24T08:00:00Z\"",
                    "\"as_of\": \"yesterday\"",
                ),
                "as_of",
            ),
            (
                EXAMPLE.replace(
                    "\"27DEC26\", \"strike\": 50000",
                    "\"27XYZ26\", \"strike\": 50000",
                ),
                "vols.BTC.points[0].expiry",
            ),
            (
                EXAMPLE.replace("\"iv\": 0.62", "\"iv\": 0.0"),
                "vols.BTC.points[1].iv",
            ),
            (
                EXAMPLE.replace("\"ivs\": {}", "\"ivs\": {}, \"spot\": 1"),
                "spot",
            ),
            (
                EXAMPLE.replace("\"BTC-27DEC26\": 60450", "\"BTC-27DEC26-1-C\": 5"),
                "marks.BTC-27DEC26-1-C",
            ),
            (
                EXAMPLE.replace("\"default\": 0.70", "\"defualt\": 0.70"),
                "vols.ETH.defualt",
            ),
        ];
        for (text, path) in cases {
            let err = Market::parse("market.json", &text).unwrap_err();
            assert_eq!(err.path, path, "{err}");
        }
        let err = Market::parse("market.json", "{ not json").unwrap_err();
        assert!(err.message.contains("invalid JSON"), "{err}");
        let err = Market::parse("market.json", &EXAMPLE.replace("60450", "1e999")).unwrap_err();
        assert!(err.message.contains("invalid JSON"), "{err}");
    }
}
