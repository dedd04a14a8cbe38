//! Calibrating the price scan range from volatility, with
//! anti-procyclicality (APC) protections.
//!
//! Why: the scan range is how far prices are assumed to move over the
//! liquidation horizon; margin is the worst loss within it. Sizing it from
//! the current EWMA volatility makes margin accurate today but procyclical:
//! it is lowest after long calm periods and jumps exactly when markets turn
//! and members are least able to pay. Regulators (EMIR RTS 153/2013 art. 28)
//! ask clearinghouses to dampen this with one of three tools, all offered
//! here and combinable:
//!
//! * a **buffer** (e.g. 25%) added on top in normal times, which may be
//!   released when markets become stressed, so the first part of a vol spike
//!   is absorbed by margin already collected;
//! * a **stressed weight**: blend the current volatility with the largest
//!   volatility of a long lookback (e.g. 25% weight), so margin never forgets
//!   past crises entirely;
//! * a **stressed floor**: never go below the range the stressed volatility
//!   would give (e.g. over a 10-year lookback).
//!
//! Formula (all in log-return units; the scan prices are
//! `spot * exp(-range)` and `spot * exp(+range)`):
//!
//! * `m` = standard normal quantile at `coverage` (e.g. 2.326 at 99%),
//!   or, if `dof` is set, the Student-t quantile rescaled to unit variance
//!   `sqrt((dof-2)/dof) * t_dof^{-1}(coverage)` — so `m * sigma` is still the
//!   coverage quantile of a move whose standard deviation is `sigma`.
//!   Coverage is per direction: a down move (and, separately, an up move)
//!   exceeds the range with probability `1 - coverage`.
//! * `sigma_c` = EWMA volatility forecast (last value of
//!   [`ewma_variances`], square-rooted);
//!   `sigma_s` = largest EWMA volatility over the lookback window of past
//!   days (the forecast itself excluded, so "current above stressed" means a
//!   new extreme).
//! * `base = m * sigma_c * sqrt(h)`;
//!   `blended = m * (w sigma_s + (1 - w) sigma_c) * sqrt(h)`;
//!   `buffered = blended * (1 + buffer_applied)`, where `buffer_applied =
//!   buffer`, or 0 when `release_buffer_in_stress` and `sigma_c >= sigma_s`;
//!   `floor = m * sigma_s * sqrt(h)` if `floor_stressed`;
//!   `final = max(buffered, floor)`.

use crate::ewma::ewma_variances;
use crate::montecarlo::student_t_unit_quantile;
use crate::validate::{closed_interval, finite_slice, min_len, open_interval};
use crate::{Result, StatsError};
use statrs::distribution::{ContinuousCDF, Normal};

/// Settings for [`calibrate_range`]. The default has all anti-procyclicality
/// tools off, so each one is switched on deliberately. Serialised as is in a
/// calibration's rationale (`settings`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CalibrationConfig {
    /// Share of moves the range must cover, per direction (e.g. 0.99).
    pub coverage: f64,
    /// Liquidation horizon in days (margin period of risk).
    pub horizon_days: f64,
    /// EWMA decay factor.
    pub lambda: f64,
    /// `None`: normal quantile. `Some(dof)`: unit-variance Student-t quantile
    /// (fatter tails, wider range at high coverage). `dof > 2`.
    pub dof: Option<f64>,
    /// Apply the stressed floor.
    pub floor_stressed: bool,
    /// Number of most recent past EWMA estimates searched for the stressed
    /// volatility (e.g. 3650 for ten years of daily crypto data); `None` =
    /// the whole history.
    pub stress_lookback: Option<usize>,
    /// APC buffer as a fraction (0.25 = +25%), 0 for none.
    pub buffer: f64,
    /// Drop the buffer when current volatility reaches the stressed one.
    pub release_buffer_in_stress: bool,
    /// Weight `w` of the stressed volatility in the blend, in `[0, 1]`.
    pub stressed_weight: f64,
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        Self {
            coverage: 0.99,
            horizon_days: 1.0,
            lambda: 0.94,
            dof: None,
            floor_stressed: false,
            stress_lookback: None,
            buffer: 0.0,
            release_buffer_in_stress: false,
            stressed_weight: 0.0,
        }
    }
}

/// The calibrated range and every component, for the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Quantile multiplier `m`.
    pub multiplier: f64,
    /// Current EWMA daily volatility forecast `sigma_c`.
    pub current_vol: f64,
    /// Largest EWMA daily volatility in the lookback `sigma_s`.
    pub stressed_vol: f64,
    /// `m * sigma_c * sqrt(h)`: the range without any APC tool.
    pub base_range: f64,
    /// `m * (w sigma_s + (1-w) sigma_c) * sqrt(h)`.
    pub blended_range: f64,
    /// Buffer fraction actually applied (0 if none or released).
    pub buffer_applied: f64,
    /// Stressed floor `m * sigma_s * sqrt(h)`, if enabled.
    pub floor: Option<f64>,
    /// True when the floor set the final range.
    pub floor_binding: bool,
    /// The range to use, in log-return units.
    pub final_range: f64,
}

/// A one-sided coverage: strictly between 0.5 and 1.
fn coverage_in_range(coverage: f64) -> Result<()> {
    open_interval(
        "coverage",
        coverage,
        0.5,
        1.0,
        "coverage must lie strictly between 0.5 and 1",
    )
}

/// A coverage, and a horizon of at least one row, for quantiles of moves over the horizon.
fn coverage_and_horizon(coverage: f64, horizon: usize) -> Result<()> {
    coverage_in_range(coverage)?;
    if horizon == 0 {
        return Err(StatsError::InvalidParameter {
            name: "horizon",
            value: 0.0,
            requirement: "the horizon is at least one row",
        });
    }
    Ok(())
}

fn validate(cfg: &CalibrationConfig) -> Result<()> {
    coverage_in_range(cfg.coverage)?;
    open_interval(
        "horizon_days",
        cfg.horizon_days,
        0.0,
        f64::INFINITY,
        "horizon must be a positive number of days",
    )?;
    closed_interval(
        "buffer",
        cfg.buffer,
        0.0,
        f64::MAX,
        "buffer must be a finite non-negative fraction",
    )?;
    closed_interval(
        "stressed_weight",
        cfg.stressed_weight,
        0.0,
        1.0,
        "stressed weight must lie in [0, 1]",
    )?;
    if cfg.stress_lookback == Some(0) {
        return Err(StatsError::InvalidParameter {
            name: "stress_lookback",
            value: 0.0,
            requirement: "lookback must cover at least one day (or be None for all history)",
        });
    }
    Ok(())
}

/// Quantile multiplier `m` for the coverage (see module docs).
pub fn range_multiplier(coverage: f64, dof: Option<f64>) -> Result<f64> {
    coverage_in_range(coverage)?;
    match dof {
        Some(dof) => student_t_unit_quantile(coverage, dof),
        None => Ok(Normal::standard().inverse_cdf(coverage)),
    }
}

/// Calibrates the scan range from a daily log-return history (oldest first).
/// See the module documentation for the formula.
pub fn calibrate_range(returns: &[f64], cfg: &CalibrationConfig) -> Result<Calibration> {
    validate(cfg)?;
    let multiplier = range_multiplier(cfg.coverage, cfg.dof)?;
    let variances = ewma_variances(returns, cfg.lambda)?;
    // variances = s2_1 ..= s2_{N+1}; the last is the forecast.
    let (forecast, past) = match variances.split_last() {
        Some((f, p)) => (*f, p),
        None => {
            return Err(StatsError::TooShort {
                what: "returns",
                needed: 1,
                got: 0,
            })
        }
    };
    let window = match cfg.stress_lookback {
        Some(l) => &past[past.len().saturating_sub(l)..],
        None => past,
    };
    let current_vol = forecast.sqrt();
    let stressed_vol = window.iter().copied().fold(0.0, f64::max).sqrt();
    let sqrt_h = cfg.horizon_days.sqrt();
    let w = cfg.stressed_weight;
    let base_range = multiplier * current_vol * sqrt_h;
    let blended_range = multiplier * (w * stressed_vol + (1.0 - w) * current_vol) * sqrt_h;
    let released = cfg.release_buffer_in_stress && current_vol >= stressed_vol;
    let buffer_applied = if released { 0.0 } else { cfg.buffer };
    let buffered = blended_range * (1.0 + buffer_applied);
    let floor = cfg
        .floor_stressed
        .then_some(multiplier * stressed_vol * sqrt_h);
    let (final_range, floor_binding) = match floor {
        Some(f) if f > buffered => (f, true),
        _ => (buffered, false),
    };
    if !final_range.is_finite() {
        return Err(StatsError::Degenerate {
            what: "calibrate_range",
            reason: "range is not finite (returns too large?)",
        });
    }
    Ok(Calibration {
        multiplier,
        current_vol,
        stressed_vol,
        base_range,
        blended_range,
        buffer_applied,
        floor,
        floor_binding,
        final_range,
    })
}

// ---------------------------------------------------------------------------------------------
// Version 2: the rules that derive the recommended parameter set from real market data
// (docs/MODEL.md sections 9-11). Each takes plain series and returns the number with what it came
// from, so the audit trail can quote it.
// ---------------------------------------------------------------------------------------------

/// Quantile `p` of `values` by linear interpolation between order statistics (Hyndman-Fan
/// type 7, the default of R and numpy): position `p (n - 1)` in the sorted values.
pub fn quantile(values: &[f64], p: f64) -> Result<f64> {
    min_len("quantile values", values.len(), 1)?;
    finite_slice("quantile values", values)?;
    closed_interval("p", p, 0.0, 1.0, "a quantile level lies in [0, 1]")?;
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = p * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    Ok(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

fn positive_prices(what: &'static str, closes: &[f64]) -> Result<()> {
    finite_slice(what, closes)?;
    match closes.iter().position(|x| *x <= 0.0) {
        Some(index) => Err(StatsError::OutOfRange {
            what,
            index,
            value: closes[index],
            requirement: "a price must be positive",
        }),
        None => Ok(()),
    }
}

/// Through-the-cycle price moves over `horizon` rows (overlapping windows): the `coverage`
/// quantile of the rises and of the falls of `P_{t+h} / P_t - 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoveQuantiles {
    /// `coverage` quantile of the simple moves (a rise, positive when rises happen).
    pub up: f64,
    /// Minus the `1 - coverage` quantile (a fall, as a positive fraction).
    pub down: f64,
    /// `max(up, down)`: a symmetric scan range that covers both directions.
    pub range: f64,
    /// Number of moves measured.
    pub moves: usize,
}

/// The scan range that covers `coverage` of the moves over the whole history, in each direction.
/// Constant through the cycle, so it has no procyclicality at all; the price is that it is
/// wider than an EWMA range in calm years.
pub fn through_the_cycle_range(
    closes: &[f64],
    coverage: f64,
    horizon: usize,
) -> Result<MoveQuantiles> {
    coverage_and_horizon(coverage, horizon)?;
    positive_prices("closes", closes)?;
    min_len("closes", closes.len(), horizon + 1)?;
    let moves: Vec<f64> = closes
        .windows(horizon + 1)
        .map(|w| w[horizon] / w[0] - 1.0)
        .collect();
    let up = quantile(&moves, coverage)?;
    let down = -quantile(&moves, 1.0 - coverage)?;
    Ok(MoveQuantiles {
        up,
        down,
        range: up.max(down),
        moves: moves.len(),
    })
}

/// One extreme move: `P_{start + days} / P_start - 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExtremeMove {
    /// The simple move, `-0.6` a 60% fall.
    pub value: f64,
    /// Row of the move's first close.
    pub start: usize,
    /// Rows spanned.
    pub days: usize,
}

/// The largest fall and the largest rise over any window of 1 to `max_days` rows. Ties keep
/// the earliest, shortest window.
pub fn extreme_moves(closes: &[f64], max_days: usize) -> Result<(ExtremeMove, ExtremeMove)> {
    if max_days == 0 {
        return Err(StatsError::InvalidParameter {
            name: "max_days",
            value: 0.0,
            requirement: "at least one day",
        });
    }
    positive_prices("closes", closes)?;
    min_len("closes", closes.len(), 2)?;
    let mut fall = ExtremeMove {
        value: f64::INFINITY,
        start: 0,
        days: 0,
    };
    let mut rise = ExtremeMove {
        value: f64::NEG_INFINITY,
        start: 0,
        days: 0,
    };
    for days in 1..=max_days.min(closes.len() - 1) {
        for start in 0..closes.len() - days {
            let m = closes[start + days] / closes[start] - 1.0;
            if m < fall.value || (m == fall.value && start < fall.start) {
                fall = ExtremeMove {
                    value: m,
                    start,
                    days,
                };
            }
            if m > rise.value || (m == rise.value && start < rise.start) {
                rise = ExtremeMove {
                    value: m,
                    start,
                    days,
                };
            }
        }
    }
    Ok((fall, rise))
}

/// The weight of an extended move of size `price_move` such that a linear position pays no
/// more on it than on the grid's extreme rows (`extreme_cover x extreme_multiple x range`):
/// `min(1, c k R / |m|)`. The extended rows then bite only on positions whose loss grows
/// faster than the move (short options), which is what they are for.
pub fn extended_cover(
    extreme_cover: f64,
    extreme_multiple: f64,
    range: f64,
    price_move: f64,
) -> Result<f64> {
    for (name, v) in [
        ("extreme_cover", extreme_cover),
        ("extreme_multiple", extreme_multiple),
        ("range", range),
    ] {
        open_interval(name, v, 0.0, f64::INFINITY, "must be positive")?;
    }
    if !(price_move.is_finite() && price_move != 0.0) {
        return Err(StatsError::InvalidParameter {
            name: "price_move",
            value: price_move,
            requirement: "a nonzero finite move",
        });
    }
    Ok((extreme_cover * extreme_multiple * range / price_move.abs()).min(1.0))
}

/// How implied vol moves scale with the horizon, and the tenor power that follows.
#[derive(Debug, Clone, PartialEq)]
pub struct VolScaling {
    /// `(h, q_h)`: the `coverage` quantile of `|ln(x_{t+h} / x_t)|` for each horizon.
    pub quantiles: Vec<(usize, f64)>,
    /// Slope of `ln q_h` on `ln h` (least squares): the roughness exponent `H`.
    pub hurst: f64,
    /// `clamp(1/2 - H, 0, 1/2)`: the power of `(tenor / days)` in the vol shock.
    pub power: f64,
}

/// Fits `q_h ~ h^H` on horizons `1..=max_h` and returns the tenor power `1/2 - H`.
///
/// Why `1/2 - H`: in rough-volatility models (Gatheral, Jaisson and Rosenbaum 2018) log-vol
/// increments over `h` scale as `h^H`, and a shock today moves the implied variance of tenor
/// `T` in proportion to `T^(H - 1/2)`. Moves of an implied-vol index at one tenor over many
/// horizons thus measure how shocks spread across tenors. `H = 1/2` (a random walk) gives
/// power 0: every tenor moves alike. The power is kept in `[0, 1/2]`.
pub fn vol_scaling(levels: &[f64], coverage: f64, max_h: usize) -> Result<VolScaling> {
    open_interval(
        "coverage",
        coverage,
        0.0,
        1.0,
        "coverage must lie strictly between 0 and 1",
    )?;
    if max_h < 2 {
        return Err(StatsError::InvalidParameter {
            name: "max_h",
            value: max_h as f64,
            requirement: "a slope needs at least two horizons",
        });
    }
    positive_prices("vol levels", levels)?;
    min_len("vol levels", levels.len(), max_h + 2)?;
    let mut quantiles = Vec::with_capacity(max_h);
    for h in 1..=max_h {
        let moves: Vec<f64> = levels
            .windows(h + 1)
            .map(|w| (w[h] / w[0]).ln().abs())
            .collect();
        let q = quantile(&moves, coverage)?;
        if q <= 0.0 {
            return Err(StatsError::Degenerate {
                what: "vol_scaling",
                reason: "a horizon's quantile of vol moves is zero (constant series?)",
            });
        }
        quantiles.push((h, q));
    }
    let xs: Vec<f64> = quantiles.iter().map(|(h, _)| (*h as f64).ln()).collect();
    let ys: Vec<f64> = quantiles.iter().map(|(_, q)| q.ln()).collect();
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let hurst = sxy / sxx;
    Ok(VolScaling {
        quantiles,
        hurst,
        power: (0.5 - hurst).clamp(0.0, 0.5),
    })
}

/// Vol scan ranges: the `coverage` quantile of the rises and of the falls of the vol level
/// over `horizon` rows, in the level's own units (vol points when the level is a vol).
pub fn vol_scan(levels: &[f64], coverage: f64, horizon: usize) -> Result<(f64, f64)> {
    coverage_and_horizon(coverage, horizon)?;
    finite_slice("vol levels", levels)?;
    min_len("vol levels", levels.len(), horizon + 1)?;
    let moves: Vec<f64> = levels
        .windows(horizon + 1)
        .map(|w| w[horizon] - w[0])
        .collect();
    Ok((
        quantile(&moves, coverage)?.max(0.0),
        (-quantile(&moves, 1.0 - coverage)?).max(0.0),
    ))
}

/// What a spot-perpetual basis lost on one stress day, as a fraction of the notional.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BasisStress {
    /// A day of funding at the worst rate: `periods_per_day x max |rate|`.
    pub funding: f64,
    /// How far the perpetual traded beyond every spot print of a window containing its own:
    /// `max(0, 1 - perp_low / spot_low, perp_high / spot_high - 1)`; 0 without spot.
    pub dislocation: f64,
    /// `funding + dislocation`.
    pub total: f64,
}

/// The basis stress of one day (see [`BasisStress`]). `rates` are the mean funding rates per
/// period of the days considered; `spot` the `(low, high)` of a spot window that contains the
/// perpetual's, so that the dislocation is a lower bound of the true gap.
pub fn basis_stress(
    rates: &[f64],
    periods_per_day: f64,
    perp: (f64, f64),
    spot: Option<(f64, f64)>,
) -> Result<BasisStress> {
    min_len("funding rates", rates.len(), 1)?;
    finite_slice("funding rates", rates)?;
    open_interval(
        "periods_per_day",
        periods_per_day,
        0.0,
        f64::INFINITY,
        "must be positive",
    )?;
    let prices: Vec<f64> = match spot {
        Some((l, h)) => vec![perp.0, perp.1, l, h],
        None => vec![perp.0, perp.1],
    };
    positive_prices("perpetual and spot low/high", &prices)?;
    let funding = periods_per_day * rates.iter().fold(0.0f64, |m, r| m.max(r.abs()));
    let dislocation = match spot {
        Some((low, high)) => (1.0 - perp.0 / low).max(perp.1 / high - 1.0).max(0.0),
        None => 0.0,
    };
    Ok(BasisStress {
        funding,
        dislocation,
        total: funding + dislocation,
    })
}

/// A stablecoin's worst de-peg at a daily close: `max(0, 1 - min close)` and the row of that
/// close. The haircut a venue valuing the coin at its peg of 1 would have needed.
pub fn depeg(closes: &[f64]) -> Result<(f64, usize)> {
    min_len("closes", closes.len(), 1)?;
    positive_prices("closes", closes)?;
    let (i, min) =
        closes
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f64::INFINITY),
                |(bi, bm), (i, x)| if x < bm { (i, x) } else { (bi, bm) },
            );
    Ok(((1.0 - min).max(0.0), i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::montecarlo::Sampler;

    /// Simulates `n` returns of an integrated GARCH(1,1)
    /// `sigma2_{t+1} = omega + alpha r_t^2 + beta sigma2_t` with
    /// `alpha = 1 - lambda`, `beta = lambda`. Returns the returns, the true
    /// conditional variances `sigma2_1 ..= sigma2_{n+1}`.
    fn garch(n: usize, omega: f64, lambda: f64, sigma2_1: f64, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut s = Sampler::new(seed, 0);
        let mut sig2 = vec![sigma2_1];
        let mut r = Vec::with_capacity(n);
        for t in 0..n {
            let x = sig2[t].sqrt() * s.normal();
            r.push(x);
            sig2.push(omega + (1.0 - lambda) * x * x + lambda * sig2[t]);
        }
        (r, sig2)
    }

    #[test]
    fn garch_history_recovers_current_conditional_vol() {
        // With alpha = 1 - lambda and beta = lambda, EWMA and GARCH share the
        // recursion, so their difference D_t = s2_t - sigma2_t obeys
        // D_{t+1} = lambda D_t - omega exactly:
        //   D_{N+1} = lambda^N D_1 - omega (1 - lambda^N) / (1 - lambda).
        // With omega = 1e-9 and N = 500 the gap is about 1.7e-8 in variance,
        // far below sigma2 (1e-5 .. 1e-3 on this path), so the range must be within 1% of
        // z * sigma_true * sqrt(h).
        let (lambda, omega, n) = (0.94, 1e-9, 500);
        let (r, sig2) = garch(n, omega, lambda, 4e-4, 3);
        let cfg = CalibrationConfig {
            coverage: 0.99,
            horizon_days: 2.0,
            lambda,
            ..CalibrationConfig::default()
        };
        let c = calibrate_range(&r, &cfg).unwrap();
        let s2_1 = r[..30].iter().map(|x| x * x).sum::<f64>() / 30.0;
        let ln = lambda.powi(n as i32);
        let d = ln * (s2_1 - sig2[0]) - omega * (1.0 - ln) / (1.0 - lambda);
        let true_sigma = sig2[n].sqrt();
        assert!(
            (c.current_vol.powi(2) - (sig2[n] + d)).abs() < 1e-12 * sig2[n].max(1e-6) + 1e-15,
            "{} vs {}",
            c.current_vol.powi(2),
            sig2[n] + d
        );
        let z = 2.326_347_874; // standard normal 99% quantile
        assert!((c.multiplier - z).abs() < 1e-8);
        let expected = z * true_sigma * 2.0_f64.sqrt();
        assert!(
            (c.final_range / expected - 1.0).abs() < 0.01,
            "range {} expected {}",
            c.final_range,
            expected
        );
        assert_eq!(c.final_range, c.base_range);
    }

    /// 30 calm days (1%), 10 stressed days (5%), 200 calm days (1%).
    fn calm_stress_calm() -> Vec<f64> {
        let mut r = vec![0.01; 30];
        r.extend(std::iter::repeat_n(0.05, 10));
        r.extend(std::iter::repeat_n(-0.01, 200));
        r
    }

    #[test]
    fn apc_components_by_hand() {
        let r = calm_stress_calm();
        let v = ewma_variances(&r, 0.94).unwrap();
        let sigma_c = v[240].sqrt();
        let sigma_s = v[..240].iter().copied().fold(0.0, f64::max).sqrt();
        // Peak right after the 10 stressed days: s2_41 = 0.0025 - 0.0024 * 0.94^10.
        assert!((sigma_s.powi(2) - (0.0025 - 0.0024 * 0.94f64.powi(10))).abs() < 1e-15);
        let z = 2.326_347_874;
        let h = 5.0_f64;
        let cfg = CalibrationConfig {
            horizon_days: h,
            buffer: 0.25,
            stressed_weight: 0.25,
            floor_stressed: true,
            ..CalibrationConfig::default()
        };
        let c = calibrate_range(&r, &cfg).unwrap();
        assert!((c.multiplier - z).abs() < 1e-8);
        let z = c.multiplier; // full precision for the exact comparisons below
        assert!((c.current_vol - sigma_c).abs() < 1e-15);
        assert!((c.stressed_vol - sigma_s).abs() < 1e-15);
        assert!((c.base_range - z * sigma_c * h.sqrt()).abs() < 1e-15);
        let blended = z * (0.25 * sigma_s + 0.75 * sigma_c) * h.sqrt();
        assert!((c.blended_range - blended).abs() < 1e-15);
        assert_eq!(c.buffer_applied, 0.25);
        let floor = z * sigma_s * h.sqrt();
        assert!((c.floor.unwrap() - floor).abs() < 1e-15);
        // Calm now (sigma_c ~ 1%, sigma_s ~ 3.5%): the floor binds.
        assert!(c.floor_binding);
        assert!((c.final_range - floor.max(blended * 1.25)).abs() < 1e-15);

        // Lookback of 100 days misses the stress: stressed = recent max.
        let short = calibrate_range(
            &r,
            &CalibrationConfig {
                stress_lookback: Some(100),
                ..cfg.clone()
            },
        )
        .unwrap();
        let recent = v[140..240].iter().copied().fold(0.0, f64::max).sqrt();
        assert!((short.stressed_vol - recent).abs() < 1e-15);
    }

    #[test]
    fn buffer_released_in_new_stress() {
        // Calm history then a shock larger than anything before.
        let mut r = vec![0.01; 100];
        r.push(0.2);
        let cfg = CalibrationConfig {
            buffer: 0.25,
            release_buffer_in_stress: true,
            ..CalibrationConfig::default()
        };
        let c = calibrate_range(&r, &cfg).unwrap();
        assert!(c.current_vol > c.stressed_vol);
        assert_eq!(c.buffer_applied, 0.0);
        assert_eq!(c.final_range, c.base_range);
        // Without the release option the buffer stays.
        let c = calibrate_range(
            &r,
            &CalibrationConfig {
                release_buffer_in_stress: false,
                ..cfg
            },
        )
        .unwrap();
        assert_eq!(c.buffer_applied, 0.25);
        assert!((c.final_range - 1.25 * c.base_range).abs() < 1e-15);
    }

    #[test]
    fn student_t_multiplier() {
        // dof = 4: sqrt(2/4) * 3.746947 = 2.649532 (t_4 99% quantile from tables).
        let m = range_multiplier(0.99, Some(4.0)).unwrap();
        assert!((m - 0.5_f64.sqrt() * 3.746947).abs() < 1e-5, "{m}");
        // At 99% the unit-variance t quantile exceeds the normal one.
        assert!(m > range_multiplier(0.99, None).unwrap());
        assert!(range_multiplier(0.99, Some(2.0)).is_err());
    }

    #[test]
    fn rejects_bad_config_and_data() {
        let r = vec![0.01; 50];
        let bad = |cfg: CalibrationConfig| calibrate_range(&r, &cfg).is_err();
        let d = CalibrationConfig::default();
        assert!(bad(CalibrationConfig {
            coverage: 1.0,
            ..d.clone()
        }));
        assert!(bad(CalibrationConfig {
            horizon_days: -1.0,
            ..d.clone()
        }));
        assert!(bad(CalibrationConfig {
            buffer: -0.1,
            ..d.clone()
        }));
        assert!(bad(CalibrationConfig {
            stressed_weight: 2.0,
            ..d.clone()
        }));
        assert!(bad(CalibrationConfig {
            stress_lookback: Some(0),
            ..d.clone()
        }));
        assert!(bad(CalibrationConfig {
            lambda: 1.0,
            ..d.clone()
        }));
        assert!(calibrate_range(&[], &d).is_err());
        assert!(calibrate_range(&[0.01, f64::INFINITY], &d).is_err());
    }
}

#[cfg(test)]
mod v2_tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn quantile_interpolates_between_order_statistics() {
        // Sorted 1, 2, 3, 4: the median sits half way between 2 and 3.
        assert!(close(quantile(&[3.0, 1.0, 2.0, 4.0], 0.5).unwrap(), 2.5));
        let hundred: Vec<f64> = (0..=100).map(f64::from).collect();
        assert!(close(quantile(&hundred, 0.99).unwrap(), 99.0));
        assert!(close(quantile(&hundred, 0.0).unwrap(), 0.0));
        assert!(quantile(&[], 0.5).is_err());
        assert!(quantile(&[1.0, f64::NAN], 0.5).is_err());
        assert!(quantile(&[1.0], 1.5).is_err());
    }

    #[test]
    fn through_the_cycle_range_by_hand() {
        // Moves +10%, -10%, 0, +10%; sorted -0.1, 0, 0.1, 0.1.
        // q(0.75): position 2.25, between 0.1 and 0.1 -> 0.1.
        // q(0.25): position 0.75, -0.1 + 0.75 x 0.1 = -0.025.
        let closes = [100.0, 110.0, 99.0, 99.0, 108.9];
        let m = through_the_cycle_range(&closes, 0.75, 1).unwrap();
        assert!(close(m.up, 0.1), "{m:?}");
        assert!(close(m.down, 0.025), "{m:?}");
        assert!(close(m.range, 0.1));
        assert_eq!(m.moves, 4);
        // Two-day moves: 99/100 - 1 = -0.01, 99/110 - 1 = -0.1, 108.9/99 - 1 = 0.1.
        let m = through_the_cycle_range(&closes, 0.75, 2).unwrap();
        assert_eq!(m.moves, 3);
        // Sorted -0.1, -0.01, 0.1: q(0.75) at 1.5 -> 0.045; q(0.25) at 0.5 -> -0.055.
        assert!(close(m.up, 0.045) && close(m.down, 0.055), "{m:?}");
        assert!(through_the_cycle_range(&closes, 0.75, 0).is_err());
        assert!(through_the_cycle_range(&[100.0, -1.0], 0.75, 1).is_err());
    }

    #[test]
    fn extreme_moves_by_hand() {
        // One day: -50%, -20%, +100%, +150%. Two days: -60%, +60%, +400%.
        let closes = [100.0, 50.0, 40.0, 80.0, 200.0];
        let (fall, rise) = extreme_moves(&closes, 2).unwrap();
        assert_eq!((fall.start, fall.days), (0, 2));
        assert!(close(fall.value, -0.6));
        assert_eq!((rise.start, rise.days), (2, 2));
        assert!(close(rise.value, 4.0));
        let (fall, rise) = extreme_moves(&closes, 1).unwrap();
        assert_eq!((fall.start, fall.days, rise.start, rise.days), (0, 1, 3, 1));
        assert!(close(fall.value, -0.5) && close(rise.value, 1.5));
        assert!(extreme_moves(&closes, 0).is_err());
    }

    #[test]
    fn extended_cover_matches_the_extreme_rows_for_a_linear_position() {
        // 0.35 x 2 x 0.13 = 0.091 of notional on the extreme rows; a 65% move at cover c
        // charges 0.65 c: c = 0.14.
        assert!(close(extended_cover(0.35, 2.0, 0.13, -0.65).unwrap(), 0.14));
        // A move smaller than the extreme rows' charge is taken whole.
        assert!(close(extended_cover(0.35, 2.0, 0.5, 0.1).unwrap(), 1.0));
        assert!(extended_cover(0.35, 2.0, 0.13, 0.0).is_err());
        assert!(extended_cover(0.0, 2.0, 0.13, 0.5).is_err());
    }

    #[test]
    fn vol_scaling_recovers_a_known_exponent() {
        // ln x: 0, 1, 1 + a, 2 + a, 2 + 2a with a = 2^0.25 - 1: one-day moves 1, a, 1, a;
        // two-day moves all 1 + a = 2^0.25. At coverage 0.9 the one-day quantile sits at
        // position 2.7 of (a, a, 1, 1): 1. So q2 / q1 = 2^0.25: H = 0.25, power 0.25.
        let a = 2f64.powf(0.25) - 1.0;
        let logs = [0.0, 1.0, 1.0 + a, 2.0 + a, 2.0 + 2.0 * a];
        let levels: Vec<f64> = logs.iter().map(|l: &f64| l.exp()).collect();
        let s = vol_scaling(&levels, 0.9, 2).unwrap();
        assert!((s.quantiles[0].1 - 1.0).abs() < 1e-12, "{s:?}");
        assert!((s.quantiles[1].1 - 2f64.powf(0.25)).abs() < 1e-12, "{s:?}");
        assert!((s.hurst - 0.25).abs() < 1e-12 && (s.power - 0.25).abs() < 1e-12);
        // A steady trend moves h times as far over h days: H = 1, the power floors at 0.
        let trend: Vec<f64> = (0..40).map(|t| (0.01 * f64::from(t)).exp()).collect();
        let s = vol_scaling(&trend, 0.99, 10).unwrap();
        assert!((s.hurst - 1.0).abs() < 1e-9 && s.power == 0.0, "{s:?}");
        assert!(vol_scaling(&[0.5; 10], 0.99, 3).is_err());
    }

    #[test]
    fn vol_scan_by_hand() {
        // Moves +0.10, -0.05, 0, +0.25; sorted -0.05, 0, 0.10, 0.25.
        // q(0.75) at 2.25: 0.10 + 0.25 x 0.15 = 0.1375; q(0.25) at 0.75: -0.0125.
        let (up, down) = vol_scan(&[0.5, 0.6, 0.55, 0.55, 0.8], 0.75, 1).unwrap();
        assert!(close(up, 0.1375) && close(down, 0.0125), "{up} {down}");
    }

    #[test]
    fn basis_stress_by_hand() {
        // Three periods a day at the worst |rate| 0.00127: 0.00381. The perpetual traded at
        // 3605 when no spot print was below 4000: at least 9.875% under spot.
        let b = basis_stress(
            &[-0.00127, 0.0001],
            3.0,
            (3605.0, 7464.5),
            Some((4000.0, 8000.0)),
        )
        .unwrap();
        assert!(
            close(b.funding, 0.00381) && close(b.dislocation, 0.09875),
            "{b:?}"
        );
        assert!(close(b.total, 0.10256));
        // Above every spot print: a premium.
        let b = basis_stress(&[0.0], 3.0, (100.0, 106.0), Some((90.0, 100.0))).unwrap();
        assert!(close(b.dislocation, 0.06));
        let b = basis_stress(&[0.001], 3.0, (3605.0, 7464.5), None).unwrap();
        assert!(close(b.total, 0.003) && b.dislocation == 0.0);
        assert!(basis_stress(&[], 3.0, (1.0, 2.0), None).is_err());
    }

    #[test]
    fn depeg_by_hand() {
        let (d, i) = depeg(&[1.0, 0.9715, 0.99]).unwrap();
        assert!(close(d, 0.0285) && i == 1);
        assert_eq!(depeg(&[1.01, 1.0]).unwrap(), (0.0, 1));
        assert!(depeg(&[]).is_err());
    }
}
