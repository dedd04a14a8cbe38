//! Extractors and request helpers: the caller (by bearer key), a strictly parsed JSON body
//! with its hash, the idempotency key, query checks and page limits.

use crate::auth::{bearer, Caller};
use crate::http::error::{json_error, ApiError};
use crate::http::{Shared, BODY_LIMIT};
use crate::service::state::event_hash;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use pmargin_engine::Event;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

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
            .map_err(ApiError::from)
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
pub fn idempotency(
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

/// `limit` of a paged listing: 1 to `max`, `max` when absent.
pub fn page_limit(q: &HashMap<String, String>, max: usize) -> Result<usize, ApiError> {
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

pub fn check_query(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(
            ApiError::bad_request(format!("unknown query parameter `{k}`")).with_field(k.clone()),
        ),
        None => Ok(()),
    }
}
