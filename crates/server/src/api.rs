//! The HTTP API under `/v1` (see `openapi.json`).

use crate::auth::{bearer, generate_key, Caller, Role, FILLERS, READERS, STAFF};
use crate::error::{json_error, ApiError};
use crate::state::{
    event_hash, now_ms, AppState, CachedReport, EventResult, Lookup, ReportEntry, WhatIfKey,
};
use crate::store::AuditEntry;
use crate::stream::{stored_messages, StreamMsg};
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pmargin_core::input::portfolio::{valid_account_id, Portfolio};
use pmargin_core::instrument::Instrument;
use pmargin_core::report::{margin_report, ReportOptions};
use pmargin_core::whatif::{what_if as core_what_if, Trade};
use pmargin_core::{Book, Evaluator, Market, Params, RiskArrays};
use pmargin_engine::{Engine, Event};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::OnceCell;

pub type Shared = Arc<AppState>;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/events", post(post_event))
        .route("/v1/quotes", post(post_quote))
        .route("/v1/accounts", get(list_accounts))
        .route("/v1/accounts/{id}", get(get_account))
        .route("/v1/accounts/{id}/scenarios", get(get_scenarios))
        .route(
            "/v1/accounts/{id}/settlement",
            get(crate::settlement::get_settlement),
        )
        .route("/v1/liquidations", get(crate::settlement::get_liquidations))
        .route("/v1/what-if", post(post_what_if))
        .route("/v1/params", get(get_params))
        .route(
            "/v1/params/emergency",
            post(crate::governance::post_emergency),
        )
        .route("/v1/proposals", post(crate::governance::post_proposal))
        .route("/v1/proposals/{id}", get(crate::governance::get_proposal))
        .route(
            "/v1/proposals/{id}/approvals",
            post(crate::governance::post_approval),
        )
        .route(
            "/v1/proposals/{id}/activate",
            post(crate::governance::post_activate),
        )
        .route(
            "/v1/proposals/{id}/cancel",
            post(crate::governance::post_cancel),
        )
        .route(
            "/v1/params/emergency/ratify",
            post(crate::governance::post_ratify),
        )
        .route("/v1/governance", get(crate::governance::get_governance))
        .route("/v1/oracle", get(get_oracle))
        .route("/v1/keys", post(post_key).get(list_keys))
        .route("/v1/keys/{id}", axum::routing::delete(delete_key))
        .route("/v1/audit", get(get_audit))
        .route("/v1/stream", get(stream))
        .merge(crate::dashboard::router())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_writes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            time_out,
        ))
        .with_state(state)
}

/// Answers 503 to a request not answered within the configured timeout (a stream's upgrade is
/// answered at once; the stream itself is not timed).
async fn time_out(
    State(state): State<Shared>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(state.limits.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
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
    }
}

/// The per-key rate limit on writes (every method but GET, HEAD and OPTIONS, what-ifs
/// excepted: those are reads, bounded by the heavy pool): a token bucket per bearer
/// credential (hashed, so nothing secret is kept), 429 with `Retry-After` when it is empty.
async fn limit_writes(
    State(state): State<Shared>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || req.uri().path() == "/v1/what-if";
    if read {
        return next.run(req).await;
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
        Ok(()) => next.run(req).await,
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
            response
        }
    }
}

// ----- extractors -----

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Caller, ApiError> {
        state.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
        let header = match parts.headers.get(AUTHORIZATION) {
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| ApiError::unauthorized("Authorization header is not ASCII"))?,
            ),
            None => None,
        };
        let key = bearer(header)?;
        // (No address when the router is driven without a socket, as in unit tests.)
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        state
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .authenticate_from(key, ip)
    }
}

/// A JSON body, parsed strictly (errors name the field), with the SHA-256 of its bytes.
pub struct Body<T>(pub T, pub [u8; 32]);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body is larger than {BODY_LIMIT} bytes"),
                )
            } else {
                ApiError::bad_request(format!("cannot read the request body: {}", e.body_text()))
            }
        })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value: T = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
        de.end().map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("invalid request body: {e}"),
            )
        })?;
        Ok(Body(value, Sha256::digest(&bytes).into()))
    }
}

/// The `Idempotency-Key` header, scoped by the caller's key id.
fn idempotency(
    headers: &HeaderMap,
    caller: &Caller,
    event: &Event,
) -> Result<Option<(String, [u8; 32])>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic()));
    let key = key.ok_or_else(|| {
        ApiError::bad_request("Idempotency-Key must be 1 to 128 visible ASCII characters")
            .with_field("Idempotency-Key")
    })?;
    Ok(Some((
        format!("{}/{key}", caller.key_id),
        event_hash(event),
    )))
}

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

// ----- public -----

async fn healthz(State(state): State<Shared>) -> Response {
    let failure = state.failure();
    let sequence = state.engine().sequence();
    let body = json!({
        "status": if failure.is_none() { "ok" } else { "failed" },
        "sequence": sequence,
        "committed_sequence": state.committed(),
        "stream_sequence": state.hub.next_seq() - 1,
        "durable": state.durable,
        "failure": failure,
    });
    let status = if failure.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics(caller: Caller, State(state): State<Shared>) -> Result<Response, ApiError> {
    caller.require(STAFF)?;
    let text = state
        .metrics
        .render(&state.engine(), state.hub.next_seq(), state.durable);
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

// ----- writes -----

async fn post_event(
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
        match counterparty {
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
struct QuoteIn {
    source: String,
    underlying: String,
    price: f64,
    /// Milliseconds since the epoch; default: now.
    #[serde(default)]
    ts_ms: Option<i64>,
}

async fn post_quote(
    caller: Caller,
    State(state): State<Shared>,
    headers: HeaderMap,
    Body(q, _): Body<QuoteIn>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::OracleFeeder])?;
    caller.require_source(&q.source)?;
    let now = now_ms();
    let skew = state.max_clock_skew_ms.load(Ordering::Relaxed);
    if let Some(ts) = q.ts_ms {
        // A quote from the future would be "fresh" for longer than it should, and would hold
        // the oracle's staleness clock back.
        if ts > now.saturating_add(skew) {
            return Err(ApiError::unprocessable(format!(
                "ts_ms {ts} is {} ms ahead of the server's clock (at most {skew} ms allowed)",
                ts - now
            ))
            .with_field("ts_ms"));
        }
    }
    let event = Event::Quote {
        source: q.source,
        underlying: q.underlying,
        price: q.price,
        ts_ms: q.ts_ms.unwrap_or(now),
    };
    let idem = idempotency(&headers, &caller, &event)?;
    let result = state.submit(event, &caller.key_id, idem).await?;
    Ok(event_response(result))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyIn {
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

async fn post_key(
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
async fn delete_key(
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

async fn list_keys(caller: Caller, State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
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
async fn get_audit(
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

/// `limit` of a paged listing: 1 to `max`, `max` when absent.
fn page_limit(q: &HashMap<String, String>, max: usize) -> Result<usize, ApiError> {
    let limit = parse_limit(q, max)?;
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(format!("limit must be 1 to {max}")).with_field("limit"));
    }
    Ok(limit)
}

fn parse_limit(q: &HashMap<String, String>, default: usize) -> Result<usize, ApiError> {
    match q.get("limit") {
        Some(v) => v.parse().map_err(|_| {
            ApiError::bad_request("limit must be a non-negative integer").with_field("limit")
        }),
        None => Ok(default),
    }
}

fn check_query(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(
            ApiError::bad_request(format!("unknown query parameter `{k}`")).with_field(k.clone()),
        ),
        None => Ok(()),
    }
}

// ----- reads -----

/// One account of the engine as a portfolio of its own, with the market and parameters.
fn account_inputs(engine: &Engine, id: &str) -> Option<(Portfolio, Market, Params)> {
    let account = engine.account(id)?;
    let portfolio = Portfolio {
        source: "engine state".into(),
        accounts: vec![account],
    };
    Some((portfolio, engine.market().clone(), engine.params().clone()))
}

fn snapshot(
    engine: &Engine,
    id: &str,
) -> Result<(u64, Value, Portfolio, Market, Params), ApiError> {
    let (portfolio, market, params) = account_inputs(engine, id)
        .ok_or_else(|| ApiError::not_found(format!("no account `{id}`")))?;
    let cached = serde_json::to_value(engine.risk(id)).unwrap_or_default();
    Ok((engine.sequence(), cached, portfolio, market, params))
}

/// Heavy computations (what-if, scenario tables, report refreshes, impact reports) run on a
/// pool of their own with one thread per core but one. Their parallel parts (the grid, the
/// liquidation-price searches) fan out over that pool only: on rayon's global pool they would
/// take every core at once, and the cached reads in flight would wait behind them (and behind
/// its idle threads' spinning). Jobs beyond the pool's threads queue in it.
fn heavy_pool() -> Result<&'static rayon::ThreadPool, ApiError> {
    static POOL: std::sync::OnceLock<Result<rayon::ThreadPool, String>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(crate::cores_but_one())
            .thread_name(|i| format!("pmargin-heavy-{i}"))
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| ApiError::internal(format!("cannot start the worker pool: {e}")))
}

/// Heavy computations running or queued at most (set at start from the limits).
static HEAVY_MAX: AtomicUsize = AtomicUsize::new(256);
static HEAVY_IN: AtomicUsize = AtomicUsize::new(0);

pub fn set_heavy_queue(max: usize) {
    HEAVY_MAX.store(max.max(1), Ordering::Relaxed);
}

/// A place in the heavy pool's queue, given back when the job is done (or dropped).
struct HeavySlot;

impl Drop for HeavySlot {
    fn drop(&mut self) {
        HEAVY_IN.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs a heavy computation on the heavy pool (see [`heavy_pool`]) and waits for it without
/// holding an async worker. Beyond the configured number of jobs running or queued, 503 at
/// once: a queue without bound would only make every answer late.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let max = HEAVY_MAX.load(Ordering::Relaxed);
    if HEAVY_IN.fetch_add(1, Ordering::AcqRel) >= max {
        HEAVY_IN.fetch_sub(1, Ordering::AcqRel);
        return Err(ApiError::unavailable(format!(
            "{max} heavy computations are already running or queued; retry shortly"
        )));
    }
    let slot = HeavySlot;
    let (tx, rx) = tokio::sync::oneshot::channel();
    heavy_pool()?.spawn(move || {
        let _slot = slot;
        // A panic in a pool job would abort the process: it becomes this request's 500.
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(ApiError::internal(
            "worker failed: the computation panicked",
        )),
        Err(_) => Err(ApiError::internal("worker pool closed")),
    }
}

async fn get_account(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(READERS)?;
    caller.require_account(&id)?;
    // The engine's own figures are read fresh; the full report (with the liquidation-price
    // search) is kept serialized until an event affecting this account is applied (see
    // `ReportCache`), and the whole response until any event is.
    let (sequence, risk, version, found) = state
        .read_durable(Some(&id), |engine| {
            let risk = engine
                .risk(&id)
                .ok_or_else(|| ApiError::not_found(format!("no account `{id}`")))?;
            let version = state.reports.version(&id);
            Ok((
                engine.sequence(),
                risk,
                version,
                state.reports.lookup(&id, version),
            ))
        })
        .await?;
    let (entry, stale) = match found {
        Lookup::Fresh(e) => (e, false),
        Lookup::Stale(e) => {
            // Only oracle quotes moved since: serve it, and refresh it in the background
            // (one refresh at a time per account).
            if let Some(cell) = state.reports.flights.start(id.as_str(), version.exact) {
                let (state, id) = (state.clone(), id.clone());
                tokio::spawn(async move {
                    let _ = report_flight(&state, &id, &cell).await;
                });
            }
            (e, true)
        }
        Lookup::Miss => {
            let cell = state.reports.flights.join(id.as_str(), version.exact);
            (report_flight(&state, &id, &cell).await?, false)
        }
    };
    if let Some(body) = entry.body_at(sequence, stale) {
        return Ok(([(CONTENT_TYPE, JSON)], body).into_response());
    }
    let mut body = Vec::with_capacity(entry.tail.len() + 256);
    let _ = write!(
        body,
        "{{\"sequence\":{sequence},\"report_sequence\":{},\"report_stale\":{stale},\"engine\":",
        entry.version.exact
    );
    serde_json::to_writer(&mut body, &risk).map_err(|e| ApiError::internal(e.to_string()))?;
    body.push(b',');
    body.extend_from_slice(&entry.tail);
    let body = Bytes::from(body);
    entry.keep_body(sequence, stale, body.clone());
    Ok(([(CONTENT_TYPE, JSON)], body).into_response())
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Computes (or waits for) the report of a flight, caches it and lands the flight.
async fn report_flight(
    state: &Shared,
    id: &str,
    cell: &Arc<OnceCell<Arc<ReportEntry>>>,
) -> Result<Arc<ReportEntry>, ApiError> {
    let entry = cell
        .get_or_try_init(|| compute_report(state, id))
        .await?
        .clone();
    state.reports.put(id, entry.clone());
    state.reports.flights.land(id, cell);
    Ok(entry)
}

async fn compute_report(state: &Shared, id: &str) -> Result<Arc<ReportEntry>, ApiError> {
    let (version, (portfolio, market, params)) = state
        .read_durable(Some(id), |engine| {
            let inputs = account_inputs(engine, id)
                .ok_or_else(|| ApiError::not_found(format!("no account `{id}`")))?;
            Ok((state.reports.version(id), inputs))
        })
        .await?;
    blocking(move || {
        let report = margin_report(&portfolio, &market, &params, None, ReportOptions::default())
            .map_err(|e| ApiError::unprocessable(e.to_string()))?;
        let cached = CachedReport {
            as_of: report.as_of,
            params_version: report.params_version,
            account: report.accounts.into_iter().next(),
        };
        ReportEntry::new(version, &cached)
            .map(Arc::new)
            .map_err(ApiError::internal)
    })
    .await
}

async fn get_scenarios(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READERS)?;
    caller.require_account(&id)?;
    let (sequence, _, portfolio, market, params) = state
        .read_durable(Some(&id), |engine| snapshot(engine, &id))
        .await?;
    let table = blocking(move || {
        let fail = |e: pmargin_core::InputError| ApiError::unprocessable(e.to_string());
        let book = Book::build(&portfolio, &market, &params).map_err(fail)?;
        let arrays = RiskArrays::compute(&book, None).map_err(fail)?;
        Evaluator::new(&book, &arrays)
            .scenario_table(&book.accounts[0])
            .map_err(fail)
    })
    .await?;
    Ok(Json(json!({ "sequence": sequence, "table": table })))
}

async fn list_accounts(
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
struct WhatIfTrade {
    instrument: String,
    size: f64,
    #[serde(default)]
    price: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhatIfIn {
    account: String,
    trades: Vec<WhatIfTrade>,
    #[serde(default)]
    settlement_asset: Option<String>,
}

async fn post_what_if(
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
    let key: WhatIfKey = (w.account, body_hash);
    let (sequence, version, hit) = {
        let engine = state.engine();
        if engine.risk(&key.0).is_none() {
            return Err(ApiError::not_found(format!("no account `{}`", key.0)));
        }
        let version = state.reports.version(&key.0).exact;
        (
            engine.sequence(),
            version,
            state.reports.get_what_if(&key, version),
        )
    };
    let result = match hit {
        Some(hit) => hit,
        None => {
            let cell = state.reports.what_if_flights.join(&key, version);
            let settlement_asset = w.settlement_asset;
            let result = cell
                .get_or_try_init(|| async {
                    let (version, inputs, settle) = {
                        let engine = state.engine();
                        let settle = settlement_asset
                            .unwrap_or_else(|| engine.config().settlement_asset.clone());
                        (
                            state.reports.version(&key.0).exact,
                            account_inputs(&engine, &key.0),
                            settle,
                        )
                    };
                    let (portfolio, market, params) = inputs
                        .ok_or_else(|| ApiError::not_found(format!("no account `{}`", key.0)))?;
                    let account = key.0.clone();
                    let bytes = blocking(move || {
                        let result = core_what_if(
                            &portfolio, &account, &trades, &market, &params, None, &settle,
                        )
                        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
                        serde_json::to_vec(&result)
                            .map(Bytes::from)
                            .map_err(|e| ApiError::internal(e.to_string()))
                    })
                    .await?;
                    state
                        .reports
                        .put_what_if(key.clone(), version, bytes.clone());
                    Ok::<_, ApiError>(bytes)
                })
                .await?
                .clone();
            state.reports.what_if_flights.land(&key, &cell);
            result
        }
    };
    let mut body = Vec::with_capacity(result.len() + 48);
    let _ = write!(body, "{{\"sequence\":{sequence},\"what_if\":");
    body.extend_from_slice(&result);
    body.push(b'}');
    Ok(([(CONTENT_TYPE, JSON)], body).into_response())
}

async fn get_params(caller: Caller, State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
    let _ = caller;
    let engine = state.engine();
    Ok(Json(
        json!({ "version": engine.params().version, "params": engine.params() }),
    ))
}

async fn get_oracle(caller: Caller, State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
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
        json!({ "indices": states, "liquidations_suspended": suspended }),
    ))
}

// ----- the stream -----

async fn stream(
    caller: Caller,
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    caller.require(READERS)?;
    check_query(&q, &["from_seq"])?;
    let from = match q.get("from_seq") {
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::bad_request("from_seq must be a non-negative integer").with_field("from_seq")
        })?),
        None => None,
    };
    let max = state.limits.streams_per_key;
    if !state.streams.acquire(&caller.key_id, max) {
        state.metrics.refused("too_many_streams");
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!("this key has {max} streams open already, the most allowed"),
        )
        .into_response();
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        return Ok(response);
    }
    let slot = StreamSlot(state.clone(), caller.key_id.clone());
    Ok(ws.on_upgrade(move |socket| async move {
        let _slot = slot;
        session(socket, state, caller, from).await
    }))
}

/// An open stream's place among its key's, given back when the stream ends.
struct StreamSlot(Shared, String);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.release(&self.1);
    }
}

/// Messages `from..until` read from the log's records (before the ring's oldest).
async fn from_log(state: &Shared, from: u64, until: u64) -> Result<Vec<Arc<StreamMsg>>, String> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || stored_messages(&state.store, from, until))
        .await
        .map_err(|e| e.to_string())?
}

/// Sends the messages `next..until` the caller may see, read from the log one page at a time
/// (a resume from far back holds one page in memory, not the whole history); returns the
/// number of the next message, or `None` once the socket is gone or the log unreadable.
async fn catch_up(
    socket: &mut WebSocket,
    state: &Shared,
    caller: &Caller,
    mut next: u64,
    until: u64,
) -> Option<u64> {
    let page = state.limits.stream_page.max(1) as u64;
    while next < until {
        let to = until.min(next.saturating_add(page));
        let messages = match from_log(state, next, to).await {
            Ok(m) => m,
            Err(e) => {
                let _ = socket
                    .send(Message::Text(
                        json!({ "type": "error", "message": e }).to_string().into(),
                    ))
                    .await;
                return None;
            }
        };
        for m in messages {
            if m.seq < next {
                continue;
            }
            next = m.seq + 1;
            if send_visible(socket, caller, &m).await.is_err() {
                return None;
            }
        }
        next = next.max(to);
    }
    Some(next)
}

async fn send_visible(socket: &mut WebSocket, caller: &Caller, m: &StreamMsg) -> Result<(), ()> {
    let visible = m.accounts.is_empty() || m.accounts.iter().any(|a| caller.may_access(a));
    if visible {
        socket
            .send(Message::Text(m.json.to_string().into()))
            .await
            .map_err(|_| ())?;
    }
    Ok(())
}

pub(crate) async fn session(
    mut socket: WebSocket,
    state: Shared,
    caller: Caller,
    from: Option<u64>,
) {
    let sub = state.hub.subscribe(from.unwrap_or(u64::MAX));
    let mut rx = sub.rx;
    let mut next = from.unwrap_or(sub.next).max(1);
    let mut pending: Vec<Arc<StreamMsg>> = Vec::new();
    if next < sub.oldest {
        match catch_up(&mut socket, &state, &caller, next, sub.oldest).await {
            Some(n) => next = n,
            None => return,
        }
    }
    pending.extend(sub.backlog);
    loop {
        for m in pending.drain(..) {
            if m.seq < next {
                continue;
            }
            next = m.seq + 1;
            if send_visible(&mut socket, &caller, &m).await.is_err() {
                return;
            }
        }
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(m) => pending.push(m),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let (_, oldest) = state.hub.since(next);
                    if next < oldest {
                        match catch_up(&mut socket, &state, &caller, next, oldest).await {
                            Some(n) => next = n,
                            None => return,
                        }
                    }
                    let (ring, _) = state.hub.since(next);
                    pending.extend(ring);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn heavy_work_fans_out_over_all_cores_but_one() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (threads, name) = blocking(|| {
            let name = std::thread::current().name().unwrap_or("").to_string();
            // What a report's parallel searches would spread over.
            Ok((rayon::current_num_threads(), name))
        })
        .await
        .expect("the job runs");
        assert_eq!(threads, cores.saturating_sub(1).max(1));
        assert!(name.starts_with("pmargin-heavy-"), "ran on thread `{name}`");
    }

    #[tokio::test]
    async fn a_heavy_job_that_panics_is_an_internal_error_and_the_pool_goes_on() {
        let failed = blocking::<()>(|| panic!("a bug in a computation")).await;
        let e = failed.expect_err("a panic is an error");
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(e.message.contains("panicked"), "{}", e.message);
        let after = blocking(|| Ok(6 * 7)).await.expect("the pool still serves");
        assert_eq!(after, 42);
    }
}
