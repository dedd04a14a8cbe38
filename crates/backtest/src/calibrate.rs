//! Dynamic calibration: a proposed parameter set whose `price_scan_range`s follow each
//! underlying's EWMA volatility, with anti-procyclicality tools. A proposal only: nothing here
//! writes over the parameter set it starts from.
//!
//! **Conversion.** `pmargin_stats::calibration::calibrate_range` gives a range `x` in
//! log-return units: `m * sigma * sqrt(h)` with the tools applied, `m` the quantile at the
//! coverage (per direction). The grid scans simple moves `+/- R` (docs/MODEL.md section 4), and a
//! log move `+x` is the simple move `exp(x) - 1`, a log move `-x` the simple move
//! `-(1 - exp(-x))`. A symmetric range must cover the larger of the two, the up move, so
//! `R = exp(x) - 1` (which also covers the down move: `exp(x) - 1 >= 1 - exp(-x)`). `R` is
//! capped at 1 (the schema's limit; a 100% move).

use crate::{err, Error, Result};
use pmargin_core::{History, Params};
use pmargin_stats::calibration::calibrate_range;
pub use pmargin_stats::calibration::CalibrationConfig;
use pmargin_stats::ewma::log_returns;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The calibration settings a parameter set implies: its `statistical.confidence` as the
/// coverage, its horizon and EWMA decay, a normal quantile and no anti-procyclicality tool.
/// Callers override fields from here (`CalibrationConfig { buffer: 0.25, ..defaults(&p) }`).
pub fn defaults(params: &Params) -> CalibrationConfig {
    CalibrationConfig {
        coverage: params.statistical.confidence,
        horizon_days: f64::from(params.statistical.horizon_days),
        lambda: params.statistical.ewma_lambda,
        ..CalibrationConfig::default()
    }
}

/// One underlying's old and new range and how the new one was reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RangeChange {
    pub underlying: String,
    pub old_range: f64,
    pub new_range: f64,
    /// `new_range - old_range`.
    pub change: f64,
    /// False when the history has no column for it (range unchanged).
    pub calibrated: bool,
    pub current_vol_daily: Option<f64>,
    pub current_vol_annual: Option<f64>,
    pub stressed_vol_daily: Option<f64>,
    pub multiplier: Option<f64>,
    /// Range components in log-return units.
    pub base_log_range: Option<f64>,
    pub blended_log_range: Option<f64>,
    pub buffer_applied: Option<f64>,
    pub floor_log_range: Option<f64>,
    pub floor_binding: Option<bool>,
    pub final_log_range: Option<f64>,
    /// True when the 100% cap set the range.
    pub capped: bool,
}

/// The audit trail written beside the proposed parameter set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rationale {
    pub history: String,
    pub history_last_date: String,
    pub returns: usize,
    pub params: String,
    pub old_version: u64,
    pub new_version: u64,
    pub settings: CalibrationConfig,
    pub conversion: String,
    pub underlyings: Vec<RangeChange>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub params: Params,
    pub rationale: Rationale,
}

/// Simple-return range of a log-return range (module documentation), capped at 1.
pub fn simple_range(log_range: f64) -> (f64, bool) {
    let r = log_range.exp_m1();
    if r > 1.0 {
        (1.0, true)
    } else {
        (r, false)
    }
}

/// Proposes a new parameter set: same as `params` but the scan ranges and `version + 1`.
/// `settings` usually starts from [`defaults`] of `params`.
pub fn calibrate(
    history: &History,
    params: &Params,
    settings: &CalibrationConfig,
) -> Result<Proposal> {
    let mut new = params.clone();
    new.version = params.version + 1;
    let mut changes = Vec::new();
    let mut any = false;
    for (name, u) in &params.underlyings {
        let old = u.price_scan_range;
        let Some(closes) = history.column(name) else {
            changes.push(RangeChange {
                underlying: name.clone(),
                old_range: old,
                new_range: old,
                change: 0.0,
                calibrated: false,
                current_vol_daily: None,
                current_vol_annual: None,
                stressed_vol_daily: None,
                multiplier: None,
                base_log_range: None,
                blended_log_range: None,
                buffer_applied: None,
                floor_log_range: None,
                floor_binding: None,
                final_log_range: None,
                capped: false,
            });
            continue;
        };
        any = true;
        let c = log_returns(closes)
            .and_then(|returns| calibrate_range(&returns, settings))
            .map_err(|e| Error(format!("calibrating {name} from {}: {e}", history.source)))?;
        let (range, capped) = simple_range(c.final_range);
        if let Some(p) = new.underlyings.get_mut(name) {
            p.price_scan_range = range;
        }
        changes.push(RangeChange {
            underlying: name.clone(),
            old_range: old,
            new_range: range,
            change: range - old,
            calibrated: true,
            current_vol_daily: Some(c.current_vol),
            current_vol_annual: Some(c.current_vol * 365f64.sqrt()),
            stressed_vol_daily: Some(c.stressed_vol),
            multiplier: Some(c.multiplier),
            base_log_range: Some(c.base_range),
            blended_log_range: Some(c.blended_range),
            buffer_applied: Some(c.buffer_applied),
            floor_log_range: c.floor,
            floor_binding: Some(c.floor_binding),
            final_log_range: Some(c.final_range),
            capped,
        });
    }
    if !any {
        return err(format!(
            "{}: no column for any underlying of {} ({})",
            history.source,
            params.source,
            params
                .underlyings
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    new.validate(&params.source)?;
    Ok(Proposal {
        params: new,
        rationale: Rationale {
            history: history.source.clone(),
            history_last_date: history
                .dates
                .last()
                .map(|d| d.to_string())
                .unwrap_or_default(),
            returns: history.dates.len() - 1,
            params: params.source.clone(),
            old_version: params.version,
            new_version: params.version + 1,
            settings: settings.clone(),
            conversion: "price_scan_range = exp(final_log_range) - 1, capped at 1: the simple \
                         up move of the calibrated log move, which also covers the down move"
                .to_string(),
            underlyings: changes,
        },
    })
}

impl Proposal {
    /// Old and new side by side.
    pub fn side_by_side(&self) -> String {
        let r = &self.rationale;
        let s_ = &r.settings;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Calibration of {} (v{}) on {} ({} returns, last {}): proposal v{}",
            r.params, r.old_version, r.history, r.returns, r.history_last_date, r.new_version
        );
        let mut tools = Vec::new();
        if s_.stressed_weight > 0.0 {
            tools.push(format!(
                "stressed weight {:.0}%",
                s_.stressed_weight * 100.0
            ));
        }
        if s_.buffer > 0.0 {
            tools.push(format!(
                "buffer {:.0}%{}",
                s_.buffer * 100.0,
                if s_.release_buffer_in_stress {
                    " (released in stress)"
                } else {
                    ""
                }
            ));
        }
        if s_.floor_stressed {
            tools.push(format!(
                "stressed floor ({})",
                s_.stress_lookback
                    .map_or("full history".to_string(), |l| format!("last {l} days"))
            ));
        }
        let _ = writeln!(
            s,
            "coverage {:.2}% per direction, horizon {} day(s), EWMA lambda {}{}; anti-procyclicality: {}",
            s_.coverage * 100.0,
            s_.horizon_days,
            s_.lambda,
            s_.dof.map_or(String::new(), |d| format!(", Student-t dof {d}")),
            if tools.is_empty() { "none".to_string() } else { tools.join(", ") }
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<10} {:>10} {:>10} {:>9} {:>12} {:>12} {:>8} {:>7}",
            "underlying",
            "old range",
            "new range",
            "change",
            "vol (ann.)",
            "stressed",
            "buffer",
            "floor"
        );
        let _ = writeln!(s, "{}", "-".repeat(84));
        for c in &r.underlyings {
            if !c.calibrated {
                let _ = writeln!(
                    s,
                    "{:<10} {:>9.2}% {:>9.2}%   (no history column: unchanged)",
                    c.underlying,
                    c.old_range * 100.0,
                    c.new_range * 100.0
                );
                continue;
            }
            let ann = 365f64.sqrt();
            let _ = writeln!(
                s,
                "{:<10} {:>9.2}% {:>9.2}% {:>+8.2}% {:>11.1}% {:>11.1}% {:>7.0}% {:>7}{}",
                c.underlying,
                c.old_range * 100.0,
                c.new_range * 100.0,
                c.change * 100.0,
                c.current_vol_annual.unwrap_or(0.0) * 100.0,
                c.stressed_vol_daily.unwrap_or(0.0) * ann * 100.0,
                c.buffer_applied.unwrap_or(0.0) * 100.0,
                match c.floor_binding {
                    Some(true) => "binding",
                    Some(false) if c.floor_log_range.is_some() => "no",
                    _ => "-",
                },
                if c.capped { "  (capped at 100%)" } else { "" }
            );
        }
        s
    }

    /// Writes the proposed parameter set to `out` and the rationale beside it
    /// (`<stem>.rationale.json`); refuses to write over `input` (the live set). Returns the
    /// two paths written.
    pub fn write(&self, out: &Path, input: Option<&Path>) -> Result<(PathBuf, PathBuf)> {
        write_proposal(&self.params, &self.rationale, out, input)
    }
}

/// Writes a proposed parameter set to `out` and its rationale beside it
/// (`<stem>.rationale.json`); refuses to write over `input` (the live set). Returns the two
/// paths written.
pub(crate) fn write_proposal<R: serde::Serialize>(
    params: &Params,
    rationale: &R,
    out: &Path,
    input: Option<&Path>,
) -> Result<(PathBuf, PathBuf)> {
    let rationale_path = rationale_path(out);
    if let Some(input) = input {
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        if same(out, input) || same(&rationale_path, input) {
            return err(format!(
                "{}: --out is the input parameter set; a calibration only writes a proposal, \
                 choose another file",
                out.display()
            ));
        }
    }
    let json = params.to_json_pretty();
    // The proposal must read back as a valid parameter set.
    Params::parse(&out.display().to_string(), &json)?;
    let write = |p: &Path, text: String| {
        std::fs::write(p, text + "\n")
            .map_err(|e| Error(format!("{}: cannot write: {e}", p.display())))
    };
    write(out, json)?;
    write(
        &rationale_path,
        serde_json::to_string_pretty(rationale).unwrap_or_default(),
    )?;
    Ok((out.to_path_buf(), rationale_path))
}

/// `proposal.json` -> `proposal.rationale.json`.
pub fn rationale_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "proposal".to_string());
    out.with_file_name(format!("{stem}.rationale.json"))
}
