//! The governance checks of the risk service (issue 5, "How it is checked"): a proposal
//! without quorum, before its timelock, with a forged or duplicate signature, or with
//! out-of-range values is never activated; the guardian may only tighten. Time is passed in:
//! nothing here sleeps.

mod common;

use common::*;
use pmargin_core::{Market, Params, Portfolio};
use pmargin_governance::*;
use std::collections::BTreeSet;

#[test]
fn happy_path_activates_at_exactly_quorum_plus_timelock_with_m_approvals() {
    let mut g = setup();
    let p = proposal(&g, 7, 0.12, T0 + 5);
    let hash = p.hash;
    assert_eq!(g.submit(p.clone(), T0 + 5).unwrap(), 7);
    assert_eq!(g.approve(7, sign(0, &p), T0 + 10).unwrap(), 1);
    assert_eq!(g.proposal(7).unwrap().quorum_ms, None);
    // The second approval, an hour later, reaches 2 of 3: the timelock starts there.
    let quorum = T0 + 10 + 3_600_000;
    assert_eq!(g.approve(7, sign(2, &p), quorum).unwrap(), 2);
    assert_eq!(g.proposal(7).unwrap().quorum_ms, Some(quorum));
    let eligible = quorum + TIMELOCK;
    assert!(matches!(
        g.activate(7, eligible - 1),
        Err(GovError::Timelocked { eligible_ms, .. }) if eligible_ms == eligible
    ));
    assert_eq!(g.active_version(), 1);
    let active = g.activate(7, eligible).unwrap();
    assert_eq!(active.version, 2);
    assert_eq!(active.underlyings["BTC"].price_scan_range, 0.12);
    assert_eq!(g.active(), &active);
    let versions: Vec<u64> = g.history().iter().map(|r| r.version).collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(
        g.history()[1].activation,
        Activation::Proposal {
            id: 7,
            approvers: vec!["ana".into(), "chen".into()]
        }
    );
    assert_eq!(g.history()[1].activated_ms, eligible);
    assert_eq!(
        g.proposal(7).unwrap().state,
        ProposalState::Activated { at_ms: eligible }
    );
    assert_eq!(g.proposal(7).unwrap().proposal.hash, hash);
    // Once activated it is no longer pending: no more approvals, no second activation.
    assert!(matches!(
        g.approve(7, sign(1, &p), T0),
        Err(GovError::NotPending { .. })
    ));
    assert!(matches!(
        g.activate(7, eligible + 1),
        Err(GovError::NotPending { .. })
    ));
}

#[test]
fn a_proposal_without_quorum_is_never_activated() {
    let mut g = setup();
    let p = proposal(&g, 1, 0.12, T0);
    g.submit(p.clone(), T0).unwrap();
    // No approval at all, long after the timelock.
    assert_eq!(
        g.activate(1, T0 + 100 * TIMELOCK),
        Err(GovError::NoQuorum {
            proposal: 1,
            approvals: 0,
            threshold: 2
        })
    );
    g.approve(1, sign(1, &p), T0).unwrap();
    assert_eq!(
        g.activate(1, i64::MAX),
        Err(GovError::NoQuorum {
            proposal: 1,
            approvals: 1,
            threshold: 2
        })
    );
    assert_eq!(g.active(), &base());
    assert_eq!(g.history().len(), 1);
    // A unanimous committee needs all three.
    let mut g3 = Governance::new(committee(3), base(), T0).unwrap();
    g3.set_deployment_id(DEPLOY, T0);
    let p = proposal(&g3, 1, 0.12, T0);
    g3.submit(p.clone(), T0).unwrap();
    g3.approve(1, sign(0, &p), T0).unwrap();
    g3.approve(1, sign(1, &p), T0).unwrap();
    assert!(matches!(
        g3.activate(1, T0 + TIMELOCK),
        Err(GovError::NoQuorum { .. })
    ));
    g3.approve(1, sign(2, &p), T0).unwrap();
    assert!(g3.activate(1, T0 + TIMELOCK).is_ok());
}

#[test]
fn a_proposal_before_its_timelock_is_never_activated() {
    let mut g = setup();
    // Drafted long ago, submitted now: the timelock runs from submission, so backdating the
    // draft does not shorten it.
    let p = proposal(&g, 3, 0.12, T0 - 10 * TIMELOCK);
    let submitted = T0 + 1_000;
    g.submit(p.clone(), submitted).unwrap();
    g.approve(3, sign(0, &p), submitted).unwrap();
    g.approve(3, sign(1, &p), submitted).unwrap();
    // A third approval after quorum does not move the start of the timelock.
    g.approve(3, sign(2, &p), submitted + 7).unwrap();
    for now in [
        submitted,
        submitted + TIMELOCK / 2,
        submitted + TIMELOCK - 1,
    ] {
        assert_eq!(
            g.activate(3, now),
            Err(GovError::Timelocked {
                proposal: 3,
                now_ms: now,
                eligible_ms: submitted + TIMELOCK
            })
        );
    }
    assert_eq!(g.active_version(), 1);
    assert!(g.activate(3, submitted + TIMELOCK).is_ok());
    // A proposal that claims to be created after it is submitted is refused.
    let p = proposal(&g, 4, 0.13, T0 + 5 * TIMELOCK);
    assert!(matches!(
        g.submit(p, T0 + 2 * TIMELOCK),
        Err(GovError::CreatedInFuture { .. })
    ));
}

#[test]
fn forged_signatures_are_rejected_and_never_count() {
    let mut g = setup();
    let p = proposal(&g, 1, 0.12, T0);
    let other = proposal(&g, 2, 0.15, T0);
    g.submit(p.clone(), T0).unwrap();
    g.submit(other.clone(), T0).unwrap();
    let bad = |g: &mut Governance, a: Approval| g.approve(1, a, T0);
    // Signed by a key that is no member's, under a member's name.
    let outsider = Approval::sign("ana", &key(42), DEPLOY, &p);
    assert_eq!(
        bad(&mut g, outsider),
        Err(GovError::BadSignature {
            proposal: 1,
            member: "ana".into()
        })
    );
    // Signed by the guardian, who is no committee member.
    let guardian = Approval::sign("ben", &key(GUARDIAN_SEED), DEPLOY, &p);
    assert!(matches!(
        bad(&mut g, guardian),
        Err(GovError::BadSignature { .. })
    ));
    // Ben's genuine signature presented as Ana's.
    let mut swapped = sign(1, &p);
    swapped.member = "ana".into();
    assert!(matches!(
        bad(&mut g, swapped),
        Err(GovError::BadSignature { .. })
    ));
    // One bit flipped, in each half of the signature.
    for byte in [0, 40] {
        let mut flipped = sign(0, &p);
        flipped.signature[byte] ^= 1;
        assert!(matches!(
            bad(&mut g, flipped),
            Err(GovError::BadSignature { .. })
        ));
    }
    // A genuine signature of another proposal.
    assert!(matches!(
        bad(&mut g, sign(0, &other)),
        Err(GovError::BadSignature { .. })
    ));
    // Without the domain tag: the raw hash signed directly.
    use ed25519_dalek::Signer;
    let raw = Approval {
        member: "ana".into(),
        signature: key(1).sign(&p.hash).to_bytes(),
    };
    assert!(matches!(
        bad(&mut g, raw),
        Err(GovError::BadSignature { .. })
    ));
    // Someone who is not on the committee at all.
    assert_eq!(
        bad(&mut g, Approval::sign("mallory", &key(9), DEPLOY, &p)),
        Err(GovError::UnknownMember("mallory".into()))
    );
    assert_eq!(
        g.approve(99, sign(0, &p), T0),
        Err(GovError::UnknownProposal(99))
    );
    assert!(g.proposal(1).unwrap().approvals.is_empty());
    assert!(matches!(
        g.activate(1, T0 + TIMELOCK),
        Err(GovError::NoQuorum { approvals: 0, .. })
    ));
    // The genuine ones do count.
    g.approve(1, sign(0, &p), T0).unwrap();
    g.approve(1, sign(1, &p), T0).unwrap();
    assert!(g.activate(1, T0 + TIMELOCK).is_ok());
}

#[test]
fn a_duplicate_approval_does_not_count_twice() {
    let mut g = setup();
    let p = proposal(&g, 1, 0.12, T0);
    g.submit(p.clone(), T0).unwrap();
    assert_eq!(g.approve(1, sign(2, &p), T0).unwrap(), 1);
    assert_eq!(
        g.approve(1, sign(2, &p), T0),
        Err(GovError::DuplicateApproval {
            proposal: 1,
            member: "chen".into()
        })
    );
    assert_eq!(g.proposal(1).unwrap().approvals.len(), 1);
    assert!(matches!(
        g.activate(1, T0 + TIMELOCK),
        Err(GovError::NoQuorum { approvals: 1, .. })
    ));
}

#[test]
fn tampered_stored_approvals_are_not_counted() {
    // A store edited by hand: the same approval twice and a forged one. Activation re-checks.
    let g = setup();
    let mut g_json = serde_json::to_value(&g).unwrap();
    let p = proposal(&g, 1, 0.12, T0);
    let mut forged = sign(1, &p);
    forged.signature[3] ^= 0x80;
    let record = ProposalRecord {
        proposal: p.clone(),
        submitted_ms: T0,
        approvals: vec![sign(0, &p), sign(0, &p), forged],
        quorum_ms: Some(T0),
        state: ProposalState::Pending,
    };
    g_json["proposals"]["1"] = serde_json::to_value(&record).unwrap();
    let mut g: Governance = serde_json::from_value(g_json).unwrap();
    g.set_deployment_id(DEPLOY, T0);
    assert!(matches!(
        g.activate(1, T0 + TIMELOCK),
        Err(GovError::NoQuorum { approvals: 1, .. })
    ));
}

#[test]
fn out_of_range_values_are_rejected_naming_the_field() {
    let active = base();
    type Edit = fn(&mut Params);
    let cases: Vec<(Edit, &str)> = vec![
        (
            |p| p.underlyings.get_mut("BTC").unwrap().price_scan_range = 1.5,
            "underlyings.BTC.price_scan_range",
        ),
        (
            |p| p.underlyings.get_mut("BTC").unwrap().price_scan_range = 0.0,
            "underlyings.BTC.price_scan_range",
        ),
        (
            |p| p.underlyings.get_mut("ETH").unwrap().vol_scan_down = 1.2,
            "underlyings.ETH.vol_scan_down",
        ),
        (
            |p| p.underlyings.get_mut("ETH").unwrap().vol_scan_up = 7.0,
            "underlyings.ETH.vol_scan_up",
        ),
        (
            |p| p.underlyings.get_mut("BTC").unwrap().standard_mm_rate = 0.2,
            "underlyings.BTC.standard_mm_rate",
        ),
        (
            |p| p.underlyings.get_mut("BTC").unwrap().price_scan_range = f64::NAN,
            "underlyings.BTC.price_scan_range",
        ),
        (
            |p| p.collateral.get_mut("BTC").unwrap().haircut = 1.0,
            "collateral.BTC.haircut",
        ),
        (
            |p| p.collateral.get_mut("ETH").unwrap().haircut = -0.1,
            "collateral.ETH.haircut",
        ),
        (|p| p.mm_fraction = 0.0, "mm_fraction"),
        (|p| p.mm_fraction = 1.01, "mm_fraction"),
        (|p| p.som_rate = 2.0, "som_rate"),
        (|p| p.short_option_mm = 0.2, "short_option_mm"),
        (|p| p.short_option_im_floor = 0.5, "short_option_im_floor"),
        (|p| p.grid.extreme_multiple = 0.5, "grid.extreme_multiple"),
        (
            |p| p.grid.extreme_multiple = 9.0,
            "underlyings.ETH.price_scan_range",
        ),
        (|p| p.grid.price_steps = 8, "grid.price_steps"),
        (|p| p.statistical.confidence = 1.0, "statistical.confidence"),
        (|p| p.version = 3, "version"),
        (|p| p.version = 1, "version"),
        (
            |p| {
                p.underlyings.remove("ETH");
                p.collateral.remove("ETH");
            },
            "underlyings.ETH",
        ),
        (
            |p| {
                p.collateral.remove("ETH");
            },
            "collateral.ETH",
        ),
    ];
    for (edit, field) in cases {
        let mut p = next(&active, 0.10);
        edit(&mut p);
        let err = Proposal::new(1, p.clone(), "why", "who", T0, Some(&active)).unwrap_err();
        assert_eq!(err.field(), Some(field), "{err}");
        assert!(err.to_string().contains(field), "{err}");
        // A proposal built without checking against the active set is checked on submit.
        let mut g = setup();
        if let Ok(unchecked) = Proposal::new(1, p, "why", "who", T0, None) {
            let err = g.submit(unchecked, T0).unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
        }
        assert!(g.proposal(1).is_none());
    }
    let ok = next(&active, 0.12);
    for (rationale, proposer, field) in [(" ", "who", "rationale"), ("why", "", "proposer")] {
        let err = Proposal::new(1, ok.clone(), rationale, proposer, T0, Some(&active)).unwrap_err();
        assert_eq!(err.field(), Some(field));
    }
}

#[test]
fn removals_must_be_explicit_and_real() {
    let active = base();
    let mut p = next(&active, 0.10);
    p.underlyings.remove("ETH");
    p.collateral.remove("ETH");
    let both: BTreeSet<String> = ["underlyings.ETH".into(), "collateral.ETH".into()].into();
    let ok = Proposal::with_removals(1, p.clone(), "delist ETH", "risk", T0, both, Some(&active));
    assert!(ok.is_ok());
    let half: BTreeSet<String> = ["underlyings.ETH".into()].into();
    let err =
        Proposal::with_removals(1, p, "delist ETH", "risk", T0, half, Some(&active)).unwrap_err();
    assert_eq!(err.field(), Some("collateral.ETH"));
    let bogus: BTreeSet<String> = ["underlyings.BTC".into()].into();
    let err = Proposal::with_removals(1, next(&active, 0.1), "x", "y", T0, bogus, Some(&active))
        .unwrap_err();
    assert_eq!(err.field(), Some("removals"));
}

#[test]
fn a_proposal_altered_after_hashing_is_refused() {
    let mut g = setup();
    let mut p = proposal(&g, 1, 0.12, T0);
    let signed_hash = p.hash;
    p.params
        .underlyings
        .get_mut("BTC")
        .unwrap()
        .price_scan_range = 0.05;
    assert_eq!(g.submit(p.clone(), T0), Err(GovError::HashMismatch(1)));
    p.hash = p.compute_hash();
    assert_ne!(p.hash, signed_hash);
    // Every field is in the hash.
    let q = proposal(&g, 1, 0.12, T0);
    let variants = [
        Proposal { id: 2, ..q.clone() },
        Proposal {
            created_ms: T0 + 1,
            ..q.clone()
        },
        Proposal {
            rationale: "other".into(),
            ..q.clone()
        },
        Proposal {
            proposer: "other".into(),
            ..q.clone()
        },
        Proposal {
            removals: ["x".to_string()].into(),
            ..q.clone()
        },
    ];
    for v in variants {
        assert_ne!(v.compute_hash(), q.hash);
    }
    // The parameters' file name is not part of the content.
    let mut renamed = q.clone();
    renamed.params.source = "elsewhere.json".into();
    assert_eq!(renamed.compute_hash(), q.hash);
    assert!(g.submit(q, T0).is_ok());
    assert_eq!(
        g.submit(proposal(&g, 1, 0.13, T0), T0),
        Err(GovError::DuplicateProposal(1))
    );
}

#[test]
fn the_proposal_hash_encoding_is_pinned() {
    // Signatures outlive software versions: the encoding must not drift.
    let p = Proposal::new(1, next(&base(), 0.12), "r", "p", 0, Some(&base())).unwrap();
    assert_eq!(p.hash_hex(), PINNED_HASH);
}
const PINNED_HASH: &str = "74998bc6dac5ab0ad9e494dd7019251d3487a813bff98a6dd82ca4c570088c81";

#[test]
fn emergency_more_conservative_is_accepted_at_once() {
    let mut g = setup();
    let pending = proposal(&g, 5, 0.11, T0);
    g.submit(pending, T0).unwrap();
    let mut tight = next(g.active(), 0.15);
    tight.collateral.get_mut("ETH").unwrap().haircut = 0.20;
    tight.mm_fraction = 0.8;
    tight.grid.price_steps = 13; // contains the 7 steps
    tight.grid.extreme_cover = 0.5;
    let sig = guardian_sign(&tight);
    let now = T0 + 1;
    let active = g.emergency(tight.clone(), sig, now).unwrap();
    assert_eq!(active, tight);
    assert_eq!(g.active_version(), 2);
    let last = g.history().last().unwrap();
    assert_eq!(
        (last.activated_ms, &last.activation),
        (now, &Activation::Emergency)
    );
    // The pending proposal for version 2 can no longer pass.
    assert_eq!(
        g.proposal(5).unwrap().state,
        ProposalState::Superseded { by_version: 2 }
    );
    // Replaying the same signed set is refused: its version is no longer the next one.
    assert_eq!(
        g.emergency(tight, sig, now + 1).unwrap_err().field(),
        Some("version")
    );
    // An unchanged set (next version) is allowed: nothing is loosened.
    let same = next(g.active(), 0.15);
    let sig = guardian_sign(&same);
    assert!(g.emergency(same, sig, now + 2).is_ok());
}

#[test]
fn emergency_less_conservative_is_refused_naming_the_field() {
    type Edit = fn(&mut Params);
    let cases: Vec<(Edit, &str)> = vec![
        (
            |p| p.underlyings.get_mut("ETH").unwrap().vol_scan_down = 0.11,
            "underlyings.ETH.vol_scan_down",
        ),
        (
            |p| p.underlyings.get_mut("BTC").unwrap().standard_im_rate = 0.09,
            "underlyings.BTC.standard_im_rate",
        ),
        (
            |p| p.collateral.get_mut("BTC").unwrap().haircut = 0.04,
            "collateral.BTC.haircut",
        ),
        (|p| p.mm_fraction = 0.7, "mm_fraction"),
        (|p| p.som_rate = 0.005, "som_rate"),
        (|p| p.short_option_mm = 0.07, "short_option_mm"),
        (|p| p.grid.extreme_cover = 0.3, "grid.extreme_cover"),
        (
            |p| p.grid.decoupling_fraction = 0.4,
            "grid.decoupling_fraction",
        ),
        (|p| p.grid.price_steps = 9, "grid.price_steps"),
        (
            |p| p.statistical.confidence = 0.975,
            "statistical.confidence",
        ),
        (
            |p| p.statistical.ewma_lambda = 0.97,
            "statistical.ewma_lambda",
        ),
        (
            |p| {
                p.underlyings
                    .insert("SOL".into(), p.underlyings["BTC"].clone());
            },
            "underlyings.SOL",
        ),
        (
            |p| {
                p.collateral.get_mut("ETH").unwrap().underlying = Some("BTC".into());
            },
            "collateral.ETH.underlying",
        ),
    ];
    for (edit, field) in cases {
        let mut g = setup();
        // BTC's range goes up (tighter) in every case: the loosening elsewhere is still found.
        let mut p = next(g.active(), 0.2);
        edit(&mut p);
        let sig = guardian_sign(&p);
        let err = g.emergency(p, sig, T0 + 1).unwrap_err();
        assert!(
            matches!(&err, GovError::NotMoreConservative { field: f, .. } if f == field),
            "{field}: {err}"
        );
        assert!(err.to_string().contains(field));
        assert_eq!(g.active(), &base());
        assert_eq!(g.history().len(), 1);
    }
    // Removing an underlying is not a tightening either (and fails the proposal rules first).
    let mut g = setup();
    let mut p = next(g.active(), 0.2);
    p.underlyings.remove("ETH");
    p.collateral.remove("ETH");
    let sig = guardian_sign(&p);
    assert_eq!(
        g.emergency(p, sig, T0).unwrap_err().field(),
        Some("underlyings.ETH")
    );
}

#[test]
fn emergency_with_a_forged_guardian_signature_is_refused() {
    let mut g = setup();
    let tight = next(g.active(), 0.2);
    // A member's key is not the guardian's.
    let by_member = sign_emergency(&key(1), DEPLOY, &tight);
    assert_eq!(
        g.emergency(tight.clone(), by_member, T0),
        Err(GovError::BadGuardianSignature)
    );
    // The guardian's signature on a different set.
    let other = next(g.active(), 0.25);
    let for_other = guardian_sign(&other);
    assert_eq!(
        g.emergency(tight.clone(), for_other, T0),
        Err(GovError::BadGuardianSignature)
    );
    // A flipped bit.
    let mut flipped = guardian_sign(&tight);
    flipped[63] ^= 0x01;
    assert_eq!(
        g.emergency(tight.clone(), flipped, T0),
        Err(GovError::BadGuardianSignature)
    );
    // The guardian's approval-style signature (other domain) does not pass either.
    use ed25519_dalek::Signer;
    let wrong_domain = key(GUARDIAN_SEED).sign(&emergency_hash(&tight)).to_bytes();
    assert_eq!(
        g.emergency(tight.clone(), wrong_domain, T0),
        Err(GovError::BadGuardianSignature)
    );
    assert_eq!(g.active_version(), 1);
    // Without a guardian there is no emergency path.
    let mut c = committee(2);
    c.guardian = None;
    let mut g = Governance::new(c, base(), T0).unwrap();
    g.set_deployment_id(DEPLOY, T0);
    let sig = guardian_sign(&tight);
    assert_eq!(g.emergency(tight, sig, T0), Err(GovError::NoGuardian));
}

#[test]
fn committees_are_validated() {
    let c = committee(2);
    let m = c.members.clone();
    let g = c.guardian;
    let err = |r: Result<Committee, GovError>| match r {
        Err(GovError::InvalidCommittee(msg)) => msg,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(err(Committee::new(m.clone(), 0, 1, g)).contains("threshold"));
    assert!(err(Committee::new(m.clone(), 4, 1, g)).contains("threshold"));
    assert!(err(Committee::new(vec![], 1, 1, g)).contains("member"));
    assert!(err(Committee::new(m.clone(), 2, -1, g)).contains("timelock"));
    let mut dup_id = m.clone();
    dup_id[1].id = "ana".into();
    assert!(err(Committee::new(dup_id, 2, 1, g)).contains("ana"));
    let mut dup_key = m.clone();
    dup_key[2].public_key = dup_key[0].public_key;
    assert!(err(Committee::new(dup_key, 2, 1, g)).contains("chen"));
    assert!(err(Committee::new(m.clone(), 2, 1, Some(m[0].public_key))).contains("guardian"));
    // The identity point is a weak key: anyone can forge signatures for it.
    let mut weak = m.clone();
    let mut identity = [0u8; 32];
    identity[0] = 1;
    weak[0].public_key = identity;
    assert!(err(Committee::new(weak, 2, 1, g)).contains("ana"));
    assert!(Committee::new(m, 3, 0, None).is_ok());
    // Reading a stored committee checks it too.
    let mut json = serde_json::to_value(committee(2)).unwrap();
    json["threshold"] = 5.into();
    assert!(serde_json::from_value::<Committee>(json).is_err());
}

#[test]
fn state_round_trips_through_json_with_hex_keys() {
    let mut g = setup();
    let p = proposal(&g, 1, 0.12, T0);
    g.submit(p.clone(), T0).unwrap();
    g.approve(1, sign(0, &p), T0).unwrap();
    let json = serde_json::to_string_pretty(&g).unwrap();
    let ana_key = hex::encode(key(1).verifying_key().to_bytes());
    assert!(
        json.contains(&format!("\"public_key\": \"{ana_key}\"")),
        "{json}"
    );
    assert!(json.contains(&format!("\"hash\": \"{}\"", p.hash_hex())));
    let mut back: Governance = serde_json::from_str(&json).unwrap();
    // The deployment id is configuration, not state: the service sets it on every load.
    assert_eq!(back.deployment_id(), "");
    back.set_deployment_id(DEPLOY, T0);
    assert_eq!(back, g);
    // The restored state carries on where it stopped.
    back.approve(1, sign(1, &p), T0).unwrap();
    assert_eq!(back.activate(1, T0 + TIMELOCK).unwrap().version, 2);
    let report_json = serde_json::to_string(&back.history()[1]).unwrap();
    assert!(
        report_json.contains("\"via\":\"proposal\""),
        "{report_json}"
    );
    // A stored proposal edited by hand is refused as it is read.
    let tampered = json.replace("\"price_scan_range\": 0.12", "\"price_scan_range\": 0.02");
    assert_ne!(tampered, json);
    assert!(serde_json::from_str::<Governance>(&tampered).is_err());
}

/// Two accounts on BTC at 60,000 with no history, so initial margin is the grid risk
/// (no options: the short option minimum is 0; no history: statistical risk is 0).
///
/// alice: 7,000 USDC, short 1 BTC perp @ 60,000 (mark = spot, so margin balance 7,000).
/// - range 0.10: worst grid slot +10% loses 1 x 6,000 = 6,000; the extreme +20% loses 12,000
///   x cover 0.35 = 4,200. IM = 6,000, MM = 0.75 x 6,000 = 4,500; 7,000 >= 6,000: healthy.
/// - range 0.12: +12% loses 7,200; extreme 14,400 x 0.35 = 5,040. IM = 7,200, MM = 5,400;
///   5,400 <= 7,000 < 7,200: restricted.
///
/// bob: 50,000 USDC, long 0.5 BTC perp @ 60,000: IM 0.5 x 6,000 = 3,000 -> 3,600, healthy.
///
/// Totals 9,000 -> 10,800; one change healthy -> restricted; alice (+1,200) before bob (+600).
#[test]
fn impact_report_on_a_hand_book() {
    let portfolio = Portfolio::parse(
        "book.json",
        r#"{"accounts": [
          {"id": "bob", "balances": {"USDC": 50000},
           "positions": [{"instrument": "BTC-PERPETUAL", "size": 0.5, "entry_price": 60000}]},
          {"id": "alice", "balances": {"USDC": 7000},
           "positions": [{"instrument": "BTC-PERPETUAL", "size": -1, "entry_price": 60000}]}
        ]}"#,
    )
    .unwrap();
    let market = Market::parse(
        "market.json",
        r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"BTC": 60000, "ETH": 3000, "USDC": 1}}"#,
    )
    .unwrap();
    let active = base();
    let proposed = next(&active, 0.12);
    let r = impact_report(&portfolio, &market, &active, &proposed).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    assert_eq!((r.accounts, r.status_changes), (2, 1));
    assert_eq!((r.active_version, r.proposed_version), (1, 2));
    assert_eq!(
        r.changes_by_transition,
        [("healthy->restricted".to_string(), 1)].into()
    );
    assert!(close(r.total_requirement_before, 9_000.0), "{r:?}");
    assert!(close(r.total_requirement_after, 10_800.0), "{r:?}");
    let ids: Vec<&str> = r.top_affected.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["alice", "bob"]);
    let alice = &r.top_affected[0];
    assert!(close(alice.initial_margin_before, 6_000.0));
    assert!(close(alice.initial_margin_after, 7_200.0));
    assert!(close(alice.margin_balance_before, 7_000.0));
    assert_eq!(
        (alice.status_before, alice.status_after),
        (AccountStatus::Healthy, AccountStatus::Restricted)
    );
    let bob = &r.top_affected[1];
    assert!(close(bob.initial_margin_before, 3_000.0) && close(bob.initial_margin_after, 3_600.0));
    assert_eq!(bob.status_after, AccountStatus::Healthy);
    // Same set: nothing moves, nobody is listed.
    let same = impact_report(&portfolio, &market, &active, &active).unwrap();
    assert_eq!(same.status_changes, 0);
    assert!(same.top_affected.is_empty());
    // The report is stored as JSON with lower-case statuses.
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"status_after\":\"restricted\""));
    assert_eq!(serde_json::from_str::<ImpactReport>(&json).unwrap(), r);
}

#[test]
fn impact_top_list_keeps_ten_largest_with_ties_by_id() {
    // Fourteen short perps of growing size, two pairs tied; all on BTC, plenty of collateral.
    let sizes = [
        1.0, 2.0, 3.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 10.0, 0.5, 0.25,
    ];
    let accounts: Vec<String> = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                r#"{{"id": "a{i:02}", "balances": {{"USDC": 1000000}},
                 "positions": [{{"instrument": "BTC-PERPETUAL", "size": -{s}, "entry_price": 60000}}]}}"#
            )
        })
        .collect();
    let portfolio = Portfolio::parse(
        "b.json",
        &format!(r#"{{"accounts": [{}]}}"#, accounts.join(",")),
    )
    .unwrap();
    let market = Market::parse(
        "m.json",
        r#"{"as_of": "2026-11-24T08:00:00Z", "prices": {"BTC": 60000, "ETH": 3000, "USDC": 1}}"#,
    )
    .unwrap();
    let r = impact_report(&portfolio, &market, &base(), &next(&base(), 0.11)).unwrap();
    let ids: Vec<&str> = r.top_affected.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        ["a10", "a11", "a09", "a08", "a07", "a06", "a05", "a04", "a02", "a03"]
    );
}

#[test]
fn from_parts_rebuilds_the_state_and_refuses_tampering() {
    let mut g = setup();
    let p = proposal(&g, 1, 0.11, T0);
    g.submit(p.clone(), T0).unwrap();
    g.approve(1, sign(0, &p), T0).unwrap();
    let mut rebuilt = Governance::from_parts(
        g.committee().clone(),
        g.history().to_vec(),
        g.proposals().cloned().collect(),
        None,
    )
    .unwrap();
    rebuilt.set_deployment_id(DEPLOY, T0);
    assert_eq!(rebuilt, g);
    // A proposal whose content no longer matches its hash is refused.
    let mut tampered: Vec<ProposalRecord> = g.proposals().cloned().collect();
    tampered[0].proposal.rationale = "something else".into();
    assert!(matches!(
        Governance::from_parts(g.committee().clone(), g.history().to_vec(), tampered, None),
        Err(GovError::HashMismatch(1))
    ));
    // No history: no active set.
    assert!(Governance::from_parts(g.committee().clone(), Vec::new(), Vec::new(), None).is_err());
}

#[test]
fn recovered_activation_completes_the_matching_proposal_or_is_marked_recovered() {
    let mut g = setup();
    let p = proposal(&g, 1, 0.11, T0);
    g.submit(p.clone(), T0).unwrap();
    g.approve(1, sign(0, &p), T0).unwrap();
    g.approve(1, sign(2, &p), T0).unwrap();
    // The event log has the proposal's parameters in force; the governance write was lost.
    let mut found = p.params.clone();
    found.source = "from the log".into();
    g.record_recovered(found, T0 + TIMELOCK + 5).unwrap();
    assert_eq!(g.active_version(), 2);
    assert_eq!(
        g.proposal(1).unwrap().state,
        ProposalState::Activated {
            at_ms: T0 + TIMELOCK + 5
        }
    );
    assert_eq!(
        g.history().last().unwrap().activation,
        Activation::Proposal {
            id: 1,
            approvers: vec!["ana".into(), "chen".into()]
        }
    );
    // Parameters no proposal carried: recorded as recovered. Not at or below the active one.
    let other = next(g.active(), 0.2);
    assert!(g.record_recovered(g.active().clone(), T0).is_err());
    g.record_recovered(other, T0 + TIMELOCK + 6).unwrap();
    assert_eq!(g.active_version(), 3);
    assert_eq!(
        g.history().last().unwrap().activation,
        Activation::Recovered
    );
}

#[test]
fn a_replaced_committee_keeps_the_proposals_but_old_approvals_stop_counting() {
    let mut g = setup();
    let p = proposal(&g, 1, 0.11, T0);
    g.submit(p.clone(), T0).unwrap();
    g.approve(1, sign(0, &p), T0).unwrap();
    g.approve(1, sign(1, &p), T0).unwrap();
    // ana and ben leave; chen and two new members, 2 of 3.
    let members = vec![
        CommitteeMember {
            id: "chen".into(),
            public_key: key(3).verifying_key().to_bytes(),
        },
        CommitteeMember {
            id: "dia".into(),
            public_key: key(4).verifying_key().to_bytes(),
        },
        CommitteeMember {
            id: "eli".into(),
            public_key: key(5).verifying_key().to_bytes(),
        },
    ];
    g.replace_committee(Committee::new(members, 2, TIMELOCK, None).unwrap(), T0)
        .unwrap();
    assert_eq!(g.proposal(1).unwrap().quorum_ms, None);
    assert!(g.proposal(1).is_some());
    assert!(matches!(
        g.activate(1, T0 + TIMELOCK),
        Err(GovError::NoQuorum { approvals: 0, .. })
    ));
}
