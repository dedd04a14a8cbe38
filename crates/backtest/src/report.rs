//! The backtest report: per portfolio and model, breaches, coverage, the Kupiec and
//! Christoffersen tests, the Basel traffic light and procyclicality; as JSON for machines
//! and a table for people.

use crate::config::{BacktestConfig, Model};
use crate::portfolios::BacktestPortfolio;
use crate::Result;
use chrono::NaiveDate;
use pmargin_core::{History, Params};
use pmargin_stats::backtest_stats::{self, Zone};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Window of the recent traffic light (the Basel 250-day sample).
pub const RECENT_WINDOW: usize = 250;

/// One day of a backtest: the requirement on `date` and the loss over the following horizon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub date: NaiveDate,
    pub requirement: f64,
    pub loss: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacktestReport {
    pub history: String,
    pub params: String,
    pub params_version: u64,
    /// Target coverage, `statistical.confidence`.
    pub confidence: f64,
    pub horizon_days: usize,
    pub first_date: String,
    pub last_date: String,
    pub vol_rule: String,
    pub portfolios: Vec<PortfolioResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortfolioResult {
    pub id: String,
    pub description: String,
    /// The history this portfolio ran on, and its first and last requirement dates.
    pub history: String,
    pub first_date: String,
    pub last_date: String,
    /// Per underlying of the portfolio: days of its history whose option vol is the implied
    /// vol index (the rest follow the EWMA rule).
    pub implied_vol_days: BTreeMap<String, usize>,
    /// Keyed by model name: `grid`, `fhs`, `mc`.
    pub models: BTreeMap<String, ModelResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breach {
    pub date: String,
    pub requirement: f64,
    pub loss: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Test {
    pub statistic: f64,
    pub p_value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChristoffersenResult {
    pub independence: Test,
    pub conditional_coverage: Test,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcyclicalityResult {
    pub max_1d_increase: Option<f64>,
    pub max_30d_increase: Option<f64>,
    pub peak_to_trough: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelResult {
    pub observations: usize,
    pub breaches: Vec<Breach>,
    pub coverage: f64,
    pub expected_breaches: f64,
    pub kupiec: Test,
    pub christoffersen: ChristoffersenResult,
    /// Basel zone of the whole sample: `green`, `yellow` or `red`.
    pub traffic_light: String,
    /// Basel zone of the last 250 observations (or all, if fewer).
    pub traffic_light_last_250: String,
    pub procyclicality: ProcyclicalityResult,
    pub mean_requirement: f64,
    pub max_loss: f64,
    /// The daily series (for charts); not in the JSON.
    #[serde(skip)]
    pub series: Vec<Observation>,
}

fn zone_name(z: Zone) -> &'static str {
    match z {
        Zone::Green => "green",
        Zone::Yellow => "yellow",
        Zone::Red => "red",
    }
}

/// Statistics of one series at target coverage `confidence`.
pub fn model_result(series: Vec<Observation>, confidence: f64) -> Result<ModelResult> {
    let n = series.len();
    let reqs: Vec<f64> = series.iter().map(|o| o.requirement).collect();
    let losses: Vec<f64> = series.iter().map(|o| o.loss).collect();
    let indicators = backtest_stats::breach_indicators(&reqs, &losses)?;
    let b = indicators.iter().filter(|&&x| x).count();
    let kupiec = backtest_stats::kupiec(n, b, confidence)?;
    let christoffersen = if n >= 2 {
        let c = backtest_stats::christoffersen(&indicators, confidence)?;
        ChristoffersenResult {
            independence: Test {
                statistic: c.independence.statistic,
                p_value: c.independence.p_value,
            },
            conditional_coverage: Test {
                statistic: c.conditional_coverage.statistic,
                p_value: c.conditional_coverage.p_value,
            },
        }
    } else {
        // One observation has no transition: no evidence of clustering.
        let none = Test {
            statistic: 0.0,
            p_value: 1.0,
        };
        ChristoffersenResult {
            independence: none,
            conditional_coverage: Test {
                statistic: kupiec.statistic,
                p_value: kupiec.p_value,
            },
        }
    };
    let zone = backtest_stats::traffic_light(n, b, confidence)?;
    let recent = &indicators[n.saturating_sub(RECENT_WINDOW)..];
    let recent_zone = backtest_stats::traffic_light(
        recent.len(),
        recent.iter().filter(|&&x| x).count(),
        confidence,
    )?;
    let p = backtest_stats::procyclicality(&reqs)?;
    Ok(ModelResult {
        observations: n,
        breaches: series
            .iter()
            .zip(&indicators)
            .filter(|(_, &b)| b)
            .map(|(o, _)| Breach {
                date: o.date.to_string(),
                requirement: o.requirement,
                loss: o.loss,
            })
            .collect(),
        coverage: 1.0 - b as f64 / n as f64,
        expected_breaches: n as f64 * (1.0 - confidence),
        kupiec: Test {
            statistic: kupiec.statistic,
            p_value: kupiec.p_value,
        },
        christoffersen,
        traffic_light: zone_name(zone).to_string(),
        traffic_light_last_250: zone_name(recent_zone).to_string(),
        procyclicality: ProcyclicalityResult {
            max_1d_increase: p.max_1d_increase,
            max_30d_increase: p.max_30d_increase,
            peak_to_trough: p.peak_to_trough,
        },
        mean_requirement: reqs.iter().sum::<f64>() / n as f64,
        max_loss: losses.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        series,
    })
}

/// Each portfolio with its daily observations per model.
pub(crate) type Series<'a> = Vec<(&'a BacktestPortfolio, Vec<(Model, Vec<Observation>)>)>;

/// The option vol rule in words, naming the implied vol source.
pub fn vol_rule(config: &BacktestConfig, params: &Params) -> String {
    let ewma = format!(
        "flat option vol = max({:.0}%, sqrt(365) x EWMA(lambda {}) daily vol of returns up to the day)",
        config.vol_floor * 100.0,
        params.statistical.ewma_lambda
    );
    match &config.implied_vols {
        None => ewma,
        Some(iv) => format!(
            "implied vol: {}, {}; every option of the underlying at the day's index level, flat \
             across strikes and tenors (no skew, no term structure); on days without it: {ewma}",
            iv.source,
            iv.series
                .iter()
                .map(|(u, d)| format!(
                    "{u} {} .. {}",
                    d.dates.first().map(|x| x.to_string()).unwrap_or_default(),
                    d.dates.last().map(|x| x.to_string()).unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Joins reports of groups of portfolios (`(indices into the original list, report)`) into
/// one, portfolios back in their original order.
pub(crate) fn merge(reports: Vec<(Vec<usize>, BacktestReport)>, count: usize) -> BacktestReport {
    let mut slots: Vec<Option<PortfolioResult>> = vec![None; count];
    let mut histories = Vec::new();
    let mut rules: Vec<String> = Vec::new();
    let mut first: Option<String> = None;
    let mut last: Option<String> = None;
    let mut base = None;
    for (indices, r) in reports {
        histories.push(r.history.clone());
        if !rules.contains(&r.vol_rule) {
            rules.push(r.vol_rule.clone());
        }
        if first.as_ref().is_none_or(|f| r.first_date < *f) {
            first = Some(r.first_date.clone());
        }
        if last.as_ref().is_none_or(|l| r.last_date > *l) {
            last = Some(r.last_date.clone());
        }
        for (i, p) in indices.into_iter().zip(r.portfolios.iter().cloned()) {
            slots[i] = Some(p);
        }
        base.get_or_insert(r);
    }
    let Some(mut out) = base else {
        return BacktestReport {
            history: String::new(),
            params: String::new(),
            params_version: 0,
            confidence: 0.0,
            horizon_days: 0,
            first_date: String::new(),
            last_date: String::new(),
            vol_rule: String::new(),
            portfolios: Vec::new(),
        };
    };
    out.history = histories.join(" + ");
    out.first_date = first.unwrap_or_default();
    out.last_date = last.unwrap_or_default();
    // Every group runs with the same config and parameters: one rule unless a caller mixes.
    out.vol_rule = rules.join(" | ");
    out.portfolios = slots.into_iter().flatten().collect();
    out
}

pub(crate) fn build(
    history: &History,
    params: &Params,
    horizon: usize,
    config: &BacktestConfig,
    implied_rows: &[(String, usize)],
    series: Series<'_>,
) -> Result<BacktestReport> {
    let confidence = params.statistical.confidence;
    let mut first = None;
    let mut last = None;
    let mut portfolios = Vec::with_capacity(series.len());
    for (p, models) in series {
        let mut out = BTreeMap::new();
        let (mut p_first, mut p_last) = (None, None);
        for (model, obs) in models {
            p_first = p_first.or(obs.first().map(|o| o.date));
            p_last = p_last.or(obs.last().map(|o| o.date));
            out.insert(model.name().to_string(), model_result(obs, confidence)?);
        }
        first = first.or(p_first);
        last = last.or(p_last);
        portfolios.push(PortfolioResult {
            id: p.id.clone(),
            description: p.description.clone(),
            history: history.source.clone(),
            first_date: p_first.map(|d| d.to_string()).unwrap_or_default(),
            last_date: p_last.map(|d| d.to_string()).unwrap_or_default(),
            implied_vol_days: p
                .underlyings()
                .into_iter()
                .map(|u| {
                    let n = implied_rows
                        .iter()
                        .find(|(x, _)| *x == u)
                        .map_or(0, |(_, n)| *n);
                    (u, n)
                })
                .collect(),
            models: out,
        });
    }
    Ok(BacktestReport {
        history: history.source.clone(),
        params: params.source.clone(),
        params_version: params.version,
        confidence,
        horizon_days: horizon,
        first_date: first.map(|d| d.to_string()).unwrap_or_default(),
        last_date: last.map(|d| d.to_string()).unwrap_or_default(),
        vol_rule: vol_rule(config, params),
        portfolios,
    })
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".to_string(), |v| format!("{:+.1}%", v * 100.0))
}

impl BacktestReport {
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The readable summary: one line per portfolio and model.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Backtest {} .. {}: {} (params v{} {}), horizon {} day(s), target coverage {:.2}%",
            self.first_date,
            self.last_date,
            self.history,
            self.params_version,
            self.params,
            self.horizon_days,
            self.confidence * 100.0
        );
        let _ = writeln!(s, "Option vol rule: {}", self.vol_rule);
        if self.portfolios.iter().any(|p| p.history != self.history) {
            let _ = writeln!(
                s,
                "Each portfolio on the first history with all its underlyings:"
            );
            for p in &self.portfolios {
                let iv: Vec<String> = p
                    .implied_vol_days
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(u, n)| format!("{u} {n}"))
                    .collect();
                let _ = writeln!(
                    s,
                    "  {:<16} {} .. {} on {}{}",
                    p.id,
                    p.first_date,
                    p.last_date,
                    p.history,
                    if iv.is_empty() {
                        String::new()
                    } else {
                        format!(" (days at implied vol: {})", iv.join(", "))
                    }
                );
            }
        }
        let _ = writeln!(s);
        let header = [
            "portfolio",
            "model",
            "obs",
            "breaches",
            "expected",
            "coverage",
            "Kupiec p",
            "Chr. ind p",
            "Chr. cc p",
            "zone",
            "zone 250d",
            "max 1d",
            "max 30d",
            "peak/trough",
        ];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
        for p in &self.portfolios {
            for model in ["grid", "fhs", "mc"] {
                let Some(r) = p.models.get(model) else {
                    continue;
                };
                rows.push(vec![
                    p.id.clone(),
                    model.to_string(),
                    r.observations.to_string(),
                    r.breaches.len().to_string(),
                    format!("{:.1}", r.expected_breaches),
                    format!("{:.2}%", r.coverage * 100.0),
                    format!("{:.3}", r.kupiec.p_value),
                    format!("{:.3}", r.christoffersen.independence.p_value),
                    format!("{:.3}", r.christoffersen.conditional_coverage.p_value),
                    r.traffic_light.clone(),
                    r.traffic_light_last_250.clone(),
                    pct(r.procyclicality.max_1d_increase),
                    pct(r.procyclicality.max_30d_increase),
                    r.procyclicality
                        .peak_to_trough
                        .map_or("-".into(), |v| format!("{v:.1}")),
                ]);
            }
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for (i, row) in rows.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    if c < 2 {
                        format!("{cell:<w$}", w = widths[c])
                    } else {
                        format!("{cell:>w$}", w = widths[c])
                    }
                })
                .collect();
            let _ = writeln!(s, "{}", line.join("  ").trim_end());
            if i == 0 {
                let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
                let _ = writeln!(s, "{}", "-".repeat(total));
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "A breach is a loss over the horizon above the requirement. Kupiec: breach count vs target; \
             Christoffersen: breach clustering (ind) and both (cc); p < 0.05 rejects the model. \
             Zone: Basel traffic light on the binomial breach count."
        );
        s
    }
}
