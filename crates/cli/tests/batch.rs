//! The batch path as a user runs it: the bench book written as input files, margined with
//! `margin --json` (streamed), and the end-to-end bench.

use serde_json::Value;
use std::process::{Command, Output};

fn pmargin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pmargin"))
        .args(args)
        .output()
        .expect("run pmargin")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_written_bench_book_margins_as_one_streamed_report() {
    let dir = std::env::temp_dir().join(format!("pmargin-batch-test-{}", std::process::id()));
    let d = dir.to_str().expect("utf-8 temp dir");
    let out = pmargin(&[
        "bench",
        "--accounts",
        "2500",
        "--seed",
        "9",
        "--write-book",
        d,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (portfolio, market, params) = (
        file("portfolio.json"),
        file("market.json"),
        file("params.json"),
    );
    let out = pmargin(&[
        "margin",
        "--json",
        "--portfolio",
        &portfolio,
        "--market",
        &market,
        "--params",
        &params,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.ends_with("}\n"),
        "one whole document, newline-terminated"
    );
    let report: Value = serde_json::from_str(&text).expect("valid JSON");
    let accounts = report["accounts"].as_array().expect("accounts");
    // Every account, in the portfolio's order, across several written chunks.
    assert_eq!(accounts.len(), 2500);
    for (i, a) in accounts.iter().enumerate() {
        assert_eq!(a["id"], format!("acct-{i:07}"));
    }
    // Ten positions on five underlyings: a crossing is found for many accounts, and every
    // price found lies between 1e-9 and 10 times its underlying's spot (BTC at 60,000).
    let btc: Vec<f64> = accounts
        .iter()
        .filter_map(|a| a["liquidation_prices"]["BTC"]["down"].as_f64())
        .collect();
    assert!(btc.len() > 100, "{}", btc.len());
    assert!(btc.iter().all(|&p| p > 0.0 && p < 60_000.0), "{btc:?}");
    // The table of the same files agrees on the statuses.
    let table = pmargin(&[
        "margin",
        "--portfolio",
        &portfolio,
        "--market",
        &market,
        "--params",
        &params,
    ]);
    assert!(table.status.success());
    let liquidatable_json = accounts
        .iter()
        .filter(|a| a["status"] == "liquidatable")
        .count();
    assert!(liquidatable_json > 0);
    assert_eq!(
        stdout(&table).matches("liquidatable").count(),
        liquidatable_json
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn end_to_end_bench_reports_each_phase() {
    let out = pmargin(&[
        "bench",
        "--end-to-end",
        "--accounts",
        "400",
        "--repeat",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    for phase in ["parse ", "margin ", "liquidation prices ", "write "] {
        assert!(text.contains(phase), "{phase} missing from {text}");
    }
    let last = text.lines().last().unwrap_or_default();
    let ms: f64 = last
        .strip_prefix("end_to_end_ms: ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{last}"));
    assert!(ms > 0.0);
}
