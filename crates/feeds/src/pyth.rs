//! Pyth price updates from Hermes' WebSocket: `{"type": "price_update", "price_feed": {"id",
//! "price": {"price", "conf", "expo", "publish_time"}}}`; price and conf are integer strings
//! scaled by `10^expo`, `publish_time` is in seconds. The confidence interval is kept with the
//! quote: it is the oracle's own uncertainty of the price (docs/MODEL.md section 11).
//!
//! Quotes are keyed by the feed id without `0x`, in lower case.

use crate::num::{integer, json, number, scaled, string};
use crate::{ParseError, Update};
use serde_json::{json, Value};

const VENUE: &str = "pyth";

/// The `subscribe` request for the price feed `ids`.
pub fn subscribe(ids: &[String]) -> String {
    json!({ "type": "subscribe", "ids": ids }).to_string()
}

/// A feed id as quotes carry it.
pub fn feed_id(id: &str) -> String {
    id.trim_start_matches("0x").to_ascii_lowercase()
}

pub fn parse(text: &str) -> Result<Vec<Update>, ParseError> {
    let msg = json(VENUE, text)?;
    match msg.get("type").and_then(Value::as_str) {
        Some("price_update") => {}
        Some("response") if msg.get("status").and_then(Value::as_str) == Some("error") => {
            return Err(ParseError::new(
                VENUE,
                "error",
                msg.get("error").map(Value::to_string).unwrap_or_default(),
            ))
        }
        _ => return Ok(Vec::new()),
    }
    let feed = msg
        .get("price_feed")
        .ok_or_else(|| ParseError::new(VENUE, "price_feed", "is missing"))?;
    let id = feed_id(string(VENUE, feed, "id")?);
    let p = feed
        .get("price")
        .ok_or_else(|| ParseError::new(VENUE, "price_feed.price", "is missing"))?;
    let expo = integer(VENUE, p, "expo")?;
    let expo = i32::try_from(expo)
        .ok()
        .filter(|e| (-30..=30).contains(e))
        .ok_or_else(|| ParseError::new(VENUE, "expo", format!("{expo} is out of range")))?;
    let price = scaled(number(VENUE, p, "price")?, expo);
    let conf = scaled(number(VENUE, p, "conf")?, expo);
    if !price.is_finite() || price <= 0.0 {
        return Err(ParseError::new(
            VENUE,
            "price",
            format!("must be positive, got {price}"),
        ));
    }
    if conf < 0.0 {
        return Err(ParseError::new(
            VENUE,
            "conf",
            format!("must not be negative, got {conf}"),
        ));
    }
    let publish_time = integer(VENUE, p, "publish_time")?;
    Ok(vec![Update::Quote {
        symbol: id,
        price,
        confidence: Some(conf),
        ts_ms: publish_time.saturating_mul(1000),
    }])
}
