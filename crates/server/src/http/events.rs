//! Writes: events (fills and deposits from the venue, withdrawals) and oracle quotes, through
//! the writer, answered once durable.

use crate::auth::{Caller, Role, FILLERS};
use crate::error::ServiceError;
use crate::http::error::ApiError;
use crate::http::extract::{idempotency, Body};
use crate::http::Shared;
use crate::service::state::{now_ms, AppState, EventResult};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pmargin_engine::Event;
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::Ordering;

fn event_response(result: EventResult) -> Response {
    let status = if result.accepted {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let mut body = json!({ "sequence": result.sequence, "accepted": result.accepted, "outputs": result.outputs });
    if !result.accepted {
        let reason = result.outputs.iter().find_map(|o| match o {
            pmargin_engine::Output::Rejected { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        body["error"] =
            json!({ "status": 422, "code": "rejected", "message": reason.unwrap_or_default() });
    }
    let mut response = (status, Json(body)).into_response();
    if result.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

pub async fn post_event(
    caller: Caller,
    State(state): State<Shared>,
    headers: HeaderMap,
    Body(event, _): Body<Event>,
) -> Result<Response, ApiError> {
    match (&caller.role, &event) {
        (_, Event::ActivateParams { .. }) => {
            return Err(ApiError::forbidden(
                "parameters change only through governance (POST /v1/proposals)",
            ))
        }
        // An attested position counts only with its attester's signature, which only
        // POST /v1/external checks; the attestations' clock is the service's own.
        (_, Event::Attestation { .. }) | (_, Event::AttestationTick { .. }) => {
            return Err(ApiError::forbidden(
                "positions in other protocols come signed by their attester (POST /v1/external)",
            ))
        }
        // Value enters an account (a deposit) or moves between two (a fill) only on the
        // venue's word: an account holder posting its own fill could print money (issue 15).
        (_, Event::Trade { .. }) | (_, Event::Deposit { .. })
            if !FILLERS.contains(&caller.role) =>
        {
            return Err(ApiError::forbidden(format!(
                "fills and deposits come from the venue: role {} may not submit them \
                 (allowed: admin, venue)",
                caller.role.as_str()
            )))
        }
        (_, Event::Trade { .. }) | (_, Event::Deposit { .. }) => {}
        (Role::Admin | Role::Venue, Event::Withdrawal { .. }) => {}
        (Role::Trader, Event::Withdrawal { account, .. }) => caller.require_account(account)?,
        (Role::Admin, _) => {}
        (Role::OracleFeeder, _) => {
            return Err(ApiError::forbidden(
                "an oracle feeder submits quotes at POST /v1/quotes",
            ))
        }
        _ => {
            return Err(ApiError::forbidden(format!(
                "role {} may not submit this event",
                caller.role.as_str()
            )))
        }
    }
    // Every fill through the service names both sides, so value only moves between two
    // accounts (the engine applies both legs at one price, each paying the fee). The engine
    // itself still takes a one-sided fill: a replayed file (`pmargin replay`) is trusted as
    // its author wrote it; the service is where fills from outside arrive.
    if let Event::Trade {
        account,
        counterparty,
        ..
    } = &event
    {
        // (A cross-group leg from the router names its other side in a header instead: that
        // account lives in another group's log; see replicated::shard.)
        let leg_of = headers
            .get(crate::replicated::shard::LEG_OF)
            .and_then(|v| v.to_str().ok());
        match counterparty {
            None if crate::replicated::shard::is_leg(state.shard.get(), account, leg_of) => {}
            None => {
                return Err(ApiError::unprocessable(
                    "a trade names both sides: `counterparty` is required",
                )
                .with_field("counterparty"))
            }
            Some(c) if c == account => {
                return Err(ApiError::unprocessable(
                    "`counterparty` must be another account than `account`",
                )
                .with_field("counterparty"))
            }
            Some(_) => {}
        }
    }
    let idem = idempotency(&headers, &caller, &event)?;
    let result = state.submit(event, &caller.key_id, idem).await?;
    Ok(event_response(result))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteIn {
    source: String,
    underlying: String,
    price: f64,
    /// Milliseconds since the epoch; default: now.
    #[serde(default)]
    ts_ms: Option<i64>,
}

pub async fn post_quote(
    caller: Caller,
    State(state): State<Shared>,
    headers: HeaderMap,
    Body(q, _): Body<QuoteIn>,
) -> Result<Response, ApiError> {
    let ts_ms = checked_quote_time(&state, &caller, &q.source, q.ts_ms)?;
    // This route takes no confidence or weight: those come from a configured feed.
    let event = Event::Quote {
        source: q.source,
        underlying: q.underlying,
        price: q.price,
        ts_ms,
        confidence: None,
        weight: None,
    };
    let idem = idempotency(&headers, &caller, &event)?;
    let result = state.submit(event, &caller.key_id, idem).await?;
    Ok(event_response(result))
}

/// The checks of a quote from `caller` (this endpoint's, and a configured feed's: see
/// [`crate::feeds`]): the caller may post for `source`, and `ts_ms` is not ahead of the
/// server's clock. The quote's time: `ts_ms`, or now without one.
pub fn checked_quote_time(
    state: &AppState,
    caller: &Caller,
    source: &str,
    ts_ms: Option<i64>,
) -> Result<i64, ServiceError> {
    caller.require(&[Role::Admin, Role::OracleFeeder])?;
    caller.require_source(source)?;
    let now = now_ms();
    let skew = state.max_clock_skew_ms.load(Ordering::Relaxed);
    if let Some(ts) = ts_ms {
        // A quote from the future would be "fresh" for longer than it should, and would hold
        // the oracle's staleness clock back.
        if ts > now.saturating_add(skew) {
            return Err(ServiceError::unprocessable(format!(
                "ts_ms {ts} is {} ms ahead of the server's clock (at most {skew} ms allowed)",
                ts - now
            ))
            .with_field("ts_ms"));
        }
    }
    Ok(ts_ms.unwrap_or(now))
}
