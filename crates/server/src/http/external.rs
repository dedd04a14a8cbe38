//! `POST /v1/external`: a position held in another protocol, attested by that protocol (see
//! [`crate::service::external`]).
//!
//! Who may post: the venue and the admin for any account (a protocol's keeper relays through
//! a venue key), a trader for its own accounts only; the oracle feeder, the risk committee and
//! read-only keys may not. The signature is the authority on the content, the key on who may
//! use the write path (rate limit, audit trail) and which accounts it may touch
//! (docs/THREAT_MODEL.md).

use crate::auth::{Caller, Role};
use crate::http::error::ApiError;
use crate::http::extract::Body;
use crate::http::Shared;
use crate::service::external::{attestation_event, now_s, refusal, AttestationIn};
use axum::extract::State;
use axum::Json;
use pmargin_settlement::to_hex;
use serde_json::{json, Value};

pub async fn post_external(
    caller: Caller,
    State(state): State<Shared>,
    Body(body, _): Body<AttestationIn>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin, Role::Venue, Role::Trader])?;
    if caller.role == Role::Trader {
        caller.require_account(&body.attestation.account)?;
    }
    let settlement = state
        .settlement
        .get()
        .ok_or_else(|| ApiError::unavailable("no signing domain is configured"))?;
    let event = attestation_event(&state.engine(), &settlement.domain, &body, now_s())?;
    let result = state.submit(event, &caller.key_id, None).await?;
    if let Some(refused) = refusal(&result.outputs) {
        return Err(refused.into());
    }
    let account = &body.attestation.account;
    let figures = state.engine().risk(account);
    Ok(Json(json!({
        "sequence": result.sequence,
        "accepted": result.accepted,
        "account": account,
        "position_id": to_hex(&body.attestation.position_id()),
        "outputs": result.outputs,
        "figures": figures,
    })))
}
