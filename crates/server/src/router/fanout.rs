//! Requests that go to more than one group: market data and governance to every group, and
//! the two legs of a fill across groups.
//!
//! Events and quotes are sent under one `Idempotency-Key` (the client's, or one the router
//! makes and returns in the `idempotency-key` header of its answer), so every group, and a
//! retry of the whole request, sees each write at most once. A governance act is sent once
//! to each group and not again (the service keeps no key for it): a group that missed it
//! shows in a 502 `groups_disagree`.
//!
//! **A fill across two groups.** Each leg is posted to its group under the same key, at the
//! same time, and retried (same key, same body) while its group answers 503 or 429 or no node
//! answers, for up to the router's `--retry-for-s`. Then:
//! - both legs accepted: 200, with both groups' answers;
//! - both refused alike (the same status: a 422 margin rejection on both sides, a 403): that
//!   status; nothing changed anywhere;
//! - one leg still unacknowledged when the time is up: 503 `legs_pending` with
//!   `Retry-After`: the client (the venue) sends the same request with the same key again, as
//!   often as it takes; the acknowledged leg answers from its group's stored result and is not
//!   applied again, the other is submitted again; the fill is whole once both are;
//! - one leg accepted and the other refused for good (a 422: that side's margin, say): 502
//!   `legs_diverged`, naming both answers. The accepted leg stands (a refused leg does not
//!   become acceptable by retrying it); the router does not undo it, since an undo is a new
//!   fill with its own price and fee: the venue decides it, as it would for a fill its own
//!   pre-trade check should have stopped. Counted in `pmargin_router_legs_diverged_total`.

use crate::http::error::ApiError;
use crate::replicated::shard::LEG_OF;
use crate::router::upstream::{honours_idempotency, Answer, Call, Upstream};
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::future::join_all;
use pmargin_engine::Event;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The request's `Idempotency-Key`, or a new one added to `headers`.
fn keyed(headers: &mut HeaderMap) -> Result<HeaderValue, ApiError> {
    if let Some(v) = headers.get(IDEMPOTENCY_KEY) {
        return Ok(v.clone());
    }
    let mut random = [0u8; 16];
    getrandom::getrandom(&mut random)
        .map_err(|e| ApiError::internal(format!("no randomness for an idempotency key: {e}")))?;
    let v = HeaderValue::from_str(&format!("router-{}", hex::encode(random)))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    headers.insert(IDEMPOTENCY_KEY, v.clone());
    Ok(v)
}

fn group_answer(up: &Upstream, g: u32, answer: &Result<Answer, ApiError>) -> Value {
    let name = &up.groups[g as usize].name;
    match answer {
        Ok(a) => json!({ "group": name, "status": a.status.as_u16(), "answer": a.json() }),
        Err(e) => json!({ "group": name, "status": e.status.as_u16(), "answer": e.body() }),
    }
}

fn status_of(answer: &Result<Answer, ApiError>) -> StatusCode {
    match answer {
        Ok(a) => a.status,
        Err(e) => e.status,
    }
}

fn with_key(mut resp: Response, key: HeaderValue) -> Response {
    resp.headers_mut().insert(IDEMPOTENCY_KEY, key);
    resp
}

/// `body` sent to every group; the groups' answers, under their common status (502
/// `groups_disagree` when they differ).
pub async fn broadcast(
    up: &Upstream,
    method: &Method,
    path: &str,
    mut headers: HeaderMap,
    body: Bytes,
) -> Response {
    up.fanout.broadcasts.fetch_add(1, Ordering::Relaxed);
    // (A governance act takes no key: it is sent once to each group, never again.)
    let key = if honours_idempotency(path) {
        match keyed(&mut headers) {
            Ok(k) => Some(k),
            Err(e) => return e.into_response(),
        }
    } else {
        None
    };
    let call = Call {
        method,
        path,
        headers: &headers,
        body,
    };
    let answers = join_all((0..up.k()).map(|g| up.whole(g, &call))).await;
    let statuses: Vec<StatusCode> = answers.iter().map(status_of).collect();
    let groups: Vec<Value> = (0..up.k())
        .zip(&answers)
        .map(|(g, a)| group_answer(up, g, a))
        .collect();
    let resp = if statuses.iter().all(|s| *s == statuses[0]) {
        (statuses[0], Json(json!({ "groups": groups }))).into_response()
    } else {
        let advice = if key.is_some() {
            "send the same request with the same Idempotency-Key again: a group that applied \
             it answers from its stored result"
        } else {
            "a governance act is not sent again: repeat it at the nodes of the groups that \
             refused it"
        };
        let mut body = ApiError::new(
            StatusCode::BAD_GATEWAY,
            "groups_disagree",
            format!("the groups answered differently; {advice}"),
        )
        .body();
        body["groups"] = Value::Array(groups);
        (StatusCode::BAD_GATEWAY, Json(body)).into_response()
    };
    match key {
        Some(key) => with_key(resp, key),
        None => resp,
    }
}

/// The two legs of a fill across groups (see the module's head).
pub async fn legs(up: &Upstream, legs: [(u32, Event); 2], mut headers: HeaderMap) -> Response {
    up.fanout.split_fills.fetch_add(1, Ordering::Relaxed);
    let key = match keyed(&mut headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let account = |e: &Event| match e {
        Event::Trade { account, .. } => account.clone(),
        _ => String::new(),
    };
    let accounts = [account(&legs[0].1), account(&legs[1].1)];
    let mut calls = Vec::with_capacity(2);
    for (i, (_, event)) in legs.iter().enumerate() {
        let body = match serde_json::to_vec(event) {
            Ok(b) => Bytes::from(b),
            Err(e) => return ApiError::internal(e.to_string()).into_response(),
        };
        let mut h = headers.clone();
        match HeaderValue::from_str(&accounts[1 - i]) {
            Ok(v) => h.insert(LEG_OF, v),
            Err(_) => {
                return ApiError::bad_request("`counterparty` is not a valid header value")
                    .with_field("counterparty")
                    .into_response()
            }
        };
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        calls.push((h, body));
    }
    let post = Method::POST;
    let sends = legs.iter().zip(&calls).map(|((g, _), (h, body))| {
        let call = Call {
            method: &post,
            path: "/v1/events",
            headers: h,
            body: body.clone(),
        };
        async move { up.whole(*g, &call).await }
    });
    let answers = join_all(sends).await;
    let body_legs: Vec<Value> = legs
        .iter()
        .zip(&answers)
        .zip(&accounts)
        .map(|(((g, _), a), account)| {
            let mut v = group_answer(up, *g, a);
            v["account"] = json!(account);
            v
        })
        .collect();
    let statuses = [status_of(&answers[0]), status_of(&answers[1])];
    let ok = |s: &StatusCode| s.is_success();
    let pending = |a: &Result<Answer, ApiError>| match a {
        Ok(a) => a.transient(),
        Err(_) => true,
    };
    let resp = if statuses.iter().all(ok) {
        let replayed = answers.iter().all(|a| {
            a.as_ref()
                .is_ok_and(|a| a.headers.contains_key("idempotent-replayed"))
        });
        let mut resp = (
            StatusCode::OK,
            Json(json!({ "accepted": true, "legs": body_legs })),
        )
            .into_response();
        if replayed {
            resp.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        resp
    } else if statuses[0] == statuses[1] && !answers.iter().any(pending) {
        (
            statuses[0],
            Json(json!({ "accepted": false, "legs": body_legs })),
        )
            .into_response()
    } else if answers.iter().any(pending) {
        up.fanout.legs_pending.fetch_add(1, Ordering::Relaxed);
        let mut body = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "legs_pending",
            "a leg of this fill is not acknowledged yet: send the same request with the same \
             Idempotency-Key again until both legs are (an acknowledged leg is not applied twice)",
        )
        .body();
        body["legs"] = Value::Array(body_legs);
        let mut resp = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        resp
    } else {
        up.fanout.legs_diverged.fetch_add(1, Ordering::Relaxed);
        let mut body = ApiError::new(
            StatusCode::BAD_GATEWAY,
            "legs_diverged",
            "one leg of this fill was accepted and the other refused; the accepted leg \
             stands: a reversing fill, if any, is the venue's decision",
        )
        .body();
        body["legs"] = Value::Array(body_legs);
        (StatusCode::BAD_GATEWAY, Json(body)).into_response()
    };
    with_key(resp, key)
}
