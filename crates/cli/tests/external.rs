//! Positions held in other protocols through the command line (docs/MODEL.md section 12).

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn margin(portfolio: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pmargin"))
        .args([
            "margin",
            "--json",
            "--portfolio",
            portfolio,
            "--market",
            "examples/market.json",
            "--params",
            "examples/params_external.json",
        ])
        .current_dir(repo())
        .output()
        .expect("run pmargin")
}

/// The bundled example: the lending loop's deposit is 170 ETH at 3000 with both haircuts,
/// 510,000 x 0.97 x 0.93 = 460,071, less the 210,000 USDC borrowed, plus 20,000 USDC:
/// margin balance 270,071; its net ETH is 170 - 20 (short perpetual) = 150, so the grid
/// (range 12%) loses 150 x 3000 x 0.12 = 54,000.
#[test]
fn the_example_margins_external_positions() {
    let out = margin("examples/portfolio_external.json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let lending = report["accounts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["id"] == "lending-loop"))
        .expect("lending-loop");
    let close = |v: &serde_json::Value, want: f64| {
        let got = v.as_f64().unwrap_or(f64::NAN);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    };
    close(&lending["margin_balance"], 270_071.0);
    close(&lending["grid_risk"], 54_000.0);
    close(&lending["external"][0]["margin_value"], 460_071.0);
    close(&lending["external"][1]["value"], -210_000.0);
}

/// A bad external position is exit 2, and the message names the field.
#[test]
fn a_bad_external_position_is_exit_2_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("pmargin-external-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cases = [
        (r#""liquidity": 0"#, "accounts[0].external[0].liquidity"),
        (
            r#""liquidity": 1, "price_upper": 10"#,
            "accounts[0].external[0].price_upper",
        ),
        (
            r#""liquidity": 1, "fee_tier": 3000"#,
            "accounts[0].external[0].fee_tier",
        ),
    ];
    for (i, (fields, path)) in cases.iter().enumerate() {
        let text = format!(
            r#"{{"accounts": [{{"id": "a", "external": [{{"kind": "uniswap_v3_lp",
              "protocol": "uniswap-v3", "token0": "ETH", "token1": "USDC",
              "price_lower": 2500, "price_upper": 3600, {fields}}}]}}]}}"#
        )
        .replace(
            r#""price_upper": 3600, "liquidity": 1, "price_upper": 10"#,
            r#""liquidity": 1, "price_upper": 10"#,
        );
        let file = dir.join(format!("bad{i}.json"));
        std::fs::write(&file, text).expect("write");
        let out = margin(file.to_str().expect("path"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(path), "{path} not in: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
