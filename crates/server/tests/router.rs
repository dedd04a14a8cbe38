//! The router over two engine groups (issue 19, sharding): two single-node groups on SQLite
//! and `pmargin route` in front of them, all on loopback.
//!
//! Expected values are worked by hand from the requests: a deposit of D leaves D; a fill of
//! a perpetual at its mark opens the position at that size and takes only the fee from cash
//! (each side pays `fee` to the fund: docs/MODEL.md, engine `Event::Trade`).

mod common;

use common::{balance, send, sequence, ADMIN};
use pmargin_server::demo::empty_genesis;
use pmargin_server::replicated::shard::{group_of, Shard, LEG_OF};
use pmargin_server::router::{start as route, RouterConfig, RunningRouter};
use pmargin_server::{start, Running, ServerConfig};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BTC_MARK: f64 = 91_540.0; // BTC-PERPETUAL's mark in the demo market
const FEE: f64 = 1.5;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pmargin-router-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Group `index` of two: a single node on SQLite in `data`, opening with `fund` in its
/// insurance fund.
async fn group(index: u32, listen: &str, data: &Path, fund: f64) -> Running {
    let mut genesis = empty_genesis();
    genesis.config.insurance_fund = fund;
    let mut cfg = ServerConfig::new(listen, Some(data.to_path_buf()), genesis);
    cfg.admin_key = Some(ADMIN.into());
    cfg.shard = Some(Shard { index, groups: 2 });
    start(cfg).await.unwrap()
}

async fn router(a: &Running, b: &Running) -> RunningRouter {
    let mut cfg = RouterConfig::new(
        "127.0.0.1:0",
        vec![
            // A's first node is down (nothing listens on port 1): every request to A is
            // refused there and goes on to the node that answers.
            (
                "A".into(),
                vec!["http://127.0.0.1:1".into(), format!("http://{}", a.addr)],
            ),
            ("B".into(), vec![format!("http://{}", b.addr)]),
        ],
    );
    cfg.retry_for = Duration::from_secs(1);
    cfg.attempt_timeout = Duration::from_secs(5);
    route(cfg).await.unwrap()
}

/// The first id `prefix-N` the hash places in `group` of two.
fn account_in(group: u32, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| group_of(id, 2) == group)
        .unwrap()
}

/// The size of `account`'s position in `instrument` in `r`'s engine (0 without one).
fn position(r: &Running, account: &str, instrument: &str) -> f64 {
    r.state
        .engine()
        .account(account)
        .and_then(|a| {
            a.positions
                .iter()
                .find(|p| p.instrument.name == instrument)
                .map(|p| p.size)
        })
        .unwrap_or(0.0)
}

/// Position sizes are sums of fills: equal to the hand sum within rounding.
fn assert_size(r: &Running, account: &str, want: f64) {
    let got = position(r, account, "BTC-PERPETUAL");
    assert!(
        (got - want).abs() < 1e-12,
        "{account}: size {got}, expected {want}"
    );
}

fn knows(r: &Running, account: &str) -> bool {
    r.state.engine().account(account).is_some()
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn post(&self, path: &str, body: Value, key: Option<&str>) -> (u16, Value, bool) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .json(&body);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let resp = req.send().await.unwrap();
        let replayed = resp.headers().contains_key("idempotent-replayed");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null), replayed)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(ADMIN),
        )
        .await
    }
}

fn fill(account: &str, counterparty: &str, size: f64) -> Value {
    json!({ "type": "trade", "account": account, "instrument": "BTC-PERPETUAL", "size": size,
            "price": BTC_MARK, "fee": FEE, "counterparty": counterparty })
}

fn deposit(account: &str, amount: f64) -> Value {
    json!({ "type": "deposit", "account": account, "asset": "USDC", "amount": amount })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_stay_in_their_group_and_a_cross_group_fill_lands_as_two_legs() {
    let (dir_a, dir_b) = (dir("a"), dir("b"));
    let a = group(0, "127.0.0.1:0", &dir_a, 1_000.0).await;
    let mut b = group(1, "127.0.0.1:0", &dir_b, 250.0).await;
    let r = router(&a, &b).await;
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("http://{}", r.addr),
    };
    let (alice, carol, bob) = (
        account_in(0, "alice"),
        account_in(0, "carol"),
        account_in(1, "bob"),
    );

    // Deposits land in the account's group only.
    for (id, amount) in [(&alice, 100_000.0), (&carol, 50_000.0), (&bob, 80_000.0)] {
        let (status, body, _) = c.post("/v1/events", deposit(id, amount), None).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(balance(&a, &alice, "USDC"), 100_000.0);
    assert_eq!(balance(&a, &carol, "USDC"), 50_000.0);
    assert_eq!(balance(&b, &bob, "USDC"), 80_000.0);
    assert!(!knows(&b, &alice) && !knows(&b, &carol) && !knows(&a, &bob));
    assert_eq!((sequence(&a), sequence(&b)), (2, 1));

    // Reads go to the account's group: the router answers, the other group does not know it.
    let resp = c
        .http
        .get(format!("{}/v1/accounts/{bob}", c.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-pmargin-group"], "B");
    let direct = send(
        c.http
            .get(format!("http://{}/v1/accounts/{bob}", a.addr))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(direct.0, 404, "group A must not know {bob}");

    // A fill inside group A stays one event there.
    let (status, body, _) = c
        .post("/v1/events", fill(&alice, &carol, 0.2), Some("fill-in-a"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((sequence(&a), sequence(&b)), (3, 1));
    assert_size(&a, &alice, 0.2);
    assert_size(&a, &carol, -0.2);

    // A fill across the groups: two legs under one key, each group holding its side.
    let (status, body, replayed) = c
        .post("/v1/events", fill(&alice, &bob, 0.5), Some("fill-x-1"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(!replayed);
    let legs = body["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 2);
    assert_eq!(
        (legs[0]["group"].as_str(), legs[1]["group"].as_str()),
        (Some("A"), Some("B"))
    );
    assert_eq!((sequence(&a), sequence(&b)), (4, 2));
    assert_size(&a, &alice, 0.2 + 0.5);
    assert_size(&b, &bob, -0.5);
    // Cash: fills at the mark move only the fees (alice paid two, carol and bob one).
    assert_eq!(balance(&a, &alice, "USDC"), 100_000.0 - 2.0 * FEE);
    assert_eq!(balance(&a, &carol, "USDC"), 50_000.0 - FEE);
    assert_eq!(balance(&b, &bob, "USDC"), 80_000.0 - FEE);

    // The same request again: both groups answer from the stored legs, nothing doubles.
    let (status, body, replayed) = c
        .post("/v1/events", fill(&alice, &bob, 0.5), Some("fill-x-1"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(replayed, "a replay is marked: {body}");
    assert_eq!((sequence(&a), sequence(&b)), (4, 2));
    assert_size(&a, &alice, 0.7);
    assert_size(&b, &bob, -0.5);

    // A leg posted by hand needs the leg header: a one-sided fill is still refused.
    let one_sided = json!({ "type": "trade", "account": bob, "instrument": "BTC-PERPETUAL",
                            "size": 1.0, "price": BTC_MARK });
    let (status, body) = send(
        c.http
            .post(format!("http://{}/v1/events", b.addr))
            .bearer_auth(ADMIN)
            .json(&one_sided),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("counterparty"))
    );

    // A quote is published once to every group, dated once by the router.
    let quote = json!({ "source": "a", "underlying": "BTC", "price": 91_000.0 });
    let (status, body, _) = c.post("/v1/quotes", quote, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((sequence(&a), sequence(&b)), (5, 3));
    let quoted = |r: &Running| {
        let engine = r.state.engine();
        let state = engine.oracle().and_then(|o| o.state("BTC")).unwrap();
        let s = state.sources.iter().find(|s| s.source == "a").unwrap();
        (s.price, s.ts_ms)
    };
    let (qa, qb) = (quoted(&a), quoted(&b));
    assert_eq!(qa.0, 91_000.0);
    assert_eq!(qa, qb, "both groups hold the same quote at the same time");

    // The router's own views: the account list merged in id order, paged as one service...
    // (Every engine holds its own `liquidator`: one per group, each named with its group.)
    let mut want = vec![
        (alice.clone(), "A"),
        (bob.clone(), "B"),
        (carol.clone(), "A"),
        ("liquidator".to_string(), "A"),
        ("liquidator".to_string(), "B"),
    ];
    want.sort();
    let listed = |body: &Value| -> Vec<(String, &str)> {
        body["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                let group = if x["group"] == "A" { "A" } else { "B" };
                (x["id"].as_str().unwrap().to_string(), group)
            })
            .collect()
    };
    let (status, body) = c.get("/v1/accounts").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(listed(&body), want);
    assert!(body["next"].is_null());
    // Pages of 2, and a page never ends inside the two liquidators.
    let (_, page) = c.get("/v1/accounts?limit=2").await;
    assert_eq!(listed(&page), want[..2]);
    assert_eq!(page["next"].as_str(), Some(want[1].0.as_str()));
    let (_, page) = c
        .get(&format!("/v1/accounts?limit=2&after={}", want[1].0))
        .await;
    assert_eq!(listed(&page), want[2..3], "{page}");
    let (_, page) = c
        .get(&format!("/v1/accounts?limit=2&after={}", want[2].0))
        .await;
    assert_eq!(listed(&page), want[3..5], "{page}");
    assert!(page["next"].is_null());
    // ... the insurance funds summed: openings plus every fee paid (4 sides in A, 1 in B) ...
    let (status, body) = c.get("/v1/insurance").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["groups"][0]["insurance_fund"], 1_000.0 + 3.0 * FEE);
    assert_eq!(body["groups"][1]["insurance_fund"], 250.0 + FEE);
    assert_eq!(body["insurance_fund"], 1_250.0 + 4.0 * FEE);
    // ... and each group's leader.
    let (status, health) = c.get("/healthz").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["groups"][0]["leader"], format!("http://{}", a.addr));
    assert_eq!(health["groups"][1]["leader"], format!("http://{}", b.addr));

    // One group down: the fill's leg in A is logged, B's is pending; the same request with
    // the same key, once B is back, completes the fill with each leg applied once.
    let b_addr = b.addr.to_string();
    b.stop().await.unwrap();
    let (status, body, _) = c
        .post("/v1/events", fill(&alice, &bob, 0.1), Some("fill-x-2"))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "legs_pending");
    assert_size(&a, &alice, 0.7 + 0.1);
    let (status, health) = c.get("/healthz").await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["groups"][1]["ok"], false);
    b = group(1, &b_addr, &dir_b, 250.0).await;
    assert_size(&b, &bob, -0.5); // B recovered its log
    let (status, body, _) = c
        .post("/v1/events", fill(&alice, &bob, 0.1), Some("fill-x-2"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["legs"][0]["answer"]["sequence"], 6,
        "A's leg answered from its log"
    );
    assert_size(&a, &alice, 0.7 + 0.1);
    assert_size(&b, &bob, -0.5 - 0.1);
    assert_eq!(balance(&a, &alice, "USDC"), 100_000.0 - 3.0 * FEE);
    assert_eq!(balance(&b, &bob, "USDC"), 80_000.0 - 2.0 * FEE);

    // Both sides refused (neither margin holds 20 BTC): nothing changes anywhere. One side
    // refused (dave's 100 USDC holds no 0.5 BTC; bob's margin holds 0.5 more): bob's leg stands
    // and the router says the legs diverged.
    let dave = account_in(0, "dave");
    let (status, _, _) = c.post("/v1/events", deposit(&dave, 100.0), None).await;
    assert_eq!(status, 200);
    let (status, body, _) = c
        .post("/v1/events", fill(&dave, &bob, 20.0), Some("fill-x-3"))
        .await;
    assert_eq!((status, &body["accepted"]), (422, &json!(false)), "{body}");
    let (status, body, _) = c
        .post("/v1/events", fill(&dave, &bob, 0.5), Some("fill-x-4"))
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "legs_diverged");
    assert_eq!(
        (
            body["legs"][0]["status"].as_u64(),
            body["legs"][1]["status"].as_u64()
        ),
        (Some(422), Some(200))
    );
    assert_size(&a, &dave, 0.0);
    assert_size(&b, &bob, -0.6 - 0.5);
    let (_, metrics) = send(c.http.get(format!("{}/metrics", c.base))).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("pmargin_router_legs_diverged_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pmargin_router_legs_pending_total 1\n"),
        "{metrics}"
    );

    r.stop().await.unwrap();
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir_a);
    let _ = std::fs::remove_dir_all(dir_b);
}

/// A group whose every `POST /v1/events` is answered 503 (no leader yet) `failing` times,
/// then 200: the count of requests it saw, and its address.
async fn flaky_group(failing: usize) -> (std::sync::Arc<std::sync::atomic::AtomicUsize>, String) {
    use axum::http::StatusCode;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let app = axum::Router::new().fallback(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < failing {
                (StatusCode::SERVICE_UNAVAILABLE, "no leader")
            } else {
                (
                    StatusCode::OK,
                    r#"{"sequence":1,"accepted":true,"outputs":[]}"#,
                )
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (seen, format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_write_is_retried_through_a_failover_and_an_unkeyed_one_is_not() {
    use std::sync::atomic::Ordering;
    let (seen, url) = flaky_group(2).await;
    let mut cfg = RouterConfig::new("127.0.0.1:0", vec![("A".into(), vec![url])]);
    cfg.retry_for = Duration::from_secs(5);
    let r = route(cfg).await.unwrap();
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("http://{}", r.addr),
    };
    // Without a key the router cannot know whether a 503 write was logged: the client's call.
    let (status, _, _) = c.post("/v1/events", deposit("x", 1.0), None).await;
    assert_eq!((status, seen.load(Ordering::SeqCst)), (503, 1));
    // With a key it is sent again until the group acknowledges it (the second 503, then 200).
    let (status, body, _) = c.post("/v1/events", deposit("x", 1.0), Some("d-1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    r.stop().await.unwrap();
}

/// The leg header opens no door: a node that is not a group, or a group asked to take a
/// "leg" whose other side is its own account or whose account is not its own, refuses the
/// one-sided fill (issue 15), and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_sided_fill_is_a_leg_only_between_two_groups() {
    let (dir_a, dir_single) = (dir("leg-a"), dir("leg-single"));
    let a = group(0, "127.0.0.1:0", &dir_a, 0.0).await;
    let mut cfg = ServerConfig::new("127.0.0.1:0", Some(dir_single.clone()), empty_genesis());
    cfg.admin_key = Some(ADMIN.into());
    let single = start(cfg).await.unwrap();
    let (mine, mine_too, theirs) = (
        account_in(0, "leg"),
        account_in(0, "other"),
        account_in(1, "leg"),
    );
    let leg = |base: String, account: &str, other: &str| {
        reqwest::Client::new()
            .post(format!("{base}/v1/events"))
            .bearer_auth(ADMIN)
            .header(LEG_OF, other.to_string())
            .json(
                &json!({ "type": "trade", "account": account, "instrument": "BTC-PERPETUAL",
                           "size": 1.0, "price": BTC_MARK }),
            )
            .send()
    };
    let refused = [
        (
            format!("http://{}", single.addr),
            &mine,
            &theirs,
            "a node that is not a group",
        ),
        (
            format!("http://{}", a.addr),
            &mine,
            &mine_too,
            "the other side in this group",
        ),
        (
            format!("http://{}", a.addr),
            &theirs,
            &mine,
            "an account of another group",
        ),
    ];
    for (base, account, other, why) in refused {
        let r = leg(base, account, other).await.unwrap();
        assert_eq!(r.status(), 422, "{why}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("counterparty"),
            "{why}: {body}"
        );
    }
    for node in [&a, &single] {
        assert_eq!(node.state.engine().sequence(), 0, "nothing was applied");
        assert!(!knows(node, &mine) && !knows(node, &theirs));
    }
    // The one leg this group takes: its own account (funded), the other side in group 1.
    let funded = reqwest::Client::new()
        .post(format!("http://{}/v1/events", a.addr))
        .bearer_auth(ADMIN)
        .json(&deposit(&mine, 100_000.0))
        .send()
        .await
        .unwrap();
    assert_eq!(funded.status(), 200);
    let r = leg(format!("http://{}", a.addr), &mine, &theirs)
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(status, 200, "{}", r.text().await.unwrap_or_default());
    assert_size(&a, &mine, 1.0);
    let _ = std::fs::remove_dir_all(&dir_a);
    let _ = std::fs::remove_dir_all(&dir_single);
}
