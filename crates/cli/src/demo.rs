//! The bundled demo book, compiled into the binary so `pmargin demo` needs no files.
//!
//! The demo shows the three parts of initial margin side by side: the version 2 grid (tenor-
//! scaled vol shocks, extended moves), filtered historical simulation on the bundled BTC/ETH
//! closes, and the contingency add-ons; and what the recommended version 2 set asks against
//! the version 1 set it was derived from (`demo/params_v1.json`).

use crate::inputs::{CliError, Loaded};
use crate::table;
use pmargin_core::report::{AccountReport, MarginReport, ReportOptions};
use pmargin_core::{margin_report, History, Market, Params, Portfolio};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

pub const PORTFOLIO: &str = include_str!("../demo/portfolio.json");
pub const MARKET: &str = include_str!("../demo/market.json");
/// The recommended version 2 set (`pmargin calibrate --recommend --params
/// demo/params_v1.json`): the demo's default.
pub const PARAMS: &str = include_str!("../demo/params.json");
/// The version 1 set the recommended one was derived from, for the comparison.
pub const PARAMS_V1: &str = include_str!("../demo/params_v1.json");
/// Cross-protocol collateral (docs/MODEL.md section 12): a liquidity provider on ETH/USDC
/// hedged with a short ETH perpetual, the same LP alone, and a leveraged lending loop, under
/// the recommended set with `external_protocols` added.
pub const PORTFOLIO_EXTERNAL: &str = include_str!("../demo/portfolio_external.json");
pub const PARAMS_EXTERNAL: &str = include_str!("../demo/params_external.json");
/// Daily BTC and ETH closes 2015-08-07 .. 2023-08-29 (provenance in data/README.md).
pub use pmargin_backtest::data::BTC_ETH_CSV as HISTORY;
pub const HISTORY_NAME: &str = "bundled data/btc_eth.csv";

pub fn inputs() -> Result<Loaded, CliError> {
    Ok(Loaded {
        portfolio: Portfolio::parse("demo/portfolio.json", PORTFOLIO)?,
        market: Market::parse("demo/market.json", MARKET)?,
        params: Params::parse("demo/params.json", PARAMS)?,
        history: Some(History::parse(HISTORY_NAME, HISTORY)?),
    })
}

/// The underlyings an account is exposed to: its positions' and its non-stable balances'.
fn exposure(
    account: &pmargin_core::input::portfolio::Account,
    params: &Params,
) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = account
        .positions
        .iter()
        .map(|p| p.instrument.underlying.clone())
        .collect();
    let underlying = |asset: &str| params.collateral.get(asset)?.underlying.clone();
    for (asset, amount) in &account.balances {
        if *amount != 0.0 {
            out.extend(underlying(asset));
        }
    }
    for x in &account.external {
        if x.holding().counts_for_exposure() {
            out.extend(x.holding().tokens().filter_map(underlying));
        }
    }
    out
}

/// The margin report of `portfolio`, with filtered historical simulation on `history` for
/// every account whose underlyings it covers, and without for the others (MODEL.md section 5
/// forbids a silent zero: an account on an underlying the history lacks is left to the grid,
/// and [`uncovered`] names it).
pub fn report_with_history(
    portfolio: &Portfolio,
    market: &Market,
    params: &Params,
    history: Option<&History>,
) -> Result<MarginReport, CliError> {
    let options = ReportOptions::default();
    let Some(history) = history else {
        return Ok(margin_report(portfolio, market, params, None, options)?);
    };
    let (covered, rest): (Vec<_>, Vec<_>) = portfolio.accounts.iter().cloned().partition(|a| {
        exposure(a, params)
            .iter()
            .all(|u| history.column(u).is_some())
    });
    let part = |accounts: Vec<_>, h: Option<&History>| -> Result<Vec<AccountReport>, CliError> {
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        let p = Portfolio {
            source: portfolio.source.clone(),
            accounts,
        };
        Ok(margin_report(&p, market, params, h, options)?.accounts)
    };
    let mut with = part(covered, Some(history))?;
    with.extend(part(rest, None)?);
    let mut accounts = Vec::with_capacity(with.len());
    for a in &portfolio.accounts {
        if let Some(i) = with.iter().position(|r| r.id == a.id) {
            accounts.push(with.swap_remove(i));
        }
    }
    let base = margin_report(
        &Portfolio {
            source: portfolio.source.clone(),
            accounts: Vec::new(),
        },
        market,
        params,
        None,
        options,
    )?;
    Ok(MarginReport {
        as_of: base.as_of,
        params_version: base.params_version,
        accounts,
    })
}

/// Accounts exposed to an underlying the history lacks.
pub fn uncovered(portfolio: &Portfolio, params: &Params, history: &History) -> Vec<String> {
    portfolio
        .accounts
        .iter()
        .filter(|a| {
            exposure(a, params)
                .iter()
                .any(|u| history.column(u).is_none())
        })
        .map(|a| a.id.clone())
        .collect()
}

/// `pmargin demo`: the version 2 report (with FHS), then what each part adds over version 1.
/// With `json`, the report alone.
pub fn run(json: bool) -> Result<String, CliError> {
    let l = inputs()?;
    let history = l.history.as_ref();
    let v2 = report_with_history(&l.portfolio, &l.market, &l.params, history)?;
    if json {
        return serde_json::to_string_pretty(&v2)
            .map(|s| s + "\n")
            .map_err(|e| CliError::Internal(format!("cannot serialise the report: {e}")));
    }
    let v1_params = Params::parse("demo/params_v1.json", PARAMS_V1)?;
    let v1 = margin_report(
        &l.portfolio,
        &l.market,
        &v1_params,
        None,
        ReportOptions::default(),
    )?;
    let mut out = String::from(
        "pmargin demo: the bundled book (6 accounts on BTC, ETH and SOL), recommended version 2 \
         parameters (demo/params.json)\n\n",
    );
    out.push_str(&table::margin_table(&v2));
    out.push_str(&comparison(&v1, &v2));
    if let Some(h) = history {
        let missing = uncovered(&l.portfolio, &l.params, h);
        let _ = writeln!(
            out,
            "\nstatistical: filtered historical simulation (99% ES, 1 day) on {} ({} .. {}){}.",
            h.source,
            h.dates.first().map(|d| d.to_string()).unwrap_or_default(),
            h.dates.last().map(|d| d.to_string()).unwrap_or_default(),
            if missing.is_empty() {
                String::new()
            } else {
                format!(
                    "; no SOL history is bundled, so {} is margined without it",
                    missing.join(", ")
                )
            }
        );
    }
    out.push_str(&external_section(&l.market, history)?);
    out.push_str(
        "grid v2: vol shocks scaled by tenor, extended moves; add-ons: option, basis, oracle, \
         liquidity contingencies (docs/METHODOLOGY.md). Each value of the set, with its data and \
         rule: demo/params.rationale.json.\n",
    );
    Ok(out)
}

/// Cross-protocol collateral beside isolated margin: what the external positions count for in
/// the margin balance, the portfolio requirement (the LP revalued exactly in every scenario,
/// netted with the perpetual hedge), and what margining each piece on its own asks: the
/// derivatives by MODEL.md section 7, and each external position as an account holding only it
/// (its own section 12 scenarios, no hedge from the rest). Section 7 has no rule for external
/// positions, so this second part is the demo's (docs/METHODOLOGY.md, "Capital efficiency of
/// external positions").
fn external_section(market: &Market, history: Option<&History>) -> Result<String, CliError> {
    let portfolio = Portfolio::parse("demo/portfolio_external.json", PORTFOLIO_EXTERNAL)?;
    let params = Params::parse("demo/params_external.json", PARAMS_EXTERNAL)?;
    let report = report_with_history(&portfolio, market, &params, history)?;
    let alone = each_external_alone(market, &params, history)?;
    let mut rows = vec![vec![
        "account".to_string(),
        "held elsewhere".into(),
        "counted (haircut)".into(),
        "margin balance".into(),
        "portfolio IM".into(),
        "isolated IM".into(),
        "each elsewhere alone".into(),
        "capital efficiency".into(),
    ]];
    for a in &report.accounts {
        let value: f64 = a.external.iter().map(|x| x.value).sum();
        let counted: f64 = a.external.iter().map(|x| x.margin_value).sum();
        let apart = alone.get(&a.id).copied().unwrap_or(0.0);
        let separate = a.standard_initial_margin + apart;
        rows.push(vec![
            a.id.clone(),
            table::money(value),
            table::money(counted),
            table::money(a.margin_balance),
            table::money(a.initial_margin),
            table::money(a.standard_initial_margin),
            table::money(apart),
            if a.initial_margin > 0.0 {
                format!("{:.2}x", separate / a.initial_margin)
            } else {
                "-".into()
            },
        ]);
    }
    let mut out = String::from(
        "\nCross-protocol collateral (demo/portfolio_external.json, MODEL.md section 12): a Uniswap v3 \
         ETH/USDC position and Aave deposits count in the margin balance, the LP revalued in every \
         scenario:\n\n",
    );
    out.push_str(&table::columns(&rows));
    out.push_str(
        "isolated IM: the derivatives one by one (section 7); each elsewhere alone: every external \
         position margined as an account holding only it; capital efficiency: their sum over the \
         portfolio IM. The hedged LP nets its short gamma and delta against the perpetual, the \
         lending loop its ETH deposit against its short perpetual; the LP alone has nothing to \
         net.\n",
    );
    Ok(out)
}

/// The initial margin of every external position of the demo's cross-protocol book margined
/// alone (an account holding only it), summed per account.
fn each_external_alone(
    market: &Market,
    params: &Params,
    history: Option<&History>,
) -> Result<HashMap<String, f64>, CliError> {
    let book: serde_json::Value = serde_json::from_str(PORTFOLIO_EXTERNAL)
        .map_err(|e| CliError::Internal(format!("demo/portfolio_external.json: {e}")))?;
    let mut owner = HashMap::new();
    let mut accounts = Vec::new();
    for a in book["accounts"].as_array().into_iter().flatten() {
        let id = a["id"].as_str().unwrap_or_default();
        for (k, x) in a["external"].as_array().into_iter().flatten().enumerate() {
            let alone = format!("{id}:{k}");
            owner.insert(alone.clone(), id.to_string());
            accounts.push(serde_json::json!({ "id": alone, "balances": {}, "external": [x] }));
        }
    }
    let text = serde_json::json!({ "accounts": accounts }).to_string();
    let pieces = Portfolio::parse("demo/portfolio_external.json (each alone)", &text)?;
    let report = report_with_history(&pieces, market, params, history)?;
    let mut sums = HashMap::new();
    for a in &report.accounts {
        if let Some(id) = owner.get(&a.id) {
            *sums.entry(id.clone()).or_insert(0.0) += a.initial_margin;
        }
    }
    Ok(sums)
}

/// What each part adds: v1 IM, then the v2 grid (with the short option minimum), then the max
/// with the statistical risk, then the add-ons: the v2 IM.
fn comparison(v1: &MarginReport, v2: &MarginReport) -> String {
    let mut rows = vec![vec![
        "account".to_string(),
        "v1 IM".into(),
        "v2 grid".into(),
        "FHS ES".into(),
        "max(grid, FHS, SOM)".into(),
        "add-ons".into(),
        "v2 IM".into(),
        "v2 - v1".into(),
    ]];
    for a in &v2.accounts {
        let old = v1
            .accounts
            .iter()
            .find(|o| o.id == a.id)
            .map_or(0.0, |o| o.initial_margin);
        let base = a.initial_margin - a.addons;
        let b = &a.addon_breakdown;
        let mut addons = table::money(a.addons);
        for (name, v) in [
            ("option", b.option),
            ("basis", b.basis),
            ("oracle", b.oracle),
            ("liquidity", b.liquidity),
        ] {
            if v != 0.0 {
                let _ = write!(addons, " ({name})");
            }
        }
        rows.push(vec![
            a.id.clone(),
            table::money(old),
            table::money(a.grid_risk),
            table::money(a.statistical_risk),
            table::money(base),
            addons,
            table::money(a.initial_margin),
            format!(
                "{}{}",
                if a.initial_margin >= old { "+" } else { "" },
                table::money(a.initial_margin - old)
            ),
        ]);
    }
    let mut out =
        String::from("\nWhat version 2 adds over version 1 (demo/params_v1.json, no history):\n\n");
    out.push_str(&table::columns(&rows));
    out
}
