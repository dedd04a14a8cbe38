//! Filtered historical simulation (docs/MODEL.md section 5).
//!
//! Each past day becomes a scenario: the day's return, rescaled from the volatility of its
//! own time to today's (EWMA) volatility, so that a calm-period return counts for more when
//! markets are turbulent now and less when they are calm. Every underlying moves together on
//! the same historical day, which keeps the correlations the market actually showed.

use crate::error::{InputError, Result};
use crate::input::history::History;
use crate::input::params::StatisticalParams;
use pmargin_stats::ewma::{ewma_variances, log_returns};
use pmargin_stats::StatsError;

/// Scenario moves per underlying: `moves[t]` is the price move `exp(x_t) - 1` of scenario `t`.
#[derive(Debug, Clone, PartialEq)]
pub struct FhsScenarios {
    pub count: usize,
    pub moves: Vec<(String, Vec<f64>)>,
}

impl FhsScenarios {
    pub fn build(history: &History, stat: &StatisticalParams) -> Result<FhsScenarios> {
        let horizon = f64::from(stat.horizon_days).sqrt();
        let mut moves = Vec::with_capacity(history.columns.len());
        for (name, closes) in &history.columns {
            // A truncated history (backtests) may hold a single row: no return, no scenario.
            let returns = if closes.len() < 2 {
                Vec::new()
            } else {
                log_returns(closes).map_err(|e| stats_error(history, name, &e))?
            };
            let x: Vec<f64> = if returns.is_empty() {
                Vec::new()
            } else if stat.filtered {
                let s2 = ewma_variances(&returns, stat.ewma_lambda)
                    .map_err(|e| stats_error(history, name, &e))?;
                let today = s2[returns.len()].sqrt();
                returns
                    .iter()
                    .zip(&s2)
                    .enumerate()
                    .map(|(t, (r, v))| {
                        if *v > 0.0 {
                            Ok(r / v.sqrt() * today * horizon)
                        } else if *r == 0.0 {
                            Ok(0.0)
                        } else {
                            Err(InputError::new(
                                &history.source,
                                format!("{name} on {}", history.dates[t + 1]),
                                "the EWMA variance is zero before a nonzero return: the return cannot be filtered",
                            ))
                        }
                    })
                    .collect::<Result<_>>()?
            } else {
                returns.iter().map(|r| r * horizon).collect()
            };
            moves.push((name.clone(), x.iter().map(|x| x.exp_m1()).collect()));
        }
        Ok(FhsScenarios {
            count: history.dates.len() - 1,
            moves,
        })
    }

    pub fn moves_of(&self, underlying: &str) -> Option<&[f64]> {
        self.moves
            .iter()
            .find(|(n, _)| n == underlying)
            .map(|(_, m)| m.as_slice())
    }
}

/// The EWMA refused a column or a setting: name the parameter when the setting is at fault,
/// else the history column.
fn stats_error(history: &History, column: &str, e: &StatsError) -> InputError {
    match e {
        StatsError::InvalidParameter { .. } => {
            InputError::new("params", "statistical.ewma_lambda", e.to_string())
        }
        _ => InputError::new(
            &history.source,
            column,
            format!("filtered historical simulation cannot use this column: {e}"),
        ),
    }
}

/// Number of tail scenarios at confidence `alpha`: `max(1, ceil(N (1 - alpha)))`, with the
/// product rounded to 9 decimals first so that 400 x 0.01 gives 4 and not 5.
pub fn tail_count(n: usize, alpha: f64) -> usize {
    let raw = n as f64 * (1.0 - alpha);
    let rounded = (raw * 1e9).round() / 1e9;
    (rounded.ceil() as usize).clamp(1, n.max(1))
}

/// VaR and ES of a set of scenario losses: the q-th largest loss, and the mean of the q largest.
pub fn var_es(losses: &mut [f64], alpha: f64) -> (f64, f64) {
    if losses.is_empty() {
        return (0.0, 0.0);
    }
    let q = tail_count(losses.len(), alpha);
    // Partition so the q largest losses come first, then read the q-th largest among them.
    losses.select_nth_unstable_by(q - 1, |a, b| b.total_cmp(a));
    let tail = &losses[..q];
    let var = tail.iter().copied().fold(f64::INFINITY, f64::min);
    let es = tail.iter().sum::<f64>() / q as f64;
    (var, es)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_count_rounds_before_ceiling() {
        assert_eq!(tail_count(400, 0.99), 4);
        assert_eq!(tail_count(401, 0.99), 5);
        assert_eq!(tail_count(50, 0.99), 1);
        assert_eq!(tail_count(2297, 0.99), 23);
        assert_eq!(tail_count(100, 0.975), 3);
    }

    #[test]
    fn var_and_es_of_a_small_sample() {
        // 200 losses 1..=200 at 99%: q = 2, VaR = 199, ES = (200 + 199) / 2.
        let mut losses: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        losses.swap(3, 150);
        assert_eq!(var_es(&mut losses, 0.99), (199.0, 199.5));
    }

    #[test]
    fn ewma_by_hand() {
        // r = 0.1, -0.2, 0.05; s2_1 = (0.01 + 0.04 + 0.0025) / 3 = 0.0175
        // s2_2 = 0.94 * 0.0175 + 0.06 * 0.01 = 0.01705
        // s2_3 = 0.94 * 0.01705 + 0.06 * 0.04 = 0.018427
        // s2_4 = 0.94 * 0.018427 + 0.06 * 0.0025 = 0.01747138
        let s2 = ewma_variances(&[0.1, -0.2, 0.05], 0.94).unwrap();
        let expected = [0.0175, 0.01705, 0.018427, 0.01747138];
        for (a, b) in s2.iter().zip(expected) {
            assert!((a - b).abs() < 1e-15, "{a} vs {b}");
        }
    }

    #[test]
    fn filtered_moves_rescale_to_todays_vol() {
        let h = History::parse(
            "h.csv",
            "date,BTC\n2024-01-01,100\n2024-01-02,110\n2024-01-03,88\n2024-01-04,92.4\n",
        )
        .unwrap();
        let stat = StatisticalParams::default();
        let fhs = FhsScenarios::build(&h, &stat).unwrap();
        let r = [(1.1f64).ln(), (0.8f64).ln(), (1.05f64).ln()];
        let s2 = ewma_variances(&r, 0.94).unwrap();
        let m = fhs.moves_of("BTC").unwrap();
        for t in 0..3 {
            let x = r[t] / s2[t].sqrt() * s2[3].sqrt();
            assert!((m[t] - (x.exp() - 1.0)).abs() < 1e-15);
        }
        let plain = FhsScenarios::build(
            &h,
            &StatisticalParams {
                filtered: false,
                horizon_days: 4,
                ..stat
            },
        )
        .unwrap();
        // Unfiltered, 4-day horizon: x = r * 2; the second day's move is 0.8^2 - 1 = -0.36.
        assert!((plain.moves_of("BTC").unwrap()[1] - (-0.36)).abs() < 1e-15);
    }
}
