//! The WebSocket stream (`/v1/stream`; the dashboard's too): a resumable stream of margin
//! changes, liquidations and oracle health, each message shown only to callers who may see
//! its accounts. A key has at most `streams_per_key` streams open, on both endpoints together.

use crate::auth::{Caller, READERS};
use crate::http::error::ApiError;
use crate::http::extract::check_query;
use crate::http::Shared;
use crate::service::stream::{stored_messages, StreamMsg};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

pub async fn stream(
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
    let slot = stream_slot(&state, &caller.key_id)?;
    Ok(ws.on_upgrade(move |socket| async move {
        let _slot = slot;
        session(socket, state, caller, from).await
    }))
}

/// A place among `key_id`'s open streams (those of `/v1/stream` and of the dashboard's
/// `/v1/dashboard/stream` alike), or the 429 answer when it has the most allowed open.
pub fn stream_slot(state: &Shared, key_id: &str) -> Result<StreamSlot, ApiError> {
    let max = state.limits.streams_per_key;
    if !state.streams.acquire(key_id, max) {
        state.metrics.refused("too_many_streams");
        let mut refused = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!("this key has {max} streams open already, the most allowed"),
        );
        refused.retry_after = Some(1);
        return Err(refused);
    }
    Ok(StreamSlot(state.clone(), key_id.to_string()))
}

/// An open stream's place among its key's, given back when the stream ends.
pub struct StreamSlot(Shared, String);

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

pub async fn session(mut socket: WebSocket, state: Shared, caller: Caller, from: Option<u64>) {
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
