//! Canonical JSON: the one byte string a parameter set hashes to.
//!
//! Objects are written with their keys sorted byte-wise, without whitespace; strings are
//! JSON-escaped and numbers are written as `serde_json` writes them (shortest round-trip form
//! for floats). The order does not depend on how `serde_json::Map` is configured.

use pmargin_core::Params;
use serde_json::Value;

/// Canonical JSON text of a parameter set (its `source` file name is not part of it).
pub fn canonical_params(params: &Params) -> String {
    // Serialising a plain struct of numbers, strings and maps cannot fail.
    let value = serde_json::to_value(params).unwrap_or(Value::Null);
    let mut out = String::new();
    write_value(&value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_value(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(v, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push_str(&Value::String(s.to_string()).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_and_whitespace_free() {
        let v: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"z": [1, 2.5], "y": "q\""}}"#).unwrap();
        let mut out = String::new();
        write_value(&v, &mut out);
        assert_eq!(out, r#"{"a":{"y":"q\"","z":[1,2.5]},"b":1}"#);
    }
}
