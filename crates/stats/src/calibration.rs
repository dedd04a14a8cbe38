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
use crate::validate::{closed_interval, open_interval};
use crate::{Result, StatsError};
use statrs::distribution::{ContinuousCDF, Normal};

/// Settings for [`calibrate_range`]. The default has all anti-procyclicality
/// tools off, so each one is switched on deliberately.
#[derive(Debug, Clone, PartialEq)]
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

fn validate(cfg: &CalibrationConfig) -> Result<()> {
    open_interval(
        "coverage",
        cfg.coverage,
        0.5,
        1.0,
        "coverage must lie strictly between 0.5 and 1",
    )?;
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
    open_interval(
        "coverage",
        coverage,
        0.5,
        1.0,
        "coverage must lie strictly between 0.5 and 1",
    )?;
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
