//! An account's status against its requirements (docs/MODEL.md section 6).

use serde::{Deserialize, Serialize};

/// Where an account stands against its requirements.
///
/// Ordered from best to worst: `healthy` (margin balance covers initial margin), `restricted`
/// (between maintenance and initial: reduce-only), `liquidatable` (below maintenance),
/// `bankrupt` (negative margin balance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Healthy,
    Restricted,
    Liquidatable,
    Bankrupt,
}

impl Status {
    pub fn of(margin_balance: f64, initial_margin: f64, maintenance_margin: f64) -> Status {
        // Fail closed: a figure that could not be computed never reads as healthy (every
        // comparison with NaN is false, which would fall through to `Healthy`).
        if margin_balance.is_nan() || initial_margin.is_nan() || maintenance_margin.is_nan() {
            return Status::Bankrupt;
        }
        if margin_balance < 0.0 {
            Status::Bankrupt
        } else if margin_balance < maintenance_margin {
            Status::Liquidatable
        } else if margin_balance < initial_margin {
            Status::Restricted
        } else {
            Status::Healthy
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Restricted => "restricted",
            Status::Liquidatable => "liquidatable",
            Status::Bankrupt => "bankrupt",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status reads as its name: `status == "healthy"`.
impl PartialEq<str> for Status {
    fn eq(&self, name: &str) -> bool {
        self.as_str() == name
    }
}

impl PartialEq<&str> for Status {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}
