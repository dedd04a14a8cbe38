//! Reads: health, metrics, the OpenAPI document, accounts (list, report, scenarios,
//! what-ifs), parameters and the oracle.

use crate::auth::{Caller, Role, READERS, STAFF};
use crate::http::error::ApiError;
use crate::http::extract::{check_query, page_limit, Body};
use crate::http::{Shared, OPENAPI};
use crate::service::reports;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pmargin_core::instrument::Instrument;
use pmargin_core::whatif::Trade;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

const JSON: HeaderValue = HeaderValue::from_static("application/json");

// ----- public -----

pub async fn healthz(State(state): State<Shared>) -> Response {
    let failure = state.failure();
    let sequence = state.engine().sequence();
    let mut body = json!({
        "status": if failure.is_none() { "ok" } else { "failed" },
        "sequence": sequence,
        "committed_sequence": state.committed(),
        "stream_sequence": state.hub.next_seq() - 1,
        "durable": state.durable,
        "failure": failure,
    });
    // The node's role in a replicated deployment (a single node leads).
    if let (Some(b), Value::Object(ha)) = (body.as_object_mut(), state.role_health()) {
        b.extend(ha);
    }
    let status = if failure.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub async fn metrics(caller: Caller, State(state): State<Shared>) -> Result<Response, ApiError> {
    caller.require(STAFF)?;
    let mut text = state
        .metrics
        .render(&state.engine(), state.hub.next_seq(), state.durable);
    if let Some(feeds) = state.feeds.get() {
        text.push_str(&feeds.prometheus(crate::service::state::now_ms()));
    }
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

pub async fn get_account(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(READERS)?;
    caller.require_account(&id)?;
    let body = reports::account_body(&state, &id).await?;
    Ok(([(CONTENT_TYPE, JSON)], body).into_response())
}

pub async fn get_scenarios(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READERS)?;
    caller.require_account(&id)?;
    Ok(Json(reports::scenario_table(&state, &id).await?))
}

pub async fn list_accounts(
    caller: Caller,
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READERS)?;
    check_query(&q, &["status", "limit", "after"])?;
    let status = q.get("status").map(String::as_str);
    if let Some(s) = status {
        if !["healthy", "restricted", "liquidatable", "bankrupt"].contains(&s) {
            return Err(ApiError::bad_request(format!(
                "status `{s}` is not one of healthy, restricted, liquidatable, bankrupt"
            ))
            .with_field("status"));
        }
    }
    let limit = page_limit(&q, state.limits.max_page)?;
    let after = q.get("after").cloned();
    // Pages in account id order; `next` is the `after` of the following page.
    let body = state
        .read_durable(None, |engine| {
            let mut found: Vec<(&str, &pmargin_engine::AccountRisk)> = engine
                .risks()
                .filter(|(id, r)| {
                    status.is_none_or(|s| r.status.as_str() == s)
                        && caller.may_access(id)
                        && after.as_deref().is_none_or(|a| *id > a)
                })
                .collect();
            found.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let more = found.len() > limit;
            found.truncate(limit);
            let next = if more {
                found.last().map(|(id, _)| id.to_string())
            } else {
                None
            };
            let accounts: Vec<Value> = found
                .iter()
                .map(|(id, r)| {
                    json!({ "id": id, "equity": r.equity, "margin_balance": r.margin_balance, "initial_margin": r.initial_margin,
                            "maintenance_margin": r.maintenance_margin, "status": r.status })
                })
                .collect();
            Ok(json!({ "sequence": engine.sequence(), "count": accounts.len(), "accounts": accounts, "next": next }))
        })
        .await?;
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatIfTrade {
    instrument: String,
    size: f64,
    #[serde(default)]
    price: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatIfIn {
    account: String,
    trades: Vec<WhatIfTrade>,
    #[serde(default)]
    settlement_asset: Option<String>,
}

pub async fn post_what_if(
    caller: Caller,
    State(state): State<Shared>,
    Body(w, body_hash): Body<WhatIfIn>,
) -> Result<Response, ApiError> {
    caller.require(READERS)?;
    caller.require_account(&w.account)?;
    if w.trades.is_empty() || w.trades.len() > 100 {
        return Err(ApiError::bad_request("trades must hold 1 to 100 trades").with_field("trades"));
    }
    let mut trades = Vec::with_capacity(w.trades.len());
    for (i, t) in w.trades.iter().enumerate() {
        let instrument = Instrument::parse(&t.instrument)
            .map_err(|e| ApiError::bad_request(e).with_field(format!("trades[{i}].instrument")))?;
        if !(t.size.is_finite() && t.size != 0.0) {
            return Err(
                ApiError::bad_request("size must be a finite nonzero number")
                    .with_field(format!("trades[{i}].size")),
            );
        }
        if t.price.is_some_and(|p| !(p.is_finite() && p >= 0.0)) {
            return Err(
                ApiError::bad_request("price must be finite and non-negative")
                    .with_field(format!("trades[{i}].price")),
            );
        }
        trades.push(Trade {
            instrument,
            size: t.size,
            price: t.price,
        });
    }
    // Same inputs, same answer: reused until an event affecting the account is applied, and
    // computed once for concurrent identical requests.
    let body = reports::what_if(&state, (w.account, body_hash), trades, w.settlement_asset).await?;
    Ok(([(CONTENT_TYPE, JSON)], body).into_response())
}

pub async fn get_params(
    caller: Caller,
    State(state): State<Shared>,
) -> Result<Json<Value>, ApiError> {
    let _ = caller;
    let engine = state.engine();
    Ok(Json(
        json!({ "version": engine.params().version, "params": engine.params() }),
    ))
}

pub async fn get_oracle(
    caller: Caller,
    State(state): State<Shared>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[
        Role::Admin,
        Role::RiskCommittee,
        Role::ReadOnly,
        Role::Trader,
        Role::OracleFeeder,
    ])?;
    let engine = state.engine();
    let states: Vec<Value> = match engine.oracle() {
        Some(o) => o
            .underlyings()
            .filter_map(|u| o.state(u))
            .map(|s| serde_json::to_value(s).unwrap_or_default())
            .collect(),
        None => Vec::new(),
    };
    let suspended: Vec<&str> = engine
        .book()
        .underlyings
        .iter()
        .map(|u| u.name.as_str())
        .filter(|u| engine.liquidations_suspended(u))
        .collect();
    Ok(Json(
        json!({ "indices": states, "liquidations_suspended": suspended,
                "feeds": state.feeds.get().map(|f| f.to_json(crate::service::state::now_ms())) }),
    ))
}
