//! `pmargin simulate`: a liquidation cascade, over `pmargin-sim`.
//!
//! Replays a price path through the real-time engine (your portfolio, market and parameter
//! set, or with `--demo` the bundled 2020-03-12 crash on a synthetic closed book of 10,000
//! accounts) and reports liquidations, bad debt, the insurance fund and socialised loss over
//! time, with a chart. Returns the text to print; an `Err` is an input problem (exit code 2)
//! whose message names the file (and, for a path, the line).

use clap::Args;
use pmargin_core::{Market, Params, Portfolio};
use pmargin_sim::demo::{demo_book, demo_path, DEMO_INSURANCE_FUND, DEMO_SEED};
use pmargin_sim::{
    build_engine, plot, report, run, run_demo, DemoOptions, EngineConfig, PricePath,
};
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Examples:\n  pmargin simulate --demo\n  pmargin simulate --demo --impact 0.25 --json\n  \
        pmargin simulate --portfolio portfolio.json --market market.json --params params.json \\\n      \
        --path crash.csv --impact 0.5 --insurance-fund 1000000 --out charts\n\n\
        Path file (CSV): a header `step,<U1>,<U2>...` (first column: any label, e.g. a step number\n\
        or a time), then one row per step: the label and one index price per underlying.\n\
        Blank lines and lines starting with # are skipped.\n\n\
        Each step sends every underlying's price to the engine (which re-margins and liquidates),\n\
        then one liquidation round. Market impact: after a step, the later prices of u are\n\
        multiplied by clamp(1 - K x S / D, 0.5, 2), S the net notional liquidations sold on u's\n\
        perpetuals and futures in the step, D the open interest of u at the start; it compounds.\n\n\
        --demo: real BTC/ETH closes 2020-03-11 -> 03-12 -> 03-13 (data/history.csv), a synthetic\n\
        intraday shape (seeded Brownian bridge, 96 steps a day), 10,000 accounts in a closed book\n\
        (traders at 2x-25x, market makers on the other side, one liquidator), USDC collateral,\n\
        insurance fund $2m: total value before and after agree to rounding."
)]
pub struct SimulateArgs {
    /// Portfolio (JSON, docs/FORMATS.md), with the liquidator account (created empty if absent)
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "demo",
        conflicts_with = "demo"
    )]
    pub portfolio: Option<PathBuf>,
    /// Market snapshot at the start (JSON)
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "demo",
        conflicts_with = "demo"
    )]
    pub market: Option<PathBuf>,
    /// Risk parameter set (JSON, or TOML when the name ends in .toml)
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "demo",
        conflicts_with = "demo"
    )]
    pub params: Option<PathBuf>,
    /// Price path (CSV: step,<U1>,<U2>...; one row of index prices per step)
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "demo",
        conflicts_with = "demo"
    )]
    pub path: Option<PathBuf>,
    /// Replay the bundled 2020-03-12 crash on a synthetic closed book of 10,000 accounts, under
    /// the recommended version 2 rules on the book's own scan ranges (see below)
    #[arg(long)]
    pub demo: bool,
    /// With --demo: the book's own version 1 parameter set instead
    #[arg(long, requires = "demo")]
    pub demo_v1: bool,
    /// Market impact K (>= 0): liquidations selling a fraction f of the open interest move the
    /// later prices by -K x f; 0 replays the path unchanged
    #[arg(long, value_name = "K", default_value_t = 0.0)]
    pub impact: f64,
    /// Opening insurance fund, USD [default: 0, or the engine config's; --demo: 2,000,000]
    #[arg(long = "insurance-fund", value_name = "USD")]
    pub insurance_fund: Option<f64>,
    /// Engine settings (JSON: settlement_asset, liquidation_penalty, liquidation_step,
    /// min_liquidation_notional, liquidator, insurance_fund); default: 1% penalty, steps of
    /// 25%, liquidator account `liquidator`
    #[arg(long, value_name = "FILE", conflicts_with = "demo")]
    pub engine_config: Option<PathBuf>,
    /// Seed of the demo book and of its synthetic intraday path [default: 20200312]
    #[arg(long, requires = "demo")]
    pub seed: Option<u64>,
    /// Print the JSON report (totals and every step) instead of the text report
    #[arg(long)]
    pub json: bool,
    /// Directory for the chart (simulate.svg, simulate.png)
    #[arg(long, value_name = "DIR", default_value = "simulate-out")]
    pub out: PathBuf,
    /// Do not draw the chart
    #[arg(long)]
    pub no_chart: bool,
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

fn required<'a>(value: &'a Option<PathBuf>, flag: &str) -> Result<&'a Path, String> {
    value
        .as_deref()
        .ok_or_else(|| format!("{flag} is required (or use --demo)"))
}

fn check_fund(fund: f64) -> Result<f64, String> {
    if fund.is_finite() && fund >= 0.0 {
        Ok(fund)
    } else {
        Err(format!(
            "--insurance-fund must be a finite amount >= 0, got {fund}"
        ))
    }
}

/// The bundled cascade under the recommended version 2 rules. The demo book's leverage (up to
/// 25x) is built on its own scan ranges (BTC 4%, ETH 5%), so those stay; the tenor powers,
/// basis contingency, extended moves (cover from those ranges) and stablecoin haircuts come
/// from `pmargin calibrate --recommend`'s rules on the bundled data.
fn run_demo_v2(options: &DemoOptions) -> Result<pmargin_sim::SimReport, String> {
    let mut book = demo_book(options.accounts, options.seed, options.insurance_fund)?;
    let real = pmargin_backtest::data::real_data().map_err(|e| e.to_string())?;
    book.params = pmargin_backtest::recommend_with(&real, &book.params, true)
        .map_err(|e| e.to_string())?
        .params;
    let path = demo_path(options.steps_per_day, options.seed)?;
    let mut engine = build_engine(&book.portfolio, &book.market, &book.params, book.config)?;
    let scenario = format!(
        "demo: the 2020-03-12 crash on a synthetic closed book of {} accounts (seed {}), \
         recommended version 2 rules on the book's scan ranges",
        options.accounts, options.seed
    );
    run(&mut engine, &path, options.impact, &scenario)
}

pub fn simulate(args: &SimulateArgs) -> Result<String, String> {
    if !(args.impact.is_finite() && args.impact >= 0.0) {
        return Err(format!(
            "--impact must be a finite number >= 0, got {}",
            args.impact
        ));
    }
    let mut report = if args.demo {
        let options = DemoOptions {
            seed: args.seed.unwrap_or(DEMO_SEED),
            impact: args.impact,
            insurance_fund: check_fund(args.insurance_fund.unwrap_or(DEMO_INSURANCE_FUND))?,
            ..DemoOptions::default()
        };
        if args.demo_v1 {
            run_demo(&options)?
        } else {
            run_demo_v2(&options)?
        }
    } else {
        let (p, m, r, x) = (
            required(&args.portfolio, "--portfolio")?,
            required(&args.market, "--market")?,
            required(&args.params, "--params")?,
            required(&args.path, "--path")?,
        );
        let name = |p: &Path| p.display().to_string();
        let params = Params::parse(&name(r), &read(r)?).map_err(|e| e.to_string())?;
        let market = Market::parse(&name(m), &read(m)?).map_err(|e| e.to_string())?;
        let portfolio = Portfolio::parse(&name(p), &read(p)?).map_err(|e| e.to_string())?;
        let path = PricePath::parse(&name(x), &read(x)?).map_err(|e| e.to_string())?;
        let mut config = match &args.engine_config {
            Some(c) => serde_json::from_str::<EngineConfig>(&read(c)?)
                .map_err(|e| format!("{}: {e}", c.display()))?,
            None => EngineConfig::default(),
        };
        if let Some(fund) = args.insurance_fund {
            config.insurance_fund = check_fund(fund)?;
        }
        let mut engine = build_engine(&portfolio, &market, &params, config)?;
        let scenario = format!("{} on {} ({}, {})", name(x), name(p), name(m), name(r));
        run(&mut engine, &path, args.impact, &scenario)?
    };
    if !args.no_chart {
        report.charts = plot::write_charts(&report, &args.out)?
            .iter()
            .map(|p| p.display().to_string())
            .collect();
    }
    if args.json {
        serde_json::to_string_pretty(&report)
            .map(|s| s + "\n")
            .map_err(|e| format!("cannot serialise the report: {e}"))
    } else {
        Ok(report::render_text(&report, 8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(argv: &[&str]) -> Result<SimulateArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("simulate").chain(argv.iter().copied())).map(|c| c.args)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pmargin-simulate-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const PARAMS: &str = r#"{"version": 1,
      "underlyings": {"BTC": {"price_scan_range": 0.10, "vol_scan_up": 0.10, "vol_scan_down": 0.10,
                              "standard_im_rate": 0.10, "standard_mm_rate": 0.05}},
      "collateral": {"USDC": {"haircut": 0.0}}}"#;
    const MARKET: &str =
        r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"BTC": 60000, "USDC": 1}}"#;
    const PORTFOLIO: &str = r#"{"accounts": [
      {"id": "a", "balances": {"USDC": 7000}, "positions": [{"instrument": "BTC-PERPETUAL", "size": 1, "entry_price": 60000}]},
      {"id": "b", "balances": {"USDC": 100000}, "positions": [{"instrument": "BTC-PERPETUAL", "size": -1, "entry_price": 60000}]},
      {"id": "liquidator", "balances": {"USDC": 1000000}}]}"#;

    fn files(dir: &Path, path: &str) -> Vec<String> {
        for (f, text) in [
            ("p.json", PORTFOLIO),
            ("m.json", MARKET),
            ("r.json", PARAMS),
            ("path.csv", path),
        ] {
            std::fs::write(dir.join(f), text).unwrap();
        }
        let at = |f: &str| dir.join(f).display().to_string();
        vec![
            "--portfolio".into(),
            at("p.json"),
            "--market".into(),
            at("m.json"),
            "--params".into(),
            at("r.json"),
            "--path".into(),
            at("path.csv"),
            "--out".into(),
            at("charts"),
        ]
    }

    #[test]
    fn files_mode_reports_json_totals_and_draws_the_chart() {
        let dir = scratch("json");
        let mut argv = files(&dir, "step,BTC\n0,60000\n1,58000\n2,57000\n");
        argv.extend([
            "--json".to_string(),
            "--insurance-fund".into(),
            "1000".into(),
        ]);
        let args = parse(&argv.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let out: serde_json::Value = serde_json::from_str(&simulate(&args).unwrap()).unwrap();
        let t = &out["totals"];
        assert_eq!(t["liquidations"], 2);
        assert!(
            (t["insurance_fund_after"].as_f64().unwrap() - 1249.375).abs() < 1e-9,
            "{t}"
        );
        assert_eq!(t["value_before"], t["value_after"]);
        assert_eq!(out["steps"].as_array().unwrap().len(), 3);
        assert!(
            dir.join("charts/simulate.svg").exists() && dir.join("charts/simulate.png").exists()
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_path_names_file_and_line() {
        let dir = scratch("bad");
        let mut argv = files(&dir, "step,BTC\n0,60000\n1,fifty\n");
        argv.push("--no-chart".into());
        let args = parse(&argv.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let err = simulate(&args).unwrap_err();
        assert!(err.contains("path.csv:3: column 2 (BTC)"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The demo under the recommended version 2 rules: a closed book still conserves value, and
    /// the 2.99% USDC haircut of the recommended set leaves every trader's margin balance below
    /// its version 1 value, so the cascade differs from the version 1 run.
    #[test]
    fn demo_v2_conserves_value_and_differs_from_v1() {
        let options = DemoOptions {
            accounts: 400,
            steps_per_day: 8,
            ..DemoOptions::default()
        };
        let v2 = run_demo_v2(&options).unwrap();
        let v1 = run_demo(&options).unwrap();
        let t = &v2.totals;
        assert!(
            (t.value_before - t.value_after).abs() < 1e-6 * t.value_before,
            "{t:?}"
        );
        assert_eq!(v1.totals.value_before, t.value_before);
        assert_ne!(format!("{:?}", v1.totals), format!("{t:?}"));
        assert!(v2.scenario.contains("version 2"), "{}", v2.scenario);
    }

    #[test]
    fn arguments_demo_or_all_four_files() {
        assert!(parse(&["--demo"]).is_ok());
        assert!(parse(&["--demo", "--impact", "0.25", "--seed", "7", "--json"]).is_ok());
        assert!(parse(&["--demo", "--portfolio", "p.json"]).is_err());
        assert!(parse(&[
            "--portfolio",
            "p.json",
            "--market",
            "m.json",
            "--params",
            "r.json"
        ])
        .is_err());
        assert!(parse(&["--seed", "7"]).is_err());
    }
}
