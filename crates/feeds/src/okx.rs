//! OKX v5 public WebSocket: the `mark-price` channel (`markPx`) and the `index-tickers` channel
//! (`idxPx`), each push `{"arg": {"channel", "instId"}, "data": [{..., "ts"}]}` with decimal
//! strings. Event messages (`{"event": "subscribe"}`, `"error"`) give no update, or an error.
//!
//! A mark quotes under `<instId>:mark` (`BTC-USDT-SWAP:mark`), an index under its `instId`
//! (`BTC-USDT`).

use crate::num::{integer, json, price, string};
use crate::{ParseError, Update};
use serde_json::{json, Value};

const VENUE: &str = "okx";

/// The `subscribe` request: each channel is `mark-price:BTC-USDT-SWAP` or
/// `index-tickers:BTC-USDT` (channel, a colon, the instrument).
pub fn subscribe(channels: &[String]) -> String {
    let args: Vec<Value> = channels
        .iter()
        .map(|c| {
            let (channel, inst) = c.split_once(':').unwrap_or((c.as_str(), ""));
            json!({ "channel": channel, "instId": inst })
        })
        .collect();
    json!({ "op": "subscribe", "args": args }).to_string()
}

pub fn parse(text: &str) -> Result<Vec<Update>, ParseError> {
    if text == "pong" {
        return Ok(Vec::new());
    }
    let msg = json(VENUE, text)?;
    if let Some(event) = msg.get("event").and_then(Value::as_str) {
        return if event == "error" {
            Err(ParseError::new(
                VENUE,
                "msg",
                msg.get("msg").map(Value::to_string).unwrap_or_default(),
            ))
        } else {
            Ok(Vec::new())
        };
    }
    let arg = msg
        .get("arg")
        .ok_or_else(|| ParseError::new(VENUE, "arg", "is missing"))?;
    let channel = string(VENUE, arg, "channel")?;
    let (field, suffix) = match channel {
        "mark-price" => ("markPx", ":mark"),
        "index-tickers" => ("idxPx", ""),
        _ => return Ok(Vec::new()),
    };
    let data = msg
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| ParseError::new(VENUE, "data", "is missing or not an array"))?;
    data.iter()
        .map(|d| {
            Ok(Update::Quote {
                symbol: format!("{}{suffix}", string(VENUE, d, "instId")?),
                price: price(VENUE, d, field)?,
                confidence: None,
                ts_ms: integer(VENUE, d, "ts")?,
            })
        })
        .collect()
}
