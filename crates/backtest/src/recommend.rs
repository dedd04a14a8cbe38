//! The recommended version 2 parameter set: every value from the bundled real data by a stated
//! rule (`pmargin calibrate --recommend`). A proposal like any calibration: it is written beside
//! the base set, never over it, with a rationale naming each value's data and rule.
//!
//! | parameter | rule |
//! |---|---|
//! | `price_scan_range` | through the cycle: the larger of the 99% rise and 99% fall over the horizon, whole history |
//! | `vol_scan_up` / `vol_scan_down` | the 99% rise / fall of the DVOL index over the horizon, in vol points |
//! | `vol_power_short` = `vol_power_long` | `1/2 - H`, `H` the slope of ln q99(abs. log DVOL change over h days) on ln h, h = 1..30 |
//! | `vol_tenor_days` | 30, DVOL's tenor |
//! | `basis_contingency` | max over the stress days of a day's funding at the worst rate plus the perpetual's gap beyond every spot print |
//! | `grid.extended_moves` | the largest fall and rise of BTC over 1 to 3 days, vol up, each with the cover that charges a linear position what the extreme rows do |
//! | stablecoin `haircut` | `1 - lowest daily close` over every bundled file of the coin |
//!
//! Values are rounded up (moves outward) to 4 decimals so that a rounding never makes the set
//! less conservative than its rule.

use crate::data::RealData;
use crate::{err, Error, Result};
use chrono::NaiveDate;
use pmargin_core::input::params::{ExtendedMove, VolDirection};
use pmargin_core::Params;
use pmargin_stats::calibration::{
    basis_stress, depeg, extended_cover, extreme_moves, through_the_cycle_range, vol_scaling,
    vol_scan,
};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The crash days the basis contingency is sized on (MODEL.md issue 16): Black Thursday, the
/// May 2021 deleveraging and the FTX collapse.
pub const STRESS_DAYS: [&str; 3] = ["2020-03-12", "2021-05-19", "2022-11-09"];
/// Longest window of the extended moves, in days: a large book liquidated in a crash takes
/// days, not hours (FTX: 2022-11-06 .. 11-09).
pub const EXTENDED_DAYS: usize = 3;
/// Horizons of the DVOL scaling fit: one day to DVOL's own tenor.
pub const VOL_HORIZONS: usize = 30;
/// DVOL's tenor, in days.
pub const DVOL_TENOR_DAYS: f64 = 30.0;
/// Funding periods per day (8-hourly).
pub const FUNDING_PERIODS: f64 = 3.0;

/// One derived value and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Derivation {
    /// JSON path in the parameter set (`underlyings.BTC.price_scan_range`).
    pub parameter: String,
    /// The value before (absent where the base had none).
    pub old: Option<f64>,
    pub value: f64,
    pub data: String,
    pub rule: String,
    /// The numbers the rule took (quantiles, dates, components).
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecommendRationale {
    pub base: String,
    pub old_version: u64,
    pub new_version: u64,
    pub coverage: f64,
    pub horizon_days: u32,
    pub derivations: Vec<Derivation>,
    /// What the data show but the set does not use, and why.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub params: Params,
    pub rationale: RecommendRationale,
}

/// `x` rounded up to 4 decimals (an exact multiple of 1e-4 stays put).
pub fn ceil4(x: f64) -> f64 {
    (x * 1e4 - 1e-7).ceil() / 1e4
}

fn day(s: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| Error(format!("bad date {s}")))
}

fn stats<T>(what: &str, r: pmargin_stats::Result<T>) -> Result<T> {
    r.map_err(|e| Error(format!("{what}: {e}")))
}

/// The basis stress of each stress day: `(day, funding, dislocation, total)`.
pub fn basis_by_day(data: &RealData) -> Result<Vec<(NaiveDate, f64, f64, f64)>> {
    let mut out = Vec::new();
    for s in STRESS_DAYS {
        let d = day(s)?;
        let next = d + chrono::Days::new(1);
        let rates = data.funding.between(d, next);
        if rates.is_empty() {
            return err(format!(
                "{}: no funding on {d} or {next}",
                data.funding.source
            ));
        }
        let Some([low, high]) = data.perp.get(d) else {
            return err(format!("{}: no candle for {d}", data.perp.source));
        };
        // The spot's two calendar days contain the perpetual's 08:00-08:00 candle, so a perp
        // print beyond both days' range is beyond every spot print of its own window.
        let spot = match (data.spot.get(d), data.spot.get(next)) {
            (Some([l1, h1]), Some([l2, h2])) => Some((l1.min(l2), h1.max(h2))),
            _ => None,
        };
        let b = stats(
            "basis stress",
            basis_stress(&rates, FUNDING_PERIODS, (low, high), spot),
        )?;
        out.push((d, b.funding, b.dislocation, b.total));
    }
    Ok(out)
}

/// Derives the recommended version 2 set from `base` (see the module documentation). Every
/// underlying of `base` with bundled closes gets its scan range; with DVOL, its vol scans and
/// powers; one without data keeps its scan values and takes the largest power and basis of
/// the calibrated ones.
pub fn recommend(data: &RealData, base: &Params) -> Result<Recommendation> {
    recommend_with(data, base, false)
}

/// [`recommend`], or with `keep_scans` the version 2 rules on top of `base`'s own scan ranges
/// and vol scans (for a book whose leverage was built on them, as the cascade demo's is): the
/// tenor powers, basis contingency, extended moves (their cover from `base`'s ranges) and
/// haircuts are derived, the scans are not.
pub fn recommend_with(data: &RealData, base: &Params, keep_scans: bool) -> Result<Recommendation> {
    let coverage = base.statistical.confidence;
    let horizon = base.statistical.horizon_days as usize;
    let mut new = base.clone();
    new.version = base.version + 1;
    let mut derivations = Vec::new();
    let mut notes = Vec::new();
    let mut push = |parameter: String,
                    old: Option<f64>,
                    value: f64,
                    data: &str,
                    rule: &str,
                    detail: String| {
        derivations.push(Derivation {
            parameter,
            old,
            value,
            data: data.to_string(),
            rule: rule.to_string(),
            detail,
        })
    };

    // Basis: BTC's perpetual is the only one in the data.
    let by_day = basis_by_day(data)?;
    let (worst_day, _, _, worst) =
        by_day
            .iter()
            .copied()
            .fold((NaiveDate::MIN, 0.0, 0.0, f64::NEG_INFINITY), |a, b| {
                if b.3 > a.3 {
                    b
                } else {
                    a
                }
            });
    let basis = ceil4(worst);
    let basis_detail = by_day
        .iter()
        .map(|(d, f, x, t)| {
            format!(
                "{d}: funding {:.4}% + gap {:.4}% = {:.4}%",
                f * 100.0,
                x * 100.0,
                t * 100.0
            )
        })
        .collect::<Vec<_>>()
        .join("; ");

    let mut calibrated_powers = Vec::new();
    let mut ranges = Vec::new();
    let names: Vec<String> = base.underlyings.keys().cloned().collect();
    for u in &names {
        let old = base.underlyings[u].clone();
        let p = new
            .underlyings
            .get_mut(u)
            .ok_or_else(|| Error(format!("underlying {u} vanished")))?;
        let path = |f: &str| format!("underlyings.{u}.{f}");
        if keep_scans {
            notes.push(format!(
                "{u}: scan ranges and vol scans kept from the base set"
            ));
        } else if let Some(h) = data.closes.get(u) {
            let closes = h
                .column(u)
                .ok_or_else(|| Error(format!("{}: no column {u}", h.source)))?;
            let m = stats(u, through_the_cycle_range(closes, coverage, horizon))?;
            p.price_scan_range = ceil4(m.range);
            push(
                path("price_scan_range"),
                Some(old.price_scan_range),
                p.price_scan_range,
                &format!(
                    "{} {} .. {}",
                    h.source,
                    h.dates.first().map(|d| d.to_string()).unwrap_or_default(),
                    h.dates.last().map(|d| d.to_string()).unwrap_or_default()
                ),
                "max(q99 of the rises, q99 of the falls) of the simple moves over the horizon, \
                 whole history (through the cycle)",
                format!(
                    "{} moves: q99 rise {:.4}%, q99 fall {:.4}%",
                    m.moves,
                    m.up * 100.0,
                    m.down * 100.0
                ),
            );
        } else {
            notes.push(format!(
                "{u}: no bundled price history: price_scan_range and the vol scans keep the base \
                 values"
            ));
        }
        ranges.push(p.price_scan_range);
        if let Some(iv) = data.dvol.get(u) {
            let (up, down) = stats(u, vol_scan(&iv.values, coverage, horizon))?;
            let scaling = stats(u, vol_scaling(&iv.values, coverage, VOL_HORIZONS))?;
            let span = format!(
                "{} {} .. {}",
                iv.source,
                iv.dates.first().map(|d| d.to_string()).unwrap_or_default(),
                iv.dates.last().map(|d| d.to_string()).unwrap_or_default()
            );
            if !keep_scans {
                p.vol_scan_up = ceil4(up);
                p.vol_scan_down = ceil4(down);
            }
            p.vol_tenor_days = DVOL_TENOR_DAYS;
            let power = ceil4(scaling.power);
            p.vol_power_short = power;
            p.vol_power_long = power;
            calibrated_powers.push(power);
            if !keep_scans {
                push(
                    path("vol_scan_up"),
                    Some(old.vol_scan_up),
                    p.vol_scan_up,
                    &span,
                    "q99 of the DVOL rises over the horizon (vol points / 100), applied at DVOL's \
                 30-day tenor",
                    format!("{} daily changes", iv.values.len().saturating_sub(horizon)),
                );
                push(
                    path("vol_scan_down"),
                    Some(old.vol_scan_down),
                    p.vol_scan_down,
                    &span,
                    "q99 of the DVOL falls over the horizon (vol points / 100)",
                    String::new(),
                );
            }
            let q = |h: usize| {
                scaling
                    .quantiles
                    .get(h - 1)
                    .map_or(0.0, |(_, q)| *q * 100.0)
            };
            let detail = format!(
                "H = {:.4}; q99 |dln DVOL|: 1d {:.2}%, 2d {:.2}%, 5d {:.2}%, 10d {:.2}%, 30d {:.2}%",
                scaling.hurst,
                q(1),
                q(2),
                q(5),
                q(10),
                q(30)
            );
            let rule = "1/2 - H, H the least-squares slope of ln q99(|ln DVOL_{t+h} / DVOL_t|) \
                        on ln h for h = 1..30 days (rough volatility: a T-day implied vol moves \
                        as T^(H - 1/2)); the same power short and long";
            push(
                path("vol_power_short"),
                Some(old.vol_power_short),
                power,
                &span,
                rule,
                detail.clone(),
            );
            push(
                path("vol_power_long"),
                Some(old.vol_power_long),
                power,
                &span,
                rule,
                detail,
            );
            push(
                path("vol_tenor_days"),
                Some(old.vol_tenor_days),
                DVOL_TENOR_DAYS,
                &span,
                "DVOL's tenor: the vol scans are measured on 30-day implied vol",
                String::new(),
            );
        }
        p.basis_contingency = basis;
        push(
            path("basis_contingency"),
            Some(old.basis_contingency),
            basis,
            &format!(
                "{}; {}; {}",
                data.funding.source, data.perp.source, data.spot.source
            ),
            "max over 2020-03-12, 2021-05-19, 2022-11-09 of: 3 x the largest |mean 8h funding| \
             of the day and the next + how far the Deribit perpetual's candle low (high) fell \
             below (rose above) every spot print of the two calendar days (0 where no spot \
             low/high is bundled); BTC's perpetual for every underlying",
            format!("{basis_detail}; worst {worst_day}"),
        );
    }
    // An underlying without DVOL takes the largest calibrated power.
    if let Some(power) = calibrated_powers.iter().copied().reduce(f64::max) {
        for u in &names {
            if !data.dvol.contains_key(u) {
                if let Some(p) = new.underlyings.get_mut(u) {
                    p.vol_power_short = power;
                    p.vol_power_long = power;
                    p.vol_tenor_days = DVOL_TENOR_DAYS;
                }
                notes.push(format!(
                    "{u}: no implied vol index: vol powers {power} (the largest calibrated)"
                ));
            }
        }
    }

    // Extended moves from the longest BTC history.
    let btc = data
        .closes
        .get("BTC")
        .ok_or_else(|| Error("no BTC history for the extended moves".into()))?;
    let closes = btc
        .column("BTC")
        .ok_or_else(|| Error(format!("{}: no column BTC", btc.source)))?;
    let (fall, rise) = stats("extended moves", extreme_moves(closes, EXTENDED_DAYS))?;
    let min_range = ranges.iter().copied().fold(f64::INFINITY, f64::min);
    let g = &base.grid;
    let mut extended = Vec::new();
    for (m, label) in [(fall, "fall"), (rise, "rise")] {
        // Outward: a fall rounds down, a rise up.
        let value = if m.value < 0.0 {
            -ceil4(-m.value)
        } else {
            ceil4(m.value)
        };
        let cover = ceil4(stats(
            "extended cover",
            extended_cover(g.extreme_cover, g.extreme_multiple, min_range, value),
        )?)
        .min(1.0);
        let from = btc.dates[m.start];
        let to = btc.dates[m.start + m.days];
        push(
            format!("grid.extended_moves[{}].move", extended.len()),
            None,
            value,
            &format!(
                "{} {} .. {}",
                btc.source,
                btc.dates[0],
                btc.dates[btc.dates.len() - 1]
            ),
            &format!(
                "the largest {label} of BTC over 1 to {EXTENDED_DAYS} days, whole history; vol \
                 up (DVOL rose in the largest 3-day falls and rises since 2021)"
            ),
            format!("{from} .. {to} ({} days)", m.days),
        );
        push(
            format!("grid.extended_moves[{}].cover", extended.len()),
            None,
            cover,
            "the set's own grid and scan ranges",
            "min(1, extreme_cover x extreme_multiple x smallest price_scan_range / |move|): a \
             linear position pays on the extended row what it pays on the extreme rows, so the \
             row bites only on positions that lose faster than the move (short options)",
            format!(
                "{} x {} x {:.4} / {:.4}",
                g.extreme_cover,
                g.extreme_multiple,
                min_range,
                value.abs()
            ),
        );
        extended.push(ExtendedMove {
            price_move: value,
            vol: VolDirection::Up,
            cover,
        });
    }
    new.grid.extended_moves = extended;

    // Stablecoin haircuts.
    for (coin, files) in &data.stablecoins {
        let mut worst = (0.0f64, String::new());
        for f in files {
            let (d, i) = stats(coin, depeg(&f.values))?;
            if d > worst.0 || worst.1.is_empty() {
                worst = (
                    d,
                    format!("{} close {:.4} on {}", f.source, 1.0 - d, f.dates[i]),
                );
            }
        }
        if coin == "USTC" {
            notes.push(format!(
                "UST (USTC), an algorithmic stablecoin: lowest close {} (a {:.1}% de-peg, \
                 2022-05); no haircut below 1 covers it, so it is not accepted as collateral",
                worst.1,
                worst.0 * 100.0
            ));
            continue;
        }
        let haircut = ceil4(worst.0);
        let old = base.collateral.get(coin).map(|c| c.haircut);
        let entry = new.collateral.entry(coin.clone()).or_insert_with(|| {
            pmargin_core::input::params::CollateralParams {
                haircut: 0.0,
                underlying: None,
            }
        });
        if entry.underlying.is_some() {
            return err(format!(
                "collateral {coin} moves with an underlying: not a stablecoin"
            ));
        }
        entry.haircut = haircut;
        push(
            format!("collateral.{coin}.haircut"),
            old,
            haircut,
            &files
                .iter()
                .map(|f| f.source.clone())
                .collect::<Vec<_>>()
                .join("; "),
            "1 - the lowest daily close in the data: the de-peg a venue valuing the coin at 1 \
             would have missed at a daily close",
            worst.1,
        );
    }
    notes.push(
        "option_contingency, oracle_confidence_multiple and liquidity_coefficient stay 0: the \
         bundle has no data to size them (no short-option liquidation costs, oracle confidence \
         history or order book depth)"
            .to_string(),
    );
    new.validate(&base.source)?;
    Ok(Recommendation {
        params: new,
        rationale: RecommendRationale {
            base: base.source.clone(),
            old_version: base.version,
            new_version: base.version + 1,
            coverage,
            horizon_days: base.statistical.horizon_days,
            derivations,
            notes,
        },
    })
}

impl Recommendation {
    /// The derivations as a table: parameter, old, new, rule.
    pub fn table(&self) -> String {
        let r = &self.rationale;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Recommended version 2 set from {} (v{} -> v{}), coverage {:.2}%, horizon {} day(s)",
            r.base,
            r.old_version,
            r.new_version,
            r.coverage * 100.0,
            r.horizon_days
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "{:<42} {:>10} {:>10}  detail", "parameter", "old", "new");
        let _ = writeln!(s, "{}", "-".repeat(100));
        for d in &r.derivations {
            let _ = writeln!(
                s,
                "{:<42} {:>10} {:>10}  {}",
                d.parameter,
                d.old.map_or("-".to_string(), |v| format!("{v}")),
                format!("{}", d.value),
                d.detail
            );
        }
        if !r.notes.is_empty() {
            let _ = writeln!(s);
            for n in &r.notes {
                let _ = writeln!(s, "note: {n}");
            }
        }
        s
    }

    /// Writes the set to `out` and the rationale beside it (`<stem>.rationale.json`), refusing
    /// to write over `input`. Returns the two paths.
    pub fn write(&self, out: &Path, input: Option<&Path>) -> Result<(PathBuf, PathBuf)> {
        crate::calibrate::write_proposal(&self.params, &self.rationale, out, input)
    }
}
