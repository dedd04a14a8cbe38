//! Monte Carlo statistical risk (docs/MODEL.md section 5, "free, but required").
//!
//! A simulated path is the same kind of object as a historical day of the filtered historical
//! simulation: one joint price move `m_u = exp(x_u) - 1` per underlying, vol shifts 0, weight 1.
//! So the simulation only has to produce an [`FhsScenarios`]; the risk arrays revalue every
//! instrument under it (options fully repriced with Black-76 once per path), and the
//! evaluator reads VaR and ES off the account's losses with the exact tail rule of section 5
//! (`q = max(1, ceil(N (1 - alpha)))`). Nothing downstream knows which model made the moves.
//!
//! The model, per history column `u`:
//! - daily log returns `r_t = ln(P_t / P_{t-1})`;
//! - daily vol `sigma_u = sqrt(s2_{N+1})`, the EWMA forecast with the same `ewma_lambda` and
//!   the same seeding rule (mean square of the first `min(30, N)` returns) as FHS;
//! - correlation `rho`: the EWMA correlation of the same returns with the same `lambda`, i.e.
//!   the RiskMetrics covariance forecast `S_{N+1}` normalised to unit diagonal (its diagonal
//!   is exactly `sigma_u^2`, so vols and correlation are one consistent covariance forecast);
//! - stressed `rho_s = (1 - w) rho + w J`, then the nearest valid correlation matrix (Higham)
//!   when the stressed matrix is not positive definite;
//! - `x = sigma * sqrt(h) * (L z) * sqrt((dof - 2) / W)`, `z` standard normal, `W` chi-square
//!   with `dof` degrees of freedom, `L` the Cholesky factor: a multivariate Student-t with unit
//!   variance, so `sigma_u sqrt(h)` is each underlying's standard deviation over the horizon.
//!
//! Random numbers come from `pmargin_stats::montecarlo::simulate`: ChaCha20, one stream per
//! block of 1024 paths, so a seed gives the same paths on any machine and any thread count.
//!
//! An underlying whose closes never move (EWMA vol 0) does not move in any path either, as in
//! FHS; it is left out of the correlation estimate (its correlation is undefined) and given
//! correlation 0, which has no effect since its vol is 0.
//!
//! `filtered` does not apply: the simulation always uses today's EWMA vol.

use crate::account::Evaluator;
use crate::book::BookAccount;
use crate::error::{InputError, Result};
use crate::fhs::FhsScenarios;
use crate::input::history::History;
use crate::input::params::StatisticalParams;
use pmargin_stats::montecarlo::{expected_shortfall, simulate, EsEstimate, McConfig};
use pmargin_stats::{ewma, Matrix, StatsError};

/// What the simulation used: the estimates, the stress and its repair, and the settings, so
/// a run can be audited and reproduced.
#[derive(Debug, Clone, PartialEq)]
pub struct McSummary {
    /// History columns, in the file's order; index `i` of every vector and matrix below.
    pub underlyings: Vec<String>,
    /// EWMA daily vol forecast per underlying (`sqrt(s2_{N+1})`).
    pub vols_daily: Vec<f64>,
    /// Correlation estimated from the history (EWMA), before the stress.
    pub estimated_correlation: Matrix,
    /// The correlation the paths were drawn with: stressed, then repaired when needed.
    pub correlation: Matrix,
    /// Whether the stressed matrix had to be repaired to a valid correlation matrix.
    pub repair_changed: bool,
    /// Frobenius distance between the stressed matrix and the one used (0 when unchanged).
    pub repair_frobenius_distance: f64,
    /// Smallest eigenvalue of the matrix used.
    pub min_eigenvalue: f64,
    pub paths: usize,
    pub dof: f64,
    pub stress_weight: f64,
    pub horizon_days: u32,
    pub seed: u64,
    /// Number of daily returns the estimates were made from.
    pub returns: usize,
}

/// Simulated joint scenarios for every column of the history, and what was used to make them.
///
/// Errors name the history file and the column when the data is at fault, and the
/// `statistical.*` parameter when a setting is (for parameters not validated by
/// [`crate::Params::validate`], e.g. built in code).
pub fn mc_scenarios(
    history: &History,
    stat: &StatisticalParams,
) -> Result<(FhsScenarios, McSummary)> {
    let file = history.source.as_str();
    let d = history.columns.len();
    let mut returns = Vec::with_capacity(d);
    let mut vols = Vec::with_capacity(d);
    for (name, closes) in &history.columns {
        let r = ewma::log_returns(closes).map_err(|e| data_error(file, name, &e))?;
        let s2 = ewma::ewma_variances(&r, stat.ewma_lambda).map_err(|e| match e {
            StatsError::InvalidParameter { .. } => param_error(&e),
            _ => data_error(file, name, &e),
        })?;
        vols.push(s2.last().copied().unwrap_or(0.0).sqrt());
        returns.push(r);
    }
    let estimated = estimate_correlation(history, &returns, &vols, stat.ewma_lambda)?;
    let config = McConfig {
        paths: stat.mc_paths,
        dof: stat.mc_dof,
        horizon_days: f64::from(stat.horizon_days),
        seed: stat.mc_seed,
        stress_weight: stat.mc_stress_weight,
    };
    let sample = simulate(&config, &vols, &estimated).map_err(|e| match e {
        StatsError::InvalidParameter { .. } => param_error(&e),
        _ => InputError::new(
            file,
            "",
            format!("the Monte Carlo simulation cannot use this history: {e}"),
        ),
    })?;
    let moves = history
        .columns
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let m = sample
                .returns
                .chunks_exact(d)
                .map(|x| x[i].exp_m1())
                .collect();
            (name.clone(), m)
        })
        .collect();
    let summary = McSummary {
        underlyings: history.columns.iter().map(|(n, _)| n.clone()).collect(),
        vols_daily: vols,
        estimated_correlation: estimated,
        correlation: sample.correlation,
        repair_changed: sample.repair.changed,
        repair_frobenius_distance: sample.repair.frobenius_distance,
        min_eigenvalue: sample.repair.min_eigenvalue,
        paths: sample.paths,
        dof: stat.mc_dof,
        stress_weight: stat.mc_stress_weight,
        horizon_days: stat.horizon_days,
        seed: stat.mc_seed,
        returns: history.dates.len() - 1,
    };
    Ok((
        FhsScenarios {
            count: sample.paths,
            moves,
        },
        summary,
    ))
}

/// EWMA correlation of the columns that move; a column that never moves gets correlation 0.
fn estimate_correlation(
    history: &History,
    returns: &[Vec<f64>],
    vols: &[f64],
    lambda: f64,
) -> Result<Matrix> {
    let d = returns.len();
    let moving: Vec<usize> = (0..d).filter(|&i| vols[i] > 0.0).collect();
    let mut full = Matrix::identity(d, d);
    if moving.len() >= 2 {
        let panel: Vec<Vec<f64>> = moving.iter().map(|&i| returns[i].clone()).collect();
        let c = ewma::ewma_correlation(&panel, lambda).map_err(|e| {
            InputError::new(
                &history.source,
                "",
                format!("the correlation of the history's returns cannot be estimated: {e}"),
            )
        })?;
        for (a, &i) in moving.iter().enumerate() {
            for (b, &j) in moving.iter().enumerate() {
                full[(i, j)] = c[(a, b)];
            }
        }
    }
    Ok(full)
}

fn data_error(file: &str, column: &str, e: &StatsError) -> InputError {
    InputError::new(
        file,
        column,
        format!("the Monte Carlo estimates cannot use this column: {e}"),
    )
}

/// A setting the simulation refused, named as in the parameter file.
fn param_error(e: &StatsError) -> InputError {
    let path = match e {
        StatsError::InvalidParameter { name, .. } => match *name {
            "paths" => "statistical.mc_paths",
            "dof" => "statistical.mc_dof",
            "stress_weight" => "statistical.mc_stress_weight",
            "horizon_days" => "statistical.horizon_days",
            "lambda" => "statistical.ewma_lambda",
            _ => "statistical",
        },
        _ => "statistical",
    };
    InputError::new("params", path, e.to_string())
}

/// The account's loss in every statistical scenario (historical day or simulated path),
/// read from the risk arrays in the same order the evaluator sums them.
pub fn account_losses(evaluator: &Evaluator, account: &BookAccount) -> Result<Vec<f64>> {
    evaluator.check_history(account)?;
    let (book, arrays) = (evaluator.book, evaluator.arrays);
    let n = arrays.fhs_count;
    let mut pnl = vec![0.0; n];
    let Some(shocks) = &arrays.fhs_shocks else {
        return Ok(Vec::new());
    };
    let add = |pnl: &mut [f64], row: &[f64], size: f64| {
        for (a, r) in pnl.iter_mut().zip(row) {
            *a += size * r;
        }
    };
    for &u in &account.exposures {
        if shocks[u].is_none() {
            continue;
        }
        for p in account.positions.iter().filter(|p| p.underlying == u) {
            let i = p.instrument;
            add(&mut pnl, &arrays.fhs[i * n..(i + 1) * n], p.size);
        }
        for b in &account.balances {
            if book.assets[b.asset].underlying == Some(u) {
                let a = b.asset;
                add(&mut pnl, &arrays.asset_fhs[a * n..(a + 1) * n], b.amount);
            }
        }
    }
    Ok(pnl.into_iter().map(|p| -p).collect())
}

/// VaR and ES of the account over the statistical scenarios, with the Monte Carlo standard
/// error of the ES (`pmargin_stats::montecarlo::expected_shortfall`, same tail rule as the
/// report). `None` without scenarios or exposures (the report's ES is then 0).
///
/// The margin report keeps the format of docs/FORMATS.md, so the simulation error is available
/// here rather than in the report: `es` agrees with the report's `es` (up to summation order)
/// and `standard_error` says how far another seed could move it.
pub fn account_es(evaluator: &Evaluator, account: &BookAccount) -> Result<Option<EsEstimate>> {
    let mut losses = account_losses(evaluator, account)?;
    if losses.is_empty() || account.exposures.is_empty() {
        return Ok(None);
    }
    let alpha = evaluator.book.params.statistical.confidence;
    expected_shortfall(&mut losses, alpha)
        .map(Some)
        .map_err(|e| {
            InputError::new("history", "", format!("the ES cannot be estimated: {e}"))
                .with_account(&account.id)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::params::StatisticalModel;

    fn stat(paths: usize, seed: u64) -> StatisticalParams {
        StatisticalParams {
            model: StatisticalModel::Mc,
            mc_paths: paths,
            mc_seed: seed,
            ..StatisticalParams::default()
        }
    }

    fn history() -> History {
        // Two moving columns and a stablecoin-like column that never moves.
        let mut text = String::from("date,BTC,ETH,USDX\n");
        let (mut b, mut e) = (100.0f64, 10.0f64);
        for day in 0..60 {
            let date =
                chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Days::new(day);
            text.push_str(&format!("{date},{b},{e},1\n"));
            let k = day as f64;
            b *= 1.0 + 0.02 * (k * 0.7).sin();
            e *= 1.0 + 0.03 * (k * 0.7 + 0.5).sin();
        }
        History::parse("h.csv", &text).unwrap()
    }

    #[test]
    fn moves_vols_and_correlation() {
        let h = history();
        let (s, sum) = mc_scenarios(&h, &stat(3000, 9)).unwrap();
        assert_eq!(s.count, 3000);
        assert_eq!(sum.underlyings, ["BTC", "ETH", "USDX"]);
        // Vols are the FHS EWMA forecasts.
        for (i, (_, closes)) in h.columns.iter().enumerate() {
            let r: Vec<f64> = closes.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
            let s2 = ewma::ewma_variances(&r, 0.94).unwrap();
            assert!((sum.vols_daily[i] - s2[r.len()].sqrt()).abs() <= 1e-15);
        }
        // The constant column never moves and is uncorrelated in the estimate.
        assert!(s.moves_of("USDX").unwrap().iter().all(|&m| m == 0.0));
        assert_eq!(sum.estimated_correlation[(0, 2)], 0.0);
        let rho = sum.estimated_correlation[(0, 1)];
        assert!((sum.correlation[(0, 1)] - (0.7 * rho + 0.3)).abs() < 1e-15);
        assert!(!sum.repair_changed);
        // Moves are exp(x) - 1: never below -1, and some are large.
        let btc = s.moves_of("BTC").unwrap();
        assert!(btc.iter().all(|&m| m > -1.0));
        assert!(btc.iter().any(|&m| m.abs() > 2.0 * sum.vols_daily[0]));
    }

    #[test]
    fn full_stress_is_repaired_and_reported() {
        let h = history();
        let st = StatisticalParams {
            mc_stress_weight: 1.0,
            ..stat(100, 1)
        };
        let (_, sum) = mc_scenarios(&h, &st).unwrap();
        assert!(sum.repair_changed);
        assert!(sum.repair_frobenius_distance > 0.0);
        assert!(sum.min_eigenvalue > 0.0);
    }

    #[test]
    fn bad_settings_name_the_parameter() {
        let h = history();
        let err = mc_scenarios(
            &h,
            &StatisticalParams {
                mc_dof: 2.0,
                ..stat(10, 1)
            },
        )
        .unwrap_err();
        assert_eq!(err.path, "statistical.mc_dof");
        let err = mc_scenarios(&h, &stat(0, 1)).unwrap_err();
        assert_eq!(err.path, "statistical.mc_paths");
    }
}
