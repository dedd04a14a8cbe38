//! The HTTP layer: the server loop ([`serve`]), the extractors ([`extract`]), the handlers
//! (one module per group of endpoints) and the mapping of the service's errors to statuses
//! ([`error`]), over the service layer ([`crate::service`]), which knows nothing of HTTP.
//! The API lives under `/v1` (see `openapi.json`).

pub mod accounts;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod external;
pub mod extract;
pub mod forward;
pub mod governance;
pub mod keys;
pub mod serve;
pub mod settlement;
pub mod stream;

use crate::http::error::ApiError;
use crate::service::state::AppState;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub type Shared = Arc<AppState>;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

pub const OPENAPI: &str = include_str!("../openapi.json");

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(accounts::healthz))
        .route("/metrics", get(accounts::metrics))
        .route("/v1/openapi.json", get(accounts::openapi))
        .route("/v1/events", post(events::post_event))
        .route("/v1/quotes", post(events::post_quote))
        .route("/v1/external", post(external::post_external))
        .route("/v1/accounts", get(accounts::list_accounts))
        .route("/v1/accounts/{id}", get(accounts::get_account))
        .route("/v1/accounts/{id}/scenarios", get(accounts::get_scenarios))
        .route(
            "/v1/accounts/{id}/settlement",
            get(settlement::get_settlement),
        )
        .route("/v1/liquidations", get(settlement::get_liquidations))
        .route("/v1/what-if", post(accounts::post_what_if))
        .route("/v1/params", get(accounts::get_params))
        .route("/v1/params/emergency", post(governance::post_emergency))
        .route("/v1/proposals", post(governance::post_proposal))
        .route("/v1/proposals/{id}", get(governance::get_proposal))
        .route(
            "/v1/proposals/{id}/approvals",
            post(governance::post_approval),
        )
        .route(
            "/v1/proposals/{id}/activate",
            post(governance::post_activate),
        )
        .route("/v1/proposals/{id}/cancel", post(governance::post_cancel))
        .route("/v1/params/emergency/ratify", post(governance::post_ratify))
        .route("/v1/governance", get(governance::get_governance))
        .route("/v1/oracle", get(accounts::get_oracle))
        .route("/v1/keys", post(keys::post_key).get(keys::list_keys))
        .route("/v1/keys/{id}", delete(keys::delete_key))
        .route("/v1/audit", get(keys::get_audit))
        .route("/v1/stream", get(stream::stream))
        .merge(dashboard::router())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // One layer for both bounds: each layer costs every request a boxed future.
        .layer(axum::middleware::from_fn_with_state(state.clone(), bound))
        .with_state(state)
}

/// The per-request bounds: the write rate limit ([`rate_limited`]), then a 503 for a request
/// not answered within the configured timeout (a stream's upgrade is answered at once; the
/// stream itself is not timed).
async fn bound(
    State(state): State<Shared>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(refused) = rate_limited(&state, &req) {
        return refused;
    }
    if forward::to_leader(&state, &req) {
        if let Some(ha) = state.ha.get() {
            let forwarded = forward::forward(ha, req);
            return match tokio::time::timeout(state.limits.request_timeout, forwarded).await {
                Ok(response) => response,
                Err(_) => timed_out(&state),
            };
        }
    }
    match tokio::time::timeout(state.limits.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => timed_out(&state),
    }
}

fn timed_out(state: &Shared) -> Response {
    state.metrics.refused("timeout");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
        format!(
            "the request took longer than {} s",
            state.limits.request_timeout.as_secs_f64()
        ),
    )
    .into_response()
}

/// The per-key rate limit on writes (every method but GET, HEAD and OPTIONS, what-ifs
/// excepted: those are reads, bounded by the heavy pool): a token bucket per bearer
/// credential (hashed, so nothing secret is kept): its 429 with `Retry-After` when it is empty.
fn rate_limited(state: &Shared, req: &Request) -> Option<Response> {
    use axum::http::Method;
    let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || req.uri().path() == "/v1/what-if";
    if read {
        return None;
    }
    let credential = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let digest: [u8; 32] = Sha256::digest(credential).into();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    match state.limiter.take(key) {
        Ok(()) => None,
        Err(wait) => {
            state.metrics.refused("rate_limited");
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "more than {} writes per second (bursts of {}) from this key; retry in {secs} s",
                    state.limits.writes_per_second, state.limits.write_burst
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
            Some(response)
        }
    }
}
