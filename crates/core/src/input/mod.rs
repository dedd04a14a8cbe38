//! Reading the public formats (docs/FORMATS.md) into validated domain types.
//!
//! Parsing is pure: each reader takes the file's text and the name to quote in errors, so the
//! CLI, the server and tests share it. Unknown fields are rejected (a typo in a risk parameter
//! must never be ignored), and every error names the file, the JSON path and the account.

mod halves;
pub mod history;
pub mod market;
pub mod params;
pub mod portfolio;

use crate::error::{InputError, Result};
use serde::de::DeserializeOwned;

/// Deserialises a JSON value into `T`, turning serde's complaint into an [`InputError`] whose
/// path is the JSON path of the bad field.
pub(crate) fn from_value<T: DeserializeOwned>(file: &str, value: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let mut path = err.path().to_string();
        let message = err.inner().to_string();
        if path == "." {
            path.clear();
        }
        InputError::new(file, path, message)
    })
}

/// Parses JSON text, reporting syntax errors with their line and column.
pub(crate) fn parse_json(file: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| InputError::new(file, "", format!("invalid JSON: {e}")))
}

/// Checks that a number is finite and at least `min` (strictly above when `strict`).
pub(crate) fn check_number(
    file: &str,
    path: &str,
    value: f64,
    min: f64,
    strict: bool,
) -> Result<()> {
    let ok = value.is_finite() && if strict { value > min } else { value >= min };
    if ok {
        Ok(())
    } else if !value.is_finite() {
        Err(InputError::new(
            file,
            path,
            format!("must be a finite number, got {value}"),
        ))
    } else {
        let bound = if strict { "greater than" } else { "at least" };
        Err(InputError::new(
            file,
            path,
            format!("must be {bound} {min}, got {value}"),
        ))
    }
}

pub(crate) fn check_finite(file: &str, path: &str, value: f64) -> Result<()> {
    check_number(file, path, value, f64::NEG_INFINITY, false)
}

/// JSON path segment for a map key: `prices.BTC`, or `prices["odd key"]` when needed.
pub fn key_path(prefix: &str, key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        format!("{prefix}.{key}")
    } else {
        format!("{prefix}[{key:?}]")
    }
}
