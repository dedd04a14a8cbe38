//! Governance attacks (issue 15 item 8), each tried over HTTP as the attacker would, each
//! shown refused with the active parameters and the event log exactly as before. The
//! governance clock is a manual one: a day-long window is crossed by moving it.

mod common;
mod gov_common;

use common::*;
use gov_common::*;
use pmargin_server::governance::lapse_emergency;
use serde_json::{json, Value};

/// Proposal approved by m1 and m2 (quorum) on a server with a one-hour timelock.
async fn approved_proposal() -> (
    pmargin_server::Running,
    std::sync::Arc<pmargin_governance::ManualClock>,
    u64,
    String,
) {
    let (r, clock) = gov_server(HOUR).await;
    let p = next_params(&r).await;
    let (id, hash) = propose(&r, &p).await;
    for m in [1, 2] {
        let (s, b) = approve(&r, id, m, &hash).await;
        assert_eq!(s, 200, "{b}");
    }
    (r, clock, id, hash)
}

#[tokio::test]
async fn activation_before_timelock_counted_from_threshold_is_refused() {
    let (r, clock) = gov_server(HOUR).await;
    let p = next_params(&r).await;
    let (id, hash) = propose(&r, &p).await;
    // The proposal sits unapproved for two timelocks; counted from submission it would be
    // ripe the moment its approvals arrive.
    clock.advance(2 * HOUR);
    assert_eq!(approve(&r, id, 1, &hash).await.0, 200);
    let (s, b) = approve(&r, id, 3, &hash).await;
    assert_eq!(s, 200, "{b}");
    let quorum_ms = b["proposal"]["quorum_ms"].as_i64().unwrap();
    assert_eq!(
        b["proposal"]["eligible_ms"].as_i64(),
        Some(quorum_ms + HOUR)
    );
    let before = snapshot(&r).await;
    for wait in [0, HOUR - 1] {
        clock.set(quorum_ms + wait);
        let (s, b) = activate(&r, id).await;
        assert_error(s, &b, 409, "activation inside the timelock");
        assert!(
            b["error"]["message"].as_str().unwrap().contains("timelock"),
            "{b}"
        );
        assert_eq!(snapshot(&r).await, before);
    }
    // One millisecond later it passes: the refusal was the timelock, nothing else.
    clock.set(quorum_ms + HOUR);
    let (s, b) = activate(&r, id).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        get(&r, "/v1/params").await["version"],
        p["version"],
        "the proposal is in force"
    );
    r.stop().await.unwrap();
}

#[tokio::test]
async fn cancelled_proposal_never_activates() {
    let (r, clock, id, hash) = approved_proposal().await;
    let before = snapshot(&r).await;
    let (s, b) = post(
        &r,
        &format!("/v1/proposals/{id}/cancel"),
        &json!({ "signatures": [cancel(3, &hash), cancel(1, &hash)] }),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "cancelled", "{b}");
    assert_eq!(b["state"]["by"], json!(["m1", "m3"]), "{b}");
    // Cancelling touches neither the parameters nor the engine's log.
    assert_eq!(snapshot(&r).await, before);
    clock.advance(10 * HOUR);
    let (s, b) = activate(&r, id).await;
    assert_error(s, &b, 409, "activating a cancelled proposal");
    let (s, b) = approve(&r, id, 3, &hash).await;
    assert_error(s, &b, 409, "approving a cancelled proposal");
    assert_eq!(snapshot(&r).await, before);
    assert_eq!(
        get(&r, &format!("/v1/proposals/{id}")).await["status"],
        "cancelled"
    );
    r.stop().await.unwrap();
}

#[tokio::test]
async fn non_committee_key_cannot_cancel() {
    let (r, clock, id, hash) = approved_proposal().await;
    let outsider = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let path = format!("/v1/proposals/{id}/cancel");
    let before = snapshot(&r).await;
    let attempts: Vec<(Value, &str)> = vec![
        (
            json!([cancel(1, &hash), cancel_by("m2", &outsider, DEPLOY, &hash)]),
            "an outsider's key under a member's name",
        ),
        (
            json!([
                cancel(1, &hash),
                cancel_by("mallory", &outsider, DEPLOY, &hash)
            ]),
            "an outsider under its own name",
        ),
        (
            json!([
                cancel(1, &hash),
                cancel_by("m2", &guardian_key(), DEPLOY, &hash)
            ]),
            "the guardian's key (not a member)",
        ),
        (json!([cancel(1, &hash)]), "one member of the two required"),
        (
            json!([cancel(1, &hash), cancel(1, &hash)]),
            "one member twice",
        ),
        (
            json!([cancel(1, &hash), approval(2, &hash)]),
            "an approval replayed as a cancellation",
        ),
    ];
    for (signatures, what) in attempts {
        let (s, b) = post(&r, &path, &json!({ "signatures": signatures })).await;
        assert_error(s, &b, 403, what);
        assert_eq!(
            get(&r, &format!("/v1/proposals/{id}")).await["status"],
            "pending",
            "{what}"
        );
        assert_eq!(snapshot(&r).await, before, "{what}");
    }
    // A read-only API key may not even present genuine signatures.
    let reader = key(&r, "read_only", &[]).await;
    let (s, b) = send(
        reqwest::Client::new()
            .post(url(&r, &path))
            .bearer_auth(&reader)
            .json(&json!({ "signatures": [cancel(1, &hash), cancel(2, &hash)] })),
    )
    .await;
    assert_error(s, &b, 403, "a read-only key");
    assert_eq!(snapshot(&r).await, before);
    // The proposal was never cancelled: it still activates after its timelock.
    clock.advance(HOUR);
    assert_eq!(activate(&r, id).await.0, 200);
    r.stop().await.unwrap();
}

#[tokio::test]
async fn guardian_emergency_set_beyond_bound_is_refused() {
    let (r, _clock) = gov_server(HOUR).await;
    let before = snapshot(&r).await;
    // Tighter in every knob, but BTC's scan range at 2.5x the active one (the bound is 2x).
    let p = scaled_params(&r, 2.5).await;
    let (s, b) = post(&r, "/v1/params/emergency", &emergency_for(DEPLOY, &p)).await;
    assert_error(s, &b, 422, "scan range beyond twice the active");
    assert_eq!(
        b["error"]["field"], "underlyings.BTC.price_scan_range",
        "{b}"
    );
    assert_eq!(snapshot(&r).await, before);
    // Exactly twice is within the bound.
    let p = scaled_params(&r, 2.0).await;
    let (s, b) = post(&r, "/v1/params/emergency", &emergency_for(DEPLOY, &p)).await;
    assert_eq!(s, 200, "{b}");
    r.stop().await.unwrap();
}

#[tokio::test]
async fn guardian_emergencies_in_a_row_cannot_compound_beyond_the_bound() {
    let (r, clock) = gov_server(HOUR).await;
    let first = scaled_params(&r, 2.0).await;
    let (s, b) = post(&r, "/v1/params/emergency", &emergency_for(DEPLOY, &first)).await;
    assert_eq!(s, 200, "{b}");
    let expires_ms = b["expires_ms"].as_i64().unwrap();
    let before = snapshot(&r).await;
    clock.advance(HOUR);
    // Twice the active emergency set is four times the committee's set.
    let second = scaled_params(&r, 2.0).await;
    let (s, b) = post(&r, "/v1/params/emergency", &emergency_for(DEPLOY, &second)).await;
    assert_error(s, &b, 422, "a second doubling");
    assert_eq!(
        b["error"]["field"], "underlyings.BTC.price_scan_range",
        "{b}"
    );
    assert_eq!(snapshot(&r).await, before);
    let g = get(&r, "/v1/governance").await;
    assert_eq!(
        g["emergency"]["expires_ms"].as_i64(),
        Some(expires_ms),
        "{g}"
    );
    r.stop().await.unwrap();
}

#[tokio::test]
async fn unratified_emergency_set_expires() {
    let (r, clock) = gov_server(HOUR).await;
    let base = get(&r, "/v1/params").await;
    let base_version = base["version"].as_u64().unwrap();
    let tight = scaled_params(&r, 1.5).await;
    let (s, b) = post(&r, "/v1/params/emergency", &emergency_for(DEPLOY, &tight)).await;
    assert_eq!(s, 200, "{b}");
    let expires_ms = b["expires_ms"].as_i64().unwrap();
    assert_eq!(
        expires_ms,
        clock_now(&clock) + 86_400_000,
        "24 h by default"
    );
    // One millisecond before the deadline nothing lapses.
    clock.set(expires_ms - 1);
    let in_force = snapshot(&r).await;
    assert_eq!(lapse_emergency(&r.state).await.unwrap(), None);
    assert_eq!(snapshot(&r).await, in_force);
    // At the deadline the committee's set is back, as the next version, through the log.
    clock.set(expires_ms);
    lapse_emergency(&r.state).await.unwrap();
    let after = snapshot(&r).await;
    assert_eq!(after.params["version"].as_u64(), Some(base_version + 2));
    let mut restored = base["params"].clone();
    restored["version"] = json!(base_version + 2);
    assert_eq!(after.params["params"], restored);
    assert_eq!(after.log.len(), in_force.log.len() + 1, "one event");
    let event = serde_json::to_value(&after.log.last().unwrap().event).unwrap();
    assert_eq!(event["type"], "activate_params", "{event}");
    assert_eq!(after.log.last().unwrap().key_id, "governance");
    let g = get(&r, "/v1/governance").await;
    assert_eq!(g["emergency"]["state"]["state"], "lapsed", "{g}");
    // The attack: ratifying the lapsed set after the fact. Refused, nothing moves.
    let (s, b) = post(
        &r,
        "/v1/params/emergency/ratify",
        &json!({ "signatures": [ratify_for(1, DEPLOY, &tight), ratify_for(2, DEPLOY, &tight)] }),
    )
    .await;
    assert_error(s, &b, 409, "ratifying a lapsed set");
    assert_eq!(snapshot(&r).await, after);
    r.stop().await.unwrap();
}

async fn ratify(r: &pmargin_server::Running, signatures: Value) -> (u16, Value) {
    post(
        r,
        "/v1/params/emergency/ratify",
        &json!({ "signatures": signatures }),
    )
    .await
}

fn clock_now(clock: &pmargin_governance::ManualClock) -> i64 {
    use pmargin_governance::Clock;
    clock.now_ms()
}

#[tokio::test]
async fn emergency_ratified_in_time_stays_and_a_foreign_ratification_is_refused() {
    let (r, clock) = gov_server(HOUR).await;
    let tight = scaled_params(&r, 1.5).await;
    let (s, b) = post(&r, "/v1/params/emergency", &emergency_for(DEPLOY, &tight)).await;
    assert_eq!(s, 200, "{b}");
    let expires_ms = b["expires_ms"].as_i64().unwrap();
    let before = snapshot(&r).await;
    // One member; a staging signature; the guardian ratifying itself: refused.
    let guardian_as_m2 = {
        use ed25519_dalek::Signer;
        let sig = guardian_key().sign(&pmargin_governance::ratify_message(DEPLOY, &parse(&tight)));
        json!({ "member": "m2", "signature": hex::encode(sig.to_bytes()) })
    };
    let (s, b) = ratify(&r, json!([ratify_for(1, DEPLOY, &tight), guardian_as_m2])).await;
    assert_error(s, &b, 403, "the guardian under a member's name");
    let (s, b) = ratify(&r, json!([ratify_for(1, DEPLOY, &tight)])).await;
    assert_error(s, &b, 403, "one member");
    let (s, b) = ratify(
        &r,
        json!([
            ratify_for(1, DEPLOY, &tight),
            ratify_for(2, "pmargin-test-staging", &tight)
        ]),
    )
    .await;
    assert_error(s, &b, 403, "a staging ratification");
    assert_eq!(snapshot(&r).await, before);
    // In time, by two members: it stays past the deadline.
    clock.set(expires_ms - 1);
    let (s, b) = ratify(
        &r,
        json!([ratify_for(2, DEPLOY, &tight), ratify_for(3, DEPLOY, &tight)]),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    clock.set(expires_ms + 10 * HOUR);
    assert_eq!(lapse_emergency(&r.state).await.unwrap(), None);
    assert_eq!(snapshot(&r).await, before);
    r.stop().await.unwrap();
}

#[tokio::test]
async fn approval_signed_for_another_deployment_is_refused() {
    let (r, clock) = gov_server(HOUR).await;
    let p = next_params(&r).await;
    let (id, hash) = propose(&r, &p).await;
    let path = format!("/v1/proposals/{id}/approvals");
    let before = snapshot(&r).await;
    // Genuine member signatures, collected on staging for the same proposal content.
    for m in [1, 2] {
        let (s, b) = post(&r, &path, &approval_for(m, "pmargin-test-staging", &hash)).await;
        assert_error(s, &b, 403, "a staging approval");
    }
    let record = get(&r, &format!("/v1/proposals/{id}")).await;
    assert_eq!(record["approvals"], json!([]), "{record}");
    assert_eq!(record["deployment_id"], DEPLOY, "{record}");
    clock.advance(10 * HOUR);
    let (s, b) = activate(&r, id).await;
    assert_error(s, &b, 409, "no quorum from staging approvals");
    assert_eq!(snapshot(&r).await, before);
    // The guardian's signature is bound the same way.
    let tight = scaled_params(&r, 1.5).await;
    let (s, b) = post(
        &r,
        "/v1/params/emergency",
        &emergency_for("pmargin-test-staging", &tight),
    )
    .await;
    assert_error(s, &b, 403, "a staging emergency");
    // And a cancellation.
    let (s, b) = post(
        &r,
        &format!("/v1/proposals/{id}/cancel"),
        &json!({ "signatures": [
            cancel_by("m1", &member_key(1), "pmargin-test-staging", &hash),
            cancel_by("m2", &member_key(2), "pmargin-test-staging", &hash),
        ] }),
    )
    .await;
    assert_error(s, &b, 403, "a staging cancellation");
    assert_eq!(snapshot(&r).await, before);
    r.stop().await.unwrap();
}
