//! The `pmargin` binary as a user runs it: exit codes, stdout/stderr discipline, golden reports.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pmargin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pmargin"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run pmargin")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const EXAMPLE_INPUTS: [&str; 6] = [
    "--portfolio",
    "examples/portfolio.json",
    "--market",
    "examples/market.json",
    "--params",
    "examples/params.json",
];

/// Compares two JSON documents: same shape and keys, numbers within 1e-9 relative or 1e-6
/// absolute (docs/MODEL.md's tolerance), so the golden survives last-digit float formatting.
fn assert_json_close(actual: &Value, expected: &Value, path: &str) {
    match (actual, expected) {
        (Value::Number(a), Value::Number(e)) => {
            let (a, e) = (
                a.as_f64().unwrap_or(f64::NAN),
                e.as_f64().unwrap_or(f64::NAN),
            );
            let tol = (1e-9 * e.abs()).max(1e-6);
            assert!((a - e).abs() <= tol, "{path}: {a} differs from golden {e}");
        }
        (Value::Object(a), Value::Object(e)) => {
            let keys_a: Vec<_> = a.keys().collect();
            let keys_e: Vec<_> = e.keys().collect();
            assert_eq!(keys_a, keys_e, "{path}: keys differ");
            for (k, v) in e {
                assert_json_close(&a[k], v, &format!("{path}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "{path}: lengths differ");
            for (i, (x, y)) in a.iter().zip(e).enumerate() {
                assert_json_close(x, y, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(actual, expected, "{path}"),
    }
}

/// Golden files are regenerated with `UPDATE_GOLDEN=1 cargo test -p pmargin --test cli`; a
/// regenerated file must be reviewed, and its key figures are checked by hand below.
fn check_golden(name: &str, output: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let actual: Value = serde_json::from_str(output).expect("valid JSON report");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, output).expect("write golden");
    }
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("golden file"))
            .expect("golden JSON");
    assert_json_close(&actual, &expected, name);
    actual
}

fn account<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["accounts"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == id))
        .expect("account in report")
}

fn close(a: &Value, expected: f64) {
    let a = a.as_f64().expect("number");
    assert!(
        (a - expected).abs() <= (1e-9 * expected.abs()).max(1e-6),
        "{a} vs {expected}"
    );
}

#[test]
fn demo_json_matches_golden_and_hand_figures() {
    let out = pmargin(&["demo", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = check_golden("demo.json", &stdout(&out));
    assert_eq!(report["accounts"].as_array().map(Vec::len), Some(6));
    // The demo runs the recommended version 2 set (demo/params.json: BTC range 13.13%, USDC
    // haircut 2.99%, basis contingency 7.13%) with FHS on the bundled BTC/ETH history.
    // retail-btc: 32,000 USDC, long 3 BTC-PERPETUAL entered at 93,000, mark 91,540.
    //   equity = 32,000 + 3 x (91,540 - 93,000) = 27,620
    //   margin balance = 32,000 x (1 - 0.0299) - 4,380 = 26,663.2
    //   grid risk = full range down: 3 x 91,540 x 0.1313 = 36,057.606 (the extreme row,
    //   2 x 0.35 = 0.7 of it, and the extended rows, at most 0.35 x 2 x 0.1313 of notional by
    //   their cover rule, are smaller); FHS ES is below it (checked against the report).
    //   IM = 36,057.606; MM = 0.75 x IM = 27,043.2045 > 26,663.2 -> liquidatable, and an
    //   account already below maintenance has no liquidation prices.
    //   standard IM = 3 x 91,540 x 0.10 = 27,462
    let r = account(&report, "retail-btc");
    close(&r["equity"], 27_620.0);
    close(&r["margin_balance"], 26_663.2);
    close(&r["grid_risk"], 36_057.606);
    assert!(
        r["statistical_risk"].as_f64().unwrap() > 0.0,
        "FHS from the bundled history"
    );
    assert!(r["statistical_risk"].as_f64().unwrap() < 36_057.606);
    close(&r["initial_margin"], 36_057.606);
    close(&r["maintenance_margin"], 27_043.204_5);
    close(&r["standard_initial_margin"], 27_462.0);
    assert!(r["liquidation_prices"]["BTC"]["down"].is_null());
    assert!(r["liquidation_prices"]["BTC"]["up"].is_null());
    assert_eq!(r["status"], "liquidatable");
    assert_eq!(r["worst_scenario"], "single BTC -1/1 vol+");
    // basis-fund holds 20 BTC and 400 ETH against short perps: equity is hand-summable.
    //   2,000,000 + 20 x 91,500 + 400 x 3,050 + (-20) x (91,540 - 90,800) + (-400) x (3,051.5 - 3,020)
    //   = 2,000,000 + 1,830,000 + 1,220,000 - 14,800 - 12,600 = 5,022,600
    //   margin balance takes 2.99% off USDC, 5% off BTC and 8% off ETH:
    //   5,022,600 - 59,800 - 91,500 - 97,600 = 4,773,700
    //   basis contingency (MODEL.md section 11), min(long, short) units per underlying:
    //   0.0713 x 91,500 x 20 + 0.0713 x 3,050 x 400 = 130,479 + 86,986 = 217,465
    let b = account(&report, "basis-fund");
    close(&b["equity"], 5_022_600.0);
    close(&b["margin_balance"], 4_773_700.0);
    close(&b["addon_breakdown"]["basis"], 217_465.0);
    close(&b["addons"], 217_465.0);
    close(
        &b["initial_margin"],
        217_465.0
            + b["grid_risk"]
                .as_f64()
                .unwrap()
                .max(b["statistical_risk"].as_f64().unwrap()),
    );
}

#[test]
fn shared_examples_match_golden() {
    let mut args = vec!["margin", "--json"];
    args.extend(EXAMPLE_INPUTS);
    let out = pmargin(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = check_golden("examples.json", &stdout(&out));
    assert_eq!(report["as_of"], "2026-11-24T08:00:00Z");
    assert_eq!(report["params_version"], 1);
    // bob: 40,000 USDC, long 1.5 BTC perp at 59,000, short 30 ETH perp at 3,050; spot 60,000 / 3,000.
    //   equity = 40,000 + 1.5 x 1,000 + (-30) x (-50) = 43,000
    //   scanning BTC: 1.5 x 60,000 x 10% = 9,000; ETH: 30 x 3,000 x 12% = 10,800
    //   decoupling: BTC down 5% and ETH up 6%: 4,500 + 5,400 = 9,900; tandem worst 10,800 - 9,000 = 1,800
    //   grid risk = 10,800 (single ETH +1 range)
    //   standard IM = 1.5 x 60,000 x 10% + 30 x 3,000 x 10% = 9,000 + 9,000 = 18,000
    let bob = account(&report, "bob");
    close(&bob["equity"], 43_000.0);
    close(&bob["scanning_risk"]["BTC"], 9_000.0);
    close(&bob["scanning_risk"]["ETH"], 10_800.0);
    close(&bob["grid_risk"], 10_800.0);
    close(&bob["standard_initial_margin"], 18_000.0);
    close(&bob["capital_efficiency"], 18_000.0 / 10_800.0);
    // Liquidation, BTC scaled by x (ETH fixed): margin balance = 41,500 + 1.5 (60,000 x - 59,000)
    //   = 90,000 x - 47,000; grid risk stays ETH's 10,800 while x <= 1.2, so MM = 8,100:
    //   x = 55,100 / 90,000 -> 36,733.33. ETH scaled by y: margin balance = 133,000 - 90,000 y,
    //   grid risk = 10,800 y (ETH up dominates), MM = 8,100 y: y = 133,000 / 98,100.
    close(
        &bob["liquidation_prices"]["BTC"]["down"],
        60_000.0 * 55_100.0 / 90_000.0,
    );
    close(
        &bob["liquidation_prices"]["ETH"]["up"],
        3_000.0 * 133_000.0 / 98_100.0,
    );
    assert!(bob["liquidation_prices"]["BTC"]["up"].is_null());
}

#[test]
fn table_output_has_a_row_per_account() {
    let mut args = vec!["margin"];
    args.extend(EXAMPLE_INPUTS);
    let out = pmargin(&args);
    assert!(out.status.success());
    let text = stdout(&out);
    for id in ["alice", "bob", "carol"] {
        assert!(
            text.lines().any(|l| l.starts_with(id)),
            "no row for {id} in\n{text}"
        );
    }
    assert!(text.contains("status") && text.contains("saving"));
}

#[test]
fn bad_input_exits_2_names_file_field_and_account_and_prints_nothing() {
    let dir = std::env::temp_dir().join(format!("pmargin-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let portfolio =
        std::fs::read_to_string(repo().join("examples/portfolio.json")).expect("example");
    let cases = [
        (
            portfolio.replace("\"size\": 5 }", "\"sise\": 5 }"),
            "accounts[0].positions[1].sise",
            "alice",
        ),
        (
            portfolio.replace("\"USDC\": 40000", "\"DOGE\": 40000"),
            "accounts[1].balances.DOGE",
            "bob",
        ),
        (
            portfolio.replace("\"id\": \"bob\"", "\"id\": \"alice\""),
            "accounts[1].id",
            "alice",
        ),
    ];
    for (i, (text, path, acct)) in cases.iter().enumerate() {
        let file = dir.join(format!("bad{i}.json"));
        std::fs::write(&file, text).expect("write");
        let file = file.to_string_lossy().into_owned();
        let out = pmargin(&[
            "margin",
            "--portfolio",
            &file,
            "--market",
            "examples/market.json",
            "--params",
            "examples/params.json",
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(out.stdout.is_empty(), "stdout must stay empty on error");
        let err = stderr(&out);
        assert!(
            err.contains(&file) && err.contains(path) && err.contains(acct),
            "{err}"
        );
    }
    let out = pmargin(&[
        "margin",
        "--portfolio",
        "no/such/file.json",
        "--market",
        "examples/market.json",
        "--params",
        "examples/params.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no/such/file.json"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn scenarios_mark_the_worst_cell() {
    let mut args = vec!["scenarios", "--account", "bob"];
    args.extend(EXAMPLE_INPUTS);
    let out = pmargin(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("worst scenario single ETH 1/1 vol+"),
        "{text}"
    );
    assert_eq!(
        text.matches(" *").count(),
        2,
        "one marked cell and the legend:\n{text}"
    );
    let mut args = vec!["scenarios", "--json", "--account", "bob"];
    args.extend(EXAMPLE_INPUTS);
    let table: Value = serde_json::from_str(&stdout(&pmargin(&args))).expect("json");
    let worst: Vec<&Value> = table["scenarios"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|s| s["worst"] == true)
        .collect();
    assert_eq!(worst.len(), 1);
    close(&worst[0]["loss"], 10_800.0);
    let unknown = pmargin(&[
        "scenarios",
        "--account",
        "zed",
        "--portfolio",
        "examples/portfolio.json",
        "--market",
        "examples/market.json",
        "--params",
        "examples/params.json",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn what_if_reports_before_and_after() {
    // Closing bob's ETH short removes the 10,800 ETH risk: what is left is BTC's 9,000.
    let mut args = vec![
        "what-if",
        "--json",
        "--account",
        "bob",
        "--trade",
        "ETH-PERPETUAL:30",
    ];
    args.extend(EXAMPLE_INPUTS);
    let out = pmargin(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let w: Value = serde_json::from_str(&stdout(&out)).expect("json");
    close(&w["before"]["initial_margin"], 10_800.0);
    close(&w["after"]["initial_margin"], 9_000.0);
    close(&w["fills"][0]["price"], 3_000.0);
    assert_eq!(w["accepted"], true);
    let bad = pmargin(&[
        "what-if",
        "--account",
        "bob",
        "--trade",
        "ETH-PERP:1",
        "--portfolio",
        "examples/portfolio.json",
        "--market",
        "examples/market.json",
        "--params",
        "examples/params.json",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--trade"));
}

#[test]
fn bench_ends_with_accounts_per_second() {
    let out = pmargin(&["bench", "--accounts", "200", "--repeat", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let last = stdout(&out).lines().last().unwrap_or_default().to_string();
    let rate: f64 = last
        .strip_prefix("accounts_per_second: ")
        .and_then(|v| v.parse().ok())
        .expect(&last);
    assert!(rate > 0.0);
}

#[test]
fn help_lists_commands_with_examples() {
    let out = pmargin(&["--help"]);
    let text = stdout(&out);
    for cmd in [
        "margin",
        "scenarios",
        "what-if",
        "demo",
        "bench",
        "Examples:",
    ] {
        assert!(text.contains(cmd), "{cmd} missing from help");
    }
}

#[test]
fn backtest_reports_every_reference_portfolio() {
    let out = pmargin(&[
        "backtest",
        "--json",
        "--no-plots",
        "--from",
        "2020-01-01",
        "--to",
        "2020-06-30",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("json");
    let portfolios = report["portfolios"].as_array().expect("portfolios");
    assert_eq!(portfolios.len(), 6);
    for p in portfolios {
        let grid = &p["models"]["grid"];
        let n = grid["observations"].as_f64().expect("observations");
        let breaches = grid["breaches"].as_array().expect("breaches").len() as f64;
        // coverage = 1 - breaches / observations, recomputed here.
        close(&grid["coverage"], 1.0 - breaches / n);
        for field in [
            "kupiec",
            "christoffersen",
            "traffic_light",
            "procyclicality",
        ] {
            assert!(!grid[field].is_null(), "{} lacks {field}", p["id"]);
        }
        assert!(["green", "yellow", "red"].contains(&grid["traffic_light"].as_str().unwrap_or("")));
    }
    let bad = pmargin(&["backtest", "--from", "2020-13-01"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--from"), "{}", stderr(&bad));
}

#[test]
fn calibrate_writes_a_proposal_and_leaves_the_live_set_alone() {
    let dir = std::env::temp_dir().join(format!("pmargin-calibrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let proposal = dir.join("proposal.json");
    let params = repo().join("examples/params.json");
    let before = std::fs::read_to_string(&params).expect("params");
    let out = pmargin(&[
        "calibrate",
        "--params",
        "examples/params.json",
        "--out",
        &proposal.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&proposal).expect("proposal")).expect("json");
    assert_eq!(written["version"], 2, "a proposal is the next version");
    assert_eq!(std::fs::read_to_string(&params).expect("params"), before);
    assert!(
        stdout(&out).contains("BTC"),
        "side-by-side table names the underlyings"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn calibrate_recommend_reproduces_the_shipped_sets() {
    let dir = std::env::temp_dir().join(format!("pmargin-recommend-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (base, shipped) in [
        (None, "data/params/recommended.json"),
        (
            Some("crates/cli/demo/params_v1.json"),
            "crates/cli/demo/params.json",
        ),
    ] {
        let out_file = dir.join("set.json");
        let out_name = out_file.to_string_lossy().to_string();
        let mut args = vec!["calibrate", "--recommend", "--out", out_name.as_str()];
        if let Some(b) = base {
            args.extend(["--params", b]);
        }
        let out = pmargin(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            std::fs::read_to_string(&out_file).expect("written"),
            std::fs::read_to_string(repo().join(shipped)).expect("shipped"),
            "{shipped}"
        );
        let rationale: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("set.rationale.json")).expect("rationale"),
        )
        .expect("json");
        let d = rationale["derivations"].as_array().expect("derivations");
        assert!(d
            .iter()
            .any(|x| x["parameter"] == "underlyings.BTC.basis_contingency"
                && x["detail"].as_str().unwrap_or("").contains("2021-05-19")));
        assert!(stdout(&out).contains("grid.extended_moves[0].move"));
    }
    // The base set is never written over.
    let out = pmargin(&[
        "calibrate",
        "--recommend",
        "--params",
        "crates/cli/demo/params_v1.json",
        "--out",
        "crates/cli/demo/params_v1.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn demo_shows_fhs_addons_and_what_v2_adds() {
    let out = pmargin(&["demo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("What version 2 adds over version 1"),
        "{text}"
    );
    let row = text
        .lines()
        .rfind(|l| l.starts_with("basis-fund"))
        .expect("comparison row");
    // v1 IM 186.00 (the grid moves both legs together), v2 adds the basis contingency.
    assert!(
        row.contains("186.00") && row.contains("217,465.00 (basis)"),
        "{row}"
    );
    assert!(text.contains("filtered historical simulation"), "{text}");
    assert!(text.contains("sol-trader is margined without it"), "{text}");
    // Cross-protocol: an account holding only the LP is the LP margined alone (a requirement
    // does not depend on the balance), so its capital efficiency is exactly 1; the hedged LP,
    // which nets the LP against a short perpetual, needs less than the pieces apart.
    let cells = |id: &str| -> Vec<String> {
        let row = text
            .lines()
            .rfind(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} row in {text}"));
        row.split_whitespace().map(str::to_string).collect()
    };
    let alone = cells("lp-alone ");
    assert_eq!(alone[4], alone[6], "portfolio IM = the LP alone: {alone:?}");
    assert_eq!(alone[7], "1.00x", "{alone:?}");
    let hedged = cells("lp-hedged ");
    assert_eq!(hedged[6], alone[6], "the same LP alone: {hedged:?}");
    let efficiency: f64 = hedged[7].trim_end_matches('x').parse().expect("efficiency");
    assert!(efficiency > 1.0, "{hedged:?}");
}

/// `margin --compare-params`: the demo's basis fund under the recommended version 2 set and
/// the version 1 set, no history. Expected values by hand from MODEL.md and the demo's files:
///
/// The fund holds 20 BTC and 400 ETH as balances and is short 20 BTC-PERPETUAL and 400
/// ETH-PERPETUAL. Spots 91,500 and 3,050, perpetual marks 91,540 and 3,051.5. A move `m` of an
/// underlying (section 3) makes the balance `amount * price * m` and the perpetual
/// `size * mark * m`: BTC nets `20 * (91,500 - 91,540) m = -800 m`, ETH
/// `400 * (3,050 - 3,051.5) m = -600 m`. No options: vol shifts and tenor scaling change nothing.
/// - grid (section 4): the worst scenario is the tandem rise by the full ranges, a loss of
///   `800 R_BTC + 600 R_ETH` (extremes weigh 0.35 x 2 = 0.7 of it; decoupling 0.5 of a
///   difference): v1 `800 x 0.12 + 600 x 0.15 = 186`; v2 `800 x 0.1313 + 600 x 0.1842 =
///   215.56`. Its extended moves (section 10) lose less: `0.1262 x 0.7288 x 1,400 = 128.77`.
/// - basis add-on (section 11), v2 only: `L+ = L- = 20` BTC and `400` ETH, so
///   `0.0713 x 91,500 x 20 + 0.0713 x 3,050 x 400 = 130,479 + 86,986 = 217,465`; the other
///   add-ons have no parameter in either set.
/// - IM v1 = 186; IM v2 = 215.56 + 217,465 = 217,680.56: v2 adds the basis add-on and 29.56 of
///   grid (its wider scan ranges). MM = 0.75 IM.
/// - Both healthy: the margin balance is millions (2,000,000 USDC alone).
#[test]
fn compare_params_shows_the_basis_add_on_v2_charges_the_basis_fund() {
    let demo = [
        "--portfolio",
        "crates/cli/demo/portfolio.json",
        "--market",
        "crates/cli/demo/market.json",
        "--params",
        "crates/cli/demo/params.json",
        "--compare-params",
        "crates/cli/demo/params_v1.json",
    ];
    let close = |v: &Value, expected: f64, what: &str| {
        let x = v.as_f64().unwrap_or(f64::NAN);
        assert!((x - expected).abs() < 1e-6, "{what}: {x} vs {expected}");
    };
    let out = pmargin(&[&["margin", "--json"][..], &demo[..]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("JSON report");
    assert_eq!(report["params_version"], 2);
    let accounts = report["accounts"].as_array().expect("accounts");
    assert_eq!(accounts.len(), 6);
    assert!(accounts.iter().all(|a| a["compare"].is_object()));
    let fund = accounts
        .iter()
        .find(|a| a["id"] == "basis-fund")
        .expect("basis-fund");
    let basis = 0.0713 * 91_500.0 * 20.0 + 0.0713 * 3_050.0 * 400.0;
    close(&Value::from(basis), 217_465.0, "hand sum");
    let (grid_v1, grid_v2) = (800.0 * 0.12 + 600.0 * 0.15, 800.0 * 0.1313 + 600.0 * 0.1842);
    close(&fund["addon_breakdown"]["basis"], basis, "basis add-on");
    close(&fund["grid_risk"], grid_v2, "v2 grid");
    close(&fund["initial_margin"], grid_v2 + basis, "v2 IM");
    let c = &fund["compare"];
    assert_eq!(c["params"], "crates/cli/demo/params_v1.json");
    assert_eq!(c["params_version"], 1);
    close(&c["initial_margin"], grid_v1, "v1 IM");
    close(&c["maintenance_margin"], 0.75 * grid_v1, "v1 MM");
    close(
        &c["delta_initial_margin"],
        basis + (grid_v2 - grid_v1),
        "IM change",
    );
    close(
        &c["delta_maintenance_margin"],
        0.75 * (basis + grid_v2 - grid_v1),
        "MM change",
    );
    assert_eq!(c["status"], "healthy");
    assert_eq!(fund["status"], "healthy");
    // The rest of the report is the usual one: the same keys as without the flag, plus compare.
    let plain = pmargin(&[&["margin", "--json"][..], &demo[..6]].concat());
    let plain: Value = serde_json::from_str(&stdout(&plain)).expect("plain report");
    let keys = |a: &Value| -> Vec<String> {
        let mut k: Vec<String> = a.as_object().expect("account").keys().cloned().collect();
        k.sort();
        k
    };
    let mut expected = keys(&plain["accounts"][0]);
    expected.push("compare".to_string());
    expected.sort();
    assert_eq!(keys(&accounts[0]), expected);

    // Table: the usual one, then the comparison, the fund's row with its change.
    let out = pmargin(&[&["margin"][..], &demo[..]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Compared with crates/cli/demo/params_v1.json, version 1"),
        "{text}"
    );
    let row = text
        .lines()
        .rfind(|l| l.starts_with("basis-fund"))
        .expect("comparison row");
    assert!(
        row.contains("217,680.56") && row.contains("186.00") && row.contains("+217,494.56"),
        "{row}"
    );

    // A missing OLD file is bad input: exit 2, named, nothing on stdout.
    let mut missing = demo;
    missing[7] = "crates/cli/demo/no-such-params.json";
    let out = pmargin(&[&["margin"][..], &missing[..]].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("no-such-params.json") && stderr(&out).contains("--compare-params"),
        "{}",
        stderr(&out)
    );
}
