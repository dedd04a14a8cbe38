//! API keys (create, list, revoke) and the audit trail: the admin's.

use crate::auth::{generate_key, Caller, Role};
use crate::http::error::ApiError;
use crate::http::extract::{check_query, page_limit, Body};
use crate::http::Shared;
use crate::service::state::now_ms;
use crate::store::AuditEntry;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pmargin_core::input::portfolio::valid_account_id;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyIn {
    role: Role,
    #[serde(default)]
    accounts: Vec<String>,
    /// Oracle feeders only: the quote sources the key may post for.
    #[serde(default)]
    sources: Option<Vec<String>>,
    #[serde(default)]
    label: Option<String>,
}

/// A quote source name: 1 to 64 letters, digits, `.`, `_` or `-`.
fn valid_source(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

pub async fn post_key(
    caller: Caller,
    State(state): State<Shared>,
    Body(k, _): Body<KeyIn>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin])?;
    if k.role == Role::Trader && k.accounts.is_empty() {
        return Err(
            ApiError::bad_request("a trader key needs at least one account").with_field("accounts"),
        );
    }
    if let Some(bad) = k.accounts.iter().find(|a| !valid_account_id(a)) {
        return Err(
            ApiError::bad_request(format!("account id `{bad}` is not valid"))
                .with_field("accounts"),
        );
    }
    let sources = match (k.role, k.sources) {
        (Role::OracleFeeder, Some(sources)) if !sources.is_empty() => {
            if let Some(bad) = sources.iter().find(|s| !valid_source(s)) {
                return Err(ApiError::bad_request(format!(
                    "source `{bad}` is not 1 to 64 letters, digits, `.`, `_` or `-`"
                ))
                .with_field("sources"));
            }
            let mut sources = sources;
            sources.sort();
            sources.dedup();
            sources
        }
        (Role::OracleFeeder, _) => {
            return Err(ApiError::bad_request(
                "an oracle feeder key is bound to the quote sources it may post: `sources` \
                 must list at least one",
            )
            .with_field("sources"))
        }
        (_, Some(_)) => {
            return Err(
                ApiError::bad_request("only an oracle feeder key takes `sources`")
                    .with_field("sources"),
            )
        }
        (_, None) => Vec::new(),
    };
    let (id, key) = generate_key().map_err(ApiError::internal)?;
    let mut record = {
        let keys = state.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.secret().record(id.clone(), k.role, &key, now_ms())
    };
    record.accounts = k.accounts;
    record.sources = sources;
    record.label = k.label;
    state
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .put_key(&record)
        .map_err(ApiError::unavailable)?;
    state
        .keys
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(record.clone());
    state.audit(AuditEntry {
        ts_ms: now_ms(),
        key_id: caller.key_id,
        action: "create_key".into(),
        target: id.clone(),
        outcome: "created".into(),
        detail: json!({ "role": record.role, "accounts": record.accounts, "sources": record.sources }),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": id, "role": record.role, "accounts": record.accounts, "sources": record.sources, "key": key }),
        ),
    )
        .into_response())
}

/// Revokes a key at once: its next request is 401. The record is kept, marked revoked.
pub async fn delete_key(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin])?;
    if id == caller.key_id {
        // (An admin cannot lock the service out by mistake: another admin key must do it.)
        return Err(ApiError::conflict(
            "a key cannot revoke itself; revoke it with another admin key",
        ));
    }
    // The ring's write lock is held until the record is stored: no request authenticates with
    // the key after the answer, and a failed store leaves the key as it was.
    let revoked = {
        let mut keys = state.keys.write().unwrap_or_else(|p| p.into_inner());
        let record = keys
            .by_id(&id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no active key `{id}`")))?;
        let mut revoked = record;
        revoked.revoked_ms = Some(now_ms());
        state
            .store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put_key(&revoked)
            .map_err(ApiError::unavailable)?;
        keys.revoke(&id, revoked.revoked_ms.unwrap_or_default());
        revoked
    };
    state.audit(AuditEntry {
        ts_ms: now_ms(),
        key_id: caller.key_id,
        action: "revoke_key".into(),
        target: id.clone(),
        outcome: "revoked".into(),
        detail: json!({ "role": revoked.role }),
    })?;
    Ok(Json(json!({ "id": id, "revoked_ms": revoked.revoked_ms })).into_response())
}

pub async fn list_keys(
    caller: Caller,
    State(state): State<Shared>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let keys = state.keys.read().unwrap_or_else(|p| p.into_inner());
    let mut list: Vec<Value> = keys
        .records()
        .map(|r| json!({ "id": r.id, "role": r.role, "accounts": r.accounts, "sources": r.sources, "created_ms": r.created_ms, "label": r.label }))
        .collect();
    list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(Json(json!({ "keys": list })))
}

/// `GET /v1/audit?limit=N&after=K`: entries `K+1..=K+N` of the trail (numbered from 1), or
/// without `after` the latest `N`; `next` is the `after` of the following page.
pub async fn get_audit(
    caller: Caller,
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    check_query(&q, &["limit", "after"])?;
    let limit = page_limit(&q, state.limits.max_page)?;
    let after = match q.get("after") {
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            ApiError::bad_request("after must be a non-negative integer").with_field("after")
        })?),
        None => None,
    };
    let entries = state
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .audit_entries()
        .map_err(ApiError::unavailable)?;
    let total = entries.len();
    let start = after.map_or(total.saturating_sub(limit), |a| a.min(total));
    let end = (start + limit).min(total);
    let next = (end < total).then_some(end);
    Ok(Json(
        json!({ "entries": entries[start..end], "after": start, "next": next, "total": total }),
    ))
}
