//! Issue 15, by attack: the oracle (a dead feed, a Mango-style pump), the limits (write floods,
//! unbounded listings and replays, oversized numbers, instruments from refused fills) and
//! failing closed (a failed commit, the settlement domain). Each test performs the attack,
//! shows it refused, and shows that nothing changed: balances and the event log's sequence.

mod common;

use common::*;
use futures_util::StreamExt;
use pmargin_server::demo::demo_genesis;
use pmargin_server::limits::Limits;
use pmargin_server::store::{
    open_dir, AuditEntry, EventRecord, Genesis, LoggedEvent, Store, StoreResult,
};
use pmargin_server::{start, start_with_store, Running};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

async fn serve(genesis: Genesis, limits: Limits) -> Running {
    start(config(genesis, limits)).await.unwrap()
}

/// The demo book with the oracle's quotes fresh for `max_age_ms`.
fn genesis_with_max_age(max_age_ms: i64) -> Genesis {
    let mut g = demo_genesis();
    if let Some(o) = g.config.oracle.as_mut() {
        o.max_age_ms = max_age_ms;
    }
    g
}

fn now_ms() -> i64 {
    pmargin_server::state::now_ms()
}

async fn event(r: &Running, key: &str, body: Value) -> (u16, Value) {
    send(
        reqwest::Client::new()
            .post(url(r, "/v1/events"))
            .bearer_auth(key)
            .json(&body),
    )
    .await
}

async fn get(r: &Running, path: &str) -> (u16, Value) {
    send(reqwest::Client::new().get(url(r, path)).bearer_auth(ADMIN)).await
}

async fn quote(r: &Running, source: &str, price: f64, ts: i64) {
    let (s, b) = send(
        reqwest::Client::new()
            .post(url(r, "/v1/quotes"))
            .bearer_auth(ADMIN)
            .json(&json!({"source": source, "underlying": "BTC", "price": price, "ts_ms": ts})),
    )
    .await;
    assert_eq!(s, 200, "quote {source} {price} at {ts}: {b}");
}

async fn deposit(r: &Running, account: &str, asset: &str, amount: f64) {
    let (s, b) = event(
        r,
        ADMIN,
        json!({"type":"deposit","account":account,"asset":asset,"amount":amount}),
    )
    .await;
    assert_eq!(s, 200, "deposit: {b}");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(r: &Running, key: &str, from: Option<u64>) -> Result<Ws, u16> {
    let q = from.map(|f| format!("?from_seq={f}")).unwrap_or_default();
    let mut req = format!("ws://{}/v1/stream{q}", r.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

// ----- the oracle -----

#[tokio::test]
async fn dead_feed_makes_index_stale_on_the_timer_and_withdrawals_are_refused() {
    let limits = Limits {
        oracle_tick: Some(Duration::from_millis(50)),
        ..Limits::default()
    };
    let r = serve(genesis_with_max_age(400), limits).await;
    deposit(&r, "btc-holder", "BTC", 1.0).await;
    deposit(&r, "btc-holder", "USDC", 10_000.0).await;
    let t = now_ms();
    quote(&r, "a", 91_540.0, t).await;
    quote(&r, "b", 91_545.0, t).await;
    let (_, oracle) = get(&r, "/v1/oracle").await;
    assert_eq!(oracle["liquidations_suspended"], json!([]), "{oracle}");
    // While the index is fresh, a withdrawal goes through.
    let withdraw = json!({"type":"withdrawal","account":"btc-holder","asset":"USDC","amount":100});
    let (s, b) = event(&r, ADMIN, withdraw.clone()).await;
    assert_eq!(s, 200, "{b}");

    // The feed dies: no quote comes, and nothing else happens. The clock alone must notice.
    let died = Instant::now();
    let suspended = loop {
        let (_, oracle) = get(&r, "/v1/oracle").await;
        if oracle["liquidations_suspended"] == json!(["BTC"]) {
            break oracle;
        }
        assert!(
            died.elapsed() < Duration::from_secs(5),
            "the index never went stale: {oracle}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let btc = suspended["indices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["underlying"] == "BTC")
        .unwrap();
    assert_eq!(btc["health"], "stale", "{suspended}");
    assert_eq!(
        metric(&r, "pmargin_liquidations_suspended{underlying=\"BTC\"}").await,
        1.0
    );

    // The attack: withdraw against the last print of a dead feed.
    let (seq, usdc) = (sequence(&r), balance(&r, "btc-holder", "USDC"));
    assert_eq!(usdc, 9_900.0);
    let (s, b) = event(&r, ADMIN, withdraw.clone()).await;
    assert_eq!(s, 422, "{b}");
    let message = b["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("withdrawal: stale index"), "{b}");
    assert!(message.contains("BTC"), "{b}");
    assert_eq!(sequence(&r), seq, "a refusal is not logged");
    assert_eq!(balance(&r, "btc-holder", "USDC"), usdc);
    assert_eq!(
        metric(&r, "pmargin_refused_total{reason=\"stale_index\"}").await,
        1.0
    );

    // The stream told every client: the index went stale and liquidations were suspended.
    let mut ws = connect(&r, ADMIN, Some(1)).await.unwrap();
    let (mut stale, mut halted) = (false, false);
    let total = r.state.hub.next_seq() - 1;
    for _ in 0..total {
        let m = next(&mut ws).await.unwrap();
        stale |= m["type"] == "oracle_health" && m["underlying"] == "BTC" && m["health"] == "stale";
        halted |= m["type"] == "liquidations_suspended"
            && m["underlying"] == "BTC"
            && m["suspended"] == true;
    }
    assert!(stale && halted, "stream: stale {stale}, suspended {halted}");

    // The feed comes back: withdrawals resume.
    let t = now_ms();
    quote(&r, "a", 91_540.0, t).await;
    quote(&r, "b", 91_545.0, t).await;
    let (s, b) = event(&r, ADMIN, withdraw).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(balance(&r, "btc-holder", "USDC"), 9_800.0);
    r.stop().await.unwrap();
}

/// What `account` could withdraw in USDC, from the engine's refusal of far too much: the
/// margin balance counted for the check (the refusal's `available`, after the amount) and the
/// initial margin (`required`). Also returns that margin balance before the withdrawal.
async fn withdrawable(r: &Running, account: &str) -> (f64, f64) {
    let amount = 10_000_000.0;
    let (s, b) = event(
        r,
        ADMIN,
        json!({"type":"withdrawal","account":account,"asset":"USDC","amount":amount}),
    )
    .await;
    assert_eq!(s, 422, "{b}");
    let refusal = &b["outputs"][0];
    let available = refusal["available"].as_f64().unwrap();
    let required = refusal["required"].as_f64().unwrap();
    (available + amount - required, available + amount)
}

#[tokio::test]
async fn mango_style_pump_does_not_raise_withdrawable_collateral() {
    // Quotes are dated in the past (ten minutes of pump, replayed at once), so they are kept
    // fresh for an hour.
    let r = serve(genesis_with_max_age(3_600_000), Limits::default()).await;
    let rate = match &r.state.engine().config().oracle {
        Some(o) => o.stable_price.as_ref().unwrap().max_move_per_second,
        None => panic!("the service runs an oracle"),
    };
    deposit(&r, "whale", "BTC", 1.0).await;
    let t0 = now_ms() - 20 * 60_000;
    for ts in [t0, t0 + 60_000] {
        for source in ["a", "b", "c"] {
            quote(&r, source, 91_540.0, ts).await;
        }
    }
    let (w0, balance0) = withdrawable(&r, "whale").await;
    // Before the pump the collateral counts at the index: 1 BTC x 91,540 x (1 - 5% haircut).
    assert!(
        (balance0 - 91_540.0 * 0.95).abs() < 1e-6,
        "margin balance {balance0}"
    );
    assert!(w0 > 0.0 && w0 <= balance0, "{w0}");

    // Every venue quotes BTC up 8% every 20 s for ten minutes: 1.08^30 = 10.06x. Each step
    // is inside the circuit breaker, so every index is accepted.
    let mut price = 91_540.0;
    let mut ts = t0 + 60_000;
    for _ in 0..30 {
        price *= 1.08;
        ts += 20_000;
        for source in ["a", "b", "c"] {
            quote(&r, source, price, ts).await;
        }
    }
    let (_, oracle) = get(&r, "/v1/oracle").await;
    let btc = oracle["indices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["underlying"] == "BTC")
        .cloned()
        .unwrap();
    assert_eq!(btc["health"], "fresh", "{btc}");
    let index = btc["price"].as_f64().unwrap();
    let stable = btc["stable_price"].as_f64().unwrap();
    assert!((index / 91_540.0 - 10.06).abs() < 0.01, "index {index}");
    // The stable price moved at most `rate` per second for the 600 s of the pump.
    let bound = 91_540.0 * (rate * 600.0).exp();
    assert!(
        stable >= 91_540.0 && stable <= bound,
        "stable {stable} > {bound}"
    );
    // At the index the account is worth ten times more.
    let (_, report) = get(&r, "/v1/accounts/whale").await;
    let equity = report["engine"]["equity"].as_f64().unwrap();
    assert!(equity > 9.0 * balance0, "equity {equity}");

    // The attack: borrow against the pumped collateral.
    let (w1, balance1) = withdrawable(&r, "whale").await;
    // The check counts the collateral at the stable price (the lower), not the index.
    assert!(
        (balance1 - stable * 0.95).abs() < 1e-6 * stable,
        "counted {balance1}, at stable {}",
        stable * 0.95
    );
    assert!(
        w1 <= w0,
        "withdrawable rose with the pump: {w0} before, {w1} after"
    );
    let (seq, usdc) = (sequence(&r), balance(&r, "whale", "USDC"));
    let (s, b) = event(
        &r,
        ADMIN,
        json!({"type":"withdrawal","account":"whale","asset":"USDC","amount": w0 + 1.0}),
    )
    .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(sequence(&r), seq);
    assert_eq!(balance(&r, "whale", "USDC"), usdc);
    assert_eq!(usdc, 0.0);
    r.stop().await.unwrap();
}

// ----- limits -----

#[tokio::test]
async fn write_flood_from_one_key_gets_429_with_retry_after() {
    let limits = Limits {
        writes_per_second: 2.0,
        write_burst: 5.0,
        ..Limits::default()
    };
    let r = serve(demo_genesis(), limits).await;
    let flooder = key(&r, "admin", &[]).await;
    let seq = sequence(&r);
    let c = reqwest::Client::new();
    let (mut accepted, mut limited) = (0, 0);
    for _ in 0..12 {
        let resp = c
            .post(url(&r, "/v1/events"))
            .bearer_auth(&flooder)
            .json(&json!({"type":"deposit","account":"flood","asset":"USDC","amount":1}))
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            200 => accepted += 1,
            429 => {
                limited += 1;
                let retry: u64 = resp.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(retry >= 1, "Retry-After {retry}");
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
            }
            s => panic!("unexpected {s}"),
        }
    }
    // The burst of 5, and at most one more refilled while the flood ran.
    assert!((5..=6).contains(&accepted), "{accepted} accepted");
    assert_eq!(accepted + limited, 12);
    assert_eq!(
        sequence(&r),
        seq + accepted,
        "only accepted writes are logged"
    );
    assert_eq!(balance(&r, "flood", "USDC"), accepted as f64);
    assert_eq!(
        metric(&r, "pmargin_refused_total{reason=\"rate_limited\"}").await,
        limited as f64
    );
    // Another key has its own bucket.
    deposit(&r, "other", "USDC", 1.0).await;
    r.stop().await.unwrap();
}

#[tokio::test]
async fn refused_events_are_counted_and_not_logged_or_audited() {
    let r = serve(demo_genesis(), Limits::default()).await;
    deposit(&r, "poor", "USDC", 10.0).await;
    let seq = sequence(&r);
    let (_, audit) = get(&r, "/v1/audit").await;
    let trail = audit["total"].as_u64().unwrap();
    for _ in 0..5 {
        let (s, b) = event(
            &r,
            ADMIN,
            json!({"type":"withdrawal","account":"poor","asset":"USDC","amount":1000}),
        )
        .await;
        assert_eq!(s, 422, "{b}");
        assert_eq!(b["sequence"].as_u64(), Some(seq), "{b}");
    }
    assert_eq!(sequence(&r), seq);
    assert_eq!(balance(&r, "poor", "USDC"), 10.0);
    let (_, audit) = get(&r, "/v1/audit").await;
    assert_eq!(audit["total"].as_u64(), Some(trail), "{audit}");
    assert_eq!(
        r.state.store.lock().unwrap().events_from(1).unwrap().len() as u64,
        seq
    );
    assert_eq!(
        metric(&r, "pmargin_refused_total{reason=\"rejected_withdrawal\"}").await,
        5.0
    );
    // The next accepted event takes the next number.
    deposit(&r, "poor", "USDC", 1.0).await;
    assert_eq!(sequence(&r), seq + 1);
    r.stop().await.unwrap();
}

#[tokio::test]
async fn accounts_listing_is_capped_and_pages() {
    let limits = Limits {
        max_page: 2,
        ..Limits::default()
    };
    let r = serve(demo_genesis(), limits).await;
    let mut all: Vec<String> = r.state.engine().account_ids().map(str::to_string).collect();
    all.sort();
    assert!(all.len() > 4, "{all:?}");
    // Over the cap: refused, naming the parameter.
    for bad in ["3", "0", "x"] {
        let (s, b) = get(&r, &format!("/v1/accounts?limit={bad}")).await;
        assert_eq!(
            (s, b["error"]["field"].as_str()),
            (400, Some("limit")),
            "{b}"
        );
    }
    // Pages of at most two, in id order, each naming the next.
    let mut seen = Vec::new();
    let mut path = "/v1/accounts".to_string();
    loop {
        let (s, page) = get(&r, &path).await;
        assert_eq!(s, 200, "{page}");
        let accounts = page["accounts"].as_array().unwrap();
        assert!(accounts.len() <= 2, "{page}");
        seen.extend(
            accounts
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_string()),
        );
        match page["next"].as_str() {
            Some(after) => path = format!("/v1/accounts?after={after}"),
            None => break,
        }
    }
    assert_eq!(seen, all);
    r.stop().await.unwrap();
}

#[tokio::test]
async fn audit_trail_is_capped_and_pages() {
    let limits = Limits {
        max_page: 2,
        ..Limits::default()
    };
    let r = serve(demo_genesis(), limits).await;
    for _ in 0..3 {
        key(&r, "read_only", &[]).await;
    }
    let (s, b) = get(&r, "/v1/audit?limit=5").await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("limit")),
        "{b}"
    );
    // Without a cursor: the latest page.
    let (_, latest) = get(&r, "/v1/audit").await;
    let total = latest["total"].as_u64().unwrap() as usize;
    assert!(total >= 3, "{latest}");
    assert_eq!(latest["entries"].as_array().unwrap().len(), 2);
    assert_eq!(latest["next"], Value::Null);
    // From the start, page by page: every entry once.
    let mut seen = 0;
    let mut after = 0;
    loop {
        let (_, page) = get(&r, &format!("/v1/audit?after={after}")).await;
        let n = page["entries"].as_array().unwrap().len();
        assert!(n <= 2);
        seen += n;
        match page["next"].as_u64() {
            Some(next) => after = next as usize,
            None => break,
        }
    }
    assert_eq!(seen, total);
    r.stop().await.unwrap();
}

#[tokio::test]
async fn stream_replay_resumes_in_pages_and_streams_per_key_are_capped() {
    let limits = Limits {
        streams_per_key: 2,
        stream_page: 2,
        ..Limits::default()
    };
    let mut cfg = config(demo_genesis(), limits);
    cfg.ring_capacity = 2;
    let r = start(cfg).await.unwrap();
    let mut ts = 1_000;
    for round in 0..4 {
        quote(&r, "a", 91_500.0 + round as f64, ts).await;
        quote(&r, "b", 91_500.0 + round as f64, ts + 1).await;
        ts += 60_000;
    }
    let total = r.state.hub.next_seq() - 1;
    assert!(total > 6, "{total}");
    // A resume from the start reads the log two messages at a time, in order, gap-free.
    let mut first = connect(&r, ADMIN, Some(1)).await.unwrap();
    for want in 1..=total {
        let m = next(&mut first).await.unwrap();
        assert_eq!(m["seq"].as_u64(), Some(want), "{m}");
    }
    let _second = connect(&r, ADMIN, None).await.unwrap();
    // A third stream of the same key is refused.
    assert_eq!(connect(&r, ADMIN, None).await.err(), Some(429));
    assert_eq!(
        metric(&r, "pmargin_refused_total{reason=\"too_many_streams\"}").await,
        1.0
    );
    // Another key has its own.
    let reader = key(&r, "read_only", &[]).await;
    assert!(connect(&r, &reader, None).await.is_ok());
    // Closing one frees its place.
    first.close(None).await.unwrap();
    drop(first);
    let freed = Instant::now();
    loop {
        match connect(&r, ADMIN, None).await {
            Ok(_) => break,
            Err(429) if freed.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(s) => panic!("{s}"),
        }
    }
    r.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_trade_is_rejected_naming_the_field() {
    let r = serve(demo_genesis(), Limits::default()).await;
    deposit(&r, "big", "USDC", 1_000_000.0).await;
    let seq = sequence(&r);
    let trade = |size: f64, price: f64| json!({"type":"trade","account":"big","instrument":"BTC-PERPETUAL","size":size,"price":price,"counterparty":"basis-fund"});
    for (body, field) in [
        (trade(2e9, 91_540.0), "size"),
        (trade(-2e9, 91_540.0), "size"),
        (trade(1.0, 5e12), "price"),
        (
            json!({"type":"deposit","account":"big","asset":"USDC","amount":1e16}),
            "amount",
        ),
        (
            json!({"type":"withdrawal","account":"big","asset":"USDC","amount":1e300}),
            "amount",
        ),
    ] {
        let (s, b) = event(&r, ADMIN, body.clone()).await;
        assert_eq!(
            (s, b["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}: {b}"
        );
    }
    let (s, b) = send(
        reqwest::Client::new()
            .post(url(&r, "/v1/quotes"))
            .bearer_auth(ADMIN)
            .json(&json!({"source":"a","underlying":"BTC","price":1e13,"ts_ms":now_ms()})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("price")),
        "{b}"
    );
    assert_eq!(sequence(&r), seq);
    assert_eq!(balance(&r, "big", "USDC"), 1_000_000.0);
    r.stop().await.unwrap();
}

#[tokio::test]
async fn rejected_trade_leaves_no_new_instrument() {
    let r = serve(demo_genesis(), Limits::default()).await;
    let new = "BTC-25JUN27";
    assert!(r.state.engine().book().instrument_index(new).is_none());
    deposit(&r, "poor", "USDC", 10.0).await;
    let seq = sequence(&r);
    let listed = r.state.engine().book().instruments.len();
    // Ten dollars cannot margin a bitcoin future: refused after the instrument was priced.
    let (s, b) = event(
        &r,
        ADMIN,
        json!({"type":"trade","account":"poor","instrument":new,"size":1,"price":91_540,"counterparty":"basis-fund"}),
    )
    .await;
    assert_eq!(s, 422, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("below initial margin"),
        "{b}"
    );
    {
        let engine = r.state.engine();
        assert!(engine.book().instrument_index(new).is_none());
        assert_eq!(engine.book().instruments.len(), listed);
    }
    assert_eq!(sequence(&r), seq);
    assert_eq!(balance(&r, "poor", "USDC"), 10.0);
    // The same fill by an account that can margin it lists the instrument.
    deposit(&r, "rich", "USDC", 1_000_000.0).await;
    let (s, b) = event(
        &r,
        ADMIN,
        json!({"type":"trade","account":"rich","instrument":new,"size":1,"price":91_540,"counterparty":"basis-fund"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(r.state.engine().book().instrument_index(new).is_some());
    r.stop().await.unwrap();
}

// ----- fail closed -----

/// A store whose commits fail while `fail` is set, as on a full disk.
struct FailingStore {
    inner: Box<dyn Store>,
    fail: Arc<AtomicBool>,
}

impl Store for FailingStore {
    fn durable(&self) -> bool {
        self.inner.durable()
    }
    fn genesis(&mut self) -> StoreResult<Option<Genesis>> {
        self.inner.genesis()
    }
    fn init(&mut self, genesis: &Genesis) -> StoreResult<()> {
        self.inner.init(genesis)
    }
    fn commit(&mut self, events: &[LoggedEvent], audit: &[AuditEntry]) -> StoreResult<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err("database or disk is full".into());
        }
        self.inner.commit(events, audit)
    }
    fn events_from(&mut self, from: u64) -> StoreResult<Vec<LoggedEvent>> {
        self.inner.events_from(from)
    }
    fn events_page(&mut self, from: u64, limit: usize) -> StoreResult<Vec<LoggedEvent>> {
        self.inner.events_page(from, limit)
    }
    fn liquidation_events_page(
        &mut self,
        from: u64,
        limit: usize,
    ) -> StoreResult<(Vec<LoggedEvent>, u64)> {
        self.inner.liquidation_events_page(from, limit)
    }
    fn first_unrecorded(&mut self) -> StoreResult<Option<u64>> {
        self.inner.first_unrecorded()
    }
    fn put_records(&mut self, records: &[(u64, EventRecord)]) -> StoreResult<()> {
        self.inner.put_records(records)
    }
    fn event_of_stream_message(&mut self, msg: u64) -> StoreResult<Option<u64>> {
        self.inner.event_of_stream_message(msg)
    }
    fn finds_keys(&self) -> bool {
        self.inner.finds_keys()
    }
    fn event_by_key(&mut self, key: &str) -> StoreResult<Option<LoggedEvent>> {
        self.inner.event_by_key(key)
    }
    fn keeps_snapshots(&self) -> bool {
        self.inner.keeps_snapshots()
    }
    fn latest_snapshot(&mut self) -> StoreResult<Option<(u64, pmargin_store::State)>> {
        self.inner.latest_snapshot()
    }
    fn save_snapshot(&mut self, seq: u64, json: &str) -> StoreResult<()> {
        self.inner.save_snapshot(seq, json)
    }
    fn audit_entries(&mut self) -> StoreResult<Vec<AuditEntry>> {
        self.inner.audit_entries()
    }
    fn keys(&mut self) -> StoreResult<Vec<pmargin_server::auth::KeyRecord>> {
        self.inner.keys()
    }
    fn put_key(&mut self, key: &pmargin_server::auth::KeyRecord) -> StoreResult<()> {
        self.inner.put_key(key)
    }
    fn governance(&mut self) -> StoreResult<Option<pmargin_governance::Governance>> {
        self.inner.governance()
    }
    fn put_governance(
        &mut self,
        prev: Option<&pmargin_governance::Governance>,
        next: &pmargin_governance::Governance,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        self.inner.put_governance(prev, next, audit)
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pmargin-{name}-{}-{}",
        std::process::id(),
        now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn failed_commit_makes_healthz_not_ready_and_refuses_writes_then_recovers() {
    let dir = temp_dir("disk-full");
    let fail = Arc::new(AtomicBool::new(false));
    let store = FailingStore {
        inner: open_dir(&dir).unwrap(),
        fail: fail.clone(),
    };
    let mut cfg = config(demo_genesis(), Limits::default());
    cfg.data_dir = Some(dir.clone());
    let r = start_with_store(cfg, Box::new(store)).await.unwrap();
    deposit(&r, "saver", "USDC", 1_000.0).await;
    let seq = sequence(&r);
    let (s, _) = get(&r, "/healthz").await;
    assert_eq!(s, 200);

    // The disk fills up: the next commit fails.
    fail.store(true, Ordering::SeqCst);
    let big = json!({"type":"deposit","account":"saver","asset":"USDC","amount":5_000});
    let (s, b) = event(&r, ADMIN, big.clone()).await;
    assert_eq!(s, 503, "{b}");
    let (s, health) = get(&r, "/healthz").await;
    assert_eq!(
        (s, health["status"].as_str()),
        (503, Some("failed")),
        "{health}"
    );
    // The event that was not made durable is not in the engine either.
    assert_eq!(sequence(&r), seq);
    assert_eq!(balance(&r, "saver", "USDC"), 1_000.0);
    let (s, report) = get(&r, "/v1/accounts/saver").await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(
        report["engine"]["equity"].as_f64(),
        Some(1_000.0),
        "{report}"
    );
    // Every write is refused meanwhile, and nothing changes.
    let (s, b) = event(&r, ADMIN, big.clone()).await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(sequence(&r), seq);
    assert_eq!(
        metric(&r, "pmargin_storage_failed").await,
        1.0,
        "the failure is a metric"
    );

    // Room again: the service finds out by itself, without a restart or a write.
    fail.store(false, Ordering::SeqCst);
    let freed = Instant::now();
    loop {
        let (s, _) = get(&r, "/healthz").await;
        if s == 200 {
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(5),
            "healthz stays 503"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, b) = event(&r, ADMIN, big).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["sequence"].as_u64(), Some(seq + 1), "{b}");
    assert_eq!(balance(&r, "saver", "USDC"), 6_000.0);
    let (_, audit) = get(&r, "/v1/audit").await;
    assert!(audit.to_string().contains("storage_recovered"), "{audit}");
    r.stop().await.unwrap();
    // The log holds exactly the acknowledged events.
    let mut reopened = open_dir(&dir).unwrap();
    let deposits: Vec<f64> = reopened
        .events_from(1)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            pmargin_engine::Event::Deposit {
                account, amount, ..
            } if account == "saver" => Some(amount),
            _ => None,
        })
        .collect();
    assert_eq!(deposits, vec![1_000.0, 5_000.0]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn settlement_messages_are_signed_for_the_configured_domain() {
    let mut cfg = config(demo_genesis(), Limits::default());
    cfg.settlement.chain_id = 8453;
    cfg.settlement.verifying_contract = [0xab; 20];
    let r = start(cfg).await.unwrap();
    let (s, b) = get(&r, "/v1/accounts/basis-fund/settlement").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["domain"]["chainId"], 8453, "{b}");
    assert_eq!(
        b["domain"]["verifyingContract"]
            .as_str()
            .unwrap()
            .to_lowercase(),
        format!("0x{}", "ab".repeat(20)),
        "{b}"
    );
    r.stop().await.unwrap();
}
