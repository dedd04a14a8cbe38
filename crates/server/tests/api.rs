//! The HTTP API end to end on 127.0.0.1: access, bodies, idempotency, reads.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn every_refusal_is_a_clean_json_error() {
    let r = server(1024).await;
    let c = reqwest::Client::new();
    let trader = key(&r, "trader", &["vol-desk"]).await;
    let reader = key(&r, "read_only", &[]).await;
    let feeder = key(&r, "oracle_feeder", &[]).await;
    let deposit = json!({"type":"deposit","account":"vol-desk","asset":"USDC","amount":10});
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (c.get(url(&r, "/v1/accounts/vol-desk")), 401, "no key"),
        (c.get(url(&r, "/v1/accounts/vol-desk")).bearer_auth("pmk_wrong"), 401, "wrong key"),
        (c.get(url(&r, "/v1/accounts/vol-desk")).header("authorization", "Basic abc"), 401, "wrong scheme"),
        (c.get(url(&r, "/metrics")), 401, "metrics without key"),
        (c.post(url(&r, "/v1/events")).json(&deposit), 401, "event without key"),
        (c.post(url(&r, "/v1/events")).bearer_auth(&reader).json(&deposit), 403, "read_only writes"),
        (c.post(url(&r, "/v1/events")).bearer_auth(&feeder).json(&deposit), 403, "feeder deposits"),
        (c.post(url(&r, "/v1/events")).bearer_auth(&trader).json(&deposit), 403, "trader deposits"),
        (c.get(url(&r, "/v1/accounts/basis-fund")).bearer_auth(&trader), 403, "trader reads another account"),
        (c.get(url(&r, "/v1/accounts/basis-fund/scenarios")).bearer_auth(&trader), 403, "trader reads other scenarios"),
        (c.post(url(&r, "/v1/what-if")).bearer_auth(&trader).json(&json!({"account":"basis-fund","trades":[{"instrument":"BTC-PERPETUAL","size":1}]})), 403, "trader what-if other"),
        (c.post(url(&r, "/v1/events")).bearer_auth(&trader).json(&json!({"type":"trade","account":"basis-fund","instrument":"BTC-PERPETUAL","size":1,"price":91500})), 403, "trader trades other"),
        (c.post(url(&r, "/v1/events")).bearer_auth(&trader).json(&json!({"type":"trade","account":"vol-desk","instrument":"BTC-PERPETUAL","size":1,"price":91500,"counterparty":"basis-fund"})), 403, "trader with counterparty"),
        (c.get(url(&r, "/v1/accounts/vol-desk")).bearer_auth(&feeder), 403, "feeder reads"),
        (c.post(url(&r, "/v1/quotes")).bearer_auth(&trader).json(&json!({"source":"x","underlying":"BTC","price":1})), 403, "trader quotes"),
        (c.post(url(&r, "/v1/keys")).bearer_auth(&reader).json(&json!({"role":"admin"})), 403, "read_only makes keys"),
        (c.get(url(&r, "/metrics")).bearer_auth(&trader), 403, "trader metrics"),
        (c.get(url(&r, "/v1/audit")).bearer_auth(&reader), 403, "read_only audit"),
        (c.post(url(&r, "/v1/events")).bearer_auth(ADMIN).json(&json!({"type":"activate_params","params":{"version":99,"underlyings":{"BTC":{"price_scan_range":0.1,"vol_scan_up":0.1,"vol_scan_down":0.1,"standard_im_rate":0.1,"standard_mm_rate":0.05}},"collateral":{"USDC":{"haircut":0.0}}}})), 403, "params outside governance"),
        (c.get(url(&r, "/v1/accounts/nobody")).bearer_auth(ADMIN), 404, "unknown account"),
        (c.get(url(&r, "/v1/nothing")).bearer_auth(ADMIN), 404, "unknown endpoint"),
        (c.get(url(&r, "/v1/accounts?status=sleepy")).bearer_auth(ADMIN), 400, "bad status"),
    ];
    let snapshot = || async {
        let (_, a) = send(c.get(url(&r, "/v1/accounts/vol-desk")).bearer_auth(ADMIN)).await;
        let (_, b) = send(c.get(url(&r, "/v1/accounts/basis-fund")).bearer_auth(ADMIN)).await;
        (
            a["sequence"].clone(),
            a["account"].clone(),
            b["account"].clone(),
        )
    };
    let before = snapshot().await;
    assert!(before.0.is_u64() && before.1.is_object(), "{before:?}");
    for (req, want, what) in cases {
        let (status, body) = send(req).await;
        assert_eq!(status, want, "{what}: {body}");
        assert_eq!(body["error"]["status"], want, "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
    // Nothing any refused request tried moved the log or the accounts it named.
    assert_eq!(snapshot().await, before);
    // The trader reads its own account; the feeder feeds.
    let (status, body) = send(c.get(url(&r, "/v1/accounts/vol-desk")).bearer_auth(&trader)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(c.get(url(&r, "/v1/accounts")).bearer_auth(&trader)).await;
    assert_eq!((status, body["count"].as_u64()), (200, Some(1)), "{body}");
    let (status, body) = send(
        c.post(url(&r, "/v1/quotes"))
            .bearer_auth(&feeder)
            .json(&json!({"source":"a","underlying":"BTC","price":91500})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(c.get(url(&r, "/healthz"))).await;
    assert_eq!(status, 200);
    r.stop().await.unwrap();
}

#[tokio::test]
async fn bodies_are_bounded_and_strict() {
    let r = server(1024).await;
    let c = reqwest::Client::new();
    let big = format!(
        r#"{{"type":"deposit","account":"a","asset":"USDC","amount":1,"pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let (status, body) = send(
        c.post(url(&r, "/v1/events"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(big),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");

    let (status, body) = send(
        c.post(url(&r, "/v1/events"))
            .bearer_auth(ADMIN)
            .body(r#"{"type":"deposit","account":"#),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send(
        c.post(url(&r, "/v1/events"))
            .bearer_auth(ADMIN)
            .json(&json!({"type":"deposit","account":"a","asset":"USDC","amount":1,"amout":2})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("amout")),
        "{body}"
    );
    let (status, body) = send(
        c.post(url(&r, "/v1/events"))
            .bearer_auth(ADMIN)
            .json(&json!({"type":"deposit","account":"a","asset":"USDC"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("amount")),
        "{body}"
    );
    let (status, body) = send(
        c.post(url(&r, "/v1/events"))
            .bearer_auth(ADMIN)
            .json(&json!({"type":"teleport"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("type")),
        "{body}"
    );
    let (status, body) = send(c.post(url(&r, "/v1/what-if")).bearer_auth(ADMIN).json(
        &json!({"account":"vol-desk","trades":[{"instrument":"BTC-PERPETUAL","size":1,"sise":2}]}),
    ))
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("trades[0].sise")),
        "{body}"
    );
    let (status, body) = send(c.post(url(&r, "/v1/what-if")).bearer_auth(ADMIN).json(
        &json!({"account":"vol-desk","trades":[{"instrument":"BTC-PERPETUAL","size":"one"}]}),
    ))
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("trades[0].size")),
        "{body}"
    );
    let (status, body) = send(
        c.post(url(&r, "/v1/quotes"))
            .bearer_auth(ADMIN)
            .json(&json!({"source":"a","underlying":"BTC","price":1,"extra":true})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("extra")),
        "{body}"
    );
    // Nothing of that reached the engine.
    assert_eq!(r.state.engine().sequence(), 0);
    r.stop().await.unwrap();
}

#[tokio::test]
async fn a_retried_request_is_applied_once() {
    let r = server(1024).await;
    let c = reqwest::Client::new();
    let deposit = json!({"type":"deposit","account":"carol","asset":"USDC","amount":1000});
    let post = |body: &Value, key: &str| {
        c.post(url(&r, "/v1/events"))
            .bearer_auth(ADMIN)
            .header("Idempotency-Key", key)
            .json(body)
    };
    let first = post(&deposit, "dep-1").send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    // Retries, some concurrent.
    let mut handles = Vec::new();
    for _ in 0..8 {
        handles.push(tokio::spawn(post(&deposit, "dep-1").send()));
    }
    for h in handles {
        let resp = h.await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers().get("idempotent-replayed").unwrap(), "true");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["sequence"], first["sequence"]);
    }
    let (status, body) = send(post(
        &json!({"type":"deposit","account":"carol","asset":"USDC","amount":5}),
        "dep-1",
    ))
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("Idempotency-Key")),
        "{body}"
    );
    assert_eq!(r.state.engine().sequence(), 1);
    let (_, acct) = send(c.get(url(&r, "/v1/accounts/carol")).bearer_auth(ADMIN)).await;
    assert_eq!(acct["account"]["equity"], 1000.0, "{acct}");
    // Another key's identical idempotency key is its own.
    let other = key(&r, "admin", &[]).await;
    let (status, body) = send(
        c.post(url(&r, "/v1/events"))
            .bearer_auth(&other)
            .header("Idempotency-Key", "dep-1")
            .json(&deposit),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sequence"], 2);
    // The audit trail has every write with its key id.
    let (_, audit) = send(c.get(url(&r, "/v1/audit")).bearer_auth(ADMIN)).await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(
        entries.iter().filter(|e| e["action"] == "event").count(),
        2,
        "{audit}"
    );
    assert!(entries
        .iter()
        .all(|e| e["key_id"].as_str().is_some_and(|k| !k.is_empty())));
    assert!(entries.iter().any(|e| e["action"] == "create_key"));
    r.stop().await.unwrap();
}

#[tokio::test]
async fn a_trade_shows_in_the_account_and_what_if_and_scenarios_answer() {
    let r = server(1024).await;
    let c = reqwest::Client::new();
    let ev = |body: Value| c.post(url(&r, "/v1/events")).bearer_auth(ADMIN).json(&body);
    let (s, b) = send(ev(
        json!({"type":"deposit","account":"dave","asset":"USDC","amount":50000}),
    ))
    .await;
    assert_eq!(s, 200, "{b}");
    let (_, before) = send(c.get(url(&r, "/v1/accounts/dave")).bearer_auth(ADMIN)).await;
    assert_eq!(before["account"]["initial_margin"], 0.0, "{before}");
    let (s, b) = send(ev(json!({"type":"trade","account":"dave","instrument":"BTC-PERPETUAL","size":1,"price":91540,"counterparty":"basis-fund"}))).await;
    assert_eq!(s, 200, "{b}");
    let (s, after) = send(c.get(url(&r, "/v1/accounts/dave")).bearer_auth(ADMIN)).await;
    assert_eq!(s, 200, "{after}");
    let im = after["account"]["initial_margin"].as_f64().unwrap();
    assert!(im > 1000.0, "{after}");
    assert_eq!(
        after["engine"]["initial_margin"].as_f64().unwrap(),
        im,
        "report and engine agree"
    );
    assert_eq!(after["sequence"], 2);
    // A trade too big for the account is refused with the engine's reason, and logged.
    let (s, b) = send(ev(json!({"type":"trade","account":"dave","instrument":"BTC-PERPETUAL","size":100,"price":91540,"counterparty":"basis-fund"}))).await;
    assert_eq!((s, b["accepted"].as_bool()), (422, Some(false)), "{b}");
    let (s, w) = send(
        c.post(url(&r, "/v1/what-if"))
            .bearer_auth(ADMIN)
            .json(&json!({"account":"dave","trades":[{"instrument":"BTC-PERPETUAL","size":-1}]})),
    )
    .await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["what_if"]["after"]["initial_margin"], 0.0, "{w}");
    let (s, t) = send(
        c.get(url(&r, "/v1/accounts/dave/scenarios"))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    assert!(t["table"]["scenarios"]
        .as_array()
        .is_some_and(|v| !v.is_empty()));
    let (s, l) = send(
        c.get(url(&r, "/v1/accounts?status=healthy"))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(s, 200);
    assert!(l["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["id"] == "dave"));
    let (s, p) = send(c.get(url(&r, "/v1/params")).bearer_auth(ADMIN)).await;
    assert_eq!((s, p["version"].is_u64()), (200, true), "{p}");
    let resp = c
        .get(url(&r, "/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    for needle in [
        "pmargin_events_total{result=\"applied\"} 2",
        "pmargin_events_per_second",
        "pmargin_remargin_latency_seconds_bucket",
        "pmargin_accounts{status=\"healthy\"}",
        "pmargin_insurance_fund",
    ] {
        assert!(text.contains(needle), "{needle} missing in\n{text}");
    }
    let (s, doc) = send(c.get(url(&r, "/v1/openapi.json"))).await;
    assert_eq!((s, doc["openapi"].as_str()), (200, Some("3.0.3")));
    r.stop().await.unwrap();
}

#[tokio::test]
async fn cached_account_reports_follow_every_relevant_event() {
    let r = server(1024).await;
    let c = reqwest::Client::new();
    let get = |id: &str| {
        c.get(url(&r, &format!("/v1/accounts/{id}")))
            .bearer_auth(ADMIN)
    };
    let (s, a) = send(get("vol-desk")).await;
    assert_eq!(s, 200, "{a}");
    let (_, b) = send(get("basis-fund")).await;
    // A repeat read with no event between is served from the cache, and is the same response
    // (the engine's figures and sequence included).
    let (_, a2) = send(get("vol-desk")).await;
    assert_eq!(a, a2);
    // A deposit into vol-desk changes its report, not basis-fund's.
    let (s, body) = send(
        c.post(url(&r, "/v1/events"))
            .bearer_auth(ADMIN)
            .json(&json!({"type":"deposit","account":"vol-desk","asset":"USDC","amount":1000})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (_, a3) = send(get("vol-desk")).await;
    let eq = |v: &Value| v["account"]["equity"].as_f64().unwrap();
    assert!((eq(&a3) - eq(&a) - 1000.0).abs() < 1e-6, "{a} {a3}");
    assert_eq!(a3["engine"]["equity"], a3["account"]["equity"]);
    let (_, b2) = send(get("basis-fund")).await;
    assert_eq!(b["account"], b2["account"]);
    assert!(b2["sequence"].as_u64() > b["sequence"].as_u64());
    // A price move changes every report.
    let (s, body) = send(
        c.post(url(&r, "/v1/events"))
            .bearer_auth(ADMIN)
            .json(&json!({"type":"price","underlying":"BTC","price":80000})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (_, b3) = send(get("basis-fund")).await;
    assert_ne!(b2["account"], b3["account"]);
    assert_eq!(b3["engine"]["equity"], b3["account"]["equity"]);
}
