//! Reading the numbers venues send: JSON numbers, or decimal strings (Binance, OKX, Pyth send
//! prices as strings so that no digit is lost in a float parser).

use crate::ParseError;
use serde_json::Value;

/// The JSON text of one message, or an error naming the venue.
pub(crate) fn json(venue: &'static str, text: &str) -> Result<Value, ParseError> {
    serde_json::from_str(text)
        .map_err(|e| ParseError::new(venue, "message", format!("is not JSON ({e})")))
}

/// `obj[field]` as a finite number (a JSON number or a decimal string).
pub(crate) fn number(venue: &'static str, obj: &Value, field: &str) -> Result<f64, ParseError> {
    let v = obj
        .get(field)
        .ok_or_else(|| ParseError::new(venue, field, "is missing"))?;
    let x = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match x {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(ParseError::new(
            venue,
            field,
            format!("is not a finite number: {v}"),
        )),
    }
}

/// `obj[field]` as a finite positive price.
pub(crate) fn price(venue: &'static str, obj: &Value, field: &str) -> Result<f64, ParseError> {
    let x = number(venue, obj, field)?;
    if x > 0.0 {
        Ok(x)
    } else {
        Err(ParseError::new(
            venue,
            field,
            format!("must be positive, got {x}"),
        ))
    }
}

/// `obj[field]` as an integer (milliseconds or seconds), from a number or a decimal string.
pub(crate) fn integer(venue: &'static str, obj: &Value, field: &str) -> Result<i64, ParseError> {
    let v = obj
        .get(field)
        .ok_or_else(|| ParseError::new(venue, field, "is missing"))?;
    let x = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    x.ok_or_else(|| ParseError::new(venue, field, format!("is not an integer: {v}")))
}

/// `obj[field]` as a string.
pub(crate) fn string<'a>(
    venue: &'static str,
    obj: &'a Value,
    field: &str,
) -> Result<&'a str, ParseError> {
    obj.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| ParseError::new(venue, field, "is missing or not a string"))
}

/// `mantissa × 10^expo` for the fixed-point prices of Pyth and Chainlink.
pub(crate) fn scaled(mantissa: f64, expo: i32) -> f64 {
    mantissa * 10f64.powi(expo)
}
