//! `pmargin margin --compare-params OLD`: each account's requirement under the current set and
//! under OLD, side by side, and the difference: what a parameter change (version 1 to 2, or a
//! governance proposal) would ask of every account before it is switched on.
//!
//! Both requirements are computed on the same portfolio, market and history. OLD only gives the
//! requirement, so its liquidation-price searches are skipped. In JSON, each account of the
//! usual margin report gets a `compare` object; the rest of the report is unchanged.

use crate::inputs::CliError;
use crate::{table, Inputs};
use pmargin_core::report::{AccountReport, MarginReport, ReportOptions};
use pmargin_core::{margin_report, Params};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// An account's requirement under OLD, and how far the current one is from it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Compare {
    /// OLD's file, as given.
    pub params: String,
    pub params_version: u64,
    pub initial_margin: f64,
    pub maintenance_margin: f64,
    pub status: String,
    /// Current minus OLD: positive when the current set asks more.
    pub delta_initial_margin: f64,
    pub delta_maintenance_margin: f64,
}

#[derive(Serialize)]
struct ComparedAccount<'a> {
    #[serde(flatten)]
    account: &'a AccountReport,
    compare: &'a Compare,
}

/// The margin report (docs/FORMATS.md) with `compare` added to every account.
#[derive(Serialize)]
struct ComparedReport<'a> {
    as_of: &'a str,
    params_version: u64,
    accounts: Vec<ComparedAccount<'a>>,
}

/// Pairs each account of `current` with its requirement in `old` (same portfolio, so the same
/// ids in the same order; looked up by id all the same).
pub fn compare(
    current: &MarginReport,
    old: &MarginReport,
    old_name: &str,
) -> Result<Vec<Compare>, CliError> {
    let by_id: BTreeMap<&str, &AccountReport> =
        old.accounts.iter().map(|a| (a.id.as_str(), a)).collect();
    current
        .accounts
        .iter()
        .map(|a| {
            let o = by_id.get(a.id.as_str()).ok_or_else(|| {
                CliError::Internal(format!(
                    "account {} has no requirement under {old_name}",
                    a.id
                ))
            })?;
            Ok(Compare {
                params: old_name.to_string(),
                params_version: old.params_version,
                initial_margin: o.initial_margin,
                maintenance_margin: o.maintenance_margin,
                status: o.status.as_str().to_string(),
                delta_initial_margin: a.initial_margin - o.initial_margin,
                delta_maintenance_margin: a.maintenance_margin - o.maintenance_margin,
            })
        })
        .collect()
}

pub fn margin(inputs: &Inputs, old_path: &Path, json: bool) -> Result<String, CliError> {
    let l = inputs.load()?;
    let old_name = old_path.display().to_string();
    let text = std::fs::read_to_string(old_path).map_err(|e| {
        CliError::Input(format!(
            "{old_name}: --compare-params: cannot read the file: {e}"
        ))
    })?;
    let old_params = Params::parse(&old_name, &text)?;
    let history = l.history.as_ref();
    let current = margin_report(
        &l.portfolio,
        &l.market,
        &l.params,
        history,
        ReportOptions::default(),
    )?;
    let old = margin_report(
        &l.portfolio,
        &l.market,
        &old_params,
        history,
        ReportOptions {
            liquidation_prices: false,
        },
    )?;
    let compared = compare(&current, &old, &old_name)?;
    if json {
        let report = ComparedReport {
            as_of: &current.as_of,
            params_version: current.params_version,
            accounts: current
                .accounts
                .iter()
                .zip(&compared)
                .map(|(account, compare)| ComparedAccount { account, compare })
                .collect(),
        };
        return serde_json::to_string_pretty(&report)
            .map(|s| s + "\n")
            .map_err(|e| CliError::Internal(format!("cannot serialise the report: {e}")));
    }
    let mut out = table::margin_table(&current);
    out.push_str(&comparison_table(&current, &compared, &old_name));
    Ok(out)
}

fn signed(x: f64) -> String {
    format!("{}{}", if x >= 0.0 { "+" } else { "" }, table::money(x))
}

fn comparison_table(current: &MarginReport, compared: &[Compare], old_name: &str) -> String {
    let mut rows = vec![[
        "account",
        "IM",
        "IM (old)",
        "IM change",
        "MM",
        "MM (old)",
        "status",
        "status (old)",
    ]
    .map(String::from)
    .to_vec()];
    for (a, c) in current.accounts.iter().zip(compared) {
        rows.push(vec![
            a.id.clone(),
            table::money(a.initial_margin),
            table::money(c.initial_margin),
            signed(c.delta_initial_margin),
            table::money(a.maintenance_margin),
            table::money(c.maintenance_margin),
            a.status.as_str().to_string(),
            c.status.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let version = compared
        .first()
        .map_or(String::new(), |c| format!(", version {}", c.params_version));
    let mut out = format!(
        "\nCompared with {old_name}{version} (current version {}):\n\n",
        current.params_version
    );
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| match c {
                0 | 6 | 7 => format!("{cell:<w$}", w = widths[c]),
                _ => format!("{cell:>w$}", w = widths[c]),
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}
