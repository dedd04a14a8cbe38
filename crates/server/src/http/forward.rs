//! A follower's writes go to the leader (issue 19): the follower proxies the request and
//! returns the leader's answer, so a client talks to any node with one URL and one key. A
//! proxy rather than a 307: an HTTP client drops the `Authorization` header when a redirect
//! changes host or port (reqwest, curl and browsers all do), so a redirected write would
//! arrive unauthenticated.
//!
//! What goes: every write (any method but GET, HEAD and OPTIONS; what-ifs are reads and stay),
//! and the reads of state kept beside the event log, which only the leader holds current: the
//! governance (proposals, the emergency), the key list and the audit trail. The answer is
//! the leader's, acknowledged once the stream's quorum stored the event. A request that
//! already went through a follower is not sent on again (two nodes each seeing the other as
//! leader would bounce it): 503 with `Retry-After`, as when no leader is known.

use crate::http::error::ApiError;
use crate::service::ha::Ha;
use crate::service::state::AppState;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::OnceLock;

/// The header a forwarded request carries: the follower's node id.
pub const FORWARDED_BY: &str = "x-pmargin-forwarded-by";
/// The header of an answer that came from the leader: its node id.
pub const ANSWERED_BY: &str = "x-pmargin-leader";

/// Whether this request must be answered by the leader, on a node that does not lead.
pub fn to_leader(state: &AppState, req: &Request) -> bool {
    let Some(ha) = state.ha.get() else {
        return false;
    };
    if ha.leading() {
        return false;
    }
    let path = req.uri().path();
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && path != "/v1/what-if";
    write
        || ["/v1/proposals", "/v1/governance", "/v1/keys", "/v1/audit"]
            .iter()
            .any(|p| path.starts_with(p))
}

fn client() -> &'static Client<HttpConnector, Body> {
    static CLIENT: OnceLock<Client<HttpConnector, Body>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new()).build(connector)
    })
}

fn no_leader(why: &str) -> Response {
    let mut r = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", why).into_response();
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    r
}

/// Sends the request to the leader and returns its answer.
pub async fn forward(ha: &Ha, mut req: Request) -> Response {
    if req.headers().contains_key(FORWARDED_BY) {
        return no_leader(
            "the leader is changing (a forwarded request reached a follower); retry shortly",
        );
    }
    let Some(leader) = ha.leader().filter(|l| l.node != ha.node_id()) else {
        return no_leader("no leader is known yet; retry shortly");
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let uri: Uri = match format!("{}{path}", leader.url.trim_end_matches('/')).parse() {
        Ok(u) => u,
        Err(e) => {
            return no_leader(&format!(
                "the leader's URL {} is not usable: {e}",
                leader.url
            ))
        }
    };
    *req.uri_mut() = uri;
    req.headers_mut().remove(axum::http::header::HOST);
    if let Ok(v) = HeaderValue::from_str(ha.node_id()) {
        req.headers_mut().insert(FORWARDED_BY, v);
    }
    match client().request(req).await {
        Ok(resp) => {
            let mut resp = resp.map(Body::new);
            if let Ok(v) = HeaderValue::from_str(&leader.node) {
                resp.headers_mut().insert(ANSWERED_BY, v);
            }
            resp
        }
        Err(e) => no_leader(&format!(
            "the leader {} did not answer ({e}); if it wrote the event, a retry with the same Idempotency-Key returns its answer",
            leader.node
        )),
    }
}
