//! Deribit's public WebSocket API (JSON-RPC 2.0): the notifications of the channels
//! `ticker.{instrument}.{interval}` and `deribit_price_index.{index}`.
//!
//! A ticker carries the venue's index (`index_price`), and per instrument kind: an option's
//! forward (`underlying_price`, the future or synthetic forward of its expiry) and its `mark_iv`
//! (in percent); a future's `mark_price` (its expiry's forward). Subscription answers and
//! heartbeats carry no data and give no update.

use crate::num::{integer, json, price, string};
use crate::{ParseError, Update};
use serde_json::{json, Value};

const VENUE: &str = "deribit";

/// The parts of a Deribit instrument name.
#[derive(Debug, Clone, PartialEq)]
pub enum Instrument {
    Perpetual {
        currency: String,
    },
    Future {
        currency: String,
        expiry: String,
    },
    Option {
        currency: String,
        expiry: String,
        strike: f64,
        call: bool,
    },
}

impl Instrument {
    /// Reads `BTC-PERPETUAL`, `BTC-26JUN20`, `BTC-26JUN20-9000-C`; `None` for anything else
    /// (spreads, combos, linear `_USDC` names are not priced here).
    pub fn parse(name: &str) -> Option<Instrument> {
        let parts: Vec<&str> = name.split('-').collect();
        let currency = (*parts.first()?).to_string();
        if currency.is_empty() || !currency.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        match parts.as_slice() {
            [_, "PERPETUAL"] => Some(Instrument::Perpetual { currency }),
            [_, expiry] if is_expiry(expiry) => Some(Instrument::Future {
                currency,
                expiry: expiry.to_string(),
            }),
            [_, expiry, strike, kind] if is_expiry(expiry) => {
                let strike: f64 = strike
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)?;
                let call = match *kind {
                    "C" => true,
                    "P" => false,
                    _ => return None,
                };
                Some(Instrument::Option {
                    currency,
                    expiry: expiry.to_string(),
                    strike,
                    call,
                })
            }
            _ => None,
        }
    }
}

/// `5JUN20`, `26JUN20`: one or two digits, a month, two digits.
fn is_expiry(code: &str) -> bool {
    let digits = code.chars().take_while(char::is_ascii_digit).count();
    let rest = &code[digits..];
    (1..=2).contains(&digits)
        && rest.len() == 5
        && rest[..3].chars().all(|c| c.is_ascii_uppercase())
        && rest[3..].chars().all(|c| c.is_ascii_digit())
}

/// Deribit's index name of a currency (`btc_usd`), the symbol its index quotes carry.
pub fn index_name(currency: &str) -> String {
    format!("{}_usd", currency.to_ascii_lowercase())
}

/// The `public/subscribe` request for `channels`.
pub fn subscribe(channels: &[String]) -> String {
    json!({ "jsonrpc": "2.0", "id": 1, "method": "public/subscribe",
            "params": { "channels": channels } })
    .to_string()
}

/// The updates of one message.
pub fn parse(text: &str) -> Result<Vec<Update>, ParseError> {
    let msg = json(VENUE, text)?;
    if msg.get("method").and_then(Value::as_str) != Some("subscription") {
        if let Some(err) = msg.get("error") {
            return Err(ParseError::new(VENUE, "error", err.to_string()));
        }
        return Ok(Vec::new());
    }
    let params = msg
        .get("params")
        .ok_or_else(|| ParseError::new(VENUE, "params", "is missing"))?;
    let channel = string(VENUE, params, "channel")?;
    let data = params
        .get("data")
        .ok_or_else(|| ParseError::new(VENUE, "params.data", "is missing"))?;
    if channel.starts_with("deribit_price_index.") {
        Ok(vec![Update::Quote {
            symbol: string(VENUE, data, "index_name")?.to_string(),
            price: price(VENUE, data, "price")?,
            confidence: None,
            ts_ms: integer(VENUE, data, "timestamp")?,
        }])
    } else if channel.starts_with("ticker.") {
        ticker(data)
    } else {
        Ok(Vec::new())
    }
}

/// A ticker's (or a book summary's) updates: the index, and the forward and smile point of its
/// instrument.
pub fn ticker(data: &Value) -> Result<Vec<Update>, ParseError> {
    let name = string(VENUE, data, "instrument_name")?;
    let ts_ms = integer(VENUE, data, either(data, "timestamp", "creation_timestamp"))?;
    let instrument = Instrument::parse(name).ok_or_else(|| {
        ParseError::new(
            VENUE,
            "instrument_name",
            format!("`{name}` is not an instrument name"),
        )
    })?;
    let currency = match &instrument {
        Instrument::Perpetual { currency }
        | Instrument::Future { currency, .. }
        | Instrument::Option { currency, .. } => currency.clone(),
    };
    let mut out = vec![Update::Quote {
        symbol: index_name(&currency),
        price: price(
            VENUE,
            data,
            either(data, "index_price", "estimated_delivery_price"),
        )?,
        confidence: None,
        ts_ms,
    }];
    match instrument {
        Instrument::Perpetual { .. } => {}
        Instrument::Future { expiry, .. } => out.push(Update::Forward {
            currency,
            expiry,
            price: price(VENUE, data, "mark_price")?,
            ts_ms,
        }),
        Instrument::Option { expiry, strike, .. } => {
            out.push(Update::Forward {
                currency: currency.clone(),
                expiry: expiry.clone(),
                price: price(VENUE, data, "underlying_price")?,
                ts_ms,
            });
            out.push(Update::Vol {
                instrument: name.to_string(),
                currency,
                expiry,
                strike,
                iv: price(VENUE, data, "mark_iv")? / 100.0,
                ts_ms,
            });
        }
    }
    Ok(out)
}

/// `first` if the object has it (a ticker), else `second` (a book summary): an error then
/// names the field the message does carry.
fn either<'a>(data: &Value, first: &'a str, second: &'a str) -> &'a str {
    if data.get(first).is_some() {
        first
    } else {
        second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instrument_names() {
        assert_eq!(
            Instrument::parse("BTC-5JUN20-6750-P"),
            Some(Instrument::Option {
                currency: "BTC".into(),
                expiry: "5JUN20".into(),
                strike: 6750.0,
                call: false
            })
        );
        assert_eq!(
            Instrument::parse("ETH-26JUN20"),
            Some(Instrument::Future {
                currency: "ETH".into(),
                expiry: "26JUN20".into()
            })
        );
        for bad in [
            "BTC",
            "BTC-FS-26JUN20_PERP",
            "BTC-26JUN20-0-C",
            "BTC-26JUN20-9000-X",
            "-26JUN20",
        ] {
            assert_eq!(Instrument::parse(bad), None, "{bad}");
        }
    }
}
