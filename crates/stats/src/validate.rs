//! Shared input checks, so every public function reports problems the same way.

use crate::{Matrix, Result, StatsError};

pub(crate) fn finite_slice(what: &'static str, xs: &[f64]) -> Result<()> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(StatsError::NonFinite {
            what,
            index,
            value: xs[index],
        }),
        None => Ok(()),
    }
}

pub(crate) fn min_len(what: &'static str, xs_len: usize, needed: usize) -> Result<()> {
    if xs_len < needed {
        Err(StatsError::TooShort {
            what,
            needed,
            got: xs_len,
        })
    } else {
        Ok(())
    }
}

/// Checks `lo < value < hi` (open interval).
pub(crate) fn open_interval(
    name: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
    requirement: &'static str,
) -> Result<()> {
    if value.is_finite() && value > lo && value < hi {
        Ok(())
    } else {
        Err(StatsError::InvalidParameter {
            name,
            value,
            requirement,
        })
    }
}

/// Checks `lo <= value <= hi` (closed interval).
pub(crate) fn closed_interval(
    name: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
    requirement: &'static str,
) -> Result<()> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(())
    } else {
        Err(StatsError::InvalidParameter {
            name,
            value,
            requirement,
        })
    }
}

pub(crate) fn square_finite(what: &'static str, m: &Matrix) -> Result<()> {
    if m.nrows() != m.ncols() {
        return Err(StatsError::NotSquare {
            what,
            rows: m.nrows(),
            cols: m.ncols(),
        });
    }
    min_len(what, m.nrows(), 1)?;
    finite_slice(what, m.as_slice())
}

/// Largest asymmetry `|m[i,j] - m[j,i]|` and where it is.
pub(crate) fn worst_asymmetry(m: &Matrix) -> (usize, usize, f64) {
    let mut worst = (0, 0, 0.0);
    for i in 0..m.nrows() {
        for j in (i + 1)..m.ncols() {
            let d = (m[(i, j)] - m[(j, i)]).abs();
            if d > worst.2 {
                worst = (i, j, d);
            }
        }
    }
    worst
}
