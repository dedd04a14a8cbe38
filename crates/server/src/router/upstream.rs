//! The groups behind the router and the one client that reaches them.
//!
//! A request for a group goes to whichever of its nodes answers: the node that answered last
//! first, then the others in turn (a follower forwards a write to its leader itself). What may
//! be sent twice is sent again until [`Upstream::retry_for`] has passed: reads, what-ifs and
//! events and quotes carrying an `Idempotency-Key` (the group answers a repeat from the stored
//! result). Those are retried on a node that does not answer, and on a 503 or 429 from the
//! group (no leader during a failover, a publish whose acknowledgement was lost, a full
//! queue). A write without a key is sent to a second node only when the first refused the
//! connection (so it never arrived); any other failure is answered to the client, who alone
//! knows whether to send it again.

use crate::http::error::ApiError;
use axum::body::{Body, Bytes};
use axum::http::header::{self, HeaderName};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The fan-outs' counters (kept by the [`Upstream`] every handler shares; see
/// [`crate::router::fanout`]).
#[derive(Debug, Default)]
pub struct FanoutCounters {
    /// Requests sent to every group.
    pub broadcasts: AtomicU64,
    /// Fills split into two legs.
    pub split_fills: AtomicU64,
    /// Split fills answered `legs_pending`.
    pub legs_pending: AtomicU64,
    /// Split fills answered `legs_diverged`.
    pub legs_diverged: AtomicU64,
}

/// The header of every answer that came through the router: the group that gave it.
pub const GROUP: &str = "x-pmargin-group";

/// Largest answer the router reads whole (fan-outs and its own views; a forwarded answer is
/// streamed).
pub const ANSWER_LIMIT: usize = 64 << 20;

/// Pause between two rounds over a group's nodes.
const PAUSE: Duration = Duration::from_millis(200);

/// One engine group: its name and its nodes' base URLs.
#[derive(Debug)]
pub struct Group {
    pub name: String,
    pub nodes: Vec<String>,
    /// The node that answered last.
    preferred: AtomicUsize,
    pub counters: GroupCounters,
}

#[derive(Debug, Default)]
pub struct GroupCounters {
    /// Requests sent to the group (each fan-out counts once per group).
    pub requests: AtomicU64,
    /// Attempts after the first: another node, or the same request again after a 503.
    pub retries: AtomicU64,
    /// Requests no node of the group answered.
    pub unreachable: AtomicU64,
}

impl Group {
    pub fn new(name: String, nodes: Vec<String>) -> Group {
        Group {
            name,
            nodes,
            preferred: AtomicUsize::new(0),
            counters: GroupCounters::default(),
        }
    }
}

/// A request to send to a group.
pub struct Call<'a> {
    pub method: &'a Method,
    /// Path and query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

/// Whether the service answers a repeat of a write to `path` under the same
/// `Idempotency-Key` from the stored result (events and quotes; governance and keys do not).
pub fn honours_idempotency(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    path == "/v1/events" || path == "/v1/quotes"
}

impl Call<'_> {
    /// Whether the request may be sent again: the group answers a repeat the same way.
    fn resendable(&self) -> bool {
        matches!(*self.method, Method::GET | Method::HEAD)
            || self.path.starts_with("/v1/what-if")
            || (self.headers.contains_key("idempotency-key") && honours_idempotency(self.path))
    }
}

/// An answer read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&self.body).into_owned())
        })
    }

    /// A status the same request may meet no more on a later try.
    pub fn transient(&self) -> bool {
        transient(self.status)
    }
}

fn transient(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// The groups and the client.
pub struct Upstream {
    pub groups: Vec<Group>,
    client: Client<HttpConnector, Body>,
    /// How long one node has to answer one attempt.
    pub attempt_timeout: Duration,
    /// How long a resendable request is tried again before its last answer is given.
    pub retry_for: Duration,
    pub fanout: FanoutCounters,
}

/// Headers that belong to one connection, not to the request (RFC 9110 section 7.6.1).
const HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::HOST,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

impl Upstream {
    pub fn new(groups: Vec<Group>, attempt_timeout: Duration, retry_for: Duration) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(attempt_timeout));
        Upstream {
            groups,
            client: Client::builder(TokioExecutor::new()).build(connector),
            attempt_timeout,
            retry_for,
            fanout: FanoutCounters::default(),
        }
    }

    pub fn k(&self) -> u32 {
        self.groups.len() as u32
    }

    /// The group's answer to `call`, its body streamed to the client.
    pub async fn forward(&self, g: u32, call: &Call<'_>) -> Response {
        match self.send(g, call).await {
            Ok(resp) => {
                let mut resp = resp.map(Body::new);
                strip_hop(resp.headers_mut());
                self.tag(g, resp.headers_mut());
                resp
            }
            Err(e) => e.into_response(),
        }
    }

    /// The group's answer to `call`, read whole.
    pub async fn whole(&self, g: u32, call: &Call<'_>) -> Result<Answer, ApiError> {
        let resp = self.send(g, call).await?;
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(Body::new(body), ANSWER_LIMIT)
            .await
            .map_err(|e| {
                unreachable_error(&self.groups[g as usize].name, &format!("its answer: {e}"))
            })?;
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// One GET of `path` on one node, one try, read whole (the router's health view).
    pub async fn probe(&self, node: &str, path: &str) -> Result<Answer, String> {
        let headers = HeaderMap::new();
        let call = Call {
            method: &Method::GET,
            path,
            headers: &headers,
            body: Bytes::new(),
        };
        let (parts, body) = self
            .attempt(node, &call)
            .await
            .map_err(|e| e.1)?
            .into_parts();
        let body = tokio::time::timeout(
            self.attempt_timeout,
            axum::body::to_bytes(Body::new(body), ANSWER_LIMIT),
        )
        .await
        .map_err(|_| format!("{node}: the answer did not arrive in time"))?
        .map_err(|e| format!("{node}: {e}"))?;
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    fn tag(&self, g: u32, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&self.groups[g as usize].name) {
            headers.insert(GROUP, v);
        }
    }

    /// Sends `call` to group `g` under the rules of the module's head.
    async fn send(
        &self,
        g: u32,
        call: &Call<'_>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ApiError> {
        let group = &self.groups[g as usize];
        group.counters.requests.fetch_add(1, Ordering::Relaxed);
        let resend = call.resendable();
        let deadline = Instant::now() + self.retry_for;
        let n = group.nodes.len();
        let mut attempts = 0u64;
        let mut last_error = String::from("no node was tried");
        loop {
            let first = group.preferred.load(Ordering::Relaxed);
            for i in 0..n {
                let node = (first + i) % n;
                if attempts > 0 {
                    group.counters.retries.fetch_add(1, Ordering::Relaxed);
                }
                attempts += 1;
                match self.attempt(&group.nodes[node], call).await {
                    Ok(resp) if resend && transient(resp.status()) && Instant::now() < deadline => {
                        last_error = format!("{} answered {}", group.nodes[node], resp.status());
                    }
                    Ok(resp) => {
                        group.preferred.store(node, Ordering::Relaxed);
                        return Ok(resp);
                    }
                    // Refused before it was sent: safe to try the next node whatever it is.
                    Err((true, e)) => last_error = e,
                    Err((false, e)) if resend => last_error = e,
                    Err((false, e)) => {
                        group.counters.unreachable.fetch_add(1, Ordering::Relaxed);
                        return Err(ApiError::new(
                            StatusCode::BAD_GATEWAY,
                            "upstream_lost",
                            format!(
                                "group {}: {e}; the request may or may not have been applied \
                                 (send writes with an Idempotency-Key to retry them safely)",
                                group.name
                            ),
                        ));
                    }
                }
            }
            if !resend || Instant::now() + PAUSE >= deadline {
                group.counters.unreachable.fetch_add(1, Ordering::Relaxed);
                return Err(unreachable_error(&group.name, &last_error));
            }
            tokio::time::sleep(PAUSE).await;
        }
    }

    /// One try on one node: the answer, or whether the connection was refused (the request
    /// never left) and why.
    async fn attempt(
        &self,
        node: &str,
        call: &Call<'_>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, (bool, String)> {
        let uri = format!("{}{}", node.trim_end_matches('/'), call.path);
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(&uri)
            .body(Body::from(call.body.clone()))
            .map_err(|e| (true, format!("{uri}: {e}")))?;
        for (name, value) in call.headers {
            if !HOP.contains(name) && name != header::CONTENT_LENGTH {
                req.headers_mut().append(name.clone(), value.clone());
            }
        }
        match tokio::time::timeout(self.attempt_timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err((e.is_connect(), format!("{node}: {e}"))),
            Err(_) => Err((
                false,
                format!(
                    "{node}: no answer within {} s",
                    self.attempt_timeout.as_secs_f64()
                ),
            )),
        }
    }
}

fn strip_hop(headers: &mut HeaderMap) {
    for name in &HOP {
        headers.remove(name);
    }
}

fn unreachable_error(group: &str, why: &str) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "group_unavailable",
        format!("group {group}: no node answered ({why}); retry shortly"),
    );
    e.retry_after = Some(1);
    e
}
