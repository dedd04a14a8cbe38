//! The margin report (docs/FORMATS.md): one entry per account, in the portfolio's order.

use crate::account::{AddonBreakdown, Evaluator, Requirement, Status};
use crate::arrays::RiskArrays;
use crate::book::Book;
use crate::error::{InputError, Result};
use crate::fhs::FhsScenarios;
use crate::greeks::{portfolio_greeks, PortfolioGreeks};
use crate::input::history::History;
use crate::input::market::Market;
use crate::input::params::Params;
use crate::input::portfolio::Portfolio;
use crate::liquidation::{liquidation_prices, LiquidationPrice};
use crate::standard::standard_margin;
use chrono::SecondsFormat;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MarginReport {
    pub as_of: String,
    pub params_version: u64,
    pub accounts: Vec<AccountReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountReport {
    pub id: String,
    pub equity: f64,
    pub margin_balance: f64,
    pub initial_margin: f64,
    pub maintenance_margin: f64,
    pub status: Status,
    pub grid_risk: f64,
    pub statistical_risk: f64,
    pub short_option_minimum: f64,
    pub addons: f64,
    /// `addons` by kind (docs/MODEL.md section 11).
    pub addon_breakdown: AddonBreakdown,
    pub scanning_risk: BTreeMap<String, f64>,
    pub worst_scenario: Option<String>,
    pub var: f64,
    pub es: f64,
    pub standard_initial_margin: f64,
    pub standard_maintenance_margin: f64,
    pub capital_efficiency: Option<f64>,
    pub liquidation_prices: BTreeMap<String, LiquidationPrice>,
    /// Not in docs/FORMATS.md version 1: portfolio greeks per underlying (see `greeks`).
    pub greeks: BTreeMap<String, PortfolioGreeks>,
}

/// What to compute beyond the requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportOptions {
    /// The liquidation-price search is by far the costliest part; a caller that only needs
    /// requirements can skip it.
    pub liquidation_prices: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            liquidation_prices: true,
        }
    }
}

/// The whole pipeline: bind the portfolio to the market, compute risk arrays once, then
/// evaluate every account (in parallel; the report keeps the portfolio's order).
pub fn margin_report(
    portfolio: &Portfolio,
    market: &Market,
    params: &Params,
    history: Option<&History>,
    options: ReportOptions,
) -> Result<MarginReport> {
    let book = Book::build(portfolio, market, params)?;
    let scenarios = history
        .map(|h| match params.statistical.model {
            crate::input::params::StatisticalModel::Fhs => {
                FhsScenarios::build(h, &params.statistical)
            }
            // Monte Carlo paths are joint moves like historical days: same arrays, same tail.
            crate::input::params::StatisticalModel::Mc => {
                crate::montecarlo::mc_scenarios(h, &params.statistical).map(|(s, _)| s)
            }
        })
        .transpose()?;
    let arrays = RiskArrays::compute(&book, scenarios.as_ref())?;
    let evaluator = Evaluator::new(&book, &arrays);
    let accounts = book
        .accounts
        .par_iter()
        .map(|account| {
            let req = evaluator.requirement(account).map_err(|mut e| {
                if let Some(h) = history {
                    e.file = h.source.clone();
                }
                e
            })?;
            let liquidation = if options.liquidation_prices {
                liquidation_prices(&evaluator, account, req.below_maintenance())
            } else {
                BTreeMap::new()
            };
            let report = account_report(&book, &arrays, account, &req, liquidation);
            check_finite(&report, &portfolio.source)?;
            Ok(report)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(MarginReport {
        as_of: market.as_of.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        params_version: params.version,
        accounts,
    })
}

fn account_report(
    book: &Book,
    arrays: &RiskArrays,
    account: &crate::book::BookAccount,
    req: &Requirement,
    liquidation_prices: BTreeMap<String, LiquidationPrice>,
) -> AccountReport {
    let names: Vec<&str> = book.underlyings.iter().map(|u| u.name.as_str()).collect();
    let standard = standard_margin(book, account);
    AccountReport {
        id: account.id.clone(),
        equity: req.equity,
        margin_balance: req.margin_balance,
        initial_margin: req.initial_margin,
        maintenance_margin: req.maintenance_margin,
        status: req.status,
        grid_risk: req.grid.grid_risk,
        statistical_risk: req.statistical_risk,
        short_option_minimum: req.short_option_minimum,
        addons: req.addons,
        addon_breakdown: req.addon_breakdown,
        scanning_risk: account
            .exposures
            .iter()
            .zip(&req.grid.scanning_risk)
            .map(|(&u, r)| (names[u].to_string(), *r))
            .collect(),
        worst_scenario: req.grid.worst.map(|s| s.label(&arrays.shape, &names)),
        var: req.var,
        es: req.es,
        standard_initial_margin: standard.initial,
        standard_maintenance_margin: standard.maintenance,
        capital_efficiency: (req.initial_margin > 0.0)
            .then(|| standard.initial / req.initial_margin),
        liquidation_prices,
        greeks: portfolio_greeks(book, account),
    }
}

/// No NaN or infinity may reach a report: refuse the run instead, naming the account.
fn check_finite(report: &AccountReport, source: &str) -> Result<()> {
    let value = serde_json::to_value(report).unwrap_or_default();
    let mut bad = None;
    find_non_finite(&value, String::new(), &mut bad);
    // serde_json writes a non-finite float as null; nulls are only legitimate where optional.
    let optional_nulls = ["capital_efficiency", "worst_scenario", ".down", ".up"];
    match bad {
        Some(path) if !optional_nulls.iter().any(|o| path.ends_with(o)) => Err(InputError::new(
            source,
            path,
            "the computation produced a non-finite number; check the inputs",
        )
        .with_account(&report.id)),
        _ => Ok(()),
    }
}

fn find_non_finite(value: &serde_json::Value, path: String, bad: &mut Option<String>) {
    match value {
        serde_json::Value::Null if bad.is_none() => *bad = Some(path),
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                find_non_finite(v, format!("{path}.{k}"), bad);
            }
        }
        _ => {}
    }
}
