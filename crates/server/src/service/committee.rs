//! The committee's acts on the governed parameters (see [`crate::service::governance`]):
//! proposing with an impact report, approving, activating after quorum and timelock (through
//! the durable event path), the guardian's emergency set, cancelling and ratifying by M
//! signatures, and the lapse of an unratified emergency set (before any act, and on a timer).
//!
//! Each act works on a copy of the governance state, stores the copy with its audit entry
//! (durably, before the answer), and only then puts it in place: a refused or failed act
//! leaves the state as it was. Each returns the JSON record the API answers with.

use crate::error::ServiceError;
use crate::service::governance::{lock, GOVERNANCE_KEY_ID, LAPSE_CHECK_EVERY};
use crate::service::state::{AppState, EventResult};
use crate::store::AuditEntry;
use pmargin_core::Params;
use pmargin_engine::Event;
use pmargin_governance::{impact_report, Approval, GovError, Governance, Proposal};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

type Shared = Arc<AppState>;

/// Why an act was refused: a rule of governance ([`GovError`]), or the service (governance
/// not configured, the store, the engine).
#[derive(Debug)]
pub enum GovFailure {
    Rule(GovError),
    Service(ServiceError),
}

impl From<GovError> for GovFailure {
    fn from(e: GovError) -> GovFailure {
        GovFailure::Rule(e)
    }
}

impl From<ServiceError> for GovFailure {
    fn from(e: ServiceError) -> GovFailure {
        GovFailure::Service(e)
    }
}

impl std::fmt::Display for GovFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GovFailure::Rule(e) => write!(f, "{e}"),
            GovFailure::Service(e) => write!(f, "{}", e.message),
        }
    }
}

/// Governance without a committee: every act is refused.
pub fn disabled() -> ServiceError {
    ServiceError::conflict("governance is not configured: no committee (committee.json)")
}

/// Stores `next` (changed from `prev`) with its audit entry, durably, before the answer.
fn persist(
    state: &Shared,
    prev: &Governance,
    next: &Governance,
    audit: AuditEntry,
) -> Result<(), ServiceError> {
    lock(&state.store)
        .put_governance(Some(prev), next, &audit)
        .map_err(|e| ServiceError::unavailable(format!("governance state: {e}")))
}

/// A proposal's record as the API shows it.
pub fn record_json(g: &Governance, id: u64) -> Result<Value, GovFailure> {
    let r = g.proposal(id).ok_or(GovError::UnknownProposal(id))?;
    Ok(json!({
        "id": id,
        "hash": r.proposal.hash_hex(),
        "deployment_id": g.deployment_id(),
        "status": r.state.status(),
        "state": r.state,
        "submitted_ms": r.submitted_ms,
        "quorum_ms": r.quorum_ms,
        "eligible_ms": r.eligible_ms(g.committee().timelock_ms),
        "approvals": r.approvals,
        "threshold": g.committee().threshold,
        "proposal": r.proposal,
    }))
}

/// The impact of `proposed` against the engine's current book (the active set is the
/// engine's), on the heavy pool.
pub async fn impact(state: &Shared, proposed: Params) -> Result<(u64, Value), GovFailure> {
    let (sequence, portfolio, market, active) = {
        let engine = state.engine();
        (
            engine.sequence(),
            engine.portfolio(),
            engine.market().clone(),
            engine.params().clone(),
        )
    };
    let report = state
        .heavy_job(move || {
            let report = impact_report(&portfolio, &market, &active, &proposed)?;
            serde_json::to_value(report)
                .map_err(|e| GovFailure::Service(ServiceError::internal(e.to_string())))
        })
        .await?;
    Ok((sequence, report))
}

/// Submits a proposal of `params` by `key_id`: `{"proposal": record, "impact": report}`.
pub async fn propose(
    state: &Shared,
    key_id: &str,
    params: Params,
    rationale: String,
    removals: BTreeSet<String>,
) -> Result<Value, GovFailure> {
    let mut guard = state.gov.state.lock().await;
    let g = guard.as_mut().ok_or_else(disabled)?;
    // A proposal is drafted against the set in force: a lapse that is due happens first.
    lapse_if_due(state, g).await?;
    let id = g.proposals().map(|r| r.proposal.id).max().unwrap_or(0) + 1;
    let now = state.gov.now_ms();
    let proposal = Proposal::with_removals(
        id,
        params,
        rationale,
        key_id.to_string(),
        now,
        removals,
        Some(g.active()),
    )?;
    let (_, impact) = impact(state, proposal.params.clone()).await?;
    let mut next = g.clone();
    next.submit(proposal, now)?;
    let body = record_json(&next, id)?;
    let audit = AuditEntry {
        ts_ms: now,
        key_id: key_id.to_string(),
        action: "propose".into(),
        target: format!("proposal {id}"),
        outcome: "submitted".into(),
        detail: json!({ "hash": body["hash"], "version": body["proposal"]["params"]["version"] }),
    };
    persist(state, g, &next, audit)?;
    *g = next;
    Ok(json!({ "proposal": body, "impact": impact }))
}

/// A proposal's record.
pub async fn proposal(state: &Shared, id: u64) -> Result<Value, GovFailure> {
    let guard = state.gov.state.lock().await;
    let g = guard.as_ref().ok_or_else(disabled)?;
    record_json(g, id)
}

/// A member's approval of proposal `id`: `{"approvals": count, "proposal": record}`. A refused
/// approval is audited too.
pub async fn approve(
    state: &Shared,
    key_id: &str,
    id: u64,
    approval: Approval,
) -> Result<Value, GovFailure> {
    let mut guard = state.gov.state.lock().await;
    let g = guard.as_mut().ok_or_else(disabled)?;
    let member = approval.member.clone();
    let mut next = g.clone();
    let now = state.gov.now_ms();
    let result = next.approve(id, approval, now);
    let audit = AuditEntry {
        ts_ms: now,
        key_id: key_id.to_string(),
        action: "approve".into(),
        target: format!("proposal {id}"),
        outcome: match &result {
            Ok(_) => "approved".into(),
            Err(e) => format!("refused: {e}"),
        },
        detail: json!({ "member": member }),
    };
    let count = match result {
        Ok(count) => count,
        Err(e) => {
            state.audit(audit)?;
            return Err(GovFailure::Rule(e));
        }
    };
    persist(state, g, &next, audit)?;
    *g = next;
    Ok(json!({ "approvals": count, "proposal": record_json(g, id)? }))
}

/// Puts `params` in force in the engine through the durable event path.
async fn activate_in_engine(
    state: &Shared,
    key_id: &str,
    params: &Params,
) -> Result<EventResult, ServiceError> {
    let event = Event::ActivateParams {
        params: Box::new(params.clone()),
    };
    let result = state.submit(event, key_id, None).await?;
    if !result.accepted {
        return Err(ServiceError::unprocessable(format!(
            "the engine refused the parameters: {:?}",
            result.outputs
        )));
    }
    Ok(result)
}

/// Activates proposal `id` (quorum reached, timelock over): `{"version", "sequence",
/// "proposal"}`.
pub async fn activate(state: &Shared, key_id: &str, id: u64) -> Result<Value, GovFailure> {
    let mut guard = state.gov.state.lock().await;
    let g = guard.as_mut().ok_or_else(disabled)?;
    lapse_if_due(state, g).await?;
    let mut next = g.clone();
    let now = state.gov.now_ms();
    let params = next.activate(id, now)?;
    let result = activate_in_engine(state, key_id, &params).await?;
    let audit = AuditEntry {
        ts_ms: now,
        key_id: key_id.to_string(),
        action: "activate".into(),
        target: format!("proposal {id}"),
        outcome: "activated".into(),
        detail: json!({ "version": params.version, "sequence": result.sequence }),
    };
    persist(state, g, &next, audit)?;
    *g = next;
    Ok(json!({
        "version": params.version,
        "sequence": result.sequence,
        "proposal": record_json(g, id)?,
    }))
}

/// The guardian's emergency set `params`, signed `signature`: `{"version", "sequence",
/// "expires_ms"}`.
pub async fn emergency(
    state: &Shared,
    key_id: &str,
    params: Params,
    signature: [u8; 64],
) -> Result<Value, GovFailure> {
    let mut guard = state.gov.state.lock().await;
    let g = guard.as_mut().ok_or_else(disabled)?;
    lapse_if_due(state, g).await?;
    let mut next = g.clone();
    let now = state.gov.now_ms();
    let params = next.emergency(params, signature, now)?;
    let result = activate_in_engine(state, key_id, &params).await?;
    let expires_ms = next.pending_emergency().map(|e| e.expires_ms);
    let audit = AuditEntry {
        ts_ms: now,
        key_id: key_id.to_string(),
        action: "emergency_params".into(),
        target: format!("version {}", params.version),
        outcome: "activated".into(),
        detail: json!({ "sequence": result.sequence, "expires_ms": expires_ms }),
    };
    persist(state, g, &next, audit)?;
    *g = next;
    Ok(json!({
        "version": params.version,
        "sequence": result.sequence,
        "expires_ms": expires_ms,
    }))
}

/// M members cancel pending proposal `id`: its record. Nothing reaches the engine: the active
/// parameters and the event log are untouched either way.
pub async fn cancel(
    state: &Shared,
    key_id: &str,
    id: u64,
    signatures: &[Approval],
) -> Result<Value, GovFailure> {
    let mut guard = state.gov.state.lock().await;
    let g = guard.as_mut().ok_or_else(disabled)?;
    let mut next = g.clone();
    let now = state.gov.now_ms();
    let by = next.cancel(id, signatures, now)?;
    let audit = AuditEntry {
        ts_ms: now,
        key_id: key_id.to_string(),
        action: "cancel".into(),
        target: format!("proposal {id}"),
        outcome: "cancelled".into(),
        detail: json!({ "by": by }),
    };
    persist(state, g, &next, audit)?;
    *g = next;
    record_json(g, id)
}

/// M members keep the guardian's emergency set in force: `{"version", "ratified_by"}`.
pub async fn ratify(
    state: &Shared,
    key_id: &str,
    signatures: &[Approval],
) -> Result<Value, GovFailure> {
    let mut guard = state.gov.state.lock().await;
    let g = guard.as_mut().ok_or_else(disabled)?;
    lapse_if_due(state, g).await?;
    let mut next = g.clone();
    let now = state.gov.now_ms();
    let by = next.ratify_emergency(signatures, now)?;
    let version = next.active_version();
    let audit = AuditEntry {
        ts_ms: now,
        key_id: key_id.to_string(),
        action: "ratify_emergency".into(),
        target: format!("version {version}"),
        outcome: "ratified".into(),
        detail: json!({ "by": by }),
    };
    persist(state, g, &next, audit)?;
    *g = next;
    Ok(json!({ "version": version, "ratified_by": by }))
}

/// What members need to sign (the deployment id) and where things stand (the committee's
/// rules, the active version, the latest emergency episode).
pub async fn overview(state: &Shared) -> Result<Value, GovFailure> {
    let guard = state.gov.state.lock().await;
    let g = guard.as_ref().ok_or_else(disabled)?;
    let c = g.committee();
    Ok(json!({
        "deployment_id": g.deployment_id(),
        "now_ms": state.gov.now_ms(),
        "members": c.members.iter().map(|m| &m.id).collect::<Vec<_>>(),
        "threshold": c.threshold,
        "timelock_ms": c.timelock_ms,
        "ratify_window_ms": c.ratify_window_ms,
        "guardian": c.guardian.is_some(),
        "active_version": g.active_version(),
        "emergency": g.emergency_record(),
    }))
}

/// Lapses `g`'s emergency set if its window has closed: the base set goes back in force
/// through the event log (an `activate_params` event under [`GOVERNANCE_KEY_ID`]), then the
/// governance state is stored. Returns the restored version.
async fn lapse_if_due(state: &Shared, g: &mut Governance) -> Result<Option<u64>, ServiceError> {
    let now = state.gov.now_ms();
    let mut next = g.clone();
    let Some(params) = next.expire_emergency(now) else {
        return Ok(None);
    };
    let result = activate_in_engine(state, GOVERNANCE_KEY_ID, &params).await?;
    let lapsed = g.pending_emergency().map(|e| (e.version, e.expires_ms));
    let audit = AuditEntry {
        ts_ms: now,
        key_id: GOVERNANCE_KEY_ID.into(),
        action: "emergency_lapsed".into(),
        target: format!("version {}", params.version),
        outcome: "restored the base set".into(),
        detail: json!({
            "sequence": result.sequence,
            "lapsed_version": lapsed.map(|l| l.0),
            "expires_ms": lapsed.map(|l| l.1),
        }),
    };
    persist(state, g, &next, audit)?;
    *g = next;
    Ok(Some(params.version))
}

/// Lapses the pending emergency set if its ratification window has closed (see
/// [`lapse_if_due`]); what the timer runs, and what a test calls after moving its clock.
pub async fn lapse_emergency(state: &Shared) -> Result<Option<u64>, ServiceError> {
    let mut guard = state.gov.state.lock().await;
    match guard.as_mut() {
        Some(g) => lapse_if_due(state, g).await,
        None => Ok(None),
    }
}

/// Starts (once) the timer that, every [`LAPSE_CHECK_EVERY`], lapses an emergency set past
/// its window; [`crate::service::governance::Gov::stop_timer`] ends it.
pub fn start_lapse_timer(state: &Shared) {
    let timer_state = state.clone();
    state
        .gov
        .start_timer(move || tokio::spawn(lapse_timer(timer_state)));
}

async fn lapse_timer(state: Shared) {
    let mut interval = tokio::time::interval(LAPSE_CHECK_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        if state.failure().is_some() {
            continue;
        }
        if let Err(e) = lapse_emergency(&state).await {
            eprintln!("pmargin: governance: emergency lapse: {}", e.message);
        }
    }
}
