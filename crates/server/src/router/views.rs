//! The router's own answers to reads that span accounts, made from the groups' answers:
//! health (each group's leader), its metrics, the insurance funds' sum, the merged account
//! list, and a group's liquidations.

use crate::http::error::ApiError;
use crate::router::upstream::{Answer, Call, Upstream};
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// `GET /healthz`: every node of every group, and each group's leader; 503 unless every
/// group has a leader that reports itself ok.
pub async fn health(up: &Upstream) -> Response {
    let probes = up.groups.iter().map(|group| async move {
        let nodes = join_all(group.nodes.iter().map(|n| up.probe(n, "/healthz"))).await;
        let mut leader = Value::Null;
        let mut healthy = false;
        let nodes: Vec<Value> = group
            .nodes
            .iter()
            .zip(nodes)
            .map(|(url, answer)| match answer {
                Ok(a) => {
                    let h = a.json();
                    if h["role"] == "leader" {
                        // (A single node reports no leader's URL: it is its own.)
                        leader = json!(url);
                        healthy |= a.status == StatusCode::OK;
                    } else if leader.is_null() && h["leader"].is_string() {
                        leader = h["leader"].clone();
                    }
                    json!({ "url": url, "status": h["status"], "role": h["role"],
                            "sequence": h["sequence"], "node": h["node"] })
                }
                Err(e) => json!({ "url": url, "status": "unreachable", "error": e }),
            })
            .collect();
        let body = json!({ "name": group.name, "ok": healthy, "leader": leader, "nodes": nodes });
        (healthy, body)
    });
    let groups = join_all(probes).await;
    let ok = groups.iter().all(|(h, _)| *h);
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "role": "router",
        "groups": groups.into_iter().map(|(_, b)| b).collect::<Vec<_>>(),
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: the router's counters (Prometheus text). Counts only: no account, no key.
pub fn metrics(up: &Upstream) -> Response {
    let mut w = String::new();
    let per_group = [
        (
            "pmargin_router_requests_total",
            "Requests sent to a group (a fan-out counts once per group).",
        ),
        (
            "pmargin_router_retries_total",
            "Attempts after the first: another node, or again after a 503/429.",
        ),
        (
            "pmargin_router_unreachable_total",
            "Requests no node of the group answered.",
        ),
    ];
    for (k, (name, help)) in per_group.into_iter().enumerate() {
        let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} counter");
        for g in &up.groups {
            let c = &g.counters;
            let v = [&c.requests, &c.retries, &c.unreachable][k].load(Ordering::Relaxed);
            let _ = writeln!(w, "{name}{{group=\"{}\"}} {v}", g.name);
        }
    }
    let f = &up.fanout;
    for (name, help, v) in [
        (
            "pmargin_router_broadcasts_total",
            "Requests sent to every group.",
            &f.broadcasts,
        ),
        (
            "pmargin_router_split_fills_total",
            "Fills across two groups, posted as two legs.",
            &f.split_fills,
        ),
        (
            "pmargin_router_legs_pending_total",
            "Split fills answered 503 legs_pending (a leg not yet acknowledged).",
            &f.legs_pending,
        ),
        (
            "pmargin_router_legs_diverged_total",
            "Split fills with one leg accepted and the other refused.",
            &f.legs_diverged,
        ),
    ] {
        let _ = writeln!(
            w,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], w).into_response()
}

/// The same GET to every group, read whole; the first answer that is not a 200 when one is not.
async fn gather(up: &Upstream, path: &str, headers: &HeaderMap) -> Result<Vec<Answer>, Response> {
    let call = Call {
        method: &Method::GET,
        path,
        headers,
        body: Bytes::new(),
    };
    let answers = join_all((0..up.k()).map(|g| up.whole(g, &call))).await;
    let mut out = Vec::with_capacity(answers.len());
    for a in answers {
        match a {
            Ok(a) if a.status == StatusCode::OK => out.push(a),
            Ok(a) => return Err((a.status, a.body).into_response()),
            Err(e) => return Err(e.into_response()),
        }
    }
    Ok(out)
}

/// The value of the sample `name` (no labels) in a Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .filter(|v: &f64| v.is_finite())
}

/// `GET /v1/insurance`: each group's insurance fund (its `pmargin_insurance_fund`, read with the
/// caller's key) and their sum.
pub async fn insurance(up: &Upstream, headers: &HeaderMap) -> Response {
    let answers = match gather(up, "/metrics", headers).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let mut total = 0.0;
    let mut groups = Vec::with_capacity(answers.len());
    for (group, a) in up.groups.iter().zip(&answers) {
        let text = String::from_utf8_lossy(&a.body);
        let Some(fund) = sample(&text, "pmargin_insurance_fund") else {
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_upstream",
                format!(
                    "group {}: no pmargin_insurance_fund in its metrics",
                    group.name
                ),
            )
            .into_response();
        };
        total += fund;
        groups.push(json!({ "group": group.name, "insurance_fund": fund }));
    }
    Json(json!({ "insurance_fund": total, "groups": groups })).into_response()
}

/// `GET /v1/accounts`: the groups' pages merged in account id order. Each group gives its
/// first `limit` ids after `after`; the first `limit` of their union are the first `limit`
/// of all accounts, so `next` pages on as one service would.
pub async fn accounts(up: &Upstream, path: &str, query: &str, headers: &HeaderMap) -> Response {
    let answers = match gather(up, path, headers).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let pages: Vec<Value> = answers.iter().map(Answer::json).collect();
    let limit = query
        .split('&')
        .find_map(|p| p.strip_prefix("limit="))
        .and_then(|v| v.parse::<usize>().ok());
    // Without a limit each group pages by its largest page: the smallest of those bounds the
    // merged page (so a group with more to give is not skipped over).
    let partial: Vec<usize> = pages
        .iter()
        .filter(|p| !p["next"].is_null())
        .filter_map(|p| p["accounts"].as_array().map(Vec::len))
        .collect();
    let bound = limit.or_else(|| partial.iter().copied().min());
    // Each entry names its group: an id every group holds (the built-in `liquidator`) is
    // one account per group.
    let mut all: Vec<Value> = Vec::new();
    for (group, page) in up.groups.iter().zip(&pages) {
        for account in page["accounts"].as_array().into_iter().flatten() {
            let mut account = account.clone();
            account["group"] = json!(group.name);
            all.push(account);
        }
    }
    let id = |a: &Value| a["id"].as_str().unwrap_or_default().to_string();
    all.sort_by_key(id);
    let mut more = !partial.is_empty();
    if let Some(b) = bound.filter(|b| all.len() > *b) {
        more = true;
        // A page ends between two ids, never inside one (`after` skips an id in every group).
        let cut = id(&all[b]);
        let end = (0..b)
            .rev()
            .find(|&i| id(&all[i]) != cut)
            .map_or(b, |i| i + 1);
        all.truncate(end);
    }
    let next = if more {
        all.last().map(|a| a["id"].clone())
    } else {
        None
    };
    let sequences: serde_json::Map<String, Value> = up
        .groups
        .iter()
        .zip(&pages)
        .map(|(g, p)| (g.name.clone(), p["sequence"].clone()))
        .collect();
    Json(json!({ "sequences": sequences, "count": all.len(), "accounts": all, "next": next }))
        .into_response()
}

/// `GET /v1/liquidations?group=NAME&...`: one group's liquidation instructions (their `from`
/// and `next` are that group's log sequences, which mean nothing in another group).
pub async fn liquidations(up: &Upstream, query: &str, headers: &HeaderMap) -> Response {
    let mut group = None;
    let mut rest = Vec::new();
    for p in query.split('&').filter(|p| !p.is_empty()) {
        match p.strip_prefix("group=") {
            Some(g) => group = Some(g),
            None => rest.push(p),
        }
    }
    let Some(name) = group else {
        return ApiError::bad_request(
            "liquidations are listed per group (each pages by its own log sequence): add \
             group=NAME",
        )
        .with_field("group")
        .into_response();
    };
    let Some(g) = up.groups.iter().position(|g| g.name == name) else {
        let names: Vec<&str> = up.groups.iter().map(|g| g.name.as_str()).collect();
        return ApiError::bad_request(format!("no group `{name}` (groups: {})", names.join(", ")))
            .with_field("group")
            .into_response();
    };
    let path = if rest.is_empty() {
        "/v1/liquidations".to_string()
    } else {
        format!("/v1/liquidations?{}", rest.join("&"))
    };
    let call = Call {
        method: &Method::GET,
        path: &path,
        headers,
        body: Bytes::new(),
    };
    up.forward(g as u32, &call).await
}

#[cfg(test)]
mod tests {
    use super::sample;

    #[test]
    fn a_sample_is_read_by_its_exact_name() {
        let text = "# HELP pmargin_insurance_fund x\npmargin_insurance_fund_total 9\n\
                    pmargin_insurance_fund 1250.5\n";
        assert_eq!(sample(text, "pmargin_insurance_fund"), Some(1250.5));
        assert_eq!(
            sample("pmargin_insurance_fund NaN\n", "pmargin_insurance_fund"),
            None
        );
        assert_eq!(sample("", "pmargin_insurance_fund"), None);
    }
}
