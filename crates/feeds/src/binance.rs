//! Binance USDⓈ-M futures: the mark price stream (`<symbol>@markPrice`, `@markPrice@1s`,
//! `!markPrice@arr`), event `markPriceUpdate`: `p` the mark price, `i` the index price, `E`
//! the event time, `s` the symbol. Both prices are decimal strings. A combined-stream message
//! (`{"stream": ..., "data": ...}`) is unwrapped; subscription answers give no update.
//!
//! Each event gives two quotes: the index under the symbol itself (`BTCUSDT`), the mark under
//! `BTCUSDT:mark`; a feed maps whichever it wants to an underlying.

use crate::num::{integer, json, price, string};
use crate::{ParseError, Update};
use serde_json::{json, Value};

const VENUE: &str = "binance";

/// The `SUBSCRIBE` request for `streams` (e.g. `btcusdt@markPrice@1s`).
pub fn subscribe(streams: &[String]) -> String {
    json!({ "method": "SUBSCRIBE", "params": streams, "id": 1 }).to_string()
}

pub fn parse(text: &str) -> Result<Vec<Update>, ParseError> {
    let msg = json(VENUE, text)?;
    let body = msg.get("data").unwrap_or(&msg);
    match body {
        Value::Array(events) => {
            let mut out = Vec::with_capacity(events.len() * 2);
            for event in events {
                out.extend(event_updates(event)?);
            }
            Ok(out)
        }
        Value::Object(_) => event_updates(body),
        _ => Err(ParseError::new(
            VENUE,
            "data",
            "is neither an object nor an array",
        )),
    }
}

fn event_updates(event: &Value) -> Result<Vec<Update>, ParseError> {
    if event.get("e").and_then(Value::as_str) != Some("markPriceUpdate") {
        if let Some(err) = event.get("error") {
            return Err(ParseError::new(VENUE, "error", err.to_string()));
        }
        return Ok(Vec::new());
    }
    let symbol = string(VENUE, event, "s")?;
    let ts_ms = integer(VENUE, event, "E")?;
    Ok(vec![
        Update::Quote {
            symbol: symbol.to_string(),
            price: price(VENUE, event, "i")?,
            confidence: None,
            ts_ms,
        },
        Update::Quote {
            symbol: format!("{symbol}:mark"),
            price: price(VENUE, event, "p")?,
            confidence: None,
            ts_ms,
        },
    ])
}
