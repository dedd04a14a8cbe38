//! Governed parameters over HTTP: proposals with an impact report, committee approvals
//! (ed25519 over the deployment id and the proposal hash), cancellation by M members,
//! activation after quorum and the timelock counted from quorum, through the normal durable
//! event path (an `activate_params` event), and the guardian's bounded emergency path with its
//! ratification or lapse.
//!
//! Time comes from the [`Clock`] of [`crate::ServerConfig::governance_clock`] (the system
//! clock unless a test injects a [`pmargin_governance::ManualClock`]). Every signature names
//! the deployment id ([`crate::ServerConfig::deployment_id`], by default derived from the
//! settlement domain: [`default_deployment_id`]). An unratified emergency set lapses on a
//! timer ([`lapse_timer`], every [`LAPSE_CHECK_EVERY`]) and before any governance write: the
//! base set goes back in force through an `activate_params` event, so a replay of the log
//! reproduces it.
//!
//! The committee is configured at start ([`crate::ServerConfig::committee`], or
//! `committee.json` in the data directory, or else the committee stored with the governance
//! state). The governance state (committee, proposals with their approvals, every parameter
//! version) is kept by the store: in the SQLite store, in tables written in one transaction
//! with the audit entry before the API answers (see [`crate::store::Store::put_governance`]).
//!
//! On start the stored state is loaded. A `governance.json` left in the data directory by an
//! earlier build is imported once (then renamed `governance.json.imported`) when the store
//! holds no governance state yet. If the event log is ahead of the stored governance state
//! (a crash between the activation event and the governance write) the version in force is
//! recorded: as the activation of the pending proposal with exactly those parameters, or
//! else as `recovered`. A stored state ahead of the event log is refused.

use crate::api::{Body, Shared};
use crate::auth::{Caller, Role, STAFF};
use crate::error::ApiError;
use crate::settlement::SettlementConfig;
use crate::store::{read_governance_file, AuditEntry, Store, GOVERNANCE_FILE};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pmargin_core::Params;
use pmargin_engine::Event;
use pmargin_governance::{
    impact_report, Approval, Clock, Committee, GovError, Governance, Proposal, SystemClock,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex, OnceLock};

/// How often the lapse timer looks for an emergency set past its ratification window.
pub const LAPSE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The key id the service's own governance steps (a lapse) are logged and audited under.
pub const GOVERNANCE_KEY_ID: &str = "governance";

/// The deployment id when none is configured: `eip712:<chain id>:0x<verifying contract>`,
/// from the EIP-712 domain of the settlement messages. Two deployments that settle on
/// different chains or contracts (staging and production) therefore differ without any
/// setting; two that share a domain would accept each other's settlement messages anyway,
/// and must be told apart with `--deployment-id`.
pub fn default_deployment_id(settlement: &SettlementConfig) -> String {
    format!(
        "eip712:{}:0x{}",
        settlement.chain_id,
        hex::encode(settlement.verifying_contract)
    )
}

/// The governance of a running service.
pub struct Gov {
    pub state: tokio::sync::Mutex<Option<Governance>>,
    clock: OnceLock<Arc<dyn Clock>>,
    timer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The store lock of the service.
type StoreLock = Mutex<Box<dyn Store>>;

fn lock(store: &StoreLock) -> std::sync::MutexGuard<'_, Box<dyn Store>> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gov {
    pub fn disabled() -> Gov {
        Gov {
            state: tokio::sync::Mutex::new(None),
            clock: OnceLock::new(),
            timer: Mutex::new(None),
        }
    }

    /// Now, by the governance clock (the system clock until [`Gov::open`] sets one).
    pub fn now_ms(&self) -> i64 {
        self.clock
            .get()
            .map_or_else(|| SystemClock.now_ms(), |c| c.now_ms())
    }

    /// Starts the lapse timer (once); [`Gov::stop_timer`] ends it.
    pub fn start_timer(&self, state: Shared) {
        let mut timer = self.timer.lock().unwrap_or_else(|p| p.into_inner());
        if timer.is_none() {
            *timer = Some(tokio::spawn(lapse_timer(state)));
        }
    }

    pub fn stop_timer(&self) {
        if let Some(t) = self.timer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }

    /// Loads the governance state from the store (importing an old `<dir>/governance.json`
    /// once), with the committee from `committee`, `<dir>/committee.json` or the store, and
    /// reconciles it with the engine's active parameters `active`. Binds every signature to
    /// `deployment_id` and reads time from `clock`. Installs the governance (once, at start);
    /// without any committee the governance stays disabled.
    pub async fn open(
        &self,
        store: &StoreLock,
        dir: Option<&FsPath>,
        committee: Option<Committee>,
        active: &Params,
        deployment_id: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<(), String> {
        let _ = self.clock.set(clock);
        let committee = match committee {
            Some(c) => Some(c),
            None => match dir.map(|d| d.join("committee.json")) {
                Some(path) if path.exists() => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    Some(
                        serde_json::from_str::<Committee>(&text)
                            .map_err(|e| format!("{}: {e}", path.display()))?,
                    )
                }
                _ => None,
            },
        };
        let stored = lock(store).governance()?;
        let legacy = dir.map(|d| d.join(GOVERNANCE_FILE)).filter(|p| p.exists());
        // An earlier build's file: imported once, into a store without governance state.
        let (prev, imported) = match (&stored, &legacy) {
            (None, Some(path)) => {
                let g = read_governance_file(path)?.ok_or("governance.json vanished")?;
                (None, Some((path.clone(), g)))
            }
            _ => (stored.clone(), None),
        };
        let loaded = imported.as_ref().map(|(_, g)| g.clone()).or(stored);
        let now = self.now_ms();
        let mut notes = Vec::new();
        let g = match (loaded, committee) {
            (None, None) => return Ok(()),
            (None, Some(c)) => {
                notes.push("created".to_string());
                Governance::new(c, active.clone(), now).map_err(|e| format!("governance: {e}"))?
            }
            (Some(mut g), c) => {
                if imported.is_some() {
                    notes.push(format!("imported {GOVERNANCE_FILE}"));
                }
                if let Some(c) = c.filter(|c| c != g.committee()) {
                    g.replace_committee(c, now)
                        .map_err(|e| format!("governance: committee: {e}"))?;
                    notes.push("committee replaced".into());
                }
                match active.version.cmp(&g.active_version()) {
                    std::cmp::Ordering::Equal => {}
                    std::cmp::Ordering::Greater => {
                        g.record_recovered(active.clone(), now)
                            .map_err(|e| format!("governance: {e}"))?;
                        notes.push(format!(
                            "version {} found in force in the event log recorded",
                            active.version
                        ));
                    }
                    std::cmp::Ordering::Less => {
                        return Err(format!(
                            "governance: the stored governance state has parameter version {} in force but the event log only reaches version {}; the database does not match the event log",
                            g.active_version(),
                            active.version
                        ))
                    }
                }
                g
            }
        };
        let mut g = g;
        let before = g.clone();
        g.set_deployment_id(deployment_id, now);
        if g.proposals().ne(before.proposals()) {
            notes.push(format!(
                "quorum moments re-derived for deployment `{deployment_id}`"
            ));
        }
        if !notes.is_empty() {
            let audit = AuditEntry {
                ts_ms: now,
                key_id: "system".into(),
                action: "governance_open".into(),
                target: "governance".into(),
                outcome: notes.join("; "),
                detail: json!({ "active_version": g.active_version(), "proposals": g.proposals().count() }),
            };
            lock(store).put_governance(prev.as_ref(), &g, &audit)?;
        }
        if let Some((path, _)) = imported {
            let done = path.with_extension("json.imported");
            std::fs::rename(&path, &done).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        *self.state.lock().await = Some(g);
        Ok(())
    }
}

/// Stores `next` (changed from `prev`) with its audit entry, durably, before the answer.
fn persist(
    state: &Shared,
    prev: &Governance,
    next: &Governance,
    audit: AuditEntry,
) -> Result<(), ApiError> {
    lock(&state.store)
        .put_governance(Some(prev), next, &audit)
        .map_err(|e| ApiError::unavailable(format!("governance state: {e}")))
}

/// A governance refusal as a clean JSON error.
pub fn gov_error(e: GovError) -> ApiError {
    let field = e.field().map(str::to_string);
    let err = match &e {
        GovError::UnknownProposal(_) => ApiError::not_found(e.to_string()),
        GovError::NoQuorum { .. }
        | GovError::Timelocked { .. }
        | GovError::NotPending { .. }
        | GovError::DuplicateApproval { .. }
        | GovError::DuplicateProposal(_)
        | GovError::NoPendingEmergency
        | GovError::EmergencyExpired { .. } => ApiError::conflict(e.to_string()),
        GovError::BadSignature { .. }
        | GovError::BadGuardianSignature
        | GovError::BadActSignature { .. }
        | GovError::NotEnoughSignatures { .. }
        | GovError::UnknownMember(_)
        | GovError::NoGuardian => ApiError::forbidden(e.to_string()),
        _ => ApiError::unprocessable(e.to_string()),
    };
    match field {
        Some(f) => err.with_field(f),
        None => err,
    }
}

const PROPOSERS: &[Role] = &[Role::Admin, Role::RiskCommittee];

fn parse_params(value: &Value) -> Result<Params, ApiError> {
    let mut p = Params::parse("params", &value.to_string())
        .map_err(|e| ApiError::unprocessable(e.to_string()).with_field("params"))?;
    p.source = String::new();
    Ok(p)
}

fn disabled() -> ApiError {
    ApiError::conflict("governance is not configured: no committee (committee.json)")
}

fn record_json(g: &Governance, id: u64) -> Result<Value, ApiError> {
    let r = g
        .proposal(id)
        .ok_or_else(|| gov_error(GovError::UnknownProposal(id)))?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalIn {
    params: Value,
    rationale: String,
    #[serde(default)]
    removals: BTreeSet<String>,
}

pub async fn post_proposal(
    caller: Caller,
    State(state): State<Shared>,
    Body(p, _): Body<ProposalIn>,
) -> Result<Response, ApiError> {
    caller.require(PROPOSERS)?;
    let params = parse_params(&p.params)?;
    let mut guard = state.gov.state.lock().await;
    let g = guard.as_mut().ok_or_else(disabled)?;
    // A proposal is drafted against the set in force: a lapse that is due happens first.
    lapse_if_due(&state, g).await?;
    let id = g.proposals().map(|r| r.proposal.id).max().unwrap_or(0) + 1;
    let now = state.gov.now_ms();
    let proposal = Proposal::with_removals(
        id,
        params,
        p.rationale,
        caller.key_id.clone(),
        now,
        p.removals,
        Some(g.active()),
    )
    .map_err(gov_error)?;
    // The impact against the engine's current book (the active set is the engine's).
    let (portfolio, market, active) = {
        let engine = state.engine();
        (
            engine.portfolio(),
            engine.market().clone(),
            engine.params().clone(),
        )
    };
    let proposed = proposal.params.clone();
    let impact = crate::api::blocking(move || {
        impact_report(&portfolio, &market, &active, &proposed).map_err(gov_error)
    })
    .await?;
    let mut next = g.clone();
    next.submit(proposal, now).map_err(gov_error)?;
    let body = record_json(&next, id)?;
    let audit = AuditEntry {
        ts_ms: now,
        key_id: caller.key_id,
        action: "propose".into(),
        target: format!("proposal {id}"),
        outcome: "submitted".into(),
        detail: json!({ "hash": body["hash"], "version": body["proposal"]["params"]["version"] }),
    };
    persist(&state, g, &next, audit)?;
    *g = next;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "proposal": body, "impact": impact })),
    )
        .into_response())
}

fn proposal_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::bad_request("proposal id must be a positive integer").with_field("id")
    })
}

pub async fn get_proposal(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(STAFF)?;
    let id = proposal_id(&id)?;
    let guard = state.gov.state.lock().await;
    let g = guard.as_ref().ok_or_else(disabled)?;
    Ok(Json(record_json(g, id)?))
}

pub async fn post_approval(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
    Body(approval, _): Body<Approval>,
) -> Result<Response, ApiError> {
    caller.require(PROPOSERS)?;
    let id = proposal_id(&id)?;
    let mut guard = state.gov.state.lock().await;
    let g = guard.as_mut().ok_or_else(disabled)?;
    let member = approval.member.clone();
    let mut next = g.clone();
    let now = state.gov.now_ms();
    let result = next.approve(id, approval, now);
    let audit = AuditEntry {
        ts_ms: now,
        key_id: caller.key_id,
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
            return Err(gov_error(e));
        }
    };
    persist(&state, g, &next, audit)?;
    *g = next;
    Ok((
        StatusCode::OK,
        Json(json!({ "approvals": count, "proposal": record_json(g, id)? })),
    )
        .into_response())
}

/// Puts `params` in force in the engine through the durable event path.
async fn activate_in_engine(
    state: &Shared,
    key_id: &str,
    params: &Params,
) -> Result<crate::state::EventResult, ApiError> {
    let value = serde_json::to_value(params).map_err(|e| ApiError::internal(e.to_string()))?;
    let result = state
        .submit(Event::ActivateParams { params: value }, key_id, None)
        .await?;
    if !result.accepted {
        return Err(ApiError::unprocessable(format!(
            "the engine refused the parameters: {:?}",
            result.outputs
        )));
    }
    Ok(result)
}

pub async fn post_activate(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(PROPOSERS)?;
    let id = proposal_id(&id)?;
    let mut guard = state.gov.state.lock().await;
    let g = guard.as_mut().ok_or_else(disabled)?;
    lapse_if_due(&state, g).await?;
    let mut next = g.clone();
    let now = state.gov.now_ms();
    let params = next.activate(id, now).map_err(gov_error)?;
    let result = activate_in_engine(&state, &caller.key_id, &params).await?;
    let audit = AuditEntry {
        ts_ms: now,
        key_id: caller.key_id,
        action: "activate".into(),
        target: format!("proposal {id}"),
        outcome: "activated".into(),
        detail: json!({ "version": params.version, "sequence": result.sequence }),
    };
    persist(&state, g, &next, audit)?;
    *g = next;
    Ok(Json(json!({
        "version": params.version,
        "sequence": result.sequence,
        "proposal": record_json(g, id)?,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyIn {
    params: Value,
    /// Hex ed25519 signature of the guardian key over the emergency message of `params`.
    signature: String,
}

pub async fn post_emergency(
    caller: Caller,
    State(state): State<Shared>,
    Body(e, _): Body<EmergencyIn>,
) -> Result<Response, ApiError> {
    caller.require(PROPOSERS)?;
    let params = parse_params(&e.params)?;
    let sig: [u8; 64] = hex::decode(&e.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ApiError::bad_request("signature must be 64 bytes of hex").with_field("signature")
        })?;
    let mut guard = state.gov.state.lock().await;
    let g = guard.as_mut().ok_or_else(disabled)?;
    lapse_if_due(&state, g).await?;
    let mut next = g.clone();
    let now = state.gov.now_ms();
    let params = next.emergency(params, sig, now).map_err(gov_error)?;
    let result = activate_in_engine(&state, &caller.key_id, &params).await?;
    let expires_ms = next.pending_emergency().map(|e| e.expires_ms);
    let audit = AuditEntry {
        ts_ms: now,
        key_id: caller.key_id,
        action: "emergency_params".into(),
        target: format!("version {}", params.version),
        outcome: "activated".into(),
        detail: json!({ "sequence": result.sequence, "expires_ms": expires_ms }),
    };
    persist(&state, g, &next, audit)?;
    *g = next;
    Ok(Json(json!({
        "version": params.version,
        "sequence": result.sequence,
        "expires_ms": expires_ms,
    }))
    .into_response())
}

/// M members' signatures on one committee act (a cancellation, a ratification).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturesIn {
    signatures: Vec<Approval>,
}

/// More signatures than any committee could need: a bound on the work one request causes.
const MAX_SIGNATURES: usize = 64;

fn check_count(s: &SignaturesIn) -> Result<(), ApiError> {
    if s.signatures.is_empty() || s.signatures.len() > MAX_SIGNATURES {
        return Err(ApiError::bad_request(format!(
            "signatures: between 1 and {MAX_SIGNATURES} are required, got {}",
            s.signatures.len()
        ))
        .with_field("signatures"));
    }
    Ok(())
}

/// `POST /v1/proposals/{id}/cancel`: M members cancel a pending proposal. Nothing reaches the
/// engine: the active parameters and the event log are untouched either way.
pub async fn post_cancel(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
    Body(body, _): Body<SignaturesIn>,
) -> Result<Response, ApiError> {
    caller.require(PROPOSERS)?;
    let id = proposal_id(&id)?;
    check_count(&body)?;
    let mut guard = state.gov.state.lock().await;
    let g = guard.as_mut().ok_or_else(disabled)?;
    let mut next = g.clone();
    let now = state.gov.now_ms();
    let by = next.cancel(id, &body.signatures, now).map_err(gov_error)?;
    let audit = AuditEntry {
        ts_ms: now,
        key_id: caller.key_id,
        action: "cancel".into(),
        target: format!("proposal {id}"),
        outcome: "cancelled".into(),
        detail: json!({ "by": by }),
    };
    persist(&state, g, &next, audit)?;
    *g = next;
    Ok(Json(record_json(g, id)?).into_response())
}

/// `POST /v1/params/emergency/ratify`: M members keep the guardian's emergency set in force.
pub async fn post_ratify(
    caller: Caller,
    State(state): State<Shared>,
    Body(body, _): Body<SignaturesIn>,
) -> Result<Response, ApiError> {
    caller.require(PROPOSERS)?;
    check_count(&body)?;
    let mut guard = state.gov.state.lock().await;
    let g = guard.as_mut().ok_or_else(disabled)?;
    lapse_if_due(&state, g).await?;
    let mut next = g.clone();
    let now = state.gov.now_ms();
    let by = next
        .ratify_emergency(&body.signatures, now)
        .map_err(gov_error)?;
    let version = next.active_version();
    let audit = AuditEntry {
        ts_ms: now,
        key_id: caller.key_id,
        action: "ratify_emergency".into(),
        target: format!("version {version}"),
        outcome: "ratified".into(),
        detail: json!({ "by": by }),
    };
    persist(&state, g, &next, audit)?;
    *g = next;
    Ok(Json(json!({ "version": version, "ratified_by": by })).into_response())
}

/// `GET /v1/governance`: what members need to sign (the deployment id) and where things
/// stand (the committee's rules, the active version, the latest emergency episode).
pub async fn get_governance(
    caller: Caller,
    State(state): State<Shared>,
) -> Result<Json<Value>, ApiError> {
    caller.require(STAFF)?;
    let guard = state.gov.state.lock().await;
    let g = guard.as_ref().ok_or_else(disabled)?;
    let c = g.committee();
    Ok(Json(json!({
        "deployment_id": g.deployment_id(),
        "now_ms": state.gov.now_ms(),
        "members": c.members.iter().map(|m| &m.id).collect::<Vec<_>>(),
        "threshold": c.threshold,
        "timelock_ms": c.timelock_ms,
        "ratify_window_ms": c.ratify_window_ms,
        "guardian": c.guardian.is_some(),
        "active_version": g.active_version(),
        "emergency": g.emergency_record(),
    })))
}

/// Lapses `g`'s emergency set if its window has closed: the base set goes back in force
/// through the event log (an `activate_params` event under [`GOVERNANCE_KEY_ID`]), then the
/// governance state is stored. Returns the restored version.
async fn lapse_if_due(state: &Shared, g: &mut Governance) -> Result<Option<u64>, ApiError> {
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
pub async fn lapse_emergency(state: &Shared) -> Result<Option<u64>, ApiError> {
    let mut guard = state.gov.state.lock().await;
    match guard.as_mut() {
        Some(g) => lapse_if_due(state, g).await,
        None => Ok(None),
    }
}

/// Every [`LAPSE_CHECK_EVERY`], lapses an emergency set past its window.
pub async fn lapse_timer(state: Shared) {
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
