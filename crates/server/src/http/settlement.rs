//! Signed settlement messages over HTTP (see [`crate::service::settlement`]).

use crate::auth::{Caller, READERS, STAFF};
use crate::error::ServiceError;
use crate::http::error::ApiError;
use crate::http::Shared;
use axum::extract::{Path, Query, State};
use axum::Json;
use pmargin_settlement::to_checksum_address;
use serde_json::{json, Value};
use std::collections::HashMap;

/// `GET /v1/accounts/{id}/settlement`: the account's figures now, signed.
pub async fn get_settlement(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READERS)?;
    caller.require_account(&id)?;
    let settlement = state
        .settlement
        .get()
        .ok_or_else(|| ApiError::unavailable("no signing key is configured"))?;
    // Signed figures are an on-chain claim: only those of durable events are signed.
    let (sequence, risk, params_version) = state
        .read_durable(Some(&id), |engine| {
            let risk = engine
                .risk(&id)
                .ok_or_else(|| ServiceError::not_found(format!("no account `{id}`")))?;
            Ok((engine.sequence(), risk, engine.params().version))
        })
        .await?;
    let signed = settlement.sign_margin_update(&id, &risk, params_version)?;
    Ok(Json(json!({
        "sequence": sequence,
        "account": id,
        "domain": settlement.domain,
        "signer": to_checksum_address(&settlement.address()),
        "signed": signed,
    })))
}

/// Instructions returned at most per request.
pub const MAX_LIQUIDATIONS: usize = 10_000;

/// `GET /v1/liquidations?from=SEQ&limit=N`: the signed liquidation instructions of the fills
/// produced by events `SEQ` (default 1) and later, in log order, and beside them (`seizes`) the
/// signed seize instructions of the collateral seized in other protocols by the same events.
/// `next` is the `from` of the following page.
pub async fn get_liquidations(
    caller: Caller,
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require(STAFF)?;
    let number = |name: &str, default: u64| match q.get(name) {
        None => Ok(default),
        Some(v) => v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("{name} must be a non-negative integer")).with_field(name)
        }),
    };
    let from = number("from", 1)?;
    let limit = number("limit", 1000)?.clamp(1, MAX_LIQUIDATIONS as u64) as usize;
    if state.settlement.get().is_none() {
        return Err(ApiError::unavailable("no signing key is configured"));
    }
    let worker = state.clone();
    let page = tokio::task::spawn_blocking(move || {
        let settlement = worker.settlement.get().ok_or("no signing key")?;
        settlement.liquidations(&worker.store, from, limit)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(ApiError::unavailable)?;
    let settlement = state
        .settlement
        .get()
        .ok_or_else(|| ApiError::unavailable("no signing key is configured"))?;
    let next = match page.more_after {
        Some(seq) => seq + 1,
        None => page.last.max(from.saturating_sub(1)) + 1,
    };
    Ok(Json(json!({
        "domain": settlement.domain,
        "signer": to_checksum_address(&settlement.address()),
        "sequence": page.last,
        "next": next,
        "liquidations": page.fills,
        "seizes": page.seizes,
    })))
}
