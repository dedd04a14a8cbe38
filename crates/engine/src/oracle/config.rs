//! The oracle's configuration and the quotes it takes, each checked field by field.

use serde::{Deserialize, Serialize};

/// Errors name the field (config, quote) or the line (replay) to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OracleError {
    #[error("invalid oracle config: `{field}` {reason}")]
    Config { field: &'static str, reason: String },
    #[error("invalid quote: `{field}` {reason}")]
    Quote { field: &'static str, reason: String },
    /// A replay line that could not be read; `field` is set when one field is to blame.
    #[error("line {line}: {reason}")]
    Replay {
        line: usize,
        field: Option<&'static str>,
        reason: String,
    },
}

fn config_error(field: &'static str, reason: impl Into<String>) -> OracleError {
    OracleError::Config {
        field,
        reason: reason.into(),
    }
}

fn quote_error(field: &'static str, reason: impl Into<String>) -> OracleError {
    OracleError::Quote {
        field,
        reason: reason.into(),
    }
}

/// Oracle parameters. Fields left out of a serialized config take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OracleConfig {
    /// A quote older than this at `now` is stale. Default 10 000.
    pub max_age_ms: i64,
    /// Minimum number of fresh, non-outlier quotes needed for an index. Default 2.
    pub min_sources: usize,
    /// A quote with `|q / median − 1| > outlier_fraction` is an outlier. Also the tolerance for
    /// agreeing with a circuit-breaker candidate. Default 0.02.
    pub outlier_fraction: f64,
    /// Optional second, robust rule, applied on top of the first: `|q − median| > k × 1.4826 ×
    /// MAD` is an outlier. Default `None`.
    pub mad_multiple: Option<f64>,
    /// An index with `|new / last_good − 1| > circuit_breaker` needs confirmation. Default 0.10.
    pub circuit_breaker: f64,
    /// The confirming update must come within this time of the candidate. Default 30 000.
    pub confirm_within_ms: i64,
    /// Bounded-rate stable price; `None` turns it off.
    pub stable_price: Option<StablePriceConfig>,
}

impl Default for OracleConfig {
    fn default() -> Self {
        OracleConfig {
            max_age_ms: 10_000,
            min_sources: 2,
            outlier_fraction: 0.02,
            mad_multiple: None,
            circuit_breaker: 0.10,
            confirm_within_ms: 30_000,
            stable_price: None,
        }
    }
}

/// Bounded-rate moving average. On each accepted index the stable price moves toward the index
/// by at most `max_move_per_second × elapsed_seconds × stable`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StablePriceConfig {
    /// Largest relative move per second, e.g. 0.0005 (0.05 %/s, 3 % per minute).
    pub max_move_per_second: f64,
}

impl OracleConfig {
    /// Checks every parameter. The error names the first bad field.
    pub fn validate(&self) -> Result<(), OracleError> {
        if self.max_age_ms <= 0 {
            return Err(config_error(
                "max_age_ms",
                format!("must be positive, got {}", self.max_age_ms),
            ));
        }
        if self.min_sources == 0 {
            // A quorum of zero would publish an index with no quote behind it.
            return Err(config_error("min_sources", "must be at least 1, got 0"));
        }
        positive_finite("outlier_fraction", self.outlier_fraction)?;
        if let Some(k) = self.mad_multiple {
            positive_finite("mad_multiple", k)?;
        }
        positive_finite("circuit_breaker", self.circuit_breaker)?;
        if self.confirm_within_ms <= 0 {
            return Err(config_error(
                "confirm_within_ms",
                format!("must be positive, got {}", self.confirm_within_ms),
            ));
        }
        if let Some(sp) = &self.stable_price {
            // Zero would freeze the stable price at the first index forever.
            positive_finite("stable_price.max_move_per_second", sp.max_move_per_second)?;
        }
        Ok(())
    }
}

fn positive_finite(field: &'static str, value: f64) -> Result<(), OracleError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(config_error(
            field,
            format!("must be finite and positive, got {value}"),
        ))
    }
}

/// One price from one source for one underlying.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quote {
    pub source: String,
    pub underlying: String,
    pub price: f64,
    pub ts_ms: i64,
    /// The source's own uncertainty of `price`, in USD (Pyth's `conf`); none: it gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// The source's weight in the index's weighted median (the operator's, from its feed's
    /// configuration); none: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

impl Quote {
    /// Rejects empty names, names with surrounding whitespace ("BTC " would silently become a
    /// second underlying), and prices that are not finite and positive.
    pub fn validate(&self) -> Result<(), OracleError> {
        check_name("source", &self.source)?;
        check_name("underlying", &self.underlying)?;
        if !(self.price.is_finite() && self.price > 0.0) {
            return Err(quote_error(
                "price",
                format!("must be finite and positive, got {}", self.price),
            ));
        }
        if let Some(c) = self.confidence {
            if !(c.is_finite() && c >= 0.0) {
                return Err(quote_error(
                    "confidence",
                    format!("must be finite and not negative, got {c}"),
                ));
            }
        }
        if let Some(w) = self.weight {
            if !(w.is_finite() && w > 0.0) {
                return Err(quote_error(
                    "weight",
                    format!("must be finite and positive, got {w}"),
                ));
            }
        }
        Ok(())
    }
}

fn check_name(field: &'static str, name: &str) -> Result<(), OracleError> {
    if name.trim().is_empty() {
        Err(quote_error(field, "must not be empty"))
    } else if name.trim() != name {
        Err(quote_error(
            field,
            format!("must not have surrounding whitespace, got {name:?}"),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_serde_defaults_and_unknown_fields() {
        let c: OracleConfig = serde_json::from_str(r#"{"min_sources": 3}"#).unwrap();
        assert_eq!(
            c,
            OracleConfig {
                min_sources: 3,
                ..OracleConfig::default()
            }
        );
        let err = serde_json::from_str::<OracleConfig>(r#"{"min_source": 3}"#).unwrap_err();
        assert!(err.to_string().contains("min_source"), "{err}");
        let c: OracleConfig =
            serde_json::from_str(r#"{"stable_price": {"max_move_per_second": 0.0005}}"#).unwrap();
        assert_eq!(c.stable_price.unwrap().max_move_per_second, 0.0005);
    }
}
