#![allow(dead_code)]

use pmargin_server::demo::{demo_genesis, engine_config, MARKET, PARAMS};
use pmargin_server::store::Genesis;
use pmargin_server::{start, Running, ServerConfig};
use serde_json::{json, Value};

pub const ADMIN: &str = "test-admin-key-0123456789";

pub async fn server(ring: usize) -> Running {
    let mut cfg = ServerConfig::new("127.0.0.1:0", None, demo_genesis());
    cfg.admin_key = Some(ADMIN.into());
    cfg.ring_capacity = ring;
    start(cfg).await.unwrap()
}

pub fn url(r: &Running, path: &str) -> String {
    format!("http://{}{path}", r.addr)
}

/// A new key of `role`; an oracle feeder's is bound to sources `a`, `b` and `c`.
pub async fn key(r: &Running, role: &str, accounts: &[&str]) -> String {
    let mut body = serde_json::json!({ "role": role, "accounts": accounts });
    if role == "oracle_feeder" {
        body["sources"] = serde_json::json!(["a", "b", "c"]);
    }
    let resp = reqwest::Client::new()
        .post(url(r, "/v1/keys"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    body["key"].as_str().unwrap().to_string()
}

/// Status and JSON body.
pub async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `n` accounts on the demo market: perpetuals, futures and options on BTC, ETH and SOL,
/// sized from a fixed sequence so every run margins the same book.
pub fn big_genesis(n: usize) -> Genesis {
    let instruments = [
        ("BTC-PERPETUAL", Some(91540.0), 0.5),
        ("ETH-PERPETUAL", Some(3051.5), 10.0),
        ("SOL-PERPETUAL", Some(142.1), 100.0),
        ("BTC-25DEC26", Some(91900.0), 0.5),
        ("BTC-25DEC26-90000-C", None, 1.0),
        ("BTC-25DEC26-85000-P", None, 1.0),
        ("ETH-25DEC26-3000-C", None, 10.0),
        ("ETH-25DEC26-3000-P", None, 10.0),
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let accounts: Vec<Value> = (0..n)
        .map(|i| {
            let positions: Vec<Value> = (0..3)
                .map(|_| {
                    let (name, entry, unit) = instruments[(next() * instruments.len() as f64) as usize];
                    let size = ((next() * 8.0).floor() + 1.0) * unit * if next() < 0.5 { -1.0 } else { 1.0 };
                    match entry {
                        Some(e) => json!({ "instrument": name, "size": size, "entry_price": e }),
                        None => json!({ "instrument": name, "size": size }),
                    }
                })
                .collect();
            json!({ "id": format!("acct-{i:05}"), "balances": { "USDC": (3_000.0 + next() * 150_000.0).round() }, "positions": positions })
        })
        .collect();
    Genesis {
        portfolio: json!({ "accounts": accounts }).to_string(),
        market: MARKET.into(),
        params: PARAMS.into(),
        config: engine_config(250_000.0),
    }
}

/// A loopback server configuration with the test admin key and `limits`.
pub fn config(genesis: Genesis, limits: pmargin_server::limits::Limits) -> ServerConfig {
    let mut cfg = ServerConfig::new("127.0.0.1:0", None, genesis);
    cfg.admin_key = Some(ADMIN.into());
    cfg.limits = limits;
    cfg
}

/// The engine's event sequence (the log's length).
pub fn sequence(r: &Running) -> u64 {
    r.state.engine().sequence()
}

/// An account's balance of `asset` as the engine holds it.
pub fn balance(r: &Running, account: &str, asset: &str) -> f64 {
    r.state
        .engine()
        .account(account)
        .and_then(|a| a.balances.get(asset).copied())
        .unwrap_or(0.0)
}

/// The value of one sample of the metrics exposition (`name{labels}`), 0 if absent.
pub async fn metric(r: &Running, sample: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(url(r, "/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}
