//! The HTTP API under `/v1` (see `openapi.json`).

use crate::auth::{bearer, generate_key, hash_key, Caller, KeyRecord, Role, READERS, STAFF};
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
use std::sync::atomic::Ordering;
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
        .route("/v1/oracle", get(get_oracle))
        .route("/v1/keys", post(post_key).get(list_keys))
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
        .with_state(state)
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
        state
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .authenticate(key)
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
        (Role::Admin, _) => {}
        (
            Role::Trader,
            Event::Trade {
                account,
                counterparty: None,
                ..
            },
        )
        | (Role::Trader, Event::Withdrawal { account, .. }) => caller.require_account(account)?,
        (Role::Trader, Event::Trade { .. }) => {
            return Err(ApiError::forbidden(
                "a trader may not submit a trade with a counterparty",
            ))
        }
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
    let event = Event::Quote {
        source: q.source,
        underlying: q.underlying,
        price: q.price,
        ts_ms: q.ts_ms.unwrap_or_else(now_ms),
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
    #[serde(default)]
    label: Option<String>,
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
    let (id, key) = generate_key().map_err(ApiError::internal)?;
    let record = KeyRecord {
        id: id.clone(),
        role: k.role,
        accounts: k.accounts,
        hash: hex::encode(hash_key(&key)),
        created_ms: now_ms(),
        label: k.label,
    };
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
        detail: json!({ "role": record.role, "accounts": record.accounts }),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "role": record.role, "accounts": record.accounts, "key": key })),
    )
        .into_response())
}

async fn list_keys(caller: Caller, State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let keys = state.keys.read().unwrap_or_else(|p| p.into_inner());
    let mut list: Vec<Value> = keys
        .records()
        .map(|r| json!({ "id": r.id, "role": r.role, "accounts": r.accounts, "created_ms": r.created_ms, "label": r.label }))
        .collect();
    list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(Json(json!({ "keys": list })))
}

async fn get_audit(
    caller: Caller,
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let limit = parse_limit(&q, 1000)?;
    let entries = state
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .audit_entries()
        .map_err(ApiError::unavailable)?;
    let skip = entries.len().saturating_sub(limit);
    Ok(Json(json!({ "entries": entries[skip..] })))
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
    state: &AppState,
    id: &str,
) -> Result<(u64, Value, Portfolio, Market, Params), ApiError> {
    let engine = state.engine();
    let (portfolio, market, params) = account_inputs(&engine, id)
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

/// Runs a heavy computation on the heavy pool (see [`heavy_pool`]) and waits for it without
/// holding an async worker.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    heavy_pool()?.spawn(move || {
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
    let (sequence, risk, version, found) = {
        let engine = state.engine();
        let risk = engine
            .risk(&id)
            .ok_or_else(|| ApiError::not_found(format!("no account `{id}`")))?;
        let version = state.reports.version(&id);
        (
            engine.sequence(),
            risk,
            version,
            state.reports.lookup(&id, version),
        )
    };
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
    let (version, (portfolio, market, params)) = {
        let engine = state.engine();
        let inputs = account_inputs(&engine, id)
            .ok_or_else(|| ApiError::not_found(format!("no account `{id}`")))?;
        (state.reports.version(id), inputs)
    };
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
    let (sequence, _, portfolio, market, params) = snapshot(&state, &id)?;
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
    check_query(&q, &["status", "limit"])?;
    let status = q.get("status").map(String::as_str);
    if let Some(s) = status {
        if !["healthy", "restricted", "liquidatable", "bankrupt"].contains(&s) {
            return Err(ApiError::bad_request(format!(
                "status `{s}` is not one of healthy, restricted, liquidatable, bankrupt"
            ))
            .with_field("status"));
        }
    }
    let limit = parse_limit(&q, usize::MAX)?;
    let engine = state.engine();
    let accounts: Vec<Value> = engine
        .risks()
        .filter(|(id, r)| status.is_none_or(|s| r.status.as_str() == s) && caller.may_access(id))
        .take(limit)
        .map(|(id, r)| {
            json!({ "id": id, "equity": r.equity, "margin_balance": r.margin_balance, "initial_margin": r.initial_margin,
                    "maintenance_margin": r.maintenance_margin, "status": r.status })
        })
        .collect();
    Ok(Json(
        json!({ "sequence": engine.sequence(), "count": accounts.len(), "accounts": accounts }),
    ))
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
    Ok(ws.on_upgrade(move |socket| session(socket, state, caller, from)))
}

/// Messages `from..until` read from the log's records (before the ring's oldest).
async fn from_log(state: &Shared, from: u64, until: u64) -> Result<Vec<Arc<StreamMsg>>, String> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || stored_messages(&state.store, from, until))
        .await
        .map_err(|e| e.to_string())?
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
        match from_log(&state, next, sub.oldest).await {
            Ok(m) => pending.extend(m),
            Err(e) => {
                let _ = socket
                    .send(Message::Text(
                        json!({ "type": "error", "message": e }).to_string().into(),
                    ))
                    .await;
                return;
            }
        }
    }
    pending.extend(sub.backlog);
    loop {
        for m in pending.drain(..) {
            if m.seq < next {
                continue;
            }
            next = m.seq + 1;
            let visible = m.accounts.is_empty() || m.accounts.iter().any(|a| caller.may_access(a));
            if visible
                && socket
                    .send(Message::Text(m.json.to_string().into()))
                    .await
                    .is_err()
            {
                return;
            }
        }
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(m) => pending.push(m),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let (ring, oldest) = state.hub.since(next);
                    if next < oldest {
                        match from_log(&state, next, oldest).await {
                            Ok(m) => pending.extend(m),
                            Err(_) => return,
                        }
                    }
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
