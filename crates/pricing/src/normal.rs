//! The standard normal distribution, as option pricing needs it.
//!
//! Black-76 prices are differences of normal probabilities. Far out of the
//! money both probabilities are tiny, and the option value is exactly such a
//! tiny number, so the cumulative distribution must keep its *relative*
//! accuracy deep in the tails. The textbook `0.5 * (1 + erf(x / sqrt 2))`
//! computes `1 + (-1 + tiny)` and loses every digit of the tail below about
//! `x = -8`; `0.5 * erfc(-x / sqrt 2)` evaluates the tail directly, so
//! `N(-10)` is right to the last few bits instead of being `0`.

use std::f64::consts::FRAC_1_SQRT_2;

/// `1 / sqrt(2 pi)`, the peak of the standard normal density.
pub(crate) const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Standard normal cumulative distribution function `N(x) = P(Z <= x)`.
///
/// Computed as `0.5 * erfc(-x / sqrt 2)`, which is accurate relative to the
/// result in the lower tail (`N(-10) ~ 7.6e-24`) and saturates cleanly at 1
/// in the upper tail.
#[inline]
pub fn norm_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * FRAC_1_SQRT_2)
}

/// Standard normal density `exp(-x^2 / 2) / sqrt(2 pi)`.
///
/// Underflows to exactly 0 for `|x|` above about 38.6 (and for infinities),
/// never to NaN.
#[inline]
pub fn norm_pdf(x: f64) -> f64 {
    FRAC_1_SQRT_2PI * (-0.5 * x * x).exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn rel_err(a: f64, b: f64) -> f64 {
        ((a - b) / b).abs()
    }

    // Reference values: high-precision evaluations of Phi(x) (e.g. mpmath
    // `ncdf` at 50 digits), rounded to f64.
    #[test]
    fn cdf_reference_values() {
        assert_eq!(norm_cdf(0.0), 0.5);
        assert!(rel_err(norm_cdf(1.96), 0.975_002_104_851_779_5) < 1e-15);
        assert!(rel_err(norm_cdf(-5.0), 2.866_515_718_791_939e-7) < 1e-14);
        assert!(rel_err(norm_cdf(-10.0), 7.619_853_024_160_526e-24) < 1e-14);
    }

    #[test]
    fn cdf_lower_tail_does_not_collapse_to_zero() {
        // With 1 + erf this would be exactly 0.
        let v = norm_cdf(-20.0);
        assert!(v > 2.7e-89 && v < 2.8e-89, "{v}");
        assert_eq!(norm_cdf(f64::NEG_INFINITY), 0.0);
        assert_eq!(norm_cdf(f64::INFINITY), 1.0);
        assert_eq!(norm_cdf(40.0), 1.0);
    }

    #[test]
    fn cdf_symmetry() {
        for &x in &[0.1, 0.5, 1.0, 2.5, 4.0] {
            let s = norm_cdf(x) + norm_cdf(-x);
            assert!((s - 1.0).abs() < 4e-16, "x={x} sum={s}");
        }
    }

    #[test]
    fn pdf_values() {
        assert!(rel_err(norm_pdf(0.0), 1.0 / (2.0 * PI).sqrt()) < 1e-15);
        assert!(rel_err(1.0 / (2.0 * PI).sqrt(), FRAC_1_SQRT_2PI) < 2e-16);
        // phi(1) = exp(-1/2)/sqrt(2 pi)
        assert!(rel_err(norm_pdf(1.0), 0.241_970_724_519_143_37) < 1e-15);
        assert_eq!(norm_pdf(-1.3), norm_pdf(1.3));
        assert_eq!(norm_pdf(1e200), 0.0);
        assert_eq!(norm_pdf(f64::INFINITY), 0.0);
    }
}
