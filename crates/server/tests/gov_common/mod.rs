//! What the governance tests share: the committee's keys, a server whose governance reads a
//! manual clock, signing helpers and a snapshot of everything a refused step must not change.
#![allow(dead_code)]

use crate::common::*;
use ed25519_dalek::{Signer, SigningKey};
use pmargin_governance::{
    approval_message, cancel_message, ratify_message, sign_emergency, Committee, CommitteeMember,
    ManualClock,
};
use pmargin_server::demo::demo_genesis;
use pmargin_server::store::LoggedEvent;
use pmargin_server::{start, Running, ServerConfig};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// The deployment the test servers are configured as.
pub const DEPLOY: &str = "pmargin-test-eu-1";

pub const HOUR: i64 = 3_600_000;

pub fn member_key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

pub fn guardian_key() -> SigningKey {
    SigningKey::from_bytes(&[99; 32])
}

/// m1, m2, m3, two of three, with the guardian key.
pub fn committee(timelock_ms: i64) -> Committee {
    let members = (1..=3)
        .map(|i| CommitteeMember {
            id: format!("m{i}"),
            public_key: member_key(i).verifying_key().to_bytes(),
        })
        .collect();
    Committee::new(
        members,
        2,
        timelock_ms,
        Some(guardian_key().verifying_key().to_bytes()),
    )
    .unwrap()
}

/// A clock at the system's time: stored timestamps stay plausible, and it moves only when a
/// test moves it.
pub fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at_system_time())
}

/// A server of deployment [`DEPLOY`] with this committee, whose governance reads `clock`.
pub async fn gov_server_at(
    committee: Option<Committee>,
    dir: Option<PathBuf>,
    clock: &Arc<ManualClock>,
) -> Running {
    let mut cfg = ServerConfig::new("127.0.0.1:0", dir, demo_genesis());
    cfg.admin_key = Some(ADMIN.into());
    cfg.committee = committee;
    cfg.deployment_id = Some(DEPLOY.into());
    cfg.governance_clock = clock.clone();
    start(cfg).await.unwrap()
}

/// An in-memory server with `committee(timelock_ms)` and a fresh manual clock.
pub async fn gov_server(timelock_ms: i64) -> (Running, Arc<ManualClock>) {
    let clock = manual_clock();
    let r = gov_server_at(Some(committee(timelock_ms)), None, &clock).await;
    (r, clock)
}

pub async fn get(r: &Running, path: &str) -> Value {
    let (s, b) = send(reqwest::Client::new().get(url(r, path)).bearer_auth(ADMIN)).await;
    assert_eq!(s, 200, "{path}: {b}");
    b
}

pub async fn post(r: &Running, path: &str, body: &Value) -> (u16, Value) {
    send(
        reqwest::Client::new()
            .post(url(r, path))
            .bearer_auth(ADMIN)
            .json(body),
    )
    .await
}

/// The active parameters with the next version and BTC's scan range times `factor`.
pub async fn scaled_params(r: &Running, factor: f64) -> Value {
    let body = get(r, "/v1/params").await;
    let mut p = body["params"].clone();
    p["version"] = json!(body["version"].as_u64().unwrap() + 1);
    let range = p["underlyings"]["BTC"]["price_scan_range"]
        .as_f64()
        .unwrap();
    p["underlyings"]["BTC"]["price_scan_range"] = json!(range * factor);
    p
}

/// The active parameters with the next version and a wider (x1.25) BTC scan range.
pub async fn next_params(r: &Running) -> Value {
    scaled_params(r, 1.25).await
}

pub fn parse(v: &Value) -> pmargin_core::Params {
    let mut p = pmargin_core::Params::parse("p", &v.to_string()).unwrap();
    p.source = String::new();
    p
}

fn hash_of(hash_hex: &str) -> [u8; 32] {
    hex::decode(hash_hex).unwrap().try_into().unwrap()
}

/// Member `member`'s approval of the proposal with this hash, on `deployment`.
pub fn approval_for(member: u8, deployment: &str, hash_hex: &str) -> Value {
    let sig = member_key(member)
        .sign(&approval_message(deployment, &hash_of(hash_hex)))
        .to_bytes();
    json!({ "member": format!("m{member}"), "signature": hex::encode(sig) })
}

pub fn approval(member: u8, hash_hex: &str) -> Value {
    approval_for(member, DEPLOY, hash_hex)
}

/// `key`'s signature, under member name `name`, cancelling the proposal on `deployment`.
pub fn cancel_by(name: &str, key: &SigningKey, deployment: &str, hash_hex: &str) -> Value {
    let sig = key
        .sign(&cancel_message(deployment, &hash_of(hash_hex)))
        .to_bytes();
    json!({ "member": name, "signature": hex::encode(sig) })
}

pub fn cancel(member: u8, hash_hex: &str) -> Value {
    cancel_by(&format!("m{member}"), &member_key(member), DEPLOY, hash_hex)
}

/// Member `member`'s ratification of the emergency set `params` on `deployment`.
pub fn ratify_for(member: u8, deployment: &str, params: &Value) -> Value {
    let sig = member_key(member)
        .sign(&ratify_message(deployment, &parse(params)))
        .to_bytes();
    json!({ "member": format!("m{member}"), "signature": hex::encode(sig) })
}

/// The guardian's emergency request for `params` on `deployment`.
pub fn emergency_for(deployment: &str, params: &Value) -> Value {
    let sig = sign_emergency(&guardian_key(), deployment, &parse(params));
    json!({ "params": params, "signature": hex::encode(sig) })
}

/// Proposes `p` as the admin; returns the id and hash.
pub async fn propose(r: &Running, p: &Value) -> (u64, String) {
    let (s, b) = post(
        r,
        "/v1/proposals",
        &json!({"params": p, "rationale": "wider BTC scan"}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    (
        b["proposal"]["id"].as_u64().unwrap(),
        b["proposal"]["hash"].as_str().unwrap().to_string(),
    )
}

pub async fn approve(r: &Running, id: u64, member: u8, hash: &str) -> (u16, Value) {
    post(
        r,
        &format!("/v1/proposals/{id}/approvals"),
        &approval(member, hash),
    )
    .await
}

pub async fn activate(r: &Running, id: u64) -> (u16, Value) {
    post(r, &format!("/v1/proposals/{id}/activate"), &json!(null)).await
}

pub fn assert_error(status: u16, body: &Value, want: u16, what: &str) {
    assert_eq!(status, want, "{what}: {body}");
    assert_eq!(body["error"]["status"], want, "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

/// Everything a refused governance step must leave as it was: the parameters in force (as the
/// API serves them and as the engine holds them) and the event log, whole.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub params: Value,
    pub engine_params: pmargin_core::Params,
    pub sequence: u64,
    pub log: Vec<LoggedEvent>,
}

pub async fn snapshot(r: &Running) -> Snapshot {
    let params = get(r, "/v1/params").await;
    let (engine_params, sequence) = {
        let e = r.state.engine();
        (e.params().clone(), e.sequence())
    };
    let log = r
        .state
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .events_from(0)
        .unwrap();
    Snapshot {
        params,
        engine_params,
        sequence,
        log,
    }
}
