//! `pmargin backtest` and `pmargin calibrate`: the research commands, over
//! `pmargin-backtest`. Both run with no file at all (the bundled BTC/ETH history and reference
//! parameter set) and return the text to print; an `Err` is an input problem (exit code 2)
//! whose message names the file and the field.

use clap::{Args, ValueEnum};
use pmargin_backtest::engine::{BacktestConfig, Model};
use pmargin_backtest::{calibrate as cal, data, plot, portfolios};
use pmargin_core::{History, Params, Portfolio};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// Scenario grid (grid_risk and the short option minimum): the IM with no history
    Grid,
    /// Filtered historical simulation on the history up to each day
    Fhs,
    /// Monte Carlo (statistical.model = "mc") on the history up to each day
    Mc,
    /// grid, fhs and mc
    All,
}

#[derive(Args, Debug, Clone)]
pub struct BacktestArgs {
    /// Daily close history (CSV, date,BTC,ETH,...); default: the bundled histories, each
    /// portfolio on the longest that has its underlyings (BTC 2011-2025 from data/btc_long.csv,
    /// BTC with ETH 2015-2023 from data/btc_eth.csv)
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Risk parameter set (JSON or TOML); default: the bundled recommended version 2 set
    /// (data/params/recommended.json)
    #[arg(long, value_name = "FILE")]
    pub params: Option<PathBuf>,
    /// Extra portfolios (docs/FORMATS.md portfolio JSON), each account held constant, added to
    /// the six reference portfolios
    #[arg(long, value_name = "FILE")]
    pub portfolios: Option<PathBuf>,
    /// Only the portfolios of --portfolios, without the reference set
    #[arg(long, requires = "portfolios")]
    pub no_reference: bool,
    /// Margin model to backtest
    #[arg(long, value_enum, default_value = "grid")]
    pub model: ModelArg,
    /// First requirement date (YYYY-MM-DD); default: once 250 returns of warm-up exist
    #[arg(long, value_name = "DATE")]
    pub from: Option<String>,
    /// Last requirement date (YYYY-MM-DD); default: the last day with a full horizon after it
    #[arg(long, value_name = "DATE")]
    pub to: Option<String>,
    /// Horizon in days (rows of the history); default: statistical.horizon_days
    #[arg(long, value_name = "DAYS")]
    pub horizon: Option<u32>,
    /// Returns of history required before the first requirement
    #[arg(long, value_name = "N", default_value_t = 250)]
    pub warmup: usize,
    /// Floor of the flat option vol (annualised EWMA vol of the history up to each day)
    #[arg(long, value_name = "VOL", default_value_t = 0.20)]
    pub vol_floor: f64,
    /// Value options with the EWMA vol rule on every day, instead of Deribit's DVOL (bundled,
    /// BTC and ETH from 2021-03-24) on the days it covers
    #[arg(long)]
    pub no_implied_vol: bool,
    /// Print the JSON report instead of the summary table
    #[arg(long)]
    pub json: bool,
    /// Directory for the charts (one SVG and one PNG per portfolio)
    #[arg(long, value_name = "DIR", default_value = "backtest-out")]
    pub out_dir: PathBuf,
    /// Do not write charts
    #[arg(long)]
    pub no_plots: bool,
}

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Examples:\n  pmargin calibrate --out proposal.json --floor --buffer 0.25\n  \
        pmargin calibrate --recommend --out recommended.json\n  \
        pmargin calibrate --recommend --params crates/cli/demo/params_v1.json --out demo.json\n\n\
        --recommend derives the version 2 set from the bundled real data (data/real: DVOL, \
        funding, the\nDeribit perpetual, stablecoins; data/btc_long.csv, data/btc_eth.csv): \
        scan ranges, vol scans\nand tenor powers, basis contingency, extended moves and \
        stablecoin haircuts, each with its data\nand rule in <stem>.rationale.json."
)]
pub struct CalibrateArgs {
    /// Daily close history (CSV); default: the bundled BTC/ETH 2015-2021
    #[arg(long, value_name = "FILE", conflicts_with = "recommend")]
    pub history: Option<PathBuf>,
    /// The live parameter set (JSON or TOML); never modified; default: the bundled recommended
    /// set (with --recommend: the bundled version 1 reference set)
    #[arg(long, value_name = "FILE")]
    pub params: Option<PathBuf>,
    /// Derive the whole version 2 set from the bundled real data (see below) instead of
    /// today's EWMA scan ranges
    #[arg(long)]
    pub recommend: bool,
    /// Proposal file to write (a full JSON parameter set, version + 1); the rationale goes
    /// beside it as <stem>.rationale.json
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Coverage per direction; default: statistical.confidence
    #[arg(long, value_name = "P")]
    pub coverage: Option<f64>,
    /// Horizon in days; default: statistical.horizon_days
    #[arg(long, value_name = "DAYS")]
    pub horizon: Option<f64>,
    /// EWMA decay; default: statistical.ewma_lambda
    #[arg(long, value_name = "LAMBDA")]
    pub lambda: Option<f64>,
    /// Student-t degrees of freedom for the quantile (default: normal quantile)
    #[arg(long, value_name = "DOF")]
    pub dof: Option<f64>,
    /// Floor the range at the one the stressed (largest EWMA) vol gives
    #[arg(long)]
    pub floor: bool,
    /// Days searched for the stressed vol (default: the whole history; 3650 = 10 years)
    #[arg(long, value_name = "DAYS")]
    pub stress_lookback: Option<usize>,
    /// Anti-procyclicality buffer on top (0.25 = 25%)
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub buffer: f64,
    /// Release the buffer when the current vol reaches the stressed vol
    #[arg(long)]
    pub release_buffer: bool,
    /// Weight of the stressed vol in the blend, in [0, 1]
    #[arg(long, value_name = "W", default_value_t = 0.0)]
    pub stressed_weight: f64,
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

fn load_history(path: Option<&Path>) -> Result<History, String> {
    match path {
        Some(p) => History::parse(&p.display().to_string(), &read(p)?).map_err(|e| e.to_string()),
        None => data::history().map_err(|e| e.to_string()),
    }
}

fn load_params(path: Option<&Path>) -> Result<Params, String> {
    match path {
        Some(p) => Params::parse(&p.display().to_string(), &read(p)?).map_err(|e| e.to_string()),
        None => data::params().map_err(|e| e.to_string()),
    }
}

fn date(flag: &str, text: &Option<String>) -> Result<Option<chrono::NaiveDate>, String> {
    text.as_deref()
        .map(|s| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| format!("--{flag}: `{s}` is not a date YYYY-MM-DD"))
        })
        .transpose()
}

/// Runs `pmargin backtest`; returns the report (table or JSON) to print on stdout.
pub fn backtest(args: &BacktestArgs) -> Result<String, String> {
    let histories = match &args.history {
        Some(p) => vec![load_history(Some(p))?],
        None => data::backtest_histories().map_err(|e| e.to_string())?,
    };
    let params = load_params(args.params.as_deref())?;
    let mut list = if args.no_reference {
        Vec::new()
    } else {
        portfolios::reference_portfolios()
    };
    if let Some(p) = &args.portfolios {
        let portfolio =
            Portfolio::parse(&p.display().to_string(), &read(p)?).map_err(|e| e.to_string())?;
        list.extend(portfolios::user_portfolios(&portfolio));
    }
    if !(args.vol_floor.is_finite() && args.vol_floor > 0.0) {
        return Err(format!(
            "--vol-floor: must be a positive vol, got {}",
            args.vol_floor
        ));
    }
    let models = match args.model {
        ModelArg::Grid => vec![Model::Grid],
        ModelArg::Fhs => vec![Model::Fhs],
        ModelArg::Mc => vec![Model::Mc],
        ModelArg::All => vec![Model::Grid, Model::Fhs, Model::Mc],
    };
    let config = BacktestConfig {
        models,
        from: date("from", &args.from)?,
        to: date("to", &args.to)?,
        horizon_days: args.horizon,
        warmup_returns: args.warmup,
        vol_floor: args.vol_floor,
        implied_vols: if args.no_implied_vol {
            None
        } else {
            Some(data::bundled_dvol().map_err(|e| e.to_string())?)
        },
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "backtest {bar:40} {pos}/{len} day-models  {elapsed} (eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let progress = |done: usize, total: usize| {
        if let Some(b) = &bar {
            if b.length() != Some(total as u64) {
                b.set_length(total as u64);
            }
            b.set_position(done as u64);
        }
    };
    let result = pmargin_backtest::run_backtest_on(&histories, &params, &list, &config, &progress);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let report = result.map_err(|e| e.to_string())?;
    let charts = if args.no_plots {
        Vec::new()
    } else {
        plot::write_charts(&report, &args.out_dir).map_err(|e| e.to_string())?
    };
    if args.json {
        return Ok(report.to_json_pretty() + "\n");
    }
    let mut out = report.summary();
    if !charts.is_empty() {
        out.push_str(&format!(
            "\nCharts ({} files, SVG and PNG) in {}\n",
            charts.len(),
            args.out_dir.display()
        ));
    }
    Ok(out)
}

/// Runs `pmargin calibrate`: writes the proposal and its rationale, returns the side-by-side
/// table to print. The input parameter set is never written.
pub fn calibrate(args: &CalibrateArgs) -> Result<String, String> {
    if args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
    {
        return Err(format!(
            "{}: --out: the proposal is written as JSON; give a .json file",
            args.out.display()
        ));
    }
    if args.recommend {
        let base = match &args.params {
            Some(p) => load_params(Some(p))?,
            None => data::params_v1().map_err(|e| e.to_string())?,
        };
        let real = data::real_data().map_err(|e| e.to_string())?;
        let r = pmargin_backtest::recommend(&real, &base).map_err(|e| e.to_string())?;
        let (params_file, rationale_file) = r
            .write(&args.out, args.params.as_deref())
            .map_err(|e| e.to_string())?;
        return Ok(format!(
            "{}\nRecommended set written to {} (rationale: {}). The base {} is unchanged.\n",
            r.table(),
            params_file.display(),
            rationale_file.display(),
            base.source
        ));
    }
    let history = load_history(args.history.as_deref())?;
    let params = load_params(args.params.as_deref())?;
    let defaults = cal::defaults(&params);
    let settings = cal::CalibrationConfig {
        coverage: args.coverage.unwrap_or(defaults.coverage),
        horizon_days: args.horizon.unwrap_or(defaults.horizon_days),
        lambda: args.lambda.unwrap_or(defaults.lambda),
        dof: args.dof,
        floor_stressed: args.floor,
        stress_lookback: args.stress_lookback,
        buffer: args.buffer,
        release_buffer_in_stress: args.release_buffer,
        stressed_weight: args.stressed_weight,
    };
    let proposal = cal::calibrate(&history, &params, &settings).map_err(|e| e.to_string())?;
    let (params_file, rationale_file) = proposal
        .write(&args.out, args.params.as_deref())
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "{}\nProposal written to {} (rationale: {}). The live set {} is unchanged.\n",
        proposal.side_by_side(),
        params_file.display(),
        rationale_file.display(),
        params.source
    ))
}
