//! A whole Deribit option chain (the fields of `public/get_book_summary_by_currency`, or of a
//! ticker, one row per instrument, as JSON or CSV) into a `market.json` (docs/FORMATS.md):
//! the index into `prices`, each expiry's forward into `marks`, each strike's `mark_iv` into
//! the smile (`vols.<currency>.points`).
//!
//! A snapshot is taken over a few minutes, so rows disagree slightly: each expiry's forward and
//! the index come from the newest row that has them, and `as_of` is the newest row's time. A
//! call and a put of one strike share Deribit's smile; if their marks differ, the point is
//! their mean.

use crate::deribit::ticker;
use crate::{ParseError, Update};
use chrono::{TimeZone, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

const VENUE: &str = "deribit chain";

/// A market snapshot as docs/FORMATS.md writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MarketSnapshot {
    pub as_of: String,
    pub rate: f64,
    pub prices: BTreeMap<String, f64>,
    pub marks: BTreeMap<String, f64>,
    pub vols: BTreeMap<String, Surface>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Surface {
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub expiry: String,
    pub strike: f64,
    pub iv: f64,
}

/// Reads a chain: a JSON document (the RPC answer `{"result": [...]}` or the array itself) if
/// the text starts with `{` or `[`, CSV with a header row otherwise.
pub fn read_chain(text: &str) -> Result<MarketSnapshot, ParseError> {
    let rows = match text.trim_start().chars().next() {
        Some('{') | Some('[') => json_rows(text)?,
        _ => csv_rows(text)?,
    };
    snapshot(&rows)
}

fn json_rows(text: &str) -> Result<Vec<Value>, ParseError> {
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| ParseError::new(VENUE, "file", format!("is not JSON ({e})")))?;
    let rows = match doc {
        Value::Array(rows) => rows,
        Value::Object(mut obj) => match obj.remove("result") {
            Some(Value::Array(rows)) => rows,
            _ => {
                return Err(ParseError::new(
                    VENUE,
                    "result",
                    "is missing or not an array",
                ))
            }
        },
        _ => {
            return Err(ParseError::new(
                VENUE,
                "file",
                "is neither an object nor an array",
            ))
        }
    };
    Ok(rows)
}

/// CSV rows as JSON objects of their non-empty cells (numbers where a cell reads as one), so
/// both formats go through one reader.
fn csv_rows(text: &str) -> Result<Vec<Value>, ParseError> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| ParseError::new(VENUE, "header", e.to_string()))?
        .clone();
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record =
            record.map_err(|e| ParseError::new(VENUE, format!("row {}", i + 2), e.to_string()))?;
        let mut obj = Map::new();
        for (name, cell) in headers.iter().zip(record.iter()) {
            if name.is_empty() || cell.is_empty() {
                continue;
            }
            let text_column = name.ends_with("_name") || name.ends_with("_index");
            let value = match (cell.parse::<i64>(), cell.parse::<f64>()) {
                _ if text_column => Value::String(cell.to_string()),
                (Ok(i), _) => Value::from(i),
                (_, Ok(x)) if x.is_finite() => serde_json::Number::from_f64(x)
                    .map_or(Value::String(cell.into()), Value::Number),
                _ => Value::String(cell.to_string()),
            };
            obj.insert(name.to_string(), value);
        }
        rows.push(Value::Object(obj));
    }
    Ok(rows)
}

#[derive(Default)]
struct Smile {
    /// (sum of ivs, count) per strike, keyed by the strike's bits (strikes are exact decimals).
    strikes: BTreeMap<u64, (f64, u32)>,
}

fn snapshot(rows: &[Value]) -> Result<MarketSnapshot, ParseError> {
    if rows.is_empty() {
        return Err(ParseError::new(
            VENUE,
            "rows",
            "the chain has no instrument",
        ));
    }
    // (ts, price) of the newest index and forward per currency / (currency, expiry).
    let mut index: BTreeMap<String, (i64, f64)> = BTreeMap::new();
    let mut forwards: BTreeMap<(String, String), (i64, f64)> = BTreeMap::new();
    let mut smiles: BTreeMap<(String, String), Smile> = BTreeMap::new();
    let mut newest = i64::MIN;
    let keep_newest = |slot: &mut (i64, f64), ts: i64, price: f64| {
        if ts >= slot.0 {
            *slot = (ts, price);
        }
    };
    for (i, row) in rows.iter().enumerate() {
        let updates = ticker(row)
            .map_err(|e| ParseError::new(VENUE, format!("row {} {}", i + 1, e.field), e.reason))?;
        for update in updates {
            newest = newest.max(update.ts_ms());
            match update {
                Update::Quote {
                    symbol,
                    price,
                    ts_ms,
                    ..
                } => {
                    let currency = symbol.trim_end_matches("_usd").to_ascii_uppercase();
                    keep_newest(
                        index.entry(currency).or_insert((i64::MIN, 0.0)),
                        ts_ms,
                        price,
                    );
                }
                Update::Forward {
                    currency,
                    expiry,
                    price,
                    ts_ms,
                } => keep_newest(
                    forwards
                        .entry((currency, expiry))
                        .or_insert((i64::MIN, 0.0)),
                    ts_ms,
                    price,
                ),
                Update::Vol {
                    currency,
                    expiry,
                    strike,
                    iv,
                    ..
                } => {
                    let slot = smiles
                        .entry((currency, expiry))
                        .or_default()
                        .strikes
                        .entry(strike.to_bits())
                        .or_insert((0.0, 0));
                    slot.0 += iv;
                    slot.1 += 1;
                }
            }
        }
    }
    let as_of = Utc
        .timestamp_millis_opt(newest)
        .single()
        .ok_or_else(|| ParseError::new(VENUE, "timestamp", format!("{newest} is not a time")))?
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut vols: BTreeMap<String, Surface> = BTreeMap::new();
    for ((currency, expiry), smile) in smiles {
        let points = &mut vols
            .entry(currency)
            .or_insert(Surface { points: Vec::new() })
            .points;
        points.extend(smile.strikes.iter().map(|(bits, (sum, n))| Point {
            expiry: expiry.clone(),
            strike: f64::from_bits(*bits),
            iv: sum / f64::from(*n),
        }));
    }
    for surface in vols.values_mut() {
        surface.points.sort_by(|a, b| {
            expiry_key(&a.expiry)
                .cmp(&expiry_key(&b.expiry))
                .then(a.strike.total_cmp(&b.strike))
        });
    }
    Ok(MarketSnapshot {
        as_of,
        rate: 0.0,
        prices: index.into_iter().map(|(c, (_, p))| (c, p)).collect(),
        marks: forwards
            .into_iter()
            .map(|((c, e), (_, p))| (format!("{c}-{e}"), p))
            .collect(),
        vols,
    })
}

/// `26JUN20` as (20, 6, 26), so expiries sort by date.
fn expiry_key(code: &str) -> (u32, u32, u32) {
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    let digits = code.len().saturating_sub(5);
    let day = code[..digits].parse().unwrap_or(0);
    let month = MONTHS
        .iter()
        .position(|m| code.get(digits..digits + 3) == Some(*m))
        .map_or(0, |m| m as u32 + 1);
    let year = code
        .get(digits + 3..)
        .and_then(|y| y.parse().ok())
        .unwrap_or(0);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_sort_by_date() {
        assert!(expiry_key("5JUN20") < expiry_key("26JUN20"));
        assert!(expiry_key("26JUN20") < expiry_key("25DEC20"));
        assert!(expiry_key("25DEC20") < expiry_key("1JAN21"));
    }

    #[test]
    fn call_and_put_of_a_strike_average_and_the_newest_forward_wins() {
        let rows = r#"{"result": [
          {"instrument_name": "BTC-26JUN20-9000-C", "mark_iv": 80.0, "underlying_price": 9400,
           "underlying_index": "BTC-26JUN20", "estimated_delivery_price": 9350, "creation_timestamp": 1000},
          {"instrument_name": "BTC-26JUN20-9000-P", "mark_iv": 82.0, "underlying_price": 9410,
           "underlying_index": "BTC-26JUN20", "estimated_delivery_price": 9351, "creation_timestamp": 2000}
        ]}"#;
        let m = read_chain(rows).unwrap();
        assert_eq!(m.prices["BTC"], 9351.0);
        assert_eq!(m.marks["BTC-26JUN20"], 9410.0);
        assert_eq!(
            m.vols["BTC"].points,
            vec![Point {
                expiry: "26JUN20".into(),
                strike: 9000.0,
                iv: 0.81
            }]
        );
        assert_eq!(m.as_of, "1970-01-01T00:00:02.000Z");
    }
}
