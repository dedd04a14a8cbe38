//! Errors returned when input data cannot be used.
//!
//! Margin numbers feed real collateral calls, so bad input (a missing price,
//! a zero price, a matrix of the wrong size) must stop the calculation with a
//! message that says what to fix, never silently produce a number.

/// Result type used throughout the crate.
pub type Result<T, E = StatsError> = std::result::Result<T, E>;

/// Why a statistical calculation refused its input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// A series or matrix that must contain data is empty or too short.
    #[error("{what}: need at least {needed} values, got {got}")]
    TooShort {
        /// Which input.
        what: &'static str,
        /// Minimum number of values required.
        needed: usize,
        /// Number of values supplied.
        got: usize,
    },
    /// A value is NaN or infinite.
    #[error("{what}: value at index {index} is not finite ({value})")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Position of the offending value.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A value is outside the range the calculation can accept.
    #[error("{what}: value at index {index} is {value}, but {requirement}")]
    OutOfRange {
        /// Which input.
        what: &'static str,
        /// Position of the offending value.
        index: usize,
        /// The offending value.
        value: f64,
        /// What the value should satisfy.
        requirement: &'static str,
    },
    /// A scalar parameter is invalid.
    #[error("parameter {name} = {value} is invalid: {requirement}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// Supplied value.
        value: f64,
        /// What the value should satisfy.
        requirement: &'static str,
    },
    /// Inputs that must have matching sizes do not.
    #[error("{what}: expected length {expected}, got {got}")]
    LengthMismatch {
        /// Which input.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Supplied length.
        got: usize,
    },
    /// A matrix is not square.
    #[error("{what}: matrix must be square, got {rows}x{cols}")]
    NotSquare {
        /// Which input.
        what: &'static str,
        /// Number of rows.
        rows: usize,
        /// Number of columns.
        cols: usize,
    },
    /// A matrix that must be symmetric is not.
    #[error("{what}: matrix is not symmetric: entry ({row},{col}) differs from its mirror by {difference}")]
    NotSymmetric {
        /// Which input.
        what: &'static str,
        /// Row of the worst asymmetry.
        row: usize,
        /// Column of the worst asymmetry.
        col: usize,
        /// Absolute difference between the entry and its mirror.
        difference: f64,
    },
    /// A matrix could not be factorised because it is not positive definite.
    #[error("{what}: matrix is not positive definite (Cholesky factorisation failed); repair it with nearest_correlation first")]
    NotPositiveDefinite {
        /// Which input.
        what: &'static str,
    },
    /// A quantity needed as a divisor is zero, e.g. a series with no variation.
    #[error("{what}: {reason}")]
    Degenerate {
        /// Which input.
        what: &'static str,
        /// Why the calculation is undefined.
        reason: &'static str,
    },
    /// A numerical routine did not converge.
    #[error("{what}: numerical routine did not converge")]
    NoConvergence {
        /// Which routine.
        what: &'static str,
    },
    /// Counts passed to a backtest test are inconsistent.
    #[error("{what}: {breaches} breaches out of {observations} observations is impossible")]
    InvalidCounts {
        /// Which test.
        what: &'static str,
        /// Number of observations.
        observations: usize,
        /// Number of breaches.
        breaches: usize,
    },
}
