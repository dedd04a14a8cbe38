//! What a parameter change would do to today's book, before anyone votes on it.

use crate::error::GovError;
use pmargin_core::{margin_report, History, Market, Params, Portfolio, ReportOptions, Status};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many accounts [`ImpactReport::top_affected`] lists.
pub const TOP_AFFECTED: usize = 10;

/// Where an account stands against its requirements: the core's [`Status`], written in
/// lowercase (`healthy`, `restricted`, `liquidatable`, `bankrupt`) as in the margin report.
pub use pmargin_core::Status as AccountStatus;

/// One account's requirement under the active and under the proposed parameters. The margin
/// balance is shown too, because a haircut change moves it and can change the status alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AffectedAccount {
    pub id: String,
    pub initial_margin_before: f64,
    pub initial_margin_after: f64,
    pub margin_balance_before: f64,
    pub margin_balance_after: f64,
    pub status_before: Status,
    pub status_after: Status,
}

impl AffectedAccount {
    pub fn initial_margin_change(&self) -> f64 {
        self.initial_margin_after - self.initial_margin_before
    }
}

/// The effect of a proposal on the current book, for the committee to read before approving.
///
/// `accounts` were margined twice, with the active and with the proposed set, on the same
/// market. `status_changes` counts accounts whose status differs, broken down in
/// `changes_by_transition` (keys like `healthy->restricted`). The totals are the sums of
/// initial margin over all accounts. `top_affected` lists up to ten accounts whose initial
/// margin or status changed, largest absolute change in initial margin first (ties by id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpactReport {
    pub active_version: u64,
    pub proposed_version: u64,
    pub accounts: usize,
    pub status_changes: usize,
    pub changes_by_transition: BTreeMap<String, usize>,
    pub total_requirement_before: f64,
    pub total_requirement_after: f64,
    pub top_affected: Vec<AffectedAccount>,
}

/// The impact report without a price history: requirements are grid risk and the short
/// option minimum (statistical risk needs history; see [`impact_report_with_history`]).
pub fn impact_report(
    portfolio: &Portfolio,
    market: &Market,
    active: &Params,
    proposed: &Params,
) -> Result<ImpactReport, GovError> {
    impact_report_with_history(portfolio, market, None, active, proposed)
}

/// The impact report, with statistical risk when a history is given. Liquidation prices are
/// not computed. Both sets are validated first; a book that cannot be margined under either
/// set is an error (a proposal that strands positions must not pass quietly).
pub fn impact_report_with_history(
    portfolio: &Portfolio,
    market: &Market,
    history: Option<&History>,
    active: &Params,
    proposed: &Params,
) -> Result<ImpactReport, GovError> {
    for p in [active, proposed] {
        p.validate("params")
            .map_err(|e| GovError::params(e.path, e.message))?;
    }
    let options = ReportOptions {
        liquidation_prices: false,
    };
    let before = margin_report(portfolio, market, active, history, options)?;
    let after = margin_report(portfolio, market, proposed, history, options)?;
    let mut changes_by_transition = BTreeMap::new();
    let mut affected = Vec::new();
    let (mut total_before, mut total_after) = (0.0, 0.0);
    for (b, a) in before.accounts.iter().zip(&after.accounts) {
        debug_assert_eq!(b.id, a.id);
        total_before += b.initial_margin;
        total_after += a.initial_margin;
        let entry = AffectedAccount {
            id: b.id.clone(),
            initial_margin_before: b.initial_margin,
            initial_margin_after: a.initial_margin,
            margin_balance_before: b.margin_balance,
            margin_balance_after: a.margin_balance,
            status_before: b.status,
            status_after: a.status,
        };
        if entry.status_before != entry.status_after {
            let key = format!(
                "{}->{}",
                entry.status_before.as_str(),
                entry.status_after.as_str()
            );
            *changes_by_transition.entry(key).or_insert(0) += 1;
        }
        if entry.initial_margin_change() != 0.0 || entry.status_before != entry.status_after {
            affected.push(entry);
        }
    }
    affected.sort_by(|x, y| {
        let (dx, dy) = (
            x.initial_margin_change().abs(),
            y.initial_margin_change().abs(),
        );
        dy.total_cmp(&dx).then_with(|| x.id.cmp(&y.id))
    });
    affected.truncate(TOP_AFFECTED);
    Ok(ImpactReport {
        active_version: active.version,
        proposed_version: proposed.version,
        accounts: before.accounts.len(),
        status_changes: changes_by_transition.values().sum(),
        changes_by_transition,
        total_requirement_before: total_before,
        total_requirement_after: total_after,
        top_affected: affected,
    })
}
