//! Exponentially weighted volatility and correlation (RiskMetrics-style EWMA).
//!
//! Why: margin must react to the market as it is now, not as it was on
//! average over years. EWMA gives each past day a weight that shrinks by the
//! factor `lambda` per day (e.g. 0.94: yesterday counts fully, a month ago
//! about 16%, three months ago under 1%), so a burst of volatility raises the
//! estimate quickly and a calm period lets it decay smoothly.
//!
//! The recursion is started from the average squared return of the first
//! (up to) 30 observations, so the estimate does not depend on an arbitrary
//! starting value. Returns are used as they are (no mean is subtracted):
//! over daily horizons the mean is negligible next to the volatility and
//! estimating it only adds noise.

use crate::validate::{finite_slice, min_len, open_interval};
use crate::{Matrix, Result, StatsError};

/// Number of initial observations whose mean square seeds the recursion.
pub const SEED_WINDOW: usize = 30;

/// Daily log returns `ln(p_t / p_{t-1})` of a price series.
///
/// Log returns add up over time and cannot imply a negative price, which is
/// why the margin models work with them. Every price must be finite and
/// strictly positive; at least two prices are needed.
pub fn log_returns(prices: &[f64]) -> Result<Vec<f64>> {
    min_len("prices", prices.len(), 2)?;
    finite_slice("prices", prices)?;
    if let Some(index) = prices.iter().position(|&p| p <= 0.0) {
        return Err(StatsError::OutOfRange {
            what: "prices",
            index,
            value: prices[index],
            requirement: "prices must be strictly positive to take log returns",
        });
    }
    Ok(prices.windows(2).map(|w| (w[1] / w[0]).ln()).collect())
}

fn check_lambda(lambda: f64) -> Result<()> {
    open_interval(
        "lambda",
        lambda,
        0.0,
        1.0,
        "EWMA decay factor must lie strictly between 0 and 1",
    )
}

/// EWMA variance path of a return series.
///
/// With `N = returns.len()`:
/// `s2_1` = mean of `r_t^2` over the first `min(30, N)` returns, and
/// `s2_{t+1} = lambda * s2_t + (1 - lambda) * r_t^2`.
/// Returns `s2_1 ..= s2_{N+1}` (`N + 1` values): entry `t` is the variance
/// believed before seeing return `t` (0-based), and the last entry is the
/// forecast for the next, not yet observed, day.
pub fn ewma_variances(returns: &[f64], lambda: f64) -> Result<Vec<f64>> {
    check_lambda(lambda)?;
    min_len("returns", returns.len(), 1)?;
    finite_slice("returns", returns)?;
    let seed_n = returns.len().min(SEED_WINDOW);
    let mut s2 = returns[..seed_n].iter().map(|r| r * r).sum::<f64>() / seed_n as f64;
    let mut out = Vec::with_capacity(returns.len() + 1);
    out.push(s2);
    for r in returns {
        s2 = lambda * s2 + (1.0 - lambda) * r * r;
        out.push(s2);
    }
    if !s2.is_finite() {
        return Err(StatsError::Degenerate {
            what: "ewma_variances",
            reason: "variance overflowed: returns are implausibly large (are these prices rather than returns?)",
        });
    }
    Ok(out)
}

/// EWMA volatility forecast for the next day: `sqrt(s2_{N+1})`.
pub fn ewma_vol_forecast(returns: &[f64], lambda: f64) -> Result<f64> {
    let v = ewma_variances(returns, lambda)?;
    Ok(v.last().copied().unwrap_or(0.0).sqrt())
}

/// Checks a panel of return series (one per underlying, equal lengths).
fn check_panel(returns: &[Vec<f64>], min_obs: usize) -> Result<(usize, usize)> {
    min_len("returns (number of underlyings)", returns.len(), 1)?;
    let n = returns[0].len();
    min_len("returns (observations per underlying)", n, min_obs)?;
    for series in returns {
        if series.len() != n {
            return Err(StatsError::LengthMismatch {
                what: "returns: every underlying must have the same number of observations",
                expected: n,
                got: series.len(),
            });
        }
        finite_slice("returns", series)?;
    }
    Ok((returns.len(), n))
}

/// EWMA covariance forecast `S_{N+1}` of several return series.
///
/// Same rule as [`ewma_variances`] applied to the cross products:
/// `S_1` = mean of `r_t r_t'` over the first `min(30, N)` days,
/// `S_{t+1} = lambda S_t + (1 - lambda) r_t r_t'`.
/// `returns` holds one `Vec` per underlying, all of the same length.
pub fn ewma_covariance(returns: &[Vec<f64>], lambda: f64) -> Result<Matrix> {
    check_lambda(lambda)?;
    let (d, n) = check_panel(returns, 1)?;
    let seed_n = n.min(SEED_WINDOW);
    // Cross-section of returns on day t, reused to avoid allocating per day.
    let mut x = vec![0.0; d];
    let load_day = |t: usize, x: &mut [f64]| {
        for (xi, series) in x.iter_mut().zip(returns) {
            *xi = series[t];
        }
    };
    let mut s = Matrix::zeros(d, d);
    for t in 0..seed_n {
        load_day(t, &mut x);
        for i in 0..d {
            for j in 0..=i {
                s[(i, j)] += x[i] * x[j];
            }
        }
    }
    s /= seed_n as f64;
    for t in 0..n {
        load_day(t, &mut x);
        for i in 0..d {
            for j in 0..=i {
                s[(i, j)] = lambda * s[(i, j)] + (1.0 - lambda) * x[i] * x[j];
            }
        }
    }
    for i in 0..d {
        for j in 0..i {
            s[(j, i)] = s[(i, j)];
        }
    }
    if s.iter().any(|v| !v.is_finite()) {
        return Err(StatsError::Degenerate {
            what: "ewma_covariance",
            reason: "covariance overflowed: returns are implausibly large (are these prices rather than returns?)",
        });
    }
    Ok(s)
}

/// Converts a covariance matrix to a correlation matrix.
///
/// Fails if any variance is zero, since a series that never moves has no
/// defined correlation with anything.
pub fn covariance_to_correlation(cov: &Matrix) -> Result<Matrix> {
    crate::validate::square_finite("covariance", cov)?;
    let d = cov.nrows();
    let mut sd = Vec::with_capacity(d);
    for i in 0..d {
        let v = cov[(i, i)];
        if v <= 0.0 {
            return Err(StatsError::Degenerate {
                what: "covariance",
                reason: "a variance is zero or negative, so the correlation is undefined (does a series never move?)",
            });
        }
        sd.push(v.sqrt());
    }
    let mut c = Matrix::identity(d, d);
    for i in 0..d {
        for j in 0..i {
            let r = (cov[(i, j)] / (sd[i] * sd[j])).clamp(-1.0, 1.0);
            c[(i, j)] = r;
            c[(j, i)] = r;
        }
    }
    Ok(c)
}

/// EWMA correlation forecast: [`ewma_covariance`] normalised to unit diagonal.
pub fn ewma_correlation(returns: &[Vec<f64>], lambda: f64) -> Result<Matrix> {
    covariance_to_correlation(&ewma_covariance(returns, lambda)?)
}

/// Plain (equally weighted, mean-adjusted) Pearson sample correlation.
///
/// Used as the long-run reference against which the EWMA correlation is
/// compared; needs at least two observations per series.
pub fn sample_correlation(returns: &[Vec<f64>]) -> Result<Matrix> {
    let (d, n) = check_panel(returns, 2)?;
    let means: Vec<f64> = returns
        .iter()
        .map(|s| s.iter().sum::<f64>() / n as f64)
        .collect();
    let mut cov = Matrix::zeros(d, d);
    for i in 0..d {
        for j in 0..=i {
            let c = returns[i]
                .iter()
                .zip(&returns[j])
                .map(|(a, b)| (a - means[i]) * (b - means[j]))
                .sum::<f64>()
                / (n - 1) as f64;
            cov[(i, j)] = c;
            cov[(j, i)] = c;
        }
    }
    covariance_to_correlation(&cov)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_return_hand_example() {
        // r = [0.01, -0.02, 0.03], lambda = 0.9, N = 3 < 30 so all three seed:
        // s2_1 = (1e-4 + 4e-4 + 9e-4) / 3 = 4.666_666_7e-4
        // s2_2 = 0.9 * 4.6667e-4 + 0.1 * 1e-4 = 4.3e-4
        // s2_3 = 0.9 * 4.3e-4    + 0.1 * 4e-4 = 4.27e-4
        // s2_4 = 0.9 * 4.27e-4   + 0.1 * 9e-4 = 4.743e-4  (forecast)
        let v = ewma_variances(&[0.01, -0.02, 0.03], 0.9).unwrap();
        let expected = [1.4e-3 / 3.0, 4.3e-4, 4.27e-4, 4.743e-4];
        assert_eq!(v.len(), 4);
        for (a, b) in v.iter().zip(expected) {
            assert!((a - b).abs() < 1e-15, "{a} vs {b}");
        }
        let f = ewma_vol_forecast(&[0.01, -0.02, 0.03], 0.9).unwrap();
        assert!((f - 4.743e-4_f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn seed_uses_only_first_30() {
        // 30 returns of 0.01 then one huge return: seed must be exactly 1e-4.
        let mut r = vec![0.01; 30];
        r.push(1.0);
        let v = ewma_variances(&r, 0.94).unwrap();
        assert!((v[0] - 1e-4).abs() < 1e-18);
        assert!((v[31] - (0.94 * 1e-4 + 0.06)).abs() < 1e-15);
    }

    #[test]
    fn log_returns_and_errors() {
        let r = log_returns(&[100.0, 110.0, 99.0]).unwrap();
        assert!((r[0] - (1.1f64).ln()).abs() < 1e-15);
        assert!((r[1] - (0.9f64).ln()).abs() < 1e-15);
        assert!(matches!(
            log_returns(&[100.0, 0.0]),
            Err(StatsError::OutOfRange { index: 1, .. })
        ));
        assert!(matches!(
            log_returns(&[100.0, f64::NAN]),
            Err(StatsError::NonFinite { index: 1, .. })
        ));
        assert!(log_returns(&[1.0]).is_err());
        assert!(ewma_variances(&[], 0.94).is_err());
        assert!(ewma_variances(&[0.1], 1.0).is_err());
        assert!(ewma_variances(&[0.1], f64::NAN).is_err());
        assert!(matches!(
            ewma_variances(&[1e200], 0.94),
            Err(StatsError::Degenerate { .. })
        ));
        assert!(ewma_correlation(&[vec![1e200], vec![1.0]], 0.94).is_err());
    }

    #[test]
    fn ewma_covariance_matches_univariate_and_hand_cross_term() {
        let a = vec![0.01, -0.02, 0.03];
        let b = vec![0.02, -0.01, -0.01];
        let cov = ewma_covariance(&[a.clone(), b.clone()], 0.9).unwrap();
        let va = ewma_variances(&a, 0.9).unwrap();
        let vb = ewma_variances(&b, 0.9).unwrap();
        assert!((cov[(0, 0)] - va[3]).abs() < 1e-16);
        assert!((cov[(1, 1)] - vb[3]).abs() < 1e-16);
        // cross products: 2e-4, 2e-4, -3e-4; seed = 1e-4/3
        // c2 = 0.9*(1e-4/3) + 0.1*2e-4 = 5e-5
        // c3 = 0.9*5e-5 + 0.1*2e-4 = 6.5e-5
        // c4 = 0.9*6.5e-5 - 0.1*3e-4 = 2.85e-5
        assert!((cov[(0, 1)] - 2.85e-5).abs() < 1e-17);
        assert_eq!(cov[(0, 1)], cov[(1, 0)]);
        let corr = ewma_correlation(&[a, b], 0.9).unwrap();
        let expect = 2.85e-5 / (va[3] * vb[3]).sqrt();
        assert!((corr[(0, 1)] - expect).abs() < 1e-14);
        assert_eq!(corr[(0, 0)], 1.0);
    }

    #[test]
    fn sample_correlation_perfect_and_errors() {
        let a = vec![1.0, 2.0, 3.0, 4.0];
        let b = vec![-2.0, -4.0, -6.0, -8.0];
        let c = sample_correlation(&[a.clone(), b]).unwrap();
        assert!((c[(0, 1)] + 1.0).abs() < 1e-12);
        assert!(matches!(
            sample_correlation(&[a.clone(), vec![1.0; 3]]),
            Err(StatsError::LengthMismatch { .. })
        ));
        assert!(matches!(
            sample_correlation(&[a, vec![1.0; 4]]),
            Err(StatsError::Degenerate { .. })
        ));
    }
}
