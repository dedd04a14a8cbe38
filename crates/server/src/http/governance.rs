//! Governed parameters over HTTP (see [`crate::service::governance`] and
//! [`crate::service::committee`]): the request bodies, the roles allowed, the answers.

use crate::auth::{Caller, Role, STAFF};
use crate::http::error::ApiError;
use crate::http::extract::Body;
use crate::http::Shared;
use crate::service::committee;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pmargin_core::Params;
use pmargin_governance::Approval;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;

const PROPOSERS: &[Role] = &[Role::Admin, Role::RiskCommittee];

fn parse_params(value: &Value) -> Result<Params, ApiError> {
    let mut p = Params::parse("params", &value.to_string())
        .map_err(|e| ApiError::unprocessable(e.to_string()).with_field("params"))?;
    p.source = String::new();
    Ok(p)
}

pub fn proposal_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::bad_request("proposal id must be a positive integer").with_field("id")
    })
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
    let body = committee::propose(&state, &caller.key_id, params, p.rationale, p.removals).await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn get_proposal(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(STAFF)?;
    let id = proposal_id(&id)?;
    Ok(Json(committee::proposal(&state, id).await?))
}

pub async fn post_approval(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
    Body(approval, _): Body<Approval>,
) -> Result<Response, ApiError> {
    caller.require(PROPOSERS)?;
    let id = proposal_id(&id)?;
    let body = committee::approve(&state, &caller.key_id, id, approval).await?;
    Ok((StatusCode::OK, Json(body)).into_response())
}

pub async fn post_activate(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(PROPOSERS)?;
    let id = proposal_id(&id)?;
    Ok(Json(committee::activate(&state, &caller.key_id, id).await?).into_response())
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
    let body = committee::emergency(&state, &caller.key_id, params, sig).await?;
    Ok(Json(body).into_response())
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

/// `POST /v1/proposals/{id}/cancel`: M members cancel a pending proposal.
pub async fn post_cancel(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
    Body(body, _): Body<SignaturesIn>,
) -> Result<Response, ApiError> {
    caller.require(PROPOSERS)?;
    let id = proposal_id(&id)?;
    check_count(&body)?;
    let record = committee::cancel(&state, &caller.key_id, id, &body.signatures).await?;
    Ok(Json(record).into_response())
}

/// `POST /v1/params/emergency/ratify`: M members keep the guardian's emergency set in force.
pub async fn post_ratify(
    caller: Caller,
    State(state): State<Shared>,
    Body(body, _): Body<SignaturesIn>,
) -> Result<Response, ApiError> {
    caller.require(PROPOSERS)?;
    check_count(&body)?;
    let answer = committee::ratify(&state, &caller.key_id, &body.signatures).await?;
    Ok(Json(answer).into_response())
}

/// `GET /v1/governance`: what members need to sign and where things stand.
pub async fn get_governance(
    caller: Caller,
    State(state): State<Shared>,
) -> Result<Json<Value>, ApiError> {
    caller.require(STAFF)?;
    Ok(Json(committee::overview(&state).await?))
}
