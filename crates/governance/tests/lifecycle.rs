//! Issue 15 item 8, on the state machine: the timelock counts from quorum, M members can
//! cancel, the guardian's set is bounded and lapses unless ratified, and every signature is
//! bound to the deployment. Each refusal leaves the state equal to what it was. Time is passed
//! in: nothing here sleeps.

mod common;

use common::*;
use pmargin_core::Params;
use pmargin_governance::*;

const HOUR: i64 = 3_600_000;

fn cancel_sig(member: usize, deployment: &str, p: &Proposal) -> Approval {
    Approval::sign_message(
        MEMBERS[member],
        &key(member as u8 + 1),
        &cancel_message(deployment, &p.hash),
    )
}

fn ratify_sig(member: usize, deployment: &str, params: &Params) -> Approval {
    Approval::sign_message(
        MEMBERS[member],
        &key(member as u8 + 1),
        &ratify_message(deployment, params),
    )
}

/// `setup()` with proposal 1 (BTC range 0.12) submitted at T0 and approved by ana and ben at
/// `quorum_ms`.
fn with_quorum(quorum_ms: i64) -> (Governance, Proposal) {
    let mut g = setup();
    let p = proposal(&g, 1, 0.12, T0);
    g.submit(p.clone(), T0).unwrap();
    g.approve(1, sign(0, &p), T0).unwrap();
    g.approve(1, sign(1, &p), quorum_ms).unwrap();
    (g, p)
}

#[test]
fn the_timelock_counts_from_the_threshold_not_from_submission() {
    // Submitted at T0, left unapproved for two timelocks, then approved in a burst: under a
    // timelock counted from submission it could activate at once.
    let late = T0 + 2 * TIMELOCK;
    let (mut g, _) = with_quorum(late);
    assert_eq!(g.proposal(1).unwrap().quorum_ms, Some(late));
    let before = g.clone();
    for now in [late, late + TIMELOCK - 1] {
        assert_eq!(
            g.activate(1, now),
            Err(GovError::Timelocked {
                proposal: 1,
                now_ms: now,
                eligible_ms: late + TIMELOCK
            })
        );
        assert_eq!(g, before);
    }
    assert_eq!(g.activate(1, late + TIMELOCK).unwrap().version, 2);
}

#[test]
fn a_cancelled_proposal_never_activates() {
    let (mut g, p) = with_quorum(T0);
    let by = g
        .cancel(
            1,
            &[cancel_sig(2, DEPLOY, &p), cancel_sig(0, DEPLOY, &p)],
            T0 + HOUR,
        )
        .unwrap();
    assert_eq!(by, ["ana", "chen"]);
    assert_eq!(
        g.proposal(1).unwrap().state,
        ProposalState::Cancelled {
            at_ms: T0 + HOUR,
            by: vec!["ana".into(), "chen".into()]
        }
    );
    let after_cancel = g.clone();
    // Long after the timelock, with every approval: never.
    assert!(matches!(
        g.activate(1, T0 + 100 * TIMELOCK),
        Err(GovError::NotPending { .. })
    ));
    assert!(matches!(
        g.approve(1, sign(2, &p), T0 + 2 * HOUR),
        Err(GovError::NotPending { .. })
    ));
    assert!(matches!(
        g.cancel(
            1,
            &[cancel_sig(0, DEPLOY, &p), cancel_sig(1, DEPLOY, &p)],
            T0
        ),
        Err(GovError::NotPending { .. })
    ));
    // Nor through recovery: the same parameters found in the log are recorded as recovered,
    // not as this proposal's activation.
    assert_eq!(g, after_cancel);
    assert_eq!(g.active(), &base());
    g.record_recovered(p.params.clone(), T0 + TIMELOCK).unwrap();
    assert!(matches!(
        g.proposal(1).unwrap().state,
        ProposalState::Cancelled { .. }
    ));
    assert_eq!(
        g.history().last().unwrap().activation,
        Activation::Recovered
    );
}

#[test]
fn cancellation_needs_m_valid_member_signatures_for_this_proposal_and_deployment() {
    let (mut g, p) = with_quorum(T0);
    let other = proposal(&g, 2, 0.15, T0);
    let before = g.clone();
    let outsider = Approval::sign_message("ana", &key(42), &cancel_message(DEPLOY, &p.hash));
    let approval_not_cancel = sign(1, &p);
    let cases: Vec<(Vec<Approval>, &str)> = vec![
        (vec![cancel_sig(0, DEPLOY, &p)], "one of two"),
        (
            vec![cancel_sig(0, DEPLOY, &p), cancel_sig(0, DEPLOY, &p)],
            "the same member twice",
        ),
        (
            vec![cancel_sig(0, DEPLOY, &p), outsider],
            "a non-member key under a member's name",
        ),
        (
            vec![cancel_sig(0, DEPLOY, &p), approval_not_cancel],
            "an approval presented as a cancellation",
        ),
        (
            vec![cancel_sig(0, DEPLOY, &p), cancel_sig(1, "staging", &p)],
            "a cancellation signed for staging",
        ),
        (
            vec![cancel_sig(0, DEPLOY, &p), cancel_sig(1, DEPLOY, &other)],
            "a cancellation of another proposal",
        ),
        (
            vec![
                cancel_sig(0, DEPLOY, &p),
                Approval::sign_message("mallory", &key(9), &cancel_message(DEPLOY, &p.hash)),
            ],
            "someone not on the committee",
        ),
    ];
    for (sigs, what) in cases {
        let err = g.cancel(1, &sigs, T0 + 1).unwrap_err();
        assert!(
            matches!(
                err,
                GovError::NotEnoughSignatures { .. }
                    | GovError::BadActSignature { .. }
                    | GovError::UnknownMember(_)
            ),
            "{what}: {err}"
        );
        assert_eq!(g, before, "{what}");
    }
    assert_eq!(
        g.cancel(
            99,
            &[cancel_sig(0, DEPLOY, &p), cancel_sig(1, DEPLOY, &p)],
            T0
        ),
        Err(GovError::UnknownProposal(99))
    );
    // An activated proposal is past cancelling.
    g.activate(1, T0 + TIMELOCK).unwrap();
    assert!(matches!(
        g.cancel(
            1,
            &[cancel_sig(0, DEPLOY, &p), cancel_sig(1, DEPLOY, &p)],
            T0 + TIMELOCK
        ),
        Err(GovError::NotPending { .. })
    ));
}

#[test]
fn approvals_signed_for_another_deployment_are_refused_and_stop_counting_on_a_move() {
    let mut g = setup();
    let p = proposal(&g, 1, 0.12, T0);
    g.submit(p.clone(), T0).unwrap();
    let before = g.clone();
    let staging = Approval::sign("ana", &key(1), "staging", &p);
    assert_eq!(
        g.approve(1, staging, T0),
        Err(GovError::BadSignature {
            proposal: 1,
            member: "ana".into()
        })
    );
    assert_eq!(g, before);
    // Approvals made for this deployment stop counting if the service is moved to another id,
    // and the quorum moment goes with them; the members may then approve again.
    g.approve(1, sign(0, &p), T0).unwrap();
    g.approve(1, sign(1, &p), T0).unwrap();
    g.set_deployment_id("prod-us-1", T0 + HOUR);
    assert_eq!(g.proposal(1).unwrap().quorum_ms, None);
    assert!(matches!(
        g.activate(1, T0 + 10 * TIMELOCK),
        Err(GovError::NoQuorum { approvals: 0, .. })
    ));
    for m in [0, 1] {
        let a = Approval::sign(MEMBERS[m], &key(m as u8 + 1), "prod-us-1", &p);
        g.approve(1, a, T0 + 2 * HOUR).unwrap();
    }
    assert_eq!(g.proposal(1).unwrap().approvals.len(), 2);
    assert_eq!(g.proposal(1).unwrap().quorum_ms, Some(T0 + 2 * HOUR));
    // The guardian's signature is bound too.
    let tight = next(g.active(), 0.15);
    let for_staging = sign_emergency(&key(GUARDIAN_SEED), "staging", &tight);
    assert_eq!(
        g.emergency(tight, for_staging, T0),
        Err(GovError::BadGuardianSignature)
    );
}

#[test]
fn the_approval_message_is_pinned() {
    // Members sign these bytes with their own tools: the layout must not drift.
    let hash = [0xab; 32];
    let m = approval_message("prod", &hash);
    let mut want = b"pmargin-proposal-v2".to_vec();
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 4]);
    want.extend_from_slice(b"prod");
    want.extend_from_slice(&hash);
    assert_eq!(m, want);
    assert_ne!(
        approval_message("prod", &hash),
        cancel_message("prod", &hash)
    );
    // The length prefix keeps ("ab", "c...") and ("a", "bc...") apart.
    assert_ne!(
        approval_message("a", &hash)[..],
        approval_message("", &hash)[..]
    );
}

#[test]
fn emergency_beyond_the_bound_is_refused_naming_the_field() {
    type Edit = fn(&mut Params);
    // base(): BTC range 0.10 (bound 0.20), ETH vol_scan_up 0.12 (0.24), BTC haircut 0.05
    // (value kept 0.95, at least 0.475: haircut at most 0.525), USDC haircut 0 (at most 0.5),
    // 7 price steps (at most 13), confidence 0.99 (tail 0.01, at least 0.005: at most 0.995).
    let cases: Vec<(Edit, &str)> = vec![
        (
            |p| p.underlyings.get_mut("BTC").unwrap().price_scan_range = 0.2001,
            "underlyings.BTC.price_scan_range",
        ),
        (
            |p| p.underlyings.get_mut("ETH").unwrap().vol_scan_up = 0.2401,
            "underlyings.ETH.vol_scan_up",
        ),
        (
            |p| p.collateral.get_mut("BTC").unwrap().haircut = 0.53,
            "collateral.BTC.haircut",
        ),
        (
            |p| p.collateral.get_mut("USDC").unwrap().haircut = 0.51,
            "collateral.USDC.haircut",
        ),
        (|p| p.grid.price_steps = 19, "grid.price_steps"),
        (
            |p| p.statistical.confidence = 0.996,
            "statistical.confidence",
        ),
        (|p| p.som_rate *= 2.01, "som_rate"),
    ];
    for (edit, field) in cases {
        let mut g = setup();
        let mut p = next(g.active(), 0.2);
        edit(&mut p);
        let sig = guardian_sign(&p);
        let before = g.clone();
        let err = g.emergency(p, sig, T0 + 1).unwrap_err();
        assert!(
            matches!(&err, GovError::BeyondEmergencyBound { field: f, .. } if f == field),
            "{field}: {err}"
        );
        assert_eq!(g, before, "{field}");
    }
    // Exactly at the bound is allowed.
    let mut g = setup();
    let mut p = next(g.active(), 0.2);
    p.collateral.get_mut("USDC").unwrap().haircut = 0.5;
    p.grid.price_steps = 13;
    p.statistical.confidence = 0.995;
    let sig = guardian_sign(&p);
    g.emergency(p, sig, T0).unwrap();
}

#[test]
fn the_guardian_may_not_turn_knobs_outside_the_conservative_rule() {
    let mut g = setup();
    let mut p = next(g.active(), 0.15);
    // A wider fill band lets fills further from the mark through: not the guardian's to give.
    p.underlyings.get_mut("BTC").unwrap().max_fill_deviation *= 2.0;
    let sig = guardian_sign(&p);
    let before = g.clone();
    let err = g.emergency(p, sig, T0).unwrap_err();
    assert_eq!(
        err.field(),
        Some("underlyings.BTC.max_fill_deviation"),
        "{err}"
    );
    assert_eq!(g, before);
}

#[test]
fn emergencies_in_a_row_are_bounded_against_the_base_and_keep_the_deadline() {
    let mut g = setup();
    let first = next(g.active(), 0.2);
    g.emergency(first.clone(), guardian_sign(&first), T0)
        .unwrap();
    let e = g.pending_emergency().unwrap().clone();
    assert_eq!(
        (e.version, e.base_version, e.started_ms, e.expires_ms),
        (2, 1, T0, T0 + DEFAULT_RATIFY_WINDOW_MS)
    );
    // 0.25 is under twice the active 0.20 but over twice the base 0.10.
    let compounding = next(g.active(), 0.25);
    let before = g.clone();
    let err = g
        .emergency(compounding.clone(), guardian_sign(&compounding), T0 + HOUR)
        .unwrap_err();
    assert_eq!(err.field(), Some("underlyings.BTC.price_scan_range"));
    assert_eq!(g, before);
    // A further tightening within the bound is taken, with the first one's deadline.
    let mut second = next(g.active(), 0.2);
    second.underlyings.get_mut("ETH").unwrap().price_scan_range = 0.2;
    g.emergency(second.clone(), guardian_sign(&second), T0 + HOUR)
        .unwrap();
    let e2 = g.pending_emergency().unwrap();
    assert_eq!(
        (e2.version, e2.base_version, e2.expires_ms),
        (3, 1, T0 + DEFAULT_RATIFY_WINDOW_MS)
    );
}

#[test]
fn an_unratified_emergency_set_lapses_back_to_the_base_set() {
    let mut g = setup();
    let tight = next(g.active(), 0.2);
    g.emergency(tight.clone(), guardian_sign(&tight), T0)
        .unwrap();
    let deadline = T0 + DEFAULT_RATIFY_WINDOW_MS;
    let before = g.clone();
    assert!(!g.emergency_due(deadline - 1));
    assert_eq!(g.expire_emergency(deadline - 1), None);
    assert_eq!(g, before);
    let restored = g.expire_emergency(deadline).unwrap();
    // The base set's content, as version 3.
    let mut want = base();
    want.version = 3;
    assert_eq!(restored, want);
    assert_eq!(g.active(), &want);
    assert_eq!(
        g.history().last().unwrap().activation,
        Activation::EmergencyLapsed {
            emergency_version: 2,
            base_version: 1
        }
    );
    assert_eq!(
        g.emergency_record().unwrap().state,
        EmergencyState::Lapsed {
            at_ms: deadline,
            restored_version: 3
        }
    );
    // Only once; and the lapsed set can no longer be ratified.
    assert_eq!(g.expire_emergency(deadline + 1), None);
    assert_eq!(
        g.ratify_emergency(
            &[ratify_sig(0, DEPLOY, &tight), ratify_sig(1, DEPLOY, &tight)],
            deadline
        ),
        Err(GovError::NoPendingEmergency)
    );
}

#[test]
fn a_ratified_emergency_set_stays_and_a_late_ratification_is_refused() {
    let window = 2 * HOUR;
    let mut c = committee(2).with_ratify_window(window).unwrap();
    c.timelock_ms = TIMELOCK;
    let mut g = Governance::new(c, base(), T0).unwrap();
    g.set_deployment_id(DEPLOY, T0);
    let tight = next(g.active(), 0.2);
    g.emergency(tight.clone(), guardian_sign(&tight), T0)
        .unwrap();
    let mut late = g.clone();
    let before = g.clone();
    // Signed for staging, by one member, by the guardian under a member's name: refused.
    let refused: Vec<Vec<Approval>> = vec![
        vec![
            ratify_sig(0, DEPLOY, &tight),
            ratify_sig(1, "staging", &tight),
        ],
        vec![ratify_sig(0, DEPLOY, &tight)],
        vec![
            ratify_sig(0, DEPLOY, &tight),
            Approval::sign_message("ben", &key(GUARDIAN_SEED), &ratify_message(DEPLOY, &tight)),
        ],
    ];
    for sigs in refused {
        assert!(g.ratify_emergency(&sigs, T0 + 1).is_err());
        assert_eq!(g, before);
    }
    let by = g
        .ratify_emergency(
            &[ratify_sig(1, DEPLOY, &tight), ratify_sig(2, DEPLOY, &tight)],
            T0 + window - 1,
        )
        .unwrap();
    assert_eq!(by, ["ben", "chen"]);
    assert_eq!(g.expire_emergency(T0 + 100 * window), None);
    assert_eq!(g.active(), &tight);
    // At the deadline the window is closed, even before the lapse is carried out.
    assert_eq!(
        late.ratify_emergency(
            &[ratify_sig(1, DEPLOY, &tight), ratify_sig(2, DEPLOY, &tight)],
            T0 + window
        ),
        Err(GovError::EmergencyExpired {
            version: 2,
            expires_ms: T0 + window,
            now_ms: T0 + window
        })
    );
    // A new emergency after ratification is bounded against the ratified set.
    let further = next(g.active(), 0.4);
    g.emergency(further.clone(), guardian_sign(&further), T0 + window)
        .unwrap();
    assert_eq!(g.pending_emergency().unwrap().base_version, 2);
}

#[test]
fn a_committee_approved_set_ends_a_pending_emergency() {
    let mut g = setup();
    let tight = next(g.active(), 0.2);
    g.emergency(tight.clone(), guardian_sign(&tight), T0)
        .unwrap();
    let p = proposal(&g, 1, 0.18, T0);
    g.submit(p.clone(), T0).unwrap();
    g.approve(1, sign(0, &p), T0).unwrap();
    g.approve(1, sign(2, &p), T0).unwrap();
    g.activate(1, T0 + TIMELOCK).unwrap();
    assert_eq!(
        g.emergency_record().unwrap().state,
        EmergencyState::Superseded { by_version: 3 }
    );
    assert_eq!(g.expire_emergency(T0 + 10 * TIMELOCK), None);
    assert_eq!(g.active_version(), 3);
}

#[test]
fn the_ratification_window_is_a_committee_setting_with_a_default() {
    let mut json = serde_json::to_value(committee(2)).unwrap();
    json.as_object_mut().unwrap().remove("ratify_window_ms");
    let c: Committee = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(c.ratify_window_ms, 86_400_000);
    json["ratify_window_ms"] = 0.into();
    assert!(serde_json::from_value::<Committee>(json).is_err());
}
