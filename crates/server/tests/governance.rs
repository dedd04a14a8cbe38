//! Governed parameters over HTTP: refusals (no quorum, timelock, forged and duplicate
//! signatures, out-of-range values) and the happy path that puts a new version in force.

mod common;

use common::*;
use ed25519_dalek::{Signer, SigningKey};
use pmargin_governance::{approval_message, sign_emergency, Committee, CommitteeMember};
use pmargin_server::demo::demo_genesis;
use pmargin_server::{start, Running, ServerConfig};
use serde_json::{json, Value};

fn member_key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

fn guardian_key() -> SigningKey {
    SigningKey::from_bytes(&[99; 32])
}

async fn gov_server(timelock_ms: i64) -> Running {
    let members = (1..=3)
        .map(|i| CommitteeMember {
            id: format!("m{i}"),
            public_key: member_key(i).verifying_key().to_bytes(),
        })
        .collect();
    let committee = Committee::new(
        members,
        2,
        timelock_ms,
        Some(guardian_key().verifying_key().to_bytes()),
    )
    .unwrap();
    let mut cfg = ServerConfig::new("127.0.0.1:0", None, demo_genesis());
    cfg.admin_key = Some(ADMIN.into());
    cfg.committee = Some(committee);
    start(cfg).await.unwrap()
}

/// The active parameters with the next version and wider BTC scan range.
async fn next_params(r: &Running) -> Value {
    let c = reqwest::Client::new();
    let (status, body) = send(c.get(url(r, "/v1/params")).bearer_auth(ADMIN)).await;
    assert_eq!(status, 200, "{body}");
    let mut p = body["params"].clone();
    p["version"] = json!(body["version"].as_u64().unwrap() + 1);
    let range = p["underlyings"]["BTC"]["price_scan_range"]
        .as_f64()
        .unwrap();
    p["underlyings"]["BTC"]["price_scan_range"] = json!(range * 1.25);
    p
}

fn approval(member: u8, hash_hex: &str) -> Value {
    let hash: [u8; 32] = hex::decode(hash_hex).unwrap().try_into().unwrap();
    let sig = member_key(member).sign(&approval_message(&hash)).to_bytes();
    json!({ "member": format!("m{member}"), "signature": hex::encode(sig) })
}

fn assert_error(status: u16, body: &Value, want: u16, what: &str) {
    assert_eq!(status, want, "{what}: {body}");
    assert_eq!(body["error"]["status"], want, "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

#[tokio::test]
async fn refusals_are_clean_and_nothing_activates() {
    let r = gov_server(60_000).await;
    let c = reqwest::Client::new();
    let reader = key(&r, "read_only", &[]).await;
    let p = next_params(&r).await;
    // Role and validation.
    let (s, b) = send(
        c.post(url(&r, "/v1/proposals"))
            .bearer_auth(&reader)
            .json(&json!({"params": p, "rationale": "wider"})),
    )
    .await;
    assert_error(s, &b, 403, "read-only proposes");
    let mut bad = p.clone();
    bad["underlyings"]["BTC"]["vol_scan_down"] = json!(3.0);
    let (s, b) = send(
        c.post(url(&r, "/v1/proposals"))
            .bearer_auth(ADMIN)
            .json(&json!({"params": bad, "rationale": "bad"})),
    )
    .await;
    assert_error(s, &b, 422, "out of range");
    // A valid proposal, with its impact report.
    let (s, b) = send(
        c.post(url(&r, "/v1/proposals"))
            .bearer_auth(ADMIN)
            .json(&json!({"params": p, "rationale": "wider BTC scan"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert!(
        b["impact"]["total_requirement_after"].as_f64().is_some(),
        "{b}"
    );
    let id = b["proposal"]["id"].as_u64().unwrap();
    let hash = b["proposal"]["hash"].as_str().unwrap().to_string();
    let activate = url(&r, &format!("/v1/proposals/{id}/activate"));
    let approvals = url(&r, &format!("/v1/proposals/{id}/approvals"));
    // No quorum.
    let (s, b) = send(c.post(&activate).bearer_auth(ADMIN)).await;
    assert_error(s, &b, 409, "no quorum");
    // Forged: member 1's name, member 2's key.
    let mut forged = approval(2, &hash);
    forged["member"] = json!("m1");
    let (s, b) = send(c.post(&approvals).bearer_auth(ADMIN).json(&forged)).await;
    assert_error(s, &b, 403, "forged signature");
    // Signature over another hash.
    let (s, b) = send(
        c.post(&approvals)
            .bearer_auth(ADMIN)
            .json(&approval(1, &"00".repeat(32))),
    )
    .await;
    assert_error(s, &b, 403, "signature over another hash");
    let (s, b) = send(
        c.post(&approvals)
            .bearer_auth(ADMIN)
            .json(&approval(1, &hash)),
    )
    .await;
    assert_eq!((s, b["approvals"].as_u64()), (200, Some(1)), "{b}");
    // Duplicate.
    let (s, b) = send(
        c.post(&approvals)
            .bearer_auth(ADMIN)
            .json(&approval(1, &hash)),
    )
    .await;
    assert_error(s, &b, 409, "duplicate signature");
    let (s, b) = send(c.post(&activate).bearer_auth(ADMIN)).await;
    assert_error(s, &b, 409, "one approval of two");
    let (s, b) = send(
        c.post(&approvals)
            .bearer_auth(ADMIN)
            .json(&approval(3, &hash)),
    )
    .await;
    assert_eq!((s, b["approvals"].as_u64()), (200, Some(2)), "{b}");
    // Quorum but before the timelock.
    let (s, b) = send(c.post(&activate).bearer_auth(ADMIN)).await;
    assert_error(s, &b, 409, "before timelock");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("timelock"),
        "{b}"
    );
    let (s, b) = send(c.get(url(&r, "/v1/params")).bearer_auth(ADMIN)).await;
    assert_eq!(s, 200);
    assert_eq!(
        b["version"].as_u64(),
        Some(p["version"].as_u64().unwrap() - 1)
    );
    // Unknown proposal; malformed approval.
    let (s, b) = send(c.get(url(&r, "/v1/proposals/999")).bearer_auth(ADMIN)).await;
    assert_error(s, &b, 404, "unknown proposal");
    let (s, b) = send(
        c.post(&approvals)
            .bearer_auth(ADMIN)
            .json(&json!({"member":"m2","signature":"zz"})),
    )
    .await;
    assert_error(s, &b, 400, "malformed signature");
    r.stop().await.unwrap();
}

#[tokio::test]
async fn approved_proposal_activates_after_timelock_and_emergency_tightens() {
    let r = gov_server(800).await;
    let c = reqwest::Client::new();
    let p = next_params(&r).await;
    let version = p["version"].as_u64().unwrap();
    let (s, b) = send(
        c.post(url(&r, "/v1/proposals"))
            .bearer_auth(ADMIN)
            .json(&json!({"params": p, "rationale": "wider BTC scan"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let id = b["proposal"]["id"].as_u64().unwrap();
    let hash = b["proposal"]["hash"].as_str().unwrap().to_string();
    for m in [1, 2] {
        let (s, b) = send(
            c.post(url(&r, &format!("/v1/proposals/{id}/approvals")))
                .bearer_auth(ADMIN)
                .json(&approval(m, &hash)),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let (s, b) = send(
        c.post(url(&r, &format!("/v1/proposals/{id}/activate")))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["version"].as_u64(), Some(version));
    let (s, b) = send(c.get(url(&r, "/v1/params")).bearer_auth(ADMIN)).await;
    assert_eq!((s, b["version"].as_u64()), (200, Some(version)), "{b}");
    let (s, b) = send(
        c.get(url(&r, &format!("/v1/proposals/{id}")))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b["state"].to_string().contains("activated")
            || b["state"].to_string().contains("Activated"),
        "{b}"
    );
    // Activated once only.
    let (s, b) = send(
        c.post(url(&r, &format!("/v1/proposals/{id}/activate")))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_error(s, &b, 409, "second activation");
    // Emergency: the guardian tightens at once; a looser set or a wrong key is refused.
    let mut e = next_params(&r).await;
    let mut ep = pmargin_core::Params::parse("e", &e.to_string()).unwrap();
    ep.source = String::new();
    let sig = hex::encode(sign_emergency(&guardian_key(), &ep));
    let wrong = hex::encode(sign_emergency(&member_key(1), &ep));
    let (s, b) = send(
        c.post(url(&r, "/v1/params/emergency"))
            .bearer_auth(ADMIN)
            .json(&json!({"params": e, "signature": wrong})),
    )
    .await;
    assert_error(s, &b, 403, "emergency with a member key");
    let (s, b) = send(
        c.post(url(&r, "/v1/params/emergency"))
            .bearer_auth(ADMIN)
            .json(&json!({"params": e, "signature": sig})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = send(c.get(url(&r, "/v1/params")).bearer_auth(ADMIN)).await;
    assert_eq!((s, b["version"].as_u64()), (200, Some(version + 1)), "{b}");
    // Looser: refused.
    e["version"] = json!(version + 2);
    let range = e["underlyings"]["BTC"]["price_scan_range"]
        .as_f64()
        .unwrap();
    e["underlyings"]["BTC"]["price_scan_range"] = json!(range / 2.0);
    let mut ep = pmargin_core::Params::parse("e", &e.to_string()).unwrap();
    ep.source = String::new();
    let sig = hex::encode(sign_emergency(&guardian_key(), &ep));
    let (s, b) = send(
        c.post(url(&r, "/v1/params/emergency"))
            .bearer_auth(ADMIN)
            .json(&json!({"params": e, "signature": sig})),
    )
    .await;
    assert_error(s, &b, 422, "looser emergency");
    r.stop().await.unwrap();
}
