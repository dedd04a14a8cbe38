//! Implied volatility: the Black-76 volatility that reproduces a given price.
//!
//! Margin models quote and shock options in volatility, but exchanges and
//! books carry prices, so every price has to be turned back into a vol. The
//! inversion is easy at the money and treacherous elsewhere: far out of the
//! money the price is exponentially small and nearly flat in volatility
//! (vega underflows), deep in the money the price is almost all intrinsic
//! value and the vol information sits in the last few digits, and close to
//! expiry both effects are extreme. A bare Newton iteration divides by that
//! vanishing vega and shoots off to nonsense.
//!
//! The approach here:
//! 1. Strip the discount factor and the intrinsic value. By put-call parity
//!    every option's time value equals that of the *out-of-the-money* call
//!    on forward `min(f, k)` with strike `max(f, k)`; dividing by the strike
//!    leaves one normalised problem, `c(s) = m N(d1) - N(d2) = beta` with
//!    `m = min/max <= 1`, in the total standard deviation `s = sigma sqrt t`.
//! 2. `c` increases in `s` and changes from convex to concave at
//!    `s_c = sqrt(2 |ln m|)`. Above `c(s_c)` Newton on `c` started at `s_c`
//!    converges monotonically. Below it, the price is an exponentially small
//!    tail value and Newton runs on `ln c`, which is close to
//!    `-ln(m)^2 / (2 s^2)` and therefore well behaved, from an asymptotic
//!    starting point.
//! 3. Every evaluation tightens a bracket `[lo, hi]` around the root; any
//!    Newton step that leaves the bracket (or cannot be computed because vega
//!    underflowed) is replaced by bisection, so the iteration cannot diverge.

use crate::black76::undiscounted;
use crate::normal::norm_pdf;
use crate::OptionKind;

/// Why a price has no implied volatility.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImpliedVolError {
    /// The price is below the discounted intrinsic value `D * max(f-k, 0)`
    /// (call) / `D * max(k-f, 0)` (put); no volatility, not even zero, gives it.
    #[error("price {price} is below the no-arbitrage lower bound {lower}")]
    BelowIntrinsic { price: f64, lower: f64 },
    /// The price is at or above `D * f` (call) / `D * k` (put), the limit for
    /// infinite volatility.
    #[error("price {price} is at or above the no-arbitrage upper bound {upper}")]
    AboveUpperBound { price: f64, upper: f64 },
    /// `t <= 0`: at or past expiry the value no longer depends on volatility.
    #[error("option is at or past expiry; its value does not depend on volatility")]
    Expired,
    /// A non-finite input, or a non-positive forward or strike.
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    /// The safeguarded iteration did not settle (not expected for valid inputs).
    #[error("implied volatility iteration did not converge")]
    NoConvergence,
}

/// Relative tolerance within which a price counts as equal to intrinsic.
const INTRINSIC_RTOL: f64 = 1e-14;
/// Stop when a Newton step or the bracket is this small relative to `s`.
const STEP_RTOL: f64 = 1e-14;
const MAX_ITER: usize = 100;

/// Black-76 implied volatility of `price` (same conventions as
/// [`crate::black76`]).
///
/// Errors, never NaN:
/// * non-finite inputs, `f <= 0` or `k <= 0`: [`ImpliedVolError::InvalidInput`];
/// * `t <= 0`: [`ImpliedVolError::Expired`];
/// * `price >= D f` (call) / `D k` (put): [`ImpliedVolError::AboveUpperBound`];
/// * price below the discounted intrinsic value: [`ImpliedVolError::BelowIntrinsic`].
///
/// A price *at* the discounted intrinsic value returns `Ok(0.0)`: zero
/// volatility is the one volatility that reproduces it. For in-the-money
/// options "at" means within a relative `1e-14` of the price (the intrinsic
/// part is subtracted in floating point, so anything closer is rounding,
/// not information); for out-of-the-money options intrinsic is 0 and only a
/// price of exactly 0 qualifies. Slightly below intrinsic beyond that
/// tolerance is an error.
///
/// Accuracy: the returned vol reprices to about 1e-14 relative to the time
/// value, i.e. far better than 1e-12 relative to the price wherever the price
/// carries volatility information at all.
pub fn implied_vol(
    kind: OptionKind,
    price: f64,
    f: f64,
    k: f64,
    t: f64,
    r: f64,
) -> Result<f64, ImpliedVolError> {
    if !(price.is_finite() && f.is_finite() && k.is_finite() && t.is_finite() && r.is_finite()) {
        return Err(ImpliedVolError::InvalidInput("inputs must be finite"));
    }
    if f <= 0.0 {
        return Err(ImpliedVolError::InvalidInput("forward must be positive"));
    }
    if k <= 0.0 {
        return Err(ImpliedVolError::InvalidInput("strike must be positive"));
    }
    if t <= 0.0 {
        return Err(ImpliedVolError::Expired);
    }
    let df = (-r * t).exp();
    if !(df > 0.0 && df.is_finite()) {
        return Err(ImpliedVolError::InvalidInput(
            "discount factor exp(-r t) is not representable",
        ));
    }
    let (intrinsic, cap) = match kind {
        OptionKind::Call => ((f - k).max(0.0), f),
        OptionKind::Put => ((k - f).max(0.0), k),
    };
    let upper = df * cap;
    if price >= upper {
        return Err(ImpliedVolError::AboveUpperBound { price, upper });
    }
    let p = price / df;
    let time_value = p - intrinsic;
    let tol = if intrinsic > 0.0 {
        INTRINSIC_RTOL * p
    } else {
        0.0
    };
    if time_value < -tol {
        return Err(ImpliedVolError::BelowIntrinsic {
            price,
            lower: df * intrinsic,
        });
    }
    if time_value <= tol {
        return Ok(0.0);
    }
    // Out-of-the-money call with forward `m` and strike 1 (see module docs).
    let (lo_fk, hi_fk) = if f < k { (f, k) } else { (k, f) };
    let m = lo_fk / hi_fk;
    let beta = time_value / hi_fk;
    if beta >= m {
        // Rounding put the normalised price onto the infinite-vol limit
        // (both operands are finite here, so `>=` is the exact negation).
        return Err(ImpliedVolError::AboveUpperBound { price, upper });
    }
    let s = solve_normalised(beta, m)?;
    Ok(s / t.sqrt())
}

/// Solve `m N(x/s + s/2) - N(x/s - s/2) = beta` for `s > 0`, where
/// `x = ln m <= 0` and `0 < beta < m`.
fn solve_normalised(beta: f64, m: f64) -> Result<f64, ImpliedVolError> {
    let x = m.ln();
    let eval = |s: f64| {
        let (c, d1) = undiscounted(OptionKind::Call, m, 1.0, s);
        (c, m * norm_pdf(d1))
    };

    let mut lo = 0.0_f64;
    let mut hi = f64::INFINITY;
    let s_c = (-2.0 * x).sqrt();
    // Near the money c(s) ~ (m - 1)/2 + s (1 + m) / (2 sqrt(2 pi)): the
    // first-order expansion of both normal probabilities around zero.
    let near_money = (2.0 * std::f64::consts::PI).sqrt() * (2.0 * beta + 1.0 - m) / (1.0 + m);
    let (log_mode, mut s) = if s_c > 0.0 {
        let (c_c, _) = eval(s_c);
        if c_c == beta {
            return Ok(s_c);
        }
        if c_c > beta {
            hi = s_c;
            // Leading-order tail asymptotics: ln c ~ x/2 - x^2 / (2 s^2).
            // The neglected prefactor is below one, so this starts left of
            // the root, where Newton on the concave ln c moves monotonically.
            let tail = -x / (2.0 * (0.5 * x - beta.ln())).sqrt();
            // The near-money line is only meaningful once the time value is
            // comparable to the moneyness term it corrects.
            let s0 = if 2.0 * beta >= 1.0 - m && near_money > 0.0 && near_money < s_c {
                near_money
            } else if tail > 0.0 && tail < s_c {
                tail
            } else {
                0.5 * s_c
            };
            (true, s0)
        } else {
            lo = s_c;
            (false, s_c.max(near_money))
        }
    } else {
        // At the money c(s) = erf(s / (2 sqrt 2)) is concave with slope
        // 1/sqrt(2 pi) at 0: this guess is at or left of the root.
        (false, near_money)
    };

    let mut best = (f64::INFINITY, s);
    let ln_beta = beta.ln();
    for _ in 0..MAX_ITER {
        let (c, vega) = eval(s);
        let resid = (c - beta).abs();
        if resid < best.0 {
            best = (resid, s);
        }
        if resid <= 2.0 * f64::EPSILON * beta {
            // Reprices to rounding: further steps would only chase noise.
            return Ok(s);
        }
        if c < beta {
            lo = lo.max(s);
        } else {
            hi = hi.min(s);
        }
        let step = if log_mode {
            if c > 0.0 && vega > 0.0 {
                -(c.ln() - ln_beta) * (c / vega)
            } else {
                f64::NAN
            }
        } else if vega > 0.0 {
            (beta - c) / vega
        } else {
            f64::NAN
        };
        let mut next = s + step;
        if !(next > lo && next < hi) {
            // Newton left the bracket or could not be computed: bisect (or
            // expand while there is no upper end yet).
            next = if hi.is_finite() {
                0.5 * (lo + hi)
            } else {
                2.0 * s.max(lo).max(f64::MIN_POSITIVE)
            };
        }
        if (next - s).abs() <= STEP_RTOL * next || (hi.is_finite() && hi - lo <= STEP_RTOL * hi) {
            return Ok(next);
        }
        s = next;
    }
    // Rounding noise in `c` can make the last digits oscillate; accept the
    // best point seen if it reprices essentially exactly.
    if best.0 <= 1e-12 * beta {
        Ok(best.1)
    } else {
        Err(ImpliedVolError::NoConvergence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::black76;
    use crate::OptionKind::{Call, Put};
    use proptest::prelude::*;

    #[test]
    fn recovers_textbook_vol() {
        // Haug's Black-76 example (F = K = 19, T = 0.75, r = 10%, sigma = 28%).
        for kind in [Call, Put] {
            let p = black76(kind, 19.0, 19.0, 0.75, 0.28, 0.10);
            let iv = implied_vol(kind, p, 19.0, 19.0, 0.75, 0.10).unwrap();
            assert!((iv - 0.28).abs() < 1e-13, "{iv}");
        }
    }

    #[test]
    fn errors_for_out_of_bounds_prices() {
        let df = (-0.05_f64).exp();
        // Call ITM by 10: lower bound D*10, upper bound D*110.
        assert!(matches!(
            implied_vol(Call, df * 10.0 * 0.999, 110.0, 100.0, 1.0, 0.05),
            Err(ImpliedVolError::BelowIntrinsic { .. })
        ));
        assert!(matches!(
            implied_vol(Call, df * 110.0, 110.0, 100.0, 1.0, 0.05),
            Err(ImpliedVolError::AboveUpperBound { .. })
        ));
        assert!(matches!(
            implied_vol(Put, 200.0, 110.0, 100.0, 1.0, 0.05),
            Err(ImpliedVolError::AboveUpperBound { .. })
        ));
        assert!(matches!(
            implied_vol(Put, -1e-3, 110.0, 100.0, 1.0, 0.05),
            Err(ImpliedVolError::BelowIntrinsic { .. })
        ));
        assert_eq!(
            implied_vol(Call, 5.0, 100.0, 100.0, 0.0, 0.05),
            Err(ImpliedVolError::Expired)
        );
        assert_eq!(
            implied_vol(Call, 5.0, 100.0, 100.0, -1.0, 0.05),
            Err(ImpliedVolError::Expired)
        );
        for (p, f, k, t, r) in [
            (f64::NAN, 100.0, 100.0, 1.0, 0.0),
            (5.0, f64::INFINITY, 100.0, 1.0, 0.0),
            (5.0, 100.0, 100.0, f64::NAN, 0.0),
            (5.0, 100.0, 100.0, 1.0, f64::NEG_INFINITY),
            (5.0, 0.0, 100.0, 1.0, 0.0),
            (5.0, 100.0, -1.0, 1.0, 0.0),
        ] {
            assert!(
                matches!(
                    implied_vol(Call, p, f, k, t, r),
                    Err(ImpliedVolError::InvalidInput(_))
                ),
                "{p} {f} {k} {t} {r}"
            );
        }
    }

    #[test]
    fn price_at_intrinsic_gives_zero_vol() {
        let df = (-0.05_f64).exp();
        assert_eq!(
            implied_vol(Call, df * 10.0, 110.0, 100.0, 1.0, 0.05),
            Ok(0.0)
        );
        assert_eq!(implied_vol(Put, 0.0, 110.0, 100.0, 1.0, 0.05), Ok(0.0));
        // Zero-vol prices from black76 itself invert to zero.
        let p = black76(Put, 90.0, 100.0, 1.0, 0.0, 0.05);
        assert_eq!(implied_vol(Put, p, 90.0, 100.0, 1.0, 0.05), Ok(0.0));
    }

    #[test]
    fn extreme_but_valid_cases() {
        // Deep OTM, one hour to expiry: value ~1e-20 of the forward.
        let t = 1.0 / (365.0 * 24.0);
        for (kind, f, k, sigma) in [
            (Call, 100.0, 110.0, 0.9),
            (Put, 100.0, 90.0, 0.9),
            (Call, 100.0, 100.0, 1e-6),
            (Call, 100.0, 130.0, 0.9),
            (Put, 100.0, 101.0, 0.5),
            (Call, 101.0, 100.0, 0.5),
        ] {
            let p = black76(kind, f, k, t, sigma, 0.03);
            let iv = implied_vol(kind, p, f, k, t, 0.03).unwrap();
            assert!(
                (iv - sigma).abs() < 1e-8 * sigma,
                "{kind:?} {f} {k}: {iv} vs {sigma} (p {p})"
            );
        }
        // Very high vol, long dated: price close to the upper bound.
        let p = black76(Call, 100.0, 100.0, 10.0, 4.0, 0.0);
        let iv = implied_vol(Call, p, 100.0, 100.0, 10.0, 0.0).unwrap();
        assert!((iv - 4.0).abs() < 1e-6, "{iv}");
    }

    fn kind() -> impl Strategy<Value = OptionKind> {
        prop_oneof![Just(Call), Just(Put)]
    }

    proptest! {
        // Deep in/out of the money near expiry many draws carry no vol
        // information and are skipped; allow for that.
        #![proptest_config(ProptestConfig {
            max_global_rejects: 1_000_000,
            ..ProptestConfig::default()
        })]

        #[test]
        fn round_trip(
            kind in kind(),
            lf in -2.0f64..6.0,
            lm in -3.0f64..3.0,
            lt in -4.0f64..1.0,
            sigma in 0.01f64..5.0,
            r in -0.05f64..0.2,
        ) {
            let f = 10f64.powf(lf);
            let k = f * (-lm).exp();
            let t = 10f64.powf(lt);
            let df = (-r * t).exp();
            let price = black76(kind, f, k, t, sigma, r);
            let intrinsic = match kind { Call => (f - k).max(0.0), Put => (k - f).max(0.0) };
            // No vol information left: time value lost in the rounding of F.
            prop_assume!(price / df - intrinsic > 1e-12 * f);
            let iv = implied_vol(kind, price, f, k, t, r);
            prop_assert!(iv.is_ok(), "{iv:?} for price {price}");
            let iv = iv.unwrap();
            let back = black76(kind, f, k, t, iv, r);
            // Reprices to 1e-12, or (where the tail formula itself is only
            // good to ~1e-13 through cancellation) hits the vol to 1e-10.
            prop_assert!(
                (back - price).abs() <= 1e-12 * price || (iv - sigma).abs() <= 1e-10 * sigma,
                "price {price} -> vol {iv} (true {sigma}) -> {back}");
            // Vol accuracy where the price pins the vol down: error in the
            // price of a few ulps of max(f, k) moves the vol by that / vega.
            let vega = black76::black76_greeks(kind, f, k, t, sigma, r).vega;
            let vol_tol = 1e-10 * sigma + 64.0 * f64::EPSILON * df * f.max(k) / vega;
            prop_assert!((iv - sigma).abs() <= vol_tol,
                "vol {iv} vs {sigma} (tol {vol_tol})");
        }

        #[test]
        fn below_intrinsic_and_above_upper_are_errors(
            kind in kind(),
            f in 1.0f64..1e4,
            lm in -3.0f64..3.0,
            t in 1e-4f64..5.0,
            r in -0.05f64..0.2,
            frac in 1e-6f64..0.5,
        ) {
            let k = f * (-lm).exp();
            let df = (-r * t).exp();
            let (lower, upper) = match kind {
                Call => (df * (f - k).max(0.0), df * f),
                Put => (df * (k - f).max(0.0), df * k),
            };
            let below = lower - frac * upper;
            let is_below = matches!(
                implied_vol(kind, below, f, k, t, r),
                Err(ImpliedVolError::BelowIntrinsic { .. })
            );
            prop_assert!(is_below);
            let above = upper * (1.0 + frac);
            let is_above = matches!(
                implied_vol(kind, above, f, k, t, r),
                Err(ImpliedVolError::AboveUpperBound { .. })
            );
            prop_assert!(is_above);
        }

        #[test]
        fn never_nan_never_panics(
            kind in kind(),
            price in -10.0f64..1e6,
            f in -1.0f64..1e6,
            k in -1.0f64..1e6,
            t in -1.0f64..20.0,
            r in -1.0f64..1.0,
        ) {
            if let Ok(v) = implied_vol(kind, price, f, k, t, r) {
                prop_assert!(v.is_finite() && v >= 0.0, "{v}");
            }
        }
    }
}
