//! The fixtures of the governance tests: a two-underlying parameter set, a 2-of-3 committee
//! with a guardian, and signing helpers. Time is a number passed in: nothing sleeps.
#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use pmargin_core::Params;
use pmargin_governance::*;

pub const BASE: &str = r#"{
  "version": 1,
  "underlyings": {
    "BTC": { "price_scan_range": 0.10, "vol_scan_up": 0.10, "vol_scan_down": 0.10,
             "standard_im_rate": 0.10, "standard_mm_rate": 0.05 },
    "ETH": { "price_scan_range": 0.12, "vol_scan_up": 0.12, "vol_scan_down": 0.12,
             "standard_im_rate": 0.10, "standard_mm_rate": 0.05 }
  },
  "collateral": {
    "USDC": { "haircut": 0.0 },
    "BTC":  { "haircut": 0.05, "underlying": "BTC" },
    "ETH":  { "haircut": 0.07, "underlying": "ETH" }
  }
}"#;

pub const TIMELOCK: i64 = 86_400_000;
pub const T0: i64 = 1_700_000_000_000;
pub const DEPLOY: &str = "prod-eu-1";

pub fn base() -> Params {
    let mut p = Params::parse("base.json", BASE).unwrap();
    p.source = String::new();
    p
}

/// The next version with BTC's scan range set to `range`.
pub fn next(active: &Params, range: f64) -> Params {
    let mut p = active.clone();
    p.version = active.version + 1;
    p.underlyings.get_mut("BTC").unwrap().price_scan_range = range;
    p
}

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub const MEMBERS: [&str; 3] = ["ana", "ben", "chen"];
pub const GUARDIAN_SEED: u8 = 100;

pub fn committee(threshold: usize) -> Committee {
    let members = MEMBERS
        .iter()
        .enumerate()
        .map(|(i, id)| CommitteeMember {
            id: id.to_string(),
            public_key: key(i as u8 + 1).verifying_key().to_bytes(),
        })
        .collect();
    Committee::new(
        members,
        threshold,
        TIMELOCK,
        Some(key(GUARDIAN_SEED).verifying_key().to_bytes()),
    )
    .unwrap()
}

/// A 2-of-3 governance of deployment `DEPLOY` with `base()` active since T0.
pub fn setup() -> Governance {
    let mut g = Governance::new(committee(2), base(), T0).unwrap();
    g.set_deployment_id(DEPLOY, T0);
    g
}

pub fn sign(member: usize, p: &Proposal) -> Approval {
    Approval::sign(MEMBERS[member], &key(member as u8 + 1), DEPLOY, p)
}

pub fn guardian_sign(p: &Params) -> [u8; 64] {
    sign_emergency(&key(GUARDIAN_SEED), DEPLOY, p)
}

pub fn proposal(g: &Governance, id: u64, range: f64, created_ms: i64) -> Proposal {
    Proposal::new(
        id,
        next(g.active(), range),
        "widen the BTC scan range after the vol spike",
        "risk-desk",
        created_ms,
        Some(g.active()),
    )
    .unwrap()
}
