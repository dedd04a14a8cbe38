#![allow(dead_code)]

use pmargin_server::demo::demo_genesis;
use pmargin_server::{start, Running, ServerConfig};
use serde_json::Value;

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

pub async fn key(r: &Running, role: &str, accounts: &[&str]) -> String {
    let resp = reqwest::Client::new()
        .post(url(r, "/v1/keys"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({ "role": role, "accounts": accounts }))
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
