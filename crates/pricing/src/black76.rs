//! Black-76: the price of a European option on a forward or futures price.
//!
//! Crypto options (Deribit-style) settle against an index at expiry, and the
//! natural underlying for a given expiry is the forward for that date, not
//! spot: funding, basis and any carry are already inside the forward. Black's
//! 1976 model prices exactly this case. It assumes the forward is a
//! driftless lognormal martingale, so the option value is the discounted
//! expectation of the payoff, `D * E[(F_T - K)^+]`, and nothing about spot,
//! dividends or borrow rates needs to be known.
//!
//! Everything is expressed through the *total* standard deviation
//! `s = sigma * sqrt(t)`; volatility and time only ever appear together.
//! That is also why the degenerate corners are easy to state: with no time
//! or no volatility left the forward cannot move, so the option is worth its
//! intrinsic value.
//!
//! Numerically the formula is a difference of two normal probabilities. Near
//! the money both probabilities are close to one half and their difference is
//! small, so there the complementary form with `erf` is used (it carries the
//! small difference directly); away from the money `erfc` keeps the tails
//! accurate. Both forms are the same formula and agree to rounding.

use crate::normal::{norm_cdf, norm_pdf};
use crate::OptionKind;
use std::f64::consts::FRAC_1_SQRT_2;

/// An option value together with its sensitivities.
///
/// All fields are in the units of the price (per unit of underlying):
/// * `delta` = dV/dF,
/// * `gamma` = d²V/dF²,
/// * `vega`  = dV/dσ per 1.00 (100 vol points) of volatility,
/// * `theta` = dV/d(calendar time) per year, i.e. `-dV/dt` where `t` is the
///   time to expiry; negative when the option loses value as time passes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Greeks {
    pub value: f64,
    pub delta: f64,
    pub gamma: f64,
    pub vega: f64,
    pub theta: f64,
}

/// Payoff at expiry, `max(f - k, 0)` or `max(k - f, 0)`.
#[inline]
fn intrinsic(kind: OptionKind, f: f64, k: f64) -> f64 {
    match kind {
        OptionKind::Call => (f - k).max(0.0),
        OptionKind::Put => (k - f).max(0.0),
    }
}

/// Slope of the payoff in `f`; at the kink (`f == k`) the average of the two
/// one-sided slopes, which is also the limit of the Black delta as `s -> 0`.
#[inline]
fn intrinsic_slope(kind: OptionKind, f: f64, k: f64) -> f64 {
    let call = if f > k {
        1.0
    } else if f == k {
        0.5
    } else {
        0.0
    };
    match kind {
        OptionKind::Call => call,
        OptionKind::Put => call - 1.0,
    }
}

/// Undiscounted Black value and `d1`, for `f > 0`, `k > 0` and a finite
/// total standard deviation `s > 0`.
#[inline(always)]
pub(crate) fn undiscounted(kind: OptionKind, f: f64, k: f64, s: f64) -> (f64, f64) {
    let (v, d1, _) = undiscounted_with_delta(kind, f, k, s);
    (v, d1)
}

/// [`undiscounted`], with the undiscounted delta (`N(d1)` for a call, `-N(-d1)` for a put)
/// read off the normal probabilities the value was computed from (no further evaluation).
#[inline(always)]
fn undiscounted_with_delta(kind: OptionKind, f: f64, k: f64, s: f64) -> (f64, f64, f64) {
    let xs = (f / k).ln() / s;
    let h = 0.5 * s;
    let d1 = xs + h;
    // Not `d1 - s`: for an infinite log-moneyness both forms agree, and this
    // one stays exact when `h` dominates.
    let d2 = xs - h;
    let v = if d1.abs() < 1.0 && d2.abs() < 1.0 {
        // N(d) = (1 + erf(d/sqrt2)) / 2. The halves cancel exactly into
        // (f - k)/2, leaving the small time value carried by erf, which is
        // accurate relative to itself near zero. Avoids the 1/s loss of
        // precision of N(d1) - N(d2) at the money.
        let e1 = libm::erf(d1 * FRAC_1_SQRT_2);
        let e2 = libm::erf(d2 * FRAC_1_SQRT_2);
        let tv = 0.5 * (f * e1 - k * e2);
        match kind {
            OptionKind::Call => (0.5 * (f - k) + tv, 0.5 + 0.5 * e1),
            OptionKind::Put => (0.5 * (k - f) + tv, 0.5 * e1 - 0.5),
        }
    } else {
        match kind {
            OptionKind::Call => {
                let n1 = norm_cdf(d1);
                (f * n1 - k * norm_cdf(d2), n1)
            }
            OptionKind::Put => {
                let n1 = norm_cdf(-d1);
                (k * norm_cdf(-d2) - f * n1, -n1)
            }
        }
    };
    (v.0, d1, v.1)
}

/// Undiscounted value outside the regular domain: no volatility (or a
/// negative one), a non-positive forward or strike, or infinite variance.
#[cold]
fn undiscounted_degenerate(kind: OptionKind, f: f64, k: f64, s: f64) -> f64 {
    if f.is_nan() || k.is_nan() || s.is_nan() {
        return f64::NAN;
    }
    if s == f64::INFINITY && f > 0.0 && k > 0.0 {
        // Infinite variance: the call is worth the forward, the put the strike.
        return match kind {
            OptionKind::Call => f,
            OptionKind::Put => k,
        };
    }
    intrinsic(kind, f, k)
}

/// `exp(-r t)`; crypto books usually margin at a zero rate, where the exponential is skipped
/// (the result, 1, is the same).
#[inline(always)]
fn discount(r: f64, t: f64) -> f64 {
    if r == 0.0 {
        1.0
    } else {
        (-r * t).exp()
    }
}

#[inline(always)]
fn regular(f: f64, k: f64, s: f64) -> bool {
    s > 0.0 && s < f64::INFINITY && f > 0.0 && k > 0.0
}

/// Black-76 value of a European option on a forward.
///
/// `f` forward, `k` strike, `t` year fraction to expiry, `sigma` lognormal
/// volatility, `r` continuously compounded rate used for discounting
/// (`D = exp(-r t)`):
///
/// * call `D (f N(d1) - k N(d2))`, put `D (k N(-d2) - f N(-d1))`,
/// * `d1 = (ln(f/k) + sigma² t / 2) / (sigma sqrt t)`, `d2 = d1 - sigma sqrt t`.
///
/// Edge cases, all without NaN for finite inputs:
/// * `t <= 0` (at or past expiry): the undiscounted payoff `max(f-k, 0)` /
///   `max(k-f, 0)`; the option is being settled, there is nothing to discount.
/// * `sigma * sqrt(t) == 0` (or negative `sigma`): discounted intrinsic
///   `D * max(..)`, the zero-volatility limit.
/// * `f <= 0` or `k <= 0` are outside the lognormal model and also get the
///   discounted intrinsic value; for `f == 0` (put `D k`, call 0) and
///   `k == 0` (call `D f`, put 0) that is the exact limit.
///
/// NaN inputs give NaN.
#[inline]
pub fn black76(kind: OptionKind, f: f64, k: f64, t: f64, sigma: f64, r: f64) -> f64 {
    if t <= 0.0 {
        return intrinsic(kind, f, k);
    }
    let df = discount(r, t);
    let s = sigma * t.sqrt();
    if regular(f, k, s) {
        df * undiscounted(kind, f, k, s).0
    } else {
        df * undiscounted_degenerate(kind, f, k, s)
    }
}

/// Black-76 value (bit for bit [`black76`]'s) and delta (`dV/dF`, as
/// [`black76_greeks`] defines it), from one evaluation of the normal
/// probabilities: for revaluing an option and bounding its slope at once.
#[inline]
pub fn black76_value_delta(
    kind: OptionKind,
    f: f64,
    k: f64,
    t: f64,
    sigma: f64,
    r: f64,
) -> (f64, f64) {
    if t <= 0.0 {
        return (intrinsic(kind, f, k), intrinsic_slope(kind, f, k));
    }
    let df = discount(r, t);
    let s = sigma * t.sqrt();
    if regular(f, k, s) {
        let (u, _, delta) = undiscounted_with_delta(kind, f, k, s);
        (df * u, df * delta)
    } else {
        let g = black76_greeks(kind, f, k, t, sigma, r);
        (df * undiscounted_degenerate(kind, f, k, s), g.delta)
    }
}

/// Black-76 value and greeks (see [`Greeks`] for units).
///
/// Closed forms, with `D = exp(-r t)` and `phi` the normal density:
/// delta `D N(d1)` (call) / `-D N(-d1)` (put), gamma `D phi(d1) / (f sigma sqrt t)`,
/// vega `D f phi(d1) sqrt t`, theta `r V - D f phi(d1) sigma / (2 sqrt t)`.
///
/// * `t <= 0`: value is the payoff, delta its slope (call 1/0, put -1/0,
///   exactly at the money 0.5 / -0.5), gamma, vega and theta 0.
/// * Zero volatility (and the other degenerate inputs of [`black76`]):
///   value `D * intrinsic`, delta `D *` the payoff slope, gamma and vega 0
///   (the true gamma is a point mass at the strike), theta `r V` (only
///   discounting is left).
pub fn black76_greeks(kind: OptionKind, f: f64, k: f64, t: f64, sigma: f64, r: f64) -> Greeks {
    if t <= 0.0 {
        return Greeks {
            value: intrinsic(kind, f, k),
            delta: intrinsic_slope(kind, f, k),
            gamma: 0.0,
            vega: 0.0,
            theta: 0.0,
        };
    }
    let df = discount(r, t);
    let sqrt_t = t.sqrt();
    let s = sigma * sqrt_t;
    if !regular(f, k, s) {
        let value = df * undiscounted_degenerate(kind, f, k, s);
        let delta = if s == f64::INFINITY && f > 0.0 && k > 0.0 {
            match kind {
                OptionKind::Call => df,
                OptionKind::Put => 0.0,
            }
        } else {
            df * intrinsic_slope(kind, f, k)
        };
        return Greeks {
            value,
            delta,
            gamma: 0.0,
            vega: 0.0,
            theta: r * value,
        };
    }
    let (u, d1) = undiscounted(kind, f, k, s);
    let value = df * u;
    let pdf = norm_pdf(d1);
    let delta = match kind {
        OptionKind::Call => df * norm_cdf(d1),
        OptionKind::Put => -df * norm_cdf(-d1),
    };
    let df_f_pdf = df * f * pdf;
    Greeks {
        value,
        delta,
        gamma: df * pdf / (f * s),
        vega: df_f_pdf * sqrt_t,
        theta: r * value - df_f_pdf * sigma / (2.0 * sqrt_t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OptionKind::{Call, Put};
    use proptest::prelude::*;

    fn close(a: f64, b: f64, rtol: f64, atol: f64) -> bool {
        (a - b).abs() <= atol + rtol * b.abs().max(a.abs())
    }

    // Haug, "The Complete Guide to Option Pricing Formulas" (2nd ed.),
    // Black (1976) example: F = 19, K = 19, T = 0.75, r = 0.10, sigma = 0.28
    // gives c = p = 1.7011 (published to 4 decimals).
    #[test]
    fn haug_black76_example() {
        let c = black76(Call, 19.0, 19.0, 0.75, 0.28, 0.10);
        let p = black76(Put, 19.0, 19.0, 0.75, 0.28, 0.10);
        assert!((c - 1.7011).abs() < 5e-5, "call {c}");
        assert!((p - 1.7011).abs() < 5e-5, "put {p}");
    }

    // Hull, "Options, Futures, and Other Derivatives" (5th ed., pp. 287-288),
    // Black's model for a European futures option: F = 20, K = 20, r = 9%,
    // T = 4 months, sigma = 25%: put = 1.12 in the book; MATLAB's `blkprice`
    // documentation reproduces this example as Call = Put = 1.1166.
    #[test]
    fn hull_futures_option_example() {
        let c = black76(Call, 20.0, 20.0, 4.0 / 12.0, 0.25, 0.09);
        let p = black76(Put, 20.0, 20.0, 4.0 / 12.0, 0.25, 0.09);
        assert!((p - 1.12).abs() < 5e-3, "put {p}");
        assert!((c - 1.1166).abs() < 5e-5, "call {c}");
        assert!((p - 1.1166).abs() < 5e-5, "put {p}");
    }

    #[test]
    fn expired_is_undiscounted_intrinsic() {
        for &t in &[0.0, -0.5] {
            assert_eq!(black76(Call, 110.0, 100.0, t, 0.5, 0.05), 10.0);
            assert_eq!(black76(Put, 110.0, 100.0, t, 0.5, 0.05), 0.0);
            assert_eq!(black76(Put, 90.0, 100.0, t, 0.5, 0.05), 10.0);
            assert_eq!(black76(Call, 90.0, 100.0, t, 0.5, 0.05), 0.0);
            let g = black76_greeks(Call, 110.0, 100.0, t, 0.5, 0.05);
            assert_eq!(
                g,
                Greeks {
                    value: 10.0,
                    delta: 1.0,
                    gamma: 0.0,
                    vega: 0.0,
                    theta: 0.0
                }
            );
            assert_eq!(black76_greeks(Put, 110.0, 100.0, t, 0.5, 0.05).delta, 0.0);
            assert_eq!(black76_greeks(Put, 90.0, 100.0, t, 0.5, 0.05).delta, -1.0);
            assert_eq!(black76_greeks(Call, 100.0, 100.0, t, 0.5, 0.05).delta, 0.5);
            assert_eq!(black76_greeks(Put, 100.0, 100.0, t, 0.5, 0.05).delta, -0.5);
        }
    }

    #[test]
    fn zero_vol_is_discounted_intrinsic() {
        let df = (-0.05_f64 * 2.0).exp();
        assert_eq!(black76(Call, 110.0, 100.0, 2.0, 0.0, 0.05), df * 10.0);
        assert_eq!(black76(Put, 110.0, 100.0, 2.0, 0.0, 0.05), 0.0);
        assert_eq!(black76(Put, 90.0, 100.0, 2.0, -0.3, 0.05), df * 10.0);
        let g = black76_greeks(Call, 110.0, 100.0, 2.0, 0.0, 0.05);
        assert_eq!(g.value, df * 10.0);
        assert_eq!(g.delta, df);
        assert_eq!((g.gamma, g.vega), (0.0, 0.0));
        assert!(close(g.theta, 0.05 * df * 10.0, 1e-15, 0.0));
    }

    #[test]
    fn zero_forward_and_zero_strike() {
        let df = (-0.05_f64 * 1.0).exp();
        assert_eq!(black76(Call, 0.0, 100.0, 1.0, 0.8, 0.05), 0.0);
        assert_eq!(black76(Put, 0.0, 100.0, 1.0, 0.8, 0.05), df * 100.0);
        assert_eq!(black76(Call, 100.0, 0.0, 1.0, 0.8, 0.05), df * 100.0);
        assert_eq!(black76(Put, 100.0, 0.0, 1.0, 0.8, 0.05), 0.0);
        let g = black76_greeks(Put, 0.0, 100.0, 1.0, 0.8, 0.05);
        assert_eq!(g.value, df * 100.0);
        assert_eq!(g.delta, -df);
        // Approaching f = 0 from above converges to the same values.
        let near = black76(Put, 1e-9, 100.0, 1.0, 0.8, 0.05);
        assert!(close(near, df * 100.0, 1e-10, 0.0), "{near}");
    }

    #[test]
    fn infinite_and_huge_variance_limits() {
        let df = (-0.05_f64).exp();
        for &sigma in &[1e200, f64::MAX, f64::INFINITY] {
            let c = black76(Call, 100.0, 120.0, 1.0, sigma, 0.05);
            let p = black76(Put, 100.0, 120.0, 1.0, sigma, 0.05);
            assert!(close(c, df * 100.0, 1e-15, 0.0), "sigma {sigma}: {c}");
            assert!(close(p, df * 120.0, 1e-15, 0.0), "sigma {sigma}: {p}");
        }
    }

    #[test]
    fn near_expiry_tends_to_intrinsic() {
        // One second before expiry at 80% vol, 20% in/out of the money.
        let t = 1.0 / (365.0 * 86_400.0);
        let c_itm = black76(Call, 120.0, 100.0, t, 0.8, 0.05);
        let c_otm = black76(Call, 80.0, 100.0, t, 0.8, 0.05);
        assert!(close(c_itm, 20.0, 1e-8, 0.0), "{c_itm}");
        assert_eq!(c_otm, 0.0);
        // At the money the value is ~ f sigma sqrt(t / 2 pi).
        let atm = black76(Call, 100.0, 100.0, t, 0.8, 0.0);
        let approx = 100.0 * 0.8 * (t / (2.0 * std::f64::consts::PI)).sqrt();
        assert!(close(atm, approx, 1e-9, 0.0), "{atm} vs {approx}");
    }

    #[test]
    fn atm_tiny_variance_keeps_relative_precision() {
        // ATM call = f (2 N(s/2) - 1) = f erf(s / (2 sqrt 2)) ~ f s / sqrt(2 pi).
        // N(d1) - N(d2) would lose ~8 digits here.
        let s: f64 = 1e-8;
        let v = black76(Call, 1.0, 1.0, 1.0, s, 0.0);
        let exact = s / (2.0 * std::f64::consts::PI).sqrt() * (1.0 - s * s / 24.0);
        assert!(close(v, exact, 1e-14, 0.0), "{v} vs {exact}");
    }

    #[test]
    fn deep_otm_tail_is_positive_not_zero() {
        // d1 ~ -13: erfc keeps this tiny value accurate (1+erf would give 0).
        let v = black76(Call, 100.0, 500.0, 0.25, 0.25, 0.0);
        assert!(v > 0.0 && v < 1e-30, "{v}");
        let p = black76(Put, 500.0, 100.0, 0.25, 0.25, 0.0);
        assert!(p > 0.0 && p < 1e-30, "{p}");
    }

    fn kind() -> impl Strategy<Value = OptionKind> {
        prop_oneof![Just(Call), Just(Put)]
    }

    /// (f, k) with f, k in [1e-2, 1e6] and |ln(f/k)| <= 3.
    fn fk() -> impl Strategy<Value = (f64, f64)> {
        (-2.0f64..6.0, -3.0f64..3.0).prop_filter_map("strike in range", |(lf, lm)| {
            let f = 10f64.powf(lf);
            let k = f * (-lm).exp();
            (1e-2..=1e6).contains(&k).then_some((f, k))
        })
    }

    proptest! {
        // The value is black76's to the bit, the delta the closed form's (computed there
        // from N(d1) itself, here from the erf the value used near the money).
        #[test]
        fn value_delta_is_black76_and_its_delta(
            kind in kind(),
            (f, k) in fk(),
            t in prop_oneof![Just(0.0), 1e-4f64..10.0],
            sigma in prop_oneof![Just(0.0), 0.01f64..5.0],
            r in -0.05f64..0.2,
        ) {
            let (v, d) = black76_value_delta(kind, f, k, t, sigma, r);
            prop_assert_eq!(v.to_bits(), black76(kind, f, k, t, sigma, r).to_bits());
            let g = black76_greeks(kind, f, k, t, sigma, r);
            prop_assert!((d - g.delta).abs() <= 1e-15, "delta {d} vs {}", g.delta);
        }

        #[test]
        fn put_call_parity(
            (f, k) in fk(),
            t in 1e-4f64..10.0,
            sigma in 0.01f64..5.0,
            r in -0.05f64..0.2,
        ) {
            let c = black76(Call, f, k, t, sigma, r);
            let p = black76(Put, f, k, t, sigma, r);
            let fwd = (-r * t).exp() * (f - k);
            // Errors scale with the largest quantity involved.
            let scale = f.max(k) * (-r * t).exp().max(1.0);
            prop_assert!((c - p - fwd).abs() <= 1e-13 * scale,
                "c {c} p {p} D(f-k) {fwd}");
        }

        #[test]
        fn value_within_no_arbitrage_bounds(
            kind in kind(),
            (f, k) in fk(),
            t in 1e-4f64..10.0,
            sigma in 0.01f64..5.0,
            r in -0.05f64..0.2,
        ) {
            let df = discount(r, t);
            let v = black76(kind, f, k, t, sigma, r);
            let (lower, upper) = match kind {
                Call => (df * (f - k).max(0.0), df * f),
                Put => (df * (k - f).max(0.0), df * k),
            };
            let slack = 1e-14 * upper;
            prop_assert!(v >= lower - slack && v <= upper + slack,
                "{v} not in [{lower}, {upper}]");
        }

        #[test]
        fn monotone_in_sigma(
            kind in kind(),
            (f, k) in fk(),
            t in 1e-4f64..10.0,
            sigma in 0.01f64..5.0,
            bump in 1e-3f64..1.0,
            r in -0.05f64..0.2,
        ) {
            let lo = black76(kind, f, k, t, sigma, r);
            let hi = black76(kind, f, k, t, sigma * (1.0 + bump), r);
            // Non-decreasing, up to rounding of the intrinsic part.
            prop_assert!(hi >= lo - 1e-15 * f.max(k), "{lo} > {hi}");
        }

        #[test]
        fn greeks_match_finite_differences(
            kind in kind(),
            f in 1.0f64..1e4,
            lm in -1.5f64..1.5,
            t in 1e-2f64..5.0,
            sigma in 0.05f64..2.0,
            r in -0.05f64..0.2,
        ) {
            let k = f * (-lm).exp();
            let g = black76_greeks(kind, f, k, t, sigma, r);
            prop_assert_eq!(g.value, black76(kind, f, k, t, sigma, r));
            let v = |f: f64, t: f64, sigma: f64| black76(kind, f, k, t, sigma, r);

            // Steps scaled to how fast the value changes: in the tails it
            // behaves like exp(-d1^2 / 2), so shrink steps with |d1|.
            let d1 = (f / k).ln() / (sigma * t.sqrt()) + 0.5 * sigma * t.sqrt();
            let shrink = 1.0 / (1.0 + d1 * d1);
            let width = f * sigma * t.sqrt() * shrink.sqrt();
            let hf = 1e-4 * width;
            let fd_delta = (v(f + hf, t, sigma) - v(f - hf, t, sigma)) / (2.0 * hf);
            let hg = 1e-3 * width;
            let fd_gamma =
                (v(f + hg, t, sigma) - 2.0 * g.value + v(f - hg, t, sigma)) / (hg * hg);
            let hs = 1e-4 * sigma * shrink;
            let fd_vega = (v(f, t, sigma + hs) - v(f, t, sigma - hs)) / (2.0 * hs);
            let ht = 1e-4 * t * shrink;
            let fd_theta = -(v(f, t + ht, sigma) - v(f, t - ht, sigma)) / (2.0 * ht);

            // Absolute floors from rounding noise: values carry errors of a
            // few ulps of max(f, k), which an n-th difference divides by h^n.
            let noise = 8.0 * f64::EPSILON * f.max(k);
            prop_assert!(close(g.delta, fd_delta, 1e-6, noise / hf),
                "delta {} fd {}", g.delta, fd_delta);
            prop_assert!(close(g.gamma, fd_gamma, 1e-4, 4.0 * noise / (hg * hg)),
                "gamma {} fd {}", g.gamma, fd_gamma);
            prop_assert!(close(g.vega, fd_vega, 1e-6, noise / hs),
                "vega {} fd {}", g.vega, fd_vega);
            // Theta is a difference of a carry term and a decay term; judge
            // its error against their size as well.
            let theta_scale = (r * g.value).abs() + g.vega * sigma / (2.0 * t);
            prop_assert!(close(g.theta, fd_theta, 1e-6, 1e-7 * theta_scale + noise / ht),
                "theta {} fd {}", g.theta, fd_theta);
        }

        #[test]
        fn finite_for_any_finite_input(
            kind in kind(),
            f in prop_oneof![Just(0.0), -1e6f64..1e12, 0.0f64..1e-6],
            k in prop_oneof![Just(0.0), -1e6f64..1e12, 0.0f64..1e-6],
            t in prop_oneof![Just(0.0), -10.0f64..100.0, 0.0f64..1e-8],
            sigma in prop_oneof![Just(0.0), -1.0f64..1e3, 0.0f64..1e-8, Just(1e300)],
            r in -1.0f64..1.0,
        ) {
            let v = black76(kind, f, k, t, sigma, r);
            prop_assert!(v.is_finite(), "value {v}");
            let g = black76_greeks(kind, f, k, t, sigma, r);
            prop_assert!(
                g.value.is_finite() && g.delta.is_finite() && g.gamma.is_finite()
                    && g.vega.is_finite() && g.theta.is_finite(),
                "{g:?}"
            );
        }
    }
}
