//! The write boundary by attack (issue 15): who may submit fills, deposits and quotes, with
//! what names and prices, and how keys are made, kept, revoked and guessed at. Each test tries
//! what must not be possible, checks the refusal, and checks that nothing changed: balances,
//! positions and the event sequence.

mod common;

use common::*;
use hmac::{Hmac, Mac};
use pmargin_server::demo::demo_genesis;
use pmargin_server::{start, Running, ServerConfig};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// BTC-PERPETUAL's mark in the demo market.
const BTC_PERP_MARK: f64 = 91_540.0;

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn event(r: &Running, key: &str, body: Value) -> (u16, Value) {
    send(
        client()
            .post(url(r, "/v1/events"))
            .bearer_auth(key)
            .json(&body),
    )
    .await
}

/// The engine's event sequence, as `/healthz` reports it.
async fn sequence(r: &Running) -> u64 {
    let (s, b) = send(client().get(url(r, "/healthz"))).await;
    assert_eq!(s, 200, "{b}");
    b["sequence"].as_u64().expect("a sequence")
}

/// An account's balances and positions as the engine holds them.
fn holdings(r: &Running, id: &str) -> String {
    let account = r.state.engine().account(id);
    format!("{account:?}")
}

fn equity(r: &Running, id: &str) -> f64 {
    r.state.engine().risk(id).expect("an account").equity
}

/// A new key of `role` with a body of our own (`common::key` asserts 201).
/// Deposits `amount` USDC into each of `accounts` through `key`.
async fn fund(r: &Running, key: &str, accounts: &[&str], amount: f64) {
    for a in accounts {
        let (s, b) = event(
            r,
            key,
            json!({"type":"deposit","account":a,"asset":"USDC","amount":amount}),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
}

async fn make_key(r: &Running, body: Value) -> (u16, Value) {
    send(
        client()
            .post(url(r, "/v1/keys"))
            .bearer_auth(ADMIN)
            .json(&body),
    )
    .await
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pmargin-attack-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// ----- fills come from the venue -----

#[tokio::test]
async fn trader_posting_its_own_fill_at_price_zero_is_forbidden_and_changes_nothing() {
    let r = server(1024).await;
    // The attack: the admin funds `mal` with 1,000 USDC and makes it a trader key.
    let (s, b) = event(
        &r,
        ADMIN,
        json!({"type":"deposit","account":"mal","asset":"USDC","amount":1000}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let trader = key(&r, "trader", &["mal"]).await;
    let (seq, held) = (sequence(&r).await, holdings(&r, "mal"));
    assert_eq!(equity(&r, "mal"), 1000.0);

    // Its own fill of 1 BTC-PERPETUAL at price 0, no counterparty: 403.
    let (s, b) = event(
        &r,
        &trader,
        json!({"type":"trade","account":"mal","instrument":"BTC-PERPETUAL","size":1,"price":0}),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("venue"),
        "{b}"
    );
    // With a counterparty, at the mark, or a deposit of its own: 403 too.
    for body in [
        json!({"type":"trade","account":"mal","instrument":"BTC-PERPETUAL","size":1,"price":BTC_PERP_MARK,"counterparty":"basis-fund"}),
        json!({"type":"deposit","account":"mal","asset":"USDC","amount":1000000}),
    ] {
        let (s, b) = event(&r, &trader, body.clone()).await;
        assert_eq!(s, 403, "{body}: {b}");
    }
    assert_eq!(equity(&r, "mal"), 1000.0);
    assert_eq!(holdings(&r, "mal"), held);
    assert_eq!(sequence(&r).await, seq);

    // The withdrawal of 50,000 the minted equity would have paid for: refused, nothing moves.
    let (s, b) = event(
        &r,
        &trader,
        json!({"type":"withdrawal","account":"mal","asset":"USDC","amount":50000}),
    )
    .await;
    assert_eq!((s, b["accepted"].as_bool()), (422, Some(false)), "{b}");
    assert_eq!(equity(&r, "mal"), 1000.0);
    assert_eq!(holdings(&r, "mal"), held);
    assert_eq!(sequence(&r).await, seq);

    // What a trader keeps: reading, what-ifs and withdrawals on its own account.
    let (s, b) = send(
        client()
            .get(url(&r, "/v1/accounts/mal"))
            .bearer_auth(&trader),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = send(
        client()
            .post(url(&r, "/v1/what-if"))
            .bearer_auth(&trader)
            .json(&json!({"account":"mal","trades":[{"instrument":"BTC-PERPETUAL","size":0.01}]})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = event(
        &r,
        &trader,
        json!({"type":"withdrawal","account":"mal","asset":"USDC","amount":100}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(equity(&r, "mal"), 900.0);
    r.stop().await.unwrap();
}

#[tokio::test]
async fn venue_trade_without_a_counterparty_is_unprocessable_naming_the_field() {
    let r = server(1024).await;
    let venue = key(&r, "venue", &[]).await;
    let (s, b) = event(
        &r,
        &venue,
        json!({"type":"deposit","account":"mal","asset":"USDC","amount":100000}),
    )
    .await;
    assert_eq!(s, 200, "a venue confirms deposits: {b}");
    let (seq, held) = (sequence(&r).await, holdings(&r, "mal"));
    let one_sided = json!({"type":"trade","account":"mal","instrument":"BTC-PERPETUAL","size":0.1,"price":BTC_PERP_MARK});
    let with_itself = json!({"type":"trade","account":"mal","instrument":"BTC-PERPETUAL","size":0.1,"price":BTC_PERP_MARK,"counterparty":"mal"});
    for (key, body) in [
        (venue.as_str(), &one_sided),
        (ADMIN, &one_sided),
        (venue.as_str(), &with_itself),
    ] {
        let (s, b) = event(&r, key, body.clone()).await;
        assert_eq!(s, 422, "{body}: {b}");
        assert_eq!(b["error"]["field"], "counterparty", "{b}");
    }
    assert_eq!(holdings(&r, "mal"), held);
    assert_eq!(sequence(&r).await, seq);
    r.stop().await.unwrap();
}

#[tokio::test]
async fn a_venue_fill_moves_value_between_its_two_sides_and_creates_none() {
    let r = server(1024).await;
    let venue = key(&r, "venue", &[]).await;
    fund(&r, &venue, &["buyer", "seller"], 100000.0).await;
    let fund = r.state.engine().insurance_fund();
    // 0.5 BTC-PERPETUAL at 5% over the mark (inside the 10% band), a fee of 7 each side.
    let price = BTC_PERP_MARK * 1.05;
    let (s, b) = event(
        &r,
        &venue,
        json!({"type":"trade","account":"buyer","instrument":"BTC-PERPETUAL","size":0.5,"price":price,"fee":7,"counterparty":"seller"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // By hand: the buyer pays 0.5 x (price - mark) = 0.5 x 4,577 = 2,288.5 over the value it
    // gets, plus its fee; the seller gains as much, less its fee. Together: -2 x 7.
    let (buyer, seller) = (
        equity(&r, "buyer") - 100000.0,
        equity(&r, "seller") - 100000.0,
    );
    assert!((buyer - (-2288.5 - 7.0)).abs() < 1e-6, "buyer {buyer}");
    assert!((seller - (2288.5 - 7.0)).abs() < 1e-6, "seller {seller}");
    assert!(
        (buyer + seller - (-14.0)).abs() < 1e-6,
        "{buyer} + {seller}"
    );
    // The fees went to the insurance fund: value moved, none was created.
    assert!((r.state.engine().insurance_fund() - fund - 14.0).abs() < 1e-9);
    r.stop().await.unwrap();
}

#[tokio::test]
async fn a_fill_outside_the_price_band_is_rejected_and_changes_nothing() {
    let r = server(1024).await;
    let venue = key(&r, "venue", &[]).await;
    fund(&r, &venue, &["buyer", "seller"], 1000000.0).await;
    let (seq, held) = (
        sequence(&r).await,
        (holdings(&r, "buyer"), holdings(&r, "seller")),
    );
    // The demo parameters leave max_fill_deviation at 0.10: [82,386, 100,694] around 91,540.
    // (Price 0, the fill, may be refused by a magnitude check before the band.)
    let (s, b) = event(
        &r,
        &venue,
        json!({"type":"trade","account":"buyer","instrument":"BTC-PERPETUAL","size":1,"price":0,"counterparty":"seller"}),
    )
    .await;
    assert_eq!(s, 422, "{b}");
    for price in [BTC_PERP_MARK * 0.85, BTC_PERP_MARK * 1.11] {
        let (s, b) = event(
            &r,
            &venue,
            json!({"type":"trade","account":"buyer","instrument":"BTC-PERPETUAL","size":1,"price":price,"counterparty":"seller"}),
        )
        .await;
        assert_eq!(
            (s, b["accepted"].as_bool()),
            (422, Some(false)),
            "{price}: {b}"
        );
        let message = b["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(pmargin_engine::engine::PRICE_BAND_REJECTION),
            "{message}"
        );
    }
    assert_eq!(
        (holdings(&r, "buyer"), holdings(&r, "seller")),
        held,
        "nothing moved"
    );
    assert_eq!(sequence(&r).await, seq);
    // Just inside the band, the same fill is taken.
    let (s, b) = event(
        &r,
        &venue,
        json!({"type":"trade","account":"buyer","instrument":"BTC-PERPETUAL","size":1,"price":BTC_PERP_MARK * 1.099,"counterparty":"seller"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    r.stop().await.unwrap();
}

// ----- oracle identity and time -----

#[tokio::test]
async fn feeder_posting_another_venues_source_is_forbidden() {
    let r = server(1024).await;
    // Sources are required for a feeder, and refused for any other role.
    let (s, b) = make_key(&r, json!({"role":"oracle_feeder"})).await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("sources")),
        "{b}"
    );
    let (s, b) = make_key(&r, json!({"role":"oracle_feeder","sources":[]})).await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("sources")),
        "{b}"
    );
    let (s, b) = make_key(
        &r,
        json!({"role":"trader","accounts":["mal"],"sources":["binance"]}),
    )
    .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (400, Some("sources")),
        "{b}"
    );
    let (s, b) = make_key(&r, json!({"role":"oracle_feeder","sources":["binance"]})).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["sources"], json!(["binance"]));
    let feeder = b["key"].as_str().unwrap().to_string();

    let seq = sequence(&r).await;
    let oracle = || async {
        send(client().get(url(&r, "/v1/oracle")).bearer_auth(ADMIN))
            .await
            .1
    };
    let before = oracle().await;
    let (s, b) = send(
        client()
            .post(url(&r, "/v1/quotes"))
            .bearer_auth(&feeder)
            .json(&json!({"source":"coinbase","underlying":"BTC","price":91500})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (403, Some("source")),
        "{b}"
    );
    assert_eq!(oracle().await, before);
    assert_eq!(sequence(&r).await, seq);
    // Its own source is taken.
    let (s, b) = send(
        client()
            .post(url(&r, "/v1/quotes"))
            .bearer_auth(&feeder)
            .json(&json!({"source":"binance","underlying":"BTC","price":91500})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    r.stop().await.unwrap();
}

#[tokio::test]
async fn quote_from_the_future_is_unprocessable() {
    let r = server(1024).await;
    let seq = sequence(&r).await;
    let now = chrono::Utc::now().timestamp_millis();
    // A minute ahead of the server's clock: beyond the default 2,000 ms.
    let (s, b) = send(
        client()
            .post(url(&r, "/v1/quotes"))
            .bearer_auth(ADMIN)
            .json(&json!({"source":"a","underlying":"BTC","price":91500,"ts_ms":now + 60_000})),
    )
    .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (422, Some("ts_ms")),
        "{b}"
    );
    assert_eq!(sequence(&r).await, seq);
    // Within the allowed skew (a clock a second fast) it is taken.
    let (s, b) = send(
        client()
            .post(url(&r, "/v1/quotes"))
            .bearer_auth(ADMIN)
            .json(&json!({"source":"a","underlying":"BTC","price":91500,"ts_ms":now + 1_000})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    r.stop().await.unwrap();
}

// ----- one name per contract -----

#[tokio::test]
async fn non_canonical_contract_names_are_refused_naming_the_canonical_one() {
    let r = server(1024).await;
    let venue = key(&r, "venue", &[]).await;
    fund(&r, &venue, &["buyer", "seller"], 1000000.0).await;
    let (seq, held) = (sequence(&r).await, holdings(&r, "buyer"));
    for (name, canonical) in [
        ("BTC-05JAN27", "BTC-5JAN27"),
        ("BTC-25DEC26-090000-C", "BTC-25DEC26-90000-C"),
        ("BTC-25DEC26-90000.0-C", "BTC-25DEC26-90000-C"),
    ] {
        let (s, b) = event(
            &r,
            &venue,
            json!({"type":"trade","account":"buyer","instrument":name,"size":1,"price":1000,"counterparty":"seller"}),
        )
        .await;
        assert_eq!(s, 422, "{name}: {b}");
        let message = b["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{canonical}`")), "{message}");
        // The what-if names the field and the canonical spelling too.
        let (s, b) = send(
            client()
                .post(url(&r, "/v1/what-if"))
                .bearer_auth(ADMIN)
                .json(&json!({"account":"buyer","trades":[{"instrument":name,"size":1}]})),
        )
        .await;
        assert_eq!(s, 400, "{b}");
        assert_eq!(b["error"]["field"], "trades[0].instrument", "{b}");
        assert!(
            b["error"]["message"].as_str().unwrap().contains(canonical),
            "{b}"
        );
    }
    assert_eq!(holdings(&r, "buyer"), held);
    assert_eq!(sequence(&r).await, seq);
    r.stop().await.unwrap();
}

#[tokio::test]
async fn settlement_closes_every_position_in_the_contract() {
    const CALL: &str = "BTC-25DEC26-90000-C";
    let r = server(1024).await;
    let venue = key(&r, "venue", &[]).await;
    fund(&r, &venue, &["a", "b", "c"], 1000000.0).await;
    // The call's mark, as a what-if fills it.
    let (s, w) = send(
        client()
            .post(url(&r, "/v1/what-if"))
            .bearer_auth(ADMIN)
            .json(&json!({"account":"a","trades":[{"instrument":CALL,"size":1}]})),
    )
    .await;
    assert_eq!(s, 200, "{w}");
    let premium = w["what_if"]["fills"][0]["price"].as_f64().unwrap();
    assert!(premium > 0.0, "{w}");
    // a buys 2 calls and c buys 1 from b, at the mark.
    for (buyer, size) in [("a", 2.0), ("c", 1.0)] {
        let (s, b) = event(
            &r,
            &venue,
            json!({"type":"trade","account":buyer,"instrument":CALL,"size":size,"price":premium,"counterparty":"b"}),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
    // Other spellings of the same contract cannot open a second book entry that the
    // settlement of the first would leave open.
    for other in ["BTC-25DEC26-090000-C", "BTC-25DEC26-90000.0-C"] {
        let (s, b) = event(
            &r,
            &venue,
            json!({"type":"trade","account":"c","instrument":other,"size":1,"price":premium,"counterparty":"b"}),
        )
        .await;
        assert_eq!(s, 422, "{b}");
    }
    let (s, b) = event(
        &r,
        ADMIN,
        json!({"type":"settlement","instrument":CALL,"price":92900}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let accounts: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|a| r.state.engine().account(a).unwrap())
        .collect();
    for (a, account) in ["a", "b", "c"].iter().zip(&accounts) {
        assert!(
            account
                .positions
                .iter()
                .all(|p| !p.instrument.name.starts_with("BTC-25DEC26-")),
            "{a} still holds the settled call: {account:?}"
        );
    }
    // By hand: each call pays 92,900 - 90,000 = 2,900 at expiry, after its premium.
    for (account, calls) in accounts.iter().zip([2.0, -3.0, 1.0]) {
        let (a, usdc) = (&account.id, account.balances["USDC"]);
        let expected = 1_000_000.0 + calls * (2900.0 - premium);
        assert!((usdc - expected).abs() < 1e-6, "{a}: {usdc} vs {expected}");
    }
    r.stop().await.unwrap();
}

// ----- keys -----

#[tokio::test]
async fn weak_admin_key_is_refused_at_start() {
    for weak in [
        "secret",
        "admin-admin-admin",
        "0123456789abcdef0123456789abcde",
    ] {
        let mut cfg = ServerConfig::new("127.0.0.1:0", None, demo_genesis());
        cfg.admin_key = Some(weak.into());
        let err = match start(cfg).await {
            Ok(r) => {
                r.stop().await.unwrap();
                panic!("{weak} was accepted")
            }
            Err(e) => e,
        };
        assert!(err.contains("PMARGIN_ADMIN_KEY is too weak"), "{err}");
        assert!(err.contains("128 bits"), "{err}");
    }
    // 32 hex digits (128 bits) start.
    let mut cfg = ServerConfig::new("127.0.0.1:0", None, demo_genesis());
    cfg.admin_key = Some("9f86d081884c7d659a2feaa0c55ad015".into());
    start(cfg).await.unwrap().stop().await.unwrap();
}

#[tokio::test]
async fn revoked_key_is_unauthorized_at_once_and_after_a_restart() {
    let dir = temp_dir("revoke");
    let config = || {
        let mut cfg = ServerConfig::new("127.0.0.1:0", Some(dir.clone()), demo_genesis());
        cfg.admin_key = Some(ADMIN.into());
        cfg
    };
    let r = start(config()).await.unwrap();
    let (s, b) = make_key(&r, json!({"role":"venue"})).await;
    assert_eq!(s, 201, "{b}");
    let (id, venue) = (
        b["id"].as_str().unwrap().to_string(),
        b["key"].as_str().unwrap().to_string(),
    );
    let (s, _) = send(client().get(url(&r, "/v1/accounts")).bearer_auth(&venue)).await;
    assert_eq!(s, 200);
    // Only an admin revokes; no key revokes itself.
    let delete = |who: &str, id: &str| {
        client()
            .delete(url(&r, &format!("/v1/keys/{id}")))
            .bearer_auth(who)
    };
    let (s, b) = send(delete(&venue, &id)).await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = send(delete(ADMIN, "admin")).await;
    assert_eq!(s, 409, "{b}");
    let (s, b) = send(delete(ADMIN, "key-nothing")).await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = send(delete(ADMIN, &id)).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["revoked_ms"].as_i64().is_some(), "{b}");
    // The next request with it: 401, and it can no longer move anything.
    let seq = sequence(&r).await;
    let (s, b) = event(
        &r,
        &venue,
        json!({"type":"deposit","account":"mal","asset":"USDC","amount":1000}),
    )
    .await;
    assert_eq!(s, 401, "{b}");
    assert!(r.state.engine().account("mal").is_none());
    assert_eq!(sequence(&r).await, seq);
    let (_, list) = send(client().get(url(&r, "/v1/keys")).bearer_auth(ADMIN)).await;
    assert!(
        list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["id"] != id.as_str()),
        "{list}"
    );
    let (_, audit) = send(client().get(url(&r, "/v1/audit")).bearer_auth(ADMIN)).await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "revoke_key" && e["target"] == id.as_str()),
        "{audit}"
    );
    r.stop().await.unwrap();
    // The revocation is durable.
    let r = start(config()).await.unwrap();
    let (s, _) = send(client().get(url(&r, "/v1/accounts")).bearer_auth(&venue)).await;
    assert_eq!(s, 401);
    r.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn authentication_brute_force_is_throttled_per_address() {
    let r = server(1024).await;
    let seq = sequence(&r).await;
    let guess = |k: String| client().get(url(&r, "/v1/accounts")).bearer_auth(k);
    for i in 0..pmargin_server::auth::AUTH_FAILURES_MAX {
        let (s, _) = send(guess(format!("pmk_{i:064x}"))).await;
        assert_eq!(s, 401, "guess {i}");
    }
    // The next guess, and even the right key, from this address: 429 with Retry-After.
    for k in ["pmk_0123".to_string(), ADMIN.to_string()] {
        let resp = guess(k).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 429);
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    // Another address is not affected (127.0.0.2 is loopback too, on Linux).
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let resp = other
        .get(url(&r, "/v1/accounts"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("a connection from 127.0.0.2");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(sequence(&r).await, seq);
    r.stop().await.unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn generated_admin_key_goes_to_a_0600_file_and_key_files_are_0600() {
    let dir = temp_dir("adminfile");
    let r = start(ServerConfig::new(
        "127.0.0.1:0",
        Some(dir.clone()),
        demo_genesis(),
    ))
    .await
    .unwrap();
    let path = r.admin_key_file.clone().expect("a key file");
    assert_eq!(path, dir.join(pmargin_server::ADMIN_KEY_FILE));
    assert_eq!(mode(&path), 0o600);
    let key = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert_eq!(Some(&key), r.new_admin_key.as_ref());
    let (s, _) = send(client().get(url(&r, "/v1/accounts")).bearer_auth(&key)).await;
    assert_eq!(s, 200);
    // A new key is stored in the database, which is 0600 as the HMAC secret (its WAL too);
    // no key file is written beside it.
    let (s, _) = send(
        client()
            .post(url(&r, "/v1/keys"))
            .bearer_auth(&key)
            .json(&json!({"role":"read_only"})),
    )
    .await;
    assert_eq!(s, 201);
    let db = dir.join(pmargin_store::DB_FILE);
    assert_eq!(mode(&db), 0o600);
    assert_eq!(
        mode(&dir.join(format!("{}-wal", pmargin_store::DB_FILE))),
        0o600
    );
    assert!(!dir.join("keys.json").exists());
    assert_eq!(mode(&dir.join("key_secret")), 0o600);
    r.stop().await.unwrap();
    // A second start makes no new key and leaves the file as it was.
    let r = start(ServerConfig::new(
        "127.0.0.1:0",
        Some(dir.clone()),
        demo_genesis(),
    ))
    .await
    .unwrap();
    assert!(r.new_admin_key.is_none() && r.admin_key_file.is_none());
    r.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn stored_key_hash_is_keyed_not_the_sha256_of_the_key() {
    let dir = temp_dir("keyed");
    let mut cfg = ServerConfig::new("127.0.0.1:0", Some(dir.clone()), demo_genesis());
    cfg.admin_key = Some(ADMIN.into());
    let r = start(cfg).await.unwrap();
    let (s, b) = make_key(&r, json!({"role":"read_only"})).await;
    assert_eq!(s, 201, "{b}");
    let (id, key) = (b["id"].as_str().unwrap(), b["key"].as_str().unwrap());
    let records = pmargin_store::Store::open(&dir)
        .unwrap()
        .api_keys()
        .unwrap();
    let keys = Value::Array(
        records
            .iter()
            .map(|r| serde_json::from_str(r).unwrap())
            .collect(),
    );
    let record = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap();
    let stored = record["hash"].as_str().unwrap();
    assert_eq!(record["scheme"], "hmac-sha256");
    assert!(
        !keys.to_string().contains(key),
        "the key itself is never stored"
    );
    assert_ne!(stored, hex::encode(Sha256::digest(key.as_bytes())));
    // It is HMAC-SHA256 under the data directory's secret.
    let secret = hex::decode(
        std::fs::read_to_string(dir.join("key_secret"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
    mac.update(key.as_bytes());
    assert_eq!(stored, hex::encode(mac.finalize().into_bytes()));
    r.stop().await.unwrap();
    // Neither the key nor the secret is anywhere in the database's files: a copy of the
    // database alone does not let anyone test guesses.
    let secret_hex = hex::encode(&secret);
    for name in std::fs::read_dir(&dir).unwrap() {
        let path = name.unwrap().path();
        if !path.to_string_lossy().contains(pmargin_store::DB_FILE) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(key), "{}: holds the key", path.display());
        assert!(
            !text.contains(&secret_hex),
            "{}: holds the secret",
            path.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
