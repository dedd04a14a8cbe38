//! Governed parameters over HTTP: refusals (no quorum, timelock, forged and duplicate
//! signatures, out-of-range values), the happy path that puts a new version in force, and what
//! survives a restart. The governance clock is a manual one: timelocks are crossed by moving
//! it, never by sleeping.

mod common;
mod gov_common;

use common::*;
use gov_common::*;
use pmargin_governance::{sign_emergency, Clock, Committee};
use pmargin_server::demo::demo_genesis;
use pmargin_server::{start, Running, ServerConfig};
use serde_json::json;

#[tokio::test]
async fn refusals_are_clean_and_nothing_activates() {
    let (r, _clock) = gov_server(60_000).await;
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
    let (r, clock) = gov_server(HOUR).await;
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
    clock.advance(HOUR);
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
    let sig = hex::encode(sign_emergency(&guardian_key(), DEPLOY, &ep));
    let wrong = hex::encode(sign_emergency(&member_key(1), DEPLOY, &ep));
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
    let sig = hex::encode(sign_emergency(&guardian_key(), DEPLOY, &ep));
    let (s, b) = send(
        c.post(url(&r, "/v1/params/emergency"))
            .bearer_auth(ADMIN)
            .json(&json!({"params": e, "signature": sig})),
    )
    .await;
    assert_error(s, &b, 422, "looser emergency");
    r.stop().await.unwrap();
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pmargin-gov-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn dir_server(
    dir: &std::path::Path,
    committee: Option<Committee>,
    clock: &std::sync::Arc<pmargin_governance::ManualClock>,
) -> Running {
    gov_server_at(committee, Some(dir.to_path_buf()), clock).await
}

#[tokio::test]
async fn proposals_approvals_and_versions_survive_a_restart() {
    let dir = temp_dir("restart");
    let clock = manual_clock();
    let r = dir_server(&dir, Some(committee(HOUR)), &clock).await;
    let p = next_params(&r).await;
    let version = p["version"].as_u64().unwrap();
    let (id1, hash1) = propose(&r, &p).await;
    for m in [1, 2] {
        assert_eq!(approve(&r, id1, m, &hash1).await.0, 200);
    }
    clock.advance(HOUR);
    let (s, b) = send(
        reqwest::Client::new()
            .post(url(&r, &format!("/v1/proposals/{id1}/activate")))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let p2 = next_params(&r).await;
    let (id2, hash2) = propose(&r, &p2).await;
    assert_eq!(approve(&r, id2, 3, &hash2).await.0, 200);
    let before = (
        get(&r, &format!("/v1/proposals/{id1}")).await,
        get(&r, &format!("/v1/proposals/{id2}")).await,
    );
    r.stop().await.unwrap();
    assert!(!dir.join("governance.json").exists());

    // Restarted with the same committee: everything is back from the database.
    let r = dir_server(&dir, Some(committee(HOUR)), &clock).await;
    assert_eq!(
        get(&r, "/v1/params").await["version"].as_u64(),
        Some(version)
    );
    let after = (
        get(&r, &format!("/v1/proposals/{id1}")).await,
        get(&r, &format!("/v1/proposals/{id2}")).await,
    );
    assert_eq!(after, before);
    assert!(
        after.0["state"].to_string().contains("activated"),
        "{}",
        after.0
    );
    assert_eq!(after.1["approvals"].as_array().unwrap().len(), 1);
    // The stored approval still counts: a second one by the same member is a duplicate.
    let (s, b) = approve(&r, id2, 3, &hash2).await;
    assert_error(s, &b, 409, "duplicate after restart");
    let (s, b) = approve(&r, id2, 1, &hash2).await;
    assert_eq!((s, b["approvals"].as_u64()), (200, Some(2)), "{b}");
    // A new proposal id continues after the stored ones.
    let mut p3 = p2.clone();
    p3["underlyings"]["BTC"]["price_scan_range"] = json!(0.3);
    let (id3, _) = propose(&r, &p3).await;
    assert_eq!(id3, id2 + 1);
    r.stop().await.unwrap();

    // Without a configured committee the stored one is used.
    let r = dir_server(&dir, None, &clock).await;
    let b = get(&r, &format!("/v1/proposals/{id2}")).await;
    assert_eq!(b["approvals"].as_array().unwrap().len(), 2, "{b}");
    r.stop().await.unwrap();
    // The versions and the proposals are in the database.
    let db = pmargin_store::Store::open(&dir).unwrap();
    let rows = db.load_governance().unwrap().unwrap();
    let versions: Vec<u64> = rows.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, vec![version - 1, version]);
    let pending = rows.proposals.iter().filter(|p| p.status == "pending");
    assert_eq!(pending.count(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_activation_in_the_log_without_its_governance_write_is_recovered() {
    // The governance tables are copied aside before the activation and put back after it: as
    // if the service died between the activation event (durable) and the governance write.
    let dir = temp_dir("recovered");
    let clock = manual_clock();
    let server = |committee: Option<Committee>| {
        let mut cfg = ServerConfig::new("127.0.0.1:0", Some(dir.clone()), demo_genesis());
        cfg.admin_key = Some(ADMIN.into());
        cfg.committee = committee;
        cfg.deployment_id = Some(DEPLOY.into());
        cfg.governance_clock = clock.clone();
        start(cfg)
    };
    let r = server(Some(committee(HOUR))).await.unwrap();
    let p = next_params(&r).await;
    let version = p["version"].as_u64().unwrap();
    let (id, hash) = propose(&r, &p).await;
    for m in [1, 3] {
        assert_eq!(approve(&r, id, m, &hash).await.0, 200);
    }
    const TABLES: [&str; 4] = [
        "governance",
        "proposals",
        "proposal_approvals",
        "param_versions",
    ];
    let saved = dir.join("saved-governance.db");
    let db = rusqlite::Connection::open(dir.join(pmargin_store::DB_FILE)).unwrap();
    db.execute("ATTACH ?1 AS saved", [saved.to_str().unwrap()])
        .unwrap();
    for t in TABLES {
        db.execute_batch(&format!("CREATE TABLE saved.{t} AS SELECT * FROM main.{t}"))
            .unwrap();
    }
    drop(db);
    clock.advance(HOUR);
    let (s, b) = send(
        reqwest::Client::new()
            .post(url(&r, &format!("/v1/proposals/{id}/activate")))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    r.stop().await.unwrap();
    let db = rusqlite::Connection::open(dir.join(pmargin_store::DB_FILE)).unwrap();
    db.execute("ATTACH ?1 AS saved", [saved.to_str().unwrap()])
        .unwrap();
    let versions = |db: &rusqlite::Connection| -> i64 {
        db.query_row("SELECT MAX(version) FROM main.param_versions", [], |r| {
            r.get(0)
        })
        .unwrap()
    };
    assert_eq!(versions(&db), version as i64, "the activation was stored");
    // Children before parents out, parents before children in (foreign keys).
    for t in TABLES.iter().rev() {
        db.execute_batch(&format!("DELETE FROM main.{t}")).unwrap();
    }
    for t in TABLES {
        db.execute_batch(&format!("INSERT INTO main.{t} SELECT * FROM saved.{t}"))
            .unwrap();
    }
    assert_eq!(versions(&db), version as i64 - 1, "put back as before");
    drop(db);

    let r = server(None).await.unwrap();
    assert_eq!(
        get(&r, "/v1/params").await["version"].as_u64(),
        Some(version)
    );
    let b = get(&r, &format!("/v1/proposals/{id}")).await;
    assert!(b["state"].to_string().contains("activated"), "{b}");
    let audit = get(&r, "/v1/audit").await;
    assert!(audit.to_string().contains("governance_open"), "{audit}");
    r.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn quorum_moments_cancellations_and_emergencies_survive_a_restart_and_a_lapse_replays() {
    let dir = temp_dir("episode");
    let clock = manual_clock();
    let r = dir_server(&dir, Some(committee(HOUR)), &clock).await;
    let base = get(&r, "/v1/params").await;
    let v = base["version"].as_u64().unwrap();
    let tight = scaled_params(&r, 1.5).await;
    let (s, b) = post(&r, "/v1/params/emergency", &emergency_for(DEPLOY, &tight)).await;
    assert_eq!(s, 200, "{b}");
    let expires_ms = b["expires_ms"].as_i64().unwrap();
    clock.advance(HOUR);
    let p = next_params(&r).await;
    let (id1, hash1) = propose(&r, &p).await;
    assert_eq!(approve(&r, id1, 1, &hash1).await.0, 200);
    clock.advance(HOUR);
    assert_eq!(approve(&r, id1, 2, &hash1).await.0, 200);
    let quorum_ms = clock_now(&clock);
    let mut p2 = p.clone();
    p2["underlyings"]["ETH"]["price_scan_range"] = json!(0.3);
    let (id2, hash2) = propose(&r, &p2).await;
    let (s, b) = post(
        &r,
        &format!("/v1/proposals/{id2}/cancel"),
        &json!({ "signatures": [cancel(1, &hash2), cancel(3, &hash2)] }),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    r.stop().await.unwrap();

    let r = dir_server(&dir, Some(committee(HOUR)), &clock).await;
    let b1 = get(&r, &format!("/v1/proposals/{id1}")).await;
    assert_eq!(b1["quorum_ms"].as_i64(), Some(quorum_ms), "{b1}");
    assert_eq!(b1["eligible_ms"].as_i64(), Some(quorum_ms + HOUR), "{b1}");
    let b2 = get(&r, &format!("/v1/proposals/{id2}")).await;
    assert_eq!(b2["status"], "cancelled", "{b2}");
    let g = get(&r, "/v1/governance").await;
    assert_eq!(g["deployment_id"], DEPLOY);
    assert_eq!(g["emergency"]["state"]["state"], "pending", "{g}");
    assert_eq!(g["emergency"]["expires_ms"].as_i64(), Some(expires_ms));
    // The window closes while proposal 1 waits out its timelock: the committee's set comes
    // back as version v + 2, which also supersedes proposal 1 (drafted as v + 2).
    clock.set(expires_ms);
    // (The server's lapse timer may get there first: either way the lapse happens once.)
    pmargin_server::governance::lapse_emergency(&r.state)
        .await
        .unwrap();
    assert_eq!(get(&r, "/v1/params").await["version"].as_u64(), Some(v + 2));
    assert_eq!(
        get(&r, &format!("/v1/proposals/{id1}")).await["status"],
        "superseded"
    );
    let lapsed = get(&r, "/v1/params").await;
    r.stop().await.unwrap();

    // The lapse is an event of the log: a restart replays it to the same parameters.
    let r = dir_server(&dir, None, &clock).await;
    assert_eq!(get(&r, "/v1/params").await, lapsed);
    let mut restored = base["params"].clone();
    restored["version"] = json!(v + 2);
    assert_eq!(lapsed["params"], restored);
    let g = get(&r, "/v1/governance").await;
    assert_eq!(g["emergency"]["state"]["state"], "lapsed", "{g}");
    r.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn clock_now(clock: &pmargin_governance::ManualClock) -> i64 {
    clock.now_ms()
}
