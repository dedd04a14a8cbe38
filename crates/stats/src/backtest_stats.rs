//! Statistical tests of a margin model's backtest.
//!
//! Why: a margin model that claims 99% coverage should see losses exceed the
//! margin on about 1 day in 100 — not much more often (under-margined), and
//! the exceedances ("breaches") should not bunch together (a model that is
//! slow to react breaches several days in a row during a crisis). These tests
//! turn a breach count or breach sequence into a verdict with a p-value: the
//! probability of seeing evidence at least this strong against the model if
//! the model were in fact right. Small p-values (e.g. below 5%) mean the
//! model should be reviewed.
//!
//! * [`kupiec`]: is the number of breaches consistent with the claimed
//!   coverage? (proportion of failures test)
//! * [`christoffersen`]: do breaches cluster? (independence test, and the
//!   combined conditional-coverage test)
//! * [`traffic_light`]: the Basel green/yellow/red zones for the breach count.
//! * [`procyclicality`]: how abruptly margin requirements rose, which matters
//!   to members who must fund calls at short notice in stressed markets.

use statrs::distribution::{Binomial, ChiSquared, ContinuousCDF, DiscreteCDF};

use crate::validate::{finite_slice, min_len, open_interval};
use crate::{Result, StatsError};

/// A test statistic and its p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    /// Likelihood-ratio statistic (non-negative).
    pub statistic: f64,
    /// Probability under the null hypothesis (model correct) of a statistic
    /// at least this large.
    pub p_value: f64,
}

/// `a * ln(b)` with the convention `0 * ln(0) = 0`, used for log-likelihoods
/// of binomial counts where a zero count makes its probability irrelevant.
fn xlny(a: f64, b: f64) -> f64 {
    if a == 0.0 {
        0.0
    } else {
        a * b.ln()
    }
}

fn chi2_sf(statistic: f64, dof: f64) -> f64 {
    // ChiSquared::new only fails for non-positive dof, and callers pass 1 or 2;
    // the fallback (no evidence against the model) is unreachable.
    ChiSquared::new(dof).map_or(1.0, |c| c.sf(statistic).clamp(0.0, 1.0))
}

fn check_coverage(coverage: f64) -> Result<()> {
    open_interval(
        "coverage",
        coverage,
        0.0,
        1.0,
        "coverage (e.g. 0.99) must lie strictly between 0 and 1",
    )
}

fn check_counts(what: &'static str, observations: usize, breaches: usize) -> Result<()> {
    if observations == 0 || breaches > observations {
        return Err(StatsError::InvalidCounts {
            what,
            observations,
            breaches,
        });
    }
    Ok(())
}

/// Kupiec (1995) proportion-of-failures likelihood-ratio test.
///
/// With `n` observations, `x` breaches and `p = 1 - coverage`:
/// `LR_pof = -2 ln[(1-p)^(n-x) p^x] + 2 ln[(1-x/n)^(n-x) (x/n)^x]`,
/// chi-square with 1 degree of freedom under the null. Zero and full breach
/// counts use `0 ln 0 = 0`.
pub fn kupiec(observations: usize, breaches: usize, coverage: f64) -> Result<TestResult> {
    check_counts("kupiec", observations, breaches)?;
    check_coverage(coverage)?;
    let n = observations as f64;
    let x = breaches as f64;
    let p = 1.0 - coverage;
    let phat = x / n;
    let ll0 = xlny(n - x, 1.0 - p) + xlny(x, p);
    let ll1 = xlny(n - x, 1.0 - phat) + xlny(x, phat);
    let statistic = (2.0 * (ll1 - ll0)).max(0.0);
    Ok(TestResult {
        statistic,
        p_value: chi2_sf(statistic, 1.0),
    })
}

/// Transition counts of a breach sequence: `nij` = number of days in state
/// `j` following a day in state `i` (0 = no breach, 1 = breach).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionCounts {
    /// No breach followed by no breach.
    pub n00: usize,
    /// No breach followed by a breach.
    pub n01: usize,
    /// Breach followed by no breach.
    pub n10: usize,
    /// Breach followed by a breach.
    pub n11: usize,
}

/// Christoffersen (1998) results.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Christoffersen {
    /// Transition counts used.
    pub counts: TransitionCounts,
    /// Unconditional coverage (Kupiec) on the whole sequence.
    pub unconditional: TestResult,
    /// Independence test, chi-square(1).
    pub independence: TestResult,
    /// Conditional coverage `LR_cc = LR_pof + LR_ind`, chi-square(2).
    pub conditional_coverage: TestResult,
}

/// Christoffersen (1998) independence and conditional coverage tests.
///
/// `indicators[t]` is true when day `t` was a breach (at least 2 days).
/// With `pi0 = n01/(n00+n01)`, `pi1 = n11/(n10+n11)`,
/// `pi = (n01+n11)/(n00+n01+n10+n11)`:
/// `LR_ind = -2 ln[(1-pi)^(n00+n10) pi^(n01+n11)]
///           + 2 ln[(1-pi0)^n00 pi0^n01 (1-pi1)^n10 pi1^n11]` ~ chi-square(1);
/// `LR_cc = LR_pof + LR_ind` ~ chi-square(2), where `LR_pof` is
/// [`kupiec`] on the full sequence (all `T` days, not the `T-1` transitions).
/// Zero counts use `0 ln 0 = 0`; if no breach ever follows a breach because
/// there are no breaches, `LR_ind` is 0.
pub fn christoffersen(indicators: &[bool], coverage: f64) -> Result<Christoffersen> {
    min_len("breach indicators", indicators.len(), 2)?;
    check_coverage(coverage)?;
    let mut c = TransitionCounts {
        n00: 0,
        n01: 0,
        n10: 0,
        n11: 0,
    };
    for w in indicators.windows(2) {
        match (w[0], w[1]) {
            (false, false) => c.n00 += 1,
            (false, true) => c.n01 += 1,
            (true, false) => c.n10 += 1,
            (true, true) => c.n11 += 1,
        }
    }
    let (n00, n01, n10, n11) = (c.n00 as f64, c.n01 as f64, c.n10 as f64, c.n11 as f64);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let pi0 = ratio(n01, n00 + n01);
    let pi1 = ratio(n11, n10 + n11);
    let pi = ratio(n01 + n11, n00 + n01 + n10 + n11);
    let ll_null = xlny(n00 + n10, 1.0 - pi) + xlny(n01 + n11, pi);
    let ll_alt = xlny(n00, 1.0 - pi0) + xlny(n01, pi0) + xlny(n10, 1.0 - pi1) + xlny(n11, pi1);
    let lr_ind = (2.0 * (ll_alt - ll_null)).max(0.0);
    let breaches = indicators.iter().filter(|&&b| b).count();
    let unconditional = kupiec(indicators.len(), breaches, coverage)?;
    let lr_cc = unconditional.statistic + lr_ind;
    Ok(Christoffersen {
        counts: c,
        unconditional,
        independence: TestResult {
            statistic: lr_ind,
            p_value: chi2_sf(lr_ind, 1.0),
        },
        conditional_coverage: TestResult {
            statistic: lr_cc,
            p_value: chi2_sf(lr_cc, 2.0),
        },
    })
}

/// Breach indicators from paired (requirement, realised loss) observations:
/// a breach is a loss strictly greater than the requirement.
pub fn breach_indicators(requirements: &[f64], losses: &[f64]) -> Result<Vec<bool>> {
    if requirements.len() != losses.len() {
        return Err(StatsError::LengthMismatch {
            what: "losses (one per requirement)",
            expected: requirements.len(),
            got: losses.len(),
        });
    }
    finite_slice("requirements", requirements)?;
    finite_slice("losses", losses)?;
    Ok(requirements
        .iter()
        .zip(losses)
        .map(|(r, l)| l > r)
        .collect())
}

/// Basel traffic-light zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// Breach count consistent with the model.
    Green,
    /// Breach count high enough to warrant review.
    Yellow,
    /// Breach count very unlikely if the model were correct.
    Red,
}

/// Cumulative binomial probability `P(X <= breaches)` for
/// `X ~ Binomial(observations, 1 - coverage)`.
pub fn breach_cdf(observations: usize, breaches: usize, coverage: f64) -> Result<f64> {
    check_counts("traffic light", observations, breaches)?;
    check_coverage(coverage)?;
    let b = Binomial::new(1.0 - coverage, observations as u64).map_err(|_| {
        StatsError::InvalidParameter {
            name: "coverage",
            value: coverage,
            requirement: "coverage must lie strictly between 0 and 1",
        }
    })?;
    Ok(b.cdf(breaches as u64).clamp(0.0, 1.0))
}

/// Basel traffic light, generalised to any sample size and coverage through
/// the cumulative binomial probability of the breach count:
/// green if `P(X <= x) < 0.95`, yellow if `< 0.9999`, red otherwise.
/// For 250 days at 99% this reproduces the Basel (1996) table: green 0-4,
/// yellow 5-9, red 10 or more.
pub fn traffic_light(observations: usize, breaches: usize, coverage: f64) -> Result<Zone> {
    let p = breach_cdf(observations, breaches, coverage)?;
    Ok(if p < 0.95 {
        Zone::Green
    } else if p < 0.9999 {
        Zone::Yellow
    } else {
        Zone::Red
    })
}

/// Procyclicality measures of a margin requirement series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Procyclicality {
    /// Largest one-step relative change `R_{t+1}/R_t - 1` (0.25 = +25%).
    /// `None` if no step starts at a positive requirement.
    pub max_1d_increase: Option<f64>,
    /// Largest 30-step relative change `R_{t+30}/R_t - 1`, point to point.
    /// `None` if the series is shorter than 31 observations or no window
    /// starts at a positive requirement.
    pub max_30d_increase: Option<f64>,
    /// `max R / min positive R` over the series (1 = perfectly stable).
    /// `None` if no requirement is positive.
    pub peak_to_trough: Option<f64>,
}

/// Largest relative change `R_{t+k}/R_t - 1` over all `t` with `R_t > 0`.
///
/// Windows starting at a zero requirement are skipped: going from no margin
/// to some margin is an infinite relative increase that says nothing about
/// the model's stability. The value may be negative if the requirement only
/// ever fell over `k` steps.
pub fn max_relative_increase(requirements: &[f64], k: usize) -> Result<Option<f64>> {
    check_requirements(requirements)?;
    if k == 0 {
        return Err(StatsError::InvalidParameter {
            name: "k",
            value: 0.0,
            requirement: "window length must be at least 1 observation",
        });
    }
    Ok(requirements
        .iter()
        .zip(requirements.iter().skip(k))
        .filter(|(a, _)| **a > 0.0)
        .map(|(a, b)| b / a - 1.0)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x)))))
}

fn check_requirements(requirements: &[f64]) -> Result<()> {
    min_len("requirements", requirements.len(), 1)?;
    finite_slice("requirements", requirements)?;
    if let Some(index) = requirements.iter().position(|&r| r < 0.0) {
        return Err(StatsError::OutOfRange {
            what: "requirements",
            index,
            value: requirements[index],
            requirement: "margin requirements must be non-negative",
        });
    }
    Ok(())
}

/// Procyclicality of a requirement series (one value per business day or
/// per observation; the 30 in `max_30d_increase` counts observations).
///
/// These follow the kind of measures regulators ask CCPs to monitor (EMIR
/// RTS art. 28, CPMI-IOSCO): the largest day-on-day jump and the largest
/// rise over a month, which tell a member how big a call may arrive at
/// short notice, and the peak-to-trough ratio, which tells how much margin
/// swings over the cycle.
pub fn procyclicality(requirements: &[f64]) -> Result<Procyclicality> {
    check_requirements(requirements)?;
    let max = requirements.iter().copied().fold(0.0, f64::max);
    let min_pos = requirements
        .iter()
        .copied()
        .filter(|&r| r > 0.0)
        .fold(f64::INFINITY, f64::min);
    Ok(Procyclicality {
        max_1d_increase: max_relative_increase(requirements, 1)?,
        max_30d_increase: max_relative_increase(requirements, 30)?,
        peak_to_trough: if min_pos.is_finite() {
            Some(max / min_pos)
        } else {
            None
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Closed-form chi-square(1) survival: P(chi2_1 > x) = erfc(sqrt(x/2)).
    fn chi2_1_sf(x: f64) -> f64 {
        libm::erfc((x / 2.0).sqrt())
    }

    /// Closed-form chi-square(2) survival: P(chi2_2 > x) = exp(-x/2).
    fn chi2_2_sf(x: f64) -> f64 {
        (-x / 2.0).exp()
    }

    #[test]
    fn kupiec_250_days_99_percent() {
        // n = 250, p0 = 0.01.
        // x = 6, phat = 0.024:
        //   ln L0 = 244 ln 0.99  + 6 ln 0.01  = -2.452282 - 27.631021 = -30.083303
        //   ln L1 = 244 ln 0.976 + 6 ln 0.024 = -5.927417 - 22.378209 = -28.305626
        //   LR = 2 (30.083303 - 28.305626) = 3.555355, p = erfc(sqrt(LR/2)) = 0.059354
        // (This is the commonly quoted "LR ~ 3.5554, p ~ 0.0593" example; it
        // belongs to x = 6, not x = 7.)
        let r = kupiec(250, 6, 0.99).unwrap();
        assert!((r.statistic - 3.555355).abs() < 1e-5, "{}", r.statistic);
        assert!((r.p_value - 0.059354).abs() < 1e-5, "{}", r.p_value);
        // x = 7, phat = 0.028:
        //   ln L0 = 243 ln 0.99  + 7 ln 0.01  = -2.442232 - 32.236191 = -34.678423
        //   ln L1 = 243 ln 0.972 + 7 ln 0.028 = -6.901072 - 25.028855 = -31.929928
        //   LR = 2 (34.678423 - 31.929928) = 5.496990, p = 0.019049
        let r = kupiec(250, 7, 0.99).unwrap();
        assert!((r.statistic - 5.496990).abs() < 1e-5, "{}", r.statistic);
        assert!((r.p_value - 0.019049).abs() < 1e-5, "{}", r.p_value);
    }

    #[test]
    fn kupiec_p_values_match_closed_form_chi2() {
        for x in [0, 1, 2, 3, 5, 9, 10, 25] {
            let r = kupiec(250, x, 0.99).unwrap();
            assert!(
                (r.p_value - chi2_1_sf(r.statistic)).abs() < 1e-10,
                "x={x}: {} vs {}",
                r.p_value,
                chi2_1_sf(r.statistic)
            );
        }
    }

    #[test]
    fn kupiec_edge_counts() {
        // x = 0: LR = -2 * 250 ln 0.99 = 5.025168 (0 ln 0 = 0 on both sides).
        let r = kupiec(250, 0, 0.99).unwrap();
        assert!((r.statistic - 5.025168).abs() < 1e-6);
        // x = n: LR = -2 * 10 ln 0.01 = 92.103404.
        let r = kupiec(10, 10, 0.99).unwrap();
        assert!((r.statistic - 92.103404).abs() < 1e-5);
        assert!(r.p_value.is_finite() && r.p_value >= 0.0);
        // x = expected exactly: LR = 0, p = 1.
        let r = kupiec(100, 1, 0.99).unwrap();
        assert!(r.statistic.abs() < 1e-12 && (r.p_value - 1.0).abs() < 1e-12);
        assert!(kupiec(0, 0, 0.99).is_err());
        assert!(kupiec(10, 11, 0.99).is_err());
        assert!(kupiec(10, 1, 1.0).is_err());
    }

    #[test]
    fn christoffersen_hand_example() {
        // F F F F T T T F F F F F (12 days, 3 breaches, coverage 95%).
        // Pairs: FF FF FF FT TT TT TF FF FF FF FF
        //   n00 = 7, n01 = 1, n10 = 1, n11 = 2
        // pi0 = 1/8, pi1 = 2/3, pi = 3/11
        // ln L_null = 8 ln(8/11) + 3 ln(3/11)             = -2.547630 - 3.897849 = -6.445479
        // ln L_alt  = 7 ln(7/8) + ln(1/8) + ln(1/3) + 2 ln(2/3)
        //           = -0.934720 - 2.079442 - 1.098612 - 0.810930 = -4.923704
        // LR_ind = 2 (6.445479 - 4.923704) = 3.043550, p = erfc(sqrt(LR/2)) = 0.081058
        // LR_pof (n=12, x=3, p=0.05) = -2[9 ln .95 + 3 ln .05] + 2[9 ln .75 + 3 ln .25]
        //        = 2 (9.448836 - 6.748022) = 5.401629
        // LR_cc = 3.043550 + 5.401629 = 8.445179, p = exp(-LR_cc/2) = 0.014661
        let f = false;
        let t = true;
        let seq = [f, f, f, f, t, t, t, f, f, f, f, f];
        let c = christoffersen(&seq, 0.95).unwrap();
        assert_eq!(
            c.counts,
            TransitionCounts {
                n00: 7,
                n01: 1,
                n10: 1,
                n11: 2
            }
        );
        assert!(
            (c.independence.statistic - 3.043550).abs() < 1e-5,
            "{}",
            c.independence.statistic
        );
        assert!((c.independence.p_value - 0.081058).abs() < 1e-5);
        assert!((c.unconditional.statistic - 5.401629).abs() < 1e-5);
        assert!((c.conditional_coverage.statistic - 8.445179).abs() < 1e-5);
        assert!((c.conditional_coverage.p_value - 0.014661).abs() < 1e-5);
        // Closed-form p-values.
        assert!((c.independence.p_value - chi2_1_sf(c.independence.statistic)).abs() < 1e-10);
        assert!(
            (c.conditional_coverage.p_value - chi2_2_sf(c.conditional_coverage.statistic)).abs()
                < 1e-10
        );
    }

    #[test]
    fn christoffersen_zero_counts() {
        // No breaches: pi = pi0 = 0, n10 = n11 = 0 -> LR_ind = 0.
        let c = christoffersen(&[false; 50], 0.99).unwrap();
        assert_eq!(c.independence.statistic, 0.0);
        assert_eq!(c.independence.p_value, 1.0);
        // Evenly spread breaches F T F T ...: n01 = n10, n00 = n11 = 0.
        let seq: Vec<bool> = (0..20).map(|i| i % 2 == 1).collect();
        let c = christoffersen(&seq, 0.99).unwrap();
        assert!(c.independence.statistic.is_finite());
        assert!(c.conditional_coverage.p_value.is_finite());
        assert!(christoffersen(&[true], 0.99).is_err());
    }

    #[test]
    fn basel_traffic_light_250_days() {
        // Basel Committee (1996), "Supervisory framework for the use of
        // backtesting", Table 2: 250 observations at 99%:
        // green 0-4, yellow 5-9, red 10+.
        for x in 0..=4 {
            assert_eq!(traffic_light(250, x, 0.99).unwrap(), Zone::Green, "x={x}");
        }
        for x in 5..=9 {
            assert_eq!(traffic_light(250, x, 0.99).unwrap(), Zone::Yellow, "x={x}");
        }
        for x in [10, 11, 20, 250] {
            assert_eq!(traffic_light(250, x, 0.99).unwrap(), Zone::Red, "x={x}");
        }
        // Cumulative probabilities from the same table: 4 -> 89.22%, 5 -> 95.88%, 9 -> 99.97%.
        assert!((breach_cdf(250, 4, 0.99).unwrap() - 0.8922).abs() < 5e-5);
        assert!((breach_cdf(250, 5, 0.99).unwrap() - 0.9588).abs() < 5e-5);
        assert!((breach_cdf(250, 9, 0.99).unwrap() - 0.9997).abs() < 5e-5);
        assert!(traffic_light(250, 251, 0.99).is_err());
    }

    #[test]
    fn breach_indicators_from_pairs() {
        let b = breach_indicators(&[10.0, 10.0, 10.0], &[5.0, 10.0, 10.5]).unwrap();
        assert_eq!(b, vec![false, false, true]);
        assert!(breach_indicators(&[1.0], &[1.0, 2.0]).is_err());
        assert!(breach_indicators(&[f64::NAN], &[1.0]).is_err());
    }

    #[test]
    fn procyclicality_hand_example() {
        // 100 -> 125 (+25%) -> 100 -> ... then a 30-step window from 100 to 150.
        let mut r = vec![100.0, 125.0, 100.0];
        r.extend(std::iter::repeat_n(100.0, 27));
        r.push(150.0); // index 30: R_30 / R_0 - 1 = +50%, and R_30/R_29 - 1 = +50%
        let p = procyclicality(&r).unwrap();
        assert!((p.max_1d_increase.unwrap() - 0.5).abs() < 1e-15);
        assert!((p.max_30d_increase.unwrap() - 0.5).abs() < 1e-15);
        assert!((p.peak_to_trough.unwrap() - 1.5).abs() < 1e-15);
        // zero starts skipped; short series has no 30-day window
        let p = procyclicality(&[0.0, 10.0, 12.0]).unwrap();
        assert!((p.max_1d_increase.unwrap() - 0.2).abs() < 1e-15);
        assert_eq!(p.max_30d_increase, None);
        assert!((p.peak_to_trough.unwrap() - 1.2).abs() < 1e-15);
        let p = procyclicality(&[0.0, 0.0]).unwrap();
        assert_eq!(p.max_1d_increase, None);
        assert_eq!(p.peak_to_trough, None);
        // falling only: negative "increase"
        let p = procyclicality(&[100.0, 80.0]).unwrap();
        assert!((p.max_1d_increase.unwrap() + 0.2).abs() < 1e-15);
        assert!(procyclicality(&[]).is_err());
        assert!(procyclicality(&[1.0, -1.0]).is_err());
        assert!(max_relative_increase(&[1.0, 2.0], 0).is_err());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn tests_return_valid_probabilities(
            seq in proptest::collection::vec(any::<bool>(), 2..300),
            coverage in 0.5f64..0.999,
        ) {
            let c = christoffersen(&seq, coverage).unwrap();
            for t in [c.unconditional, c.independence, c.conditional_coverage] {
                prop_assert!(t.statistic.is_finite() && t.statistic >= 0.0);
                prop_assert!((0.0..=1.0).contains(&t.p_value));
            }
            let x = seq.iter().filter(|&&b| b).count();
            prop_assert!(traffic_light(seq.len(), x, coverage).is_ok());
        }
    }
}
