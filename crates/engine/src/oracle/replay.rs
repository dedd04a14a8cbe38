//! Quote files replayed into the oracle: CSV and JSON Lines.

use super::config::{OracleError, Quote};

/// Reads quotes from CSV lines `ts_ms,source,underlying,price`, in file order.
///
/// The header `ts_ms,source,underlying,price` is optional on the first data line. Blank lines
/// and lines starting with `#` are skipped. Fields are trimmed; quoting is not supported, so
/// names cannot contain commas. Each quote is checked like
/// [`Oracle::submit`](crate::oracle::Oracle::submit) would check it. Errors give the 1-based
/// line number and the field.
pub fn replay_csv(text: &str) -> Result<Vec<Quote>, OracleError> {
    let mut quotes = Vec::new();
    let mut first = true;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = trimmed.split(',').map(str::trim).collect();
        let is_header = first && fields == ["ts_ms", "source", "underlying", "price"];
        first = false;
        if is_header {
            continue;
        }
        if fields.len() != 4 {
            return Err(OracleError::Replay {
                line,
                field: None,
                reason: format!(
                    "expected 4 fields `ts_ms,source,underlying,price`, got {}",
                    fields.len()
                ),
            });
        }
        let ts_ms = fields[0]
            .parse::<i64>()
            .map_err(|e| replay_error(line, "ts_ms", format!("{:?}: {e}", fields[0])))?;
        let price = fields[3]
            .parse::<f64>()
            .map_err(|e| replay_error(line, "price", format!("{:?}: {e}", fields[3])))?;
        let quote = Quote {
            source: fields[1].to_string(),
            underlying: fields[2].to_string(),
            price,
            ts_ms,
            confidence: None,
            weight: None,
        };
        quote.validate().map_err(|e| in_line(line, e))?;
        quotes.push(quote);
    }
    Ok(quotes)
}

/// Reads quotes from JSON Lines, one [`Quote`] object per line (unknown keys rejected), in file
/// order. Blank lines are skipped. Errors give the 1-based line number.
pub fn replay_jsonl(text: &str) -> Result<Vec<Quote>, OracleError> {
    let mut quotes = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let quote: Quote = serde_json::from_str(raw).map_err(|e| OracleError::Replay {
            line,
            field: None,
            reason: e.to_string(),
        })?;
        quote.validate().map_err(|e| in_line(line, e))?;
        quotes.push(quote);
    }
    Ok(quotes)
}

fn replay_error(line: usize, field: &'static str, reason: String) -> OracleError {
    OracleError::Replay {
        line,
        field: Some(field),
        reason: format!("`{field}` {reason}"),
    }
}

/// Re-labels a quote validation error with its line.
fn in_line(line: usize, err: OracleError) -> OracleError {
    match err {
        OracleError::Quote { field, reason } => replay_error(line, field, reason),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_replay_reads_quotes() {
        let text = "ts_ms,source,underlying,price\n\
                    1000, deribit ,BTC,50000.5\n\
                    \n\
                    # comment\n\
                    2000,okx,ETH,3000\n";
        let quotes = replay_csv(text).unwrap();
        assert_eq!(
            quotes,
            [
                Quote {
                    source: "deribit".into(),
                    underlying: "BTC".into(),
                    price: 50_000.5,
                    ts_ms: 1_000,
                    confidence: None,
                    weight: None,
                },
                Quote {
                    source: "okx".into(),
                    underlying: "ETH".into(),
                    price: 3_000.0,
                    ts_ms: 2_000,
                    confidence: None,
                    weight: None,
                },
            ]
        );
        // Header is optional.
        assert_eq!(replay_csv("5,a,BTC,1").unwrap().len(), 1);
    }

    #[test]
    fn csv_replay_errors_name_the_line() {
        let bad_price = "ts_ms,source,underlying,price\n1,a,BTC,100\n2,a,BTC,abc\n";
        let err = replay_csv(bad_price).unwrap_err();
        assert!(
            matches!(
                err,
                OracleError::Replay {
                    line: 3,
                    field: Some("price"),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("line 3: `price`"), "{err}");

        let err = replay_csv("1,a,BTC,100\n2,a,BTC\n").unwrap_err();
        assert!(
            matches!(
                err,
                OracleError::Replay {
                    line: 2,
                    field: None,
                    ..
                }
            ),
            "{err:?}"
        );

        let err = replay_csv("x1,a,BTC,100\n").unwrap_err();
        assert!(
            matches!(
                err,
                OracleError::Replay {
                    line: 1,
                    field: Some("ts_ms"),
                    ..
                }
            ),
            "{err:?}"
        );

        let err = replay_csv("1,a,BTC,100\n2,a,BTC,-5\n").unwrap_err();
        assert!(
            matches!(
                err,
                OracleError::Replay {
                    line: 2,
                    field: Some("price"),
                    ..
                }
            ),
            "{err:?}"
        );

        let err = replay_csv("1,,BTC,100\n").unwrap_err();
        assert!(
            matches!(
                err,
                OracleError::Replay {
                    line: 1,
                    field: Some("source"),
                    ..
                }
            ),
            "{err:?}"
        );

        // A header anywhere but first is data, and bad data.
        let err = replay_csv("1,a,BTC,100\nts_ms,source,underlying,price\n").unwrap_err();
        assert!(
            matches!(
                err,
                OracleError::Replay {
                    line: 2,
                    field: Some("ts_ms"),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn jsonl_replay_reads_and_names_the_line() {
        let text = r#"{"source":"a","underlying":"BTC","price":100.0,"ts_ms":1}

{"source":"b","underlying":"BTC","price":101.0,"ts_ms":2}
"#;
        let quotes = replay_jsonl(text).unwrap();
        assert_eq!(quotes.len(), 2);
        assert_eq!(quotes[1].source, "b");

        let bad = "{\"source\":\"a\",\"underlying\":\"BTC\",\"price\":100.0,\"ts_ms\":1}\n{\"source\":\"a\"}\n";
        let err = replay_jsonl(bad).unwrap_err();
        assert!(
            matches!(err, OracleError::Replay { line: 2, .. }),
            "{err:?}"
        );

        let bad = "{\"source\":\"a\",\"underlying\":\"BTC\",\"price\":0.0,\"ts_ms\":1}\n";
        let err = replay_jsonl(bad).unwrap_err();
        assert!(
            matches!(
                err,
                OracleError::Replay {
                    line: 1,
                    field: Some("price"),
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
