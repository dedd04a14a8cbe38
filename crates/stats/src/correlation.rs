//! Correlation matrices: stressing them, repairing them, factorising them.
//!
//! Why: how much a portfolio of several coins can lose depends on how they
//! move together. Correlations estimated from data are the weakest input of
//! a margin model: they are noisy, they change in crises (everything tends
//! to fall together) and, when assembled from different sources or windows,
//! they can even be internally inconsistent (e.g. "A moves with B, B moves
//! with C, but A moves against C" beyond what is mathematically possible).
//!
//! * [`stressed_correlation`] pushes every correlation towards +1, the crisis
//!   pattern where diversification disappears. Note this is conservative for
//!   portfolios that are long (or short) everything; for a hedged spread
//!   (long one coin, short another) a correlation of +1 makes the hedge look
//!   *better*, so a margin model should also evaluate the unstressed matrix
//!   and keep the worse of the two.
//! * [`nearest_correlation`] replaces an inconsistent matrix by the closest
//!   consistent one (Higham 2002) and reports how far it had to move, so the
//!   risk team can see when the input was bad rather than have it silently
//!   fixed.
//! * [`cholesky`] is the "square root" of a correlation matrix that turns
//!   independent random draws into correlated ones in the simulation.

use nalgebra::{Cholesky, SymmetricEigen};

use crate::validate::{closed_interval, square_finite, worst_asymmetry};
use crate::{Matrix, Result, StatsError};

/// Smallest eigenvalue a repaired matrix is given. Large enough for a stable
/// Cholesky factorisation, small enough (1e-8) not to move any published
/// correlation visibly.
pub const EIGENVALUE_FLOOR: f64 = 1e-8;

/// Asymmetry above which an input matrix is rejected rather than symmetrised:
/// a larger difference means the matrix was mis-assembled, not rounded.
pub const SYMMETRY_TOLERANCE: f64 = 1e-8;

/// Tolerance for treating a matrix as already valid (unit diagonal, symmetric).
const EXACT_TOLERANCE: f64 = 1e-12;

/// Convergence tolerance of the alternating projections (relative Frobenius).
const CONVERGENCE_TOLERANCE: f64 = 1e-12;

/// Iteration cap of the alternating projections.
const MAX_ITERATIONS: usize = 10_000;

fn check_symmetric(what: &'static str, m: &Matrix) -> Result<()> {
    let (row, col, difference) = worst_asymmetry(m);
    if difference > SYMMETRY_TOLERANCE {
        return Err(StatsError::NotSymmetric {
            what,
            row,
            col,
            difference,
        });
    }
    Ok(())
}

fn check_unit_diagonal(what: &'static str, m: &Matrix, tol: f64) -> Result<()> {
    for i in 0..m.nrows() {
        if (m[(i, i)] - 1.0).abs() > tol {
            return Err(StatsError::OutOfRange {
                what,
                index: i,
                value: m[(i, i)],
                requirement: "the diagonal of a correlation matrix must be 1 (index is the diagonal position)",
            });
        }
    }
    Ok(())
}

fn symmetrise(m: &Matrix) -> Matrix {
    (m + m.transpose()) * 0.5
}

fn eigen(m: &Matrix) -> Result<SymmetricEigen<f64, nalgebra::Dyn>> {
    SymmetricEigen::try_new(m.clone(), f64::EPSILON, 100_000).ok_or(StatsError::NoConvergence {
        what: "symmetric eigen-decomposition",
    })
}

/// Smallest eigenvalue of a symmetric matrix (negative means the matrix is
/// not a valid correlation/covariance matrix).
pub fn min_eigenvalue(m: &Matrix) -> Result<f64> {
    square_finite("matrix", m)?;
    check_symmetric("matrix", m)?;
    let e = eigen(&symmetrise(m))?;
    Ok(e.eigenvalues.iter().copied().fold(f64::INFINITY, f64::min))
}

/// Stressed correlation `rho_s = (1 - w) rho + w J`, with `J` the matrix of ones.
///
/// `w = 0` leaves the matrix unchanged, `w = 1` makes everything perfectly
/// correlated. The result of a valid correlation matrix is again a valid
/// correlation matrix (a blend of two valid ones).
pub fn stressed_correlation(rho: &Matrix, w: f64) -> Result<Matrix> {
    square_finite("correlation", rho)?;
    check_symmetric("correlation", rho)?;
    check_unit_diagonal("correlation", rho, 1e-9)?;
    closed_interval(
        "stress_weight",
        w,
        0.0,
        1.0,
        "stress weight must lie in [0, 1]",
    )?;
    Ok(rho.map(|x| (1.0 - w) * x + w))
}

/// Outcome of [`nearest_correlation`].
#[derive(Debug, Clone, PartialEq)]
pub struct Repaired {
    /// The correlation matrix to use: symmetric, unit diagonal, smallest
    /// eigenvalue at least about [`EIGENVALUE_FLOOR`].
    pub matrix: Matrix,
    /// `false` when the input was already a valid correlation matrix and is
    /// returned untouched.
    pub changed: bool,
    /// Frobenius distance `||input - matrix||_F`: how much the input had to
    /// move. Zero when unchanged.
    pub frobenius_distance: f64,
    /// Alternating-projection iterations used (0 when unchanged).
    pub iterations: usize,
    /// Smallest eigenvalue of `matrix`.
    pub min_eigenvalue: f64,
}

/// Projection onto symmetric matrices with eigenvalues >= `floor`.
fn clip_eigenvalues(m: &Matrix, floor: f64) -> Result<Matrix> {
    let e = eigen(m)?;
    let clipped = e.eigenvalues.map(|l| l.max(floor));
    let v = &e.eigenvectors;
    let out = v * Matrix::from_diagonal(&clipped) * v.transpose();
    Ok(symmetrise(&out))
}

/// Nearest valid correlation matrix (Higham 2002, alternating projections
/// with Dykstra's correction).
///
/// The algorithm alternates between two simple fixes, "make all eigenvalues
/// at least [`EIGENVALUE_FLOOR`]" and "put ones on the diagonal"; Dykstra's
/// correction makes the alternation converge to the *closest* matrix
/// satisfying both (in Frobenius norm), not just any such matrix. If the
/// iteration cap is reached, eigenvalues are clipped a final time and the
/// matrix rescaled to unit diagonal, which keeps it positive definite.
///
/// A matrix that is already symmetric with unit diagonal (to 1e-12) and
/// eigenvalues of at least the floor is returned unchanged.
/// Asymmetry above [`SYMMETRY_TOLERANCE`] is rejected as a data error.
pub fn nearest_correlation(m: &Matrix) -> Result<Repaired> {
    square_finite("correlation", m)?;
    check_symmetric("correlation", m)?;
    let (_, _, asym) = worst_asymmetry(m);
    let sym = symmetrise(m);
    let min_eig_in = eigen(&sym)?
        .eigenvalues
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let unit_diag = check_unit_diagonal("correlation", m, EXACT_TOLERANCE).is_ok();
    if unit_diag && asym <= EXACT_TOLERANCE && min_eig_in >= EIGENVALUE_FLOOR {
        return Ok(Repaired {
            matrix: m.clone(),
            changed: false,
            frobenius_distance: 0.0,
            iterations: 0,
            min_eigenvalue: min_eig_in,
        });
    }

    let n = sym.nrows();
    let mut y = sym.clone();
    let mut ds = Matrix::zeros(n, n);
    let mut iterations = 0;
    let mut converged = false;
    while iterations < MAX_ITERATIONS {
        iterations += 1;
        let r = &y - &ds;
        let x = clip_eigenvalues(&r, EIGENVALUE_FLOOR)?;
        ds = &x - &r;
        let y_prev = y;
        y = x.clone();
        y.fill_diagonal(1.0);
        let scale = y.norm();
        let change = (&y - &y_prev).norm() / scale;
        let gap = (&x - &y).norm() / scale;
        if change <= CONVERGENCE_TOLERANCE && gap <= CONVERGENCE_TOLERANCE {
            converged = true;
            break;
        }
    }

    let mut min_eig = eigen(&y)?
        .eigenvalues
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    if !converged || min_eig < 0.5 * EIGENVALUE_FLOOR {
        // Safety net: clip once more and rescale to unit diagonal. Rescaling
        // by a positive diagonal keeps the matrix positive definite.
        let x = clip_eigenvalues(&y, EIGENVALUE_FLOOR)?;
        let d: Vec<f64> = (0..n).map(|i| 1.0 / x[(i, i)].sqrt()).collect();
        y = Matrix::from_fn(
            n,
            n,
            |i, j| {
                if i == j {
                    1.0
                } else {
                    x[(i, j)] * d[i] * d[j]
                }
            },
        );
        min_eig = eigen(&y)?
            .eigenvalues
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
    }
    if min_eig.is_nan() || min_eig <= 0.0 || Cholesky::new(y.clone()).is_none() {
        return Err(StatsError::NoConvergence {
            what: "nearest correlation repair",
        });
    }
    let frobenius_distance = (m - &y).norm();
    Ok(Repaired {
        matrix: y,
        changed: true,
        frobenius_distance,
        iterations,
        min_eigenvalue: min_eig,
    })
}

/// Lower-triangular Cholesky factor `L` with `L L' = m`.
///
/// Fails with [`StatsError::NotPositiveDefinite`] if `m` is not positive
/// definite; run [`nearest_correlation`] first for estimated matrices.
pub fn cholesky(m: &Matrix) -> Result<Matrix> {
    square_finite("matrix", m)?;
    check_symmetric("matrix", m)?;
    Cholesky::new(symmetrise(m))
        .map(|c| c.l())
        .ok_or(StatsError::NotPositiveDefinite { what: "matrix" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn higham_example() -> Matrix {
        Matrix::from_row_slice(3, 3, &[1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    }

    #[test]
    fn higham_2002_example_is_repaired_to_published_values() {
        // Higham, "Computing the nearest correlation matrix - a problem from
        // finance", IMA J. Numer. Anal. 22 (2002), section 4: the nearest
        // correlation matrix to [[1,1,0],[1,1,1],[0,1,1]] is
        // [[1, 0.7607, 0.1573], [0.7607, 1, 0.7607], [0.1573, 0.7607, 1]].
        let a = higham_example();
        assert!(min_eigenvalue(&a).unwrap() < -0.4); // eigenvalues 1 - sqrt(2), 1, 1 + sqrt(2)
        assert!(cholesky(&a).is_err());
        let r = nearest_correlation(&a).unwrap();
        assert!(r.changed);
        assert!(r.iterations > 0);
        let x = &r.matrix;
        for i in 0..3 {
            assert_eq!(x[(i, i)], 1.0);
        }
        assert!((x[(0, 1)] - 0.7607).abs() < 5e-5, "{}", x[(0, 1)]);
        assert!((x[(1, 2)] - 0.7607).abs() < 5e-5, "{}", x[(1, 2)]);
        assert!((x[(0, 2)] - 0.1573).abs() < 5e-5, "{}", x[(0, 2)]);
        assert_eq!(x[(0, 1)], x[(1, 0)]);
        assert!(r.min_eigenvalue > 0.0);
        assert!(cholesky(x).is_ok());
        // distance: four entries moved by 1 - 0.7607, two by 0.1573
        let expected = (4.0 * (1.0_f64 - 0.7607).powi(2) + 2.0 * 0.1573_f64.powi(2)).sqrt();
        assert!((r.frobenius_distance - expected).abs() < 2e-4);
    }

    #[test]
    fn valid_matrix_is_left_unchanged() {
        let m = Matrix::from_row_slice(3, 3, &[1.0, 0.5, 0.2, 0.5, 1.0, 0.3, 0.2, 0.3, 1.0]);
        let r = nearest_correlation(&m).unwrap();
        assert!(!r.changed);
        assert_eq!(r.matrix, m);
        assert_eq!(r.frobenius_distance, 0.0);
        assert_eq!(r.iterations, 0);
    }

    #[test]
    fn non_unit_diagonal_is_rescaled() {
        let m = Matrix::from_row_slice(2, 2, &[2.0, 0.5, 0.5, 1.0]);
        let r = nearest_correlation(&m).unwrap();
        assert!(r.changed);
        assert_eq!(r.matrix[(0, 0)], 1.0);
        assert_eq!(r.matrix[(1, 1)], 1.0);
        // Nearest unit-diagonal matrix only changes the diagonal here.
        assert!((r.matrix[(0, 1)] - 0.5).abs() < 1e-9);
    }

    #[test]
    fn rejects_bad_input() {
        let asym = Matrix::from_row_slice(2, 2, &[1.0, 0.5, 0.4, 1.0]);
        assert!(matches!(
            nearest_correlation(&asym),
            Err(StatsError::NotSymmetric { .. })
        ));
        let nan = Matrix::from_row_slice(2, 2, &[1.0, f64::NAN, f64::NAN, 1.0]);
        assert!(matches!(
            nearest_correlation(&nan),
            Err(StatsError::NonFinite { .. })
        ));
        let rect = Matrix::zeros(2, 3);
        assert!(matches!(cholesky(&rect), Err(StatsError::NotSquare { .. })));
        assert!(nearest_correlation(&Matrix::zeros(0, 0)).is_err());
    }

    #[test]
    fn stressed_correlation_blends_towards_ones() {
        let m = Matrix::from_row_slice(2, 2, &[1.0, -0.5, -0.5, 1.0]);
        let s = stressed_correlation(&m, 0.3).unwrap();
        // 0.7 * (-0.5) + 0.3 = -0.05
        assert!((s[(0, 1)] + 0.05).abs() < 1e-15);
        assert_eq!(s[(0, 0)], 1.0);
        assert!(stressed_correlation(&m, 1.5).is_err());
        let bad = Matrix::from_row_slice(2, 2, &[2.0, 0.0, 0.0, 1.0]);
        assert!(stressed_correlation(&bad, 0.3).is_err());
    }

    #[test]
    fn cholesky_reconstructs() {
        let m = Matrix::from_row_slice(2, 2, &[1.0, 0.6, 0.6, 1.0]);
        let l = cholesky(&m).unwrap();
        assert!((&l * l.transpose() - &m).norm() < 1e-14);
        assert_eq!(l[(0, 1)], 0.0);
        assert!((l[(1, 1)] - 0.8).abs() < 1e-15);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any symmetric matrix with entries in [-1, 1] and unit diagonal is
        /// turned into something Cholesky accepts, with unit diagonal.
        #[test]
        fn repair_always_yields_usable_correlation(
            entries in proptest::collection::vec(-1.0f64..=1.0, 10)
        ) {
            let n = 5;
            let mut m = Matrix::identity(n, n);
            let mut k = 0;
            for i in 0..n {
                for j in 0..i {
                    m[(i, j)] = entries[k];
                    m[(j, i)] = entries[k];
                    k += 1;
                }
            }
            let r = nearest_correlation(&m).unwrap();
            for i in 0..n {
                prop_assert_eq!(r.matrix[(i, i)], 1.0);
            }
            prop_assert!(r.matrix.iter().all(|x| x.is_finite() && x.abs() <= 1.0 + 1e-12));
            prop_assert!(cholesky(&r.matrix).is_ok());
            prop_assert!(r.changed || r.matrix == m);
        }
    }
}
