//! The web dashboard (issue 6): a read-only risk-desk view served at `/`, live over the stream.
//!
//! The page is plain HTML, CSS and ES modules checked in under `crates/server/assets/` and
//! embedded in the binary with `include_str!`, so it works offline and needs no build step.
//! Every asset is served with its content type and a strict Content-Security-Policy (no inline
//! script or style, no other origin).
//!
//! The page reads the ordinary API with the bearer key the user gives it (kept in the tab's
//! `sessionStorage`, or taken once from the URL fragment `#key=...`, which browsers never send).
//! A few reads exist for it alone, under `/v1/dashboard/` (see `openapi.json`):
//!
//! - `summary`: every visible account's figures and underlyings in one compact answer, the
//!   totals, the insurance fund and the caller's role (10,000 accounts in one request);
//! - `accounts/{id}/positions`: positions with marks and greeks, balances with haircuts,
//!   positions held in other protocols;
//! - `proposals` and `proposals/{id}/impact`: the governance state and a proposal's impact on
//!   today's book (the impact report is otherwise returned only once, to the proposer);
//! - `stream`: the WebSocket stream of `/v1/stream` for a browser, which cannot set an
//!   `Authorization` header: the key comes as the subprotocol `pmargin.key.<hex of the key>`
//!   beside `pmargin.v1`, and the server answers with `pmargin.v1`.

use crate::auth::{Caller, READERS, STAFF};
use crate::http::error::ApiError;
use crate::http::governance::proposal_id;
use crate::http::stream::{session, stream_slot};
use crate::http::Shared;
use crate::service::committee;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, SEC_WEBSOCKET_PROTOCOL,
};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pmargin_core::book::{BookAccount, BookPosition};
use pmargin_core::external_risk::ExternalReport;
use pmargin_core::greeks::portfolio_greeks;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;

/// One embedded file: URL path, content type, body.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// Every file of the page. `index.html` is served at `/`.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/assets/index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../assets/index.html"),
    },
    Asset {
        path: "/assets/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../assets/app.css"),
    },
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/app.js"),
    },
    Asset {
        path: "/assets/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/api.js"),
    },
    Asset {
        path: "/assets/charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/charts.js"),
    },
    Asset {
        path: "/assets/table.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/table.js"),
    },
    Asset {
        path: "/assets/favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../../assets/favicon.svg"),
    },
];

/// Scripts and styles from this origin only; no inline code, no frames, no plugins. `'self'`
/// covers the page's own `ws:`/`wss:` origin for the stream.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The subprotocol the dashboard stream answers with.
pub const WS_PROTOCOL: &str = "pmargin.v1";
/// Prefix of the subprotocol carrying the key (hex of its bytes).
pub const WS_KEY_PREFIX: &str = "pmargin.key.";

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/v1/dashboard/summary", get(summary))
        .route("/v1/dashboard/accounts/{id}/positions", get(positions))
        .route("/v1/dashboard/proposals", get(proposals))
        .route("/v1/dashboard/proposals/{id}/impact", get(impact))
        .route("/v1/dashboard/stream", get(stream))
}

fn serve(asset: &Asset) -> Response {
    let mut r = (
        [
            (CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        asset.body,
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    r
}

async fn index() -> Response {
    serve(&ASSETS[0])
}

async fn asset(Path(file): Path<String>) -> Response {
    let path = format!("/assets/{file}");
    match ASSETS.iter().find(|a| a.path == path) {
        Some(a) => serve(a),
        None => ApiError::not_found(format!("no asset `{file}`")).into_response(),
    }
}

// ----- reads for the page -----

#[derive(Serialize)]
struct Totals {
    equity: f64,
    margin_balance: f64,
    initial_margin: f64,
    maintenance_margin: f64,
}

/// Every visible account in one answer: `rows` are `[id, status, equity, margin_balance,
/// initial_margin, maintenance_margin, [underlying index...]]`, indices into `underlyings`.
async fn summary(caller: Caller, State(state): State<Shared>) -> Result<Response, ApiError> {
    caller.require(READERS)?;
    type Row<'a> = (&'a str, &'static str, f64, f64, f64, f64, &'a [usize]);
    #[derive(Serialize)]
    struct Out<'a> {
        role: &'static str,
        key_id: &'a str,
        sequence: u64,
        stream_next: u64,
        insurance_fund: f64,
        settlement_asset: &'a str,
        params_version: u64,
        underlyings: Vec<&'a str>,
        counts: HashMap<&'static str, usize>,
        totals: Totals,
        columns: [&'static str; 7],
        rows: Vec<Row<'a>>,
    }
    let engine = state.engine();
    let stream_next = state.hub.next_seq();
    let book = engine.book();
    let mut counts: HashMap<&'static str, usize> =
        ["healthy", "restricted", "liquidatable", "bankrupt"]
            .into_iter()
            .map(|s| (s, 0))
            .collect();
    let mut totals = Totals {
        equity: 0.0,
        margin_balance: 0.0,
        initial_margin: 0.0,
        maintenance_margin: 0.0,
    };
    let mut rows = Vec::with_capacity(book.accounts.len());
    for (account, (id, r)) in book.accounts.iter().zip(engine.risks()) {
        if !caller.may_access(id) {
            continue;
        }
        let status = r.status.as_str();
        *counts.entry(status).or_default() += 1;
        totals.equity += r.equity;
        totals.margin_balance += r.margin_balance;
        totals.initial_margin += r.initial_margin;
        totals.maintenance_margin += r.maintenance_margin;
        rows.push((
            id,
            status,
            r.equity,
            r.margin_balance,
            r.initial_margin,
            r.maintenance_margin,
            account.exposures.as_slice(),
        ));
    }
    let body = serde_json::to_vec(&Out {
        role: caller.role.as_str(),
        key_id: &caller.key_id,
        sequence: engine.sequence(),
        stream_next,
        insurance_fund: engine.insurance_fund(),
        settlement_asset: &engine.config().settlement_asset,
        params_version: engine.params().version,
        underlyings: book.underlyings.iter().map(|u| u.name.as_str()).collect(),
        counts,
        totals,
        columns: [
            "id",
            "status",
            "equity",
            "margin_balance",
            "initial_margin",
            "maintenance_margin",
            "underlyings",
        ],
        rows,
    })
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// An account's positions (mark value and greeks each, as the report sums them per
/// underlying), balances (price, haircut, value after haircut), positions held in other
/// protocols (as the report shows them) and the spot of each underlying it is exposed to.
async fn positions(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READERS)?;
    caller.require_account(&id)?;
    let engine = state.engine();
    let book = engine.book();
    let account = book
        .accounts
        .iter()
        .find(|a| a.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no account `{id}`")))?;
    let positions: Vec<Value> = account
        .positions
        .iter()
        .map(|p: &BookPosition| {
            let inst = &book.instruments[p.instrument];
            let one = BookAccount {
                id: String::new(),
                positions: vec![*p],
                balances: Vec::new(),
                exposures: vec![p.underlying],
                external: Vec::new(),
            };
            let greeks = portfolio_greeks(book, &one).into_values().next();
            let mark = inst.value_at(1.0, book.rate);
            json!({
                "instrument": inst.instrument.name,
                "underlying": book.underlyings[p.underlying].name,
                "kind": if inst.option.is_some() { "option" } else if inst.instrument.expiry.is_some() { "future" } else { "perpetual" },
                "size": p.size,
                "entry_price": (inst.option.is_none()).then_some(p.entry_price),
                "mark": mark,
                "value": mark * p.size,
                "iv": inst.option.map(|o| o.vol),
                "greeks": greeks,
            })
        })
        .collect();
    let balances: Vec<Value> = account
        .balances
        .iter()
        .map(|b| {
            let a = &book.assets[b.asset];
            json!({
                "asset": a.name,
                "amount": b.amount,
                "price": a.price,
                "haircut": a.haircut,
                "value": b.amount * a.price,
                "collateral_value": if b.amount > 0.0 { b.amount * a.price * (1.0 - a.haircut) } else { b.amount * a.price },
            })
        })
        .collect();
    let external: Vec<ExternalReport> = account
        .external
        .iter()
        .map(|x| ExternalReport::of(book, x))
        .collect();
    let spots: serde_json::Map<String, Value> = account
        .exposures
        .iter()
        .map(|&u| {
            (
                book.underlyings[u].name.clone(),
                json!(book.underlyings[u].spot),
            )
        })
        .collect();
    Ok(Json(json!({
        "sequence": engine.sequence(),
        "account": id,
        "positions": positions,
        "balances": balances,
        "external": external,
        "spots": spots,
    })))
}

/// The committee and every proposal with its approvals (`configured: false` without a
/// committee, rather than the 409 of the governance endpoints: the page shows it as such).
async fn proposals(caller: Caller, State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
    caller.require(STAFF)?;
    let guard = state.gov.state.lock().await;
    let Some(g) = guard.as_ref() else {
        return Ok(Json(json!({ "configured": false, "proposals": [] })));
    };
    let c = g.committee();
    let list: Vec<Value> = g
        .proposals()
        .map(|r| {
            json!({
                "id": r.proposal.id,
                "hash": r.proposal.hash_hex(),
                "state": r.state,
                "submitted_ms": r.submitted_ms,
                "eligible_ms": r.eligible_ms(c.timelock_ms),
                "approvals": r.approvals.iter().map(|a| &a.member).collect::<Vec<_>>(),
                "threshold": c.threshold,
                "rationale": r.proposal.rationale,
                "proposer": r.proposal.proposer,
                "version": r.proposal.params.version,
                "removals": r.proposal.removals,
                "params": r.proposal.params,
            })
        })
        .collect();
    let history: Vec<Value> = g
        .history()
        .iter()
        .map(|h| json!({ "version": h.version, "activated_ms": h.activated_ms, "activation": h.activation }))
        .collect();
    Ok(Json(json!({
        "configured": true,
        "active_version": g.active_version(),
        "committee": {
            "members": c.members.iter().map(|m| &m.id).collect::<Vec<_>>(),
            "threshold": c.threshold,
            "timelock_ms": c.timelock_ms,
            "guardian": c.guardian.is_some(),
        },
        "history": history,
        "proposals": list,
    })))
}

/// A proposal's impact report against the book as it is now.
async fn impact(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(STAFF)?;
    let id = proposal_id(&id)?;
    let proposed = {
        let guard = state.gov.state.lock().await;
        let g = guard.as_ref().ok_or_else(committee::disabled)?;
        g.proposal(id)
            .ok_or_else(|| ApiError::not_found(format!("no proposal {id}")))?
            .proposal
            .params
            .clone()
    };
    let (sequence, report) = committee::impact(&state, proposed).await?;
    Ok(Json(
        json!({ "sequence": sequence, "proposal": id, "impact": report }),
    ))
}

// ----- the stream for a browser -----

/// The key offered as a `pmargin.key.<hex>` subprotocol, if any.
pub fn key_from_protocols(header: Option<&HeaderValue>) -> Option<String> {
    let header = header?.to_str().ok()?;
    header.split(',').map(str::trim).find_map(|p| {
        let hex_key = p.strip_prefix(WS_KEY_PREFIX)?;
        String::from_utf8(hex::decode(hex_key).ok()?).ok()
    })
}

async fn stream(
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    let caller = match key_from_protocols(parts.headers.get(SEC_WEBSOCKET_PROTOCOL)) {
        Some(key) => {
            state
                .metrics
                .http_requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            state
                .keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .authenticate_from(
                    &key,
                    parts
                        .extensions
                        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                        .map(|c| c.0.ip()),
                )?
        }
        None => Caller::from_request_parts(&mut parts, &state).await?,
    };
    caller.require(READERS)?;
    if let Some(k) = q.keys().find(|k| k.as_str() != "from_seq") {
        return Err(
            ApiError::bad_request(format!("unknown query parameter `{k}`")).with_field(k.clone()),
        );
    }
    let from = match q.get("from_seq") {
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::bad_request("from_seq must be a non-negative integer").with_field("from_seq")
        })?),
        None => None,
    };
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &state)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "not_websocket", e.body_text()))?;
    // The dashboard's streams count among the key's, as `/v1/stream`'s do.
    let slot = stream_slot(&state, &caller.key_id)?;
    Ok(ws
        .protocols([WS_PROTOCOL])
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            session(socket, state, caller, from).await
        }))
}
