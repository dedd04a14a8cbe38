//! The risk committee, its members' keys, and signed approvals.

use crate::canonical::canonical_params;
use crate::error::GovError;
use crate::proposal::Proposal;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use pmargin_core::Params;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Domain tag in front of a proposal hash in what a member signs.
pub const APPROVAL_DOMAIN: &[u8] = b"pmargin-proposal-v1";
/// Domain tag in front of the parameter fingerprint in what the guardian signs.
pub const EMERGENCY_DOMAIN: &[u8] = b"pmargin-emergency-v1";
/// Domain tag of the emergency parameter fingerprint itself.
pub const EMERGENCY_HASH_DOMAIN: &[u8] = b"pmargin-emergency-hash-v1";

/// One person on the risk committee: a name and the ed25519 public key their approvals are
/// checked against (32 bytes, hex in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitteeMember {
    pub id: String,
    #[serde(with = "crate::hexbytes")]
    pub public_key: [u8; 32],
}

/// Who may change the risk parameters and how.
///
/// A proposal takes effect only once `threshold` distinct members (M of the N `members`) have
/// signed it, and no sooner than `timelock_ms` milliseconds after it was submitted, so that
/// everyone has time to object. The optional `guardian` key may act alone and at once, but
/// only to make the parameters more conservative (see [`crate::conservative`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CommitteeSpec")]
pub struct Committee {
    pub members: Vec<CommitteeMember>,
    pub threshold: usize,
    pub timelock_ms: i64,
    #[serde(default, with = "crate::hexbytes::option")]
    pub guardian: Option<[u8; 32]>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitteeSpec {
    members: Vec<CommitteeMember>,
    threshold: usize,
    timelock_ms: i64,
    #[serde(default, with = "crate::hexbytes::option")]
    guardian: Option<[u8; 32]>,
}

impl TryFrom<CommitteeSpec> for Committee {
    type Error = GovError;
    fn try_from(s: CommitteeSpec) -> Result<Self, GovError> {
        Committee::new(s.members, s.threshold, s.timelock_ms, s.guardian)
    }
}

impl Committee {
    /// A checked committee: at least one member, `threshold` in `1..=members`, unique
    /// non-empty ids, unique valid (not weak) keys, a timelock of zero or more, and a
    /// guardian key, if any, that is valid and belongs to no member.
    pub fn new(
        members: Vec<CommitteeMember>,
        threshold: usize,
        timelock_ms: i64,
        guardian: Option<[u8; 32]>,
    ) -> Result<Committee, GovError> {
        let c = Committee {
            members,
            threshold,
            timelock_ms,
            guardian,
        };
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), GovError> {
        let bad = |m: String| Err(GovError::InvalidCommittee(m));
        let n = self.members.len();
        if n == 0 {
            return bad("at least one member is required".into());
        }
        if !(1..=n).contains(&self.threshold) {
            return bad(format!(
                "threshold must be between 1 and {n} (the number of members), got {}",
                self.threshold
            ));
        }
        if self.timelock_ms < 0 {
            return bad(format!(
                "timelock_ms must be zero or more, got {}",
                self.timelock_ms
            ));
        }
        let (mut ids, mut keys) = (BTreeSet::new(), BTreeSet::new());
        for m in &self.members {
            if m.id.trim().is_empty() {
                return bad("a member id is empty".into());
            }
            if !ids.insert(m.id.as_str()) {
                return bad(format!("member id `{}` appears twice", m.id));
            }
            if !keys.insert(m.public_key) {
                return bad(format!("the key of `{}` is already another member's", m.id));
            }
            verifying_key(&m.public_key).ok_or_else(|| {
                GovError::InvalidCommittee(format!(
                    "the key of `{}` is not a valid ed25519 key",
                    m.id
                ))
            })?;
        }
        if let Some(g) = &self.guardian {
            if keys.contains(g) {
                return bad("the guardian key must not be a member's key".into());
            }
            verifying_key(g).ok_or_else(|| {
                GovError::InvalidCommittee("the guardian key is not a valid ed25519 key".into())
            })?;
        }
        Ok(())
    }

    pub fn member(&self, id: &str) -> Option<&CommitteeMember> {
        self.members.iter().find(|m| m.id == id)
    }
}

/// A committee member's yes to one proposal: their id and their ed25519 signature (64 bytes,
/// hex in JSON) over `"pmargin-proposal-v1" || proposal hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub member: String,
    #[serde(with = "crate::hexbytes")]
    pub signature: [u8; 64],
}

impl Approval {
    /// Signs `proposal` as `member` (for tools and tests; a server only verifies).
    pub fn sign(member: impl Into<String>, key: &SigningKey, proposal: &Proposal) -> Approval {
        Approval {
            member: member.into(),
            signature: key.sign(&approval_message(&proposal.hash)).to_bytes(),
        }
    }
}

/// The bytes a member signs to approve the proposal with this hash.
pub fn approval_message(hash: &[u8; 32]) -> Vec<u8> {
    [APPROVAL_DOMAIN, hash.as_slice()].concat()
}

/// Fingerprint of a parameter set for the emergency path:
/// `SHA-256("pmargin-emergency-hash-v1" || be64(len) || canonical JSON of params)`.
/// The set's `version` is inside, so a signature cannot be replayed on a later version.
pub fn emergency_hash(params: &Params) -> [u8; 32] {
    let json = canonical_params(params);
    let mut h = Sha256::new();
    h.update(EMERGENCY_HASH_DOMAIN);
    h.update((json.len() as u64).to_be_bytes());
    h.update(json.as_bytes());
    h.finalize().into()
}

/// The bytes the guardian signs: `"pmargin-emergency-v1" || emergency_hash(params)`.
pub fn emergency_message(params: &Params) -> Vec<u8> {
    [EMERGENCY_DOMAIN, emergency_hash(params).as_slice()].concat()
}

/// The ed25519 public key of a 32-byte secret key (seed), as a committee lists it.
pub fn public_key_of(secret: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

/// A member's approval signature over a proposal hash with a 32-byte secret key (for tools
/// and demos; the same as signing [`approval_message`] with any ed25519 implementation).
pub fn sign_approval(secret: &[u8; 32], hash: &[u8; 32]) -> [u8; 64] {
    SigningKey::from_bytes(secret)
        .sign(&approval_message(hash))
        .to_bytes()
}

/// The guardian's signature on an emergency parameter set (for tools and tests).
pub fn sign_emergency(key: &SigningKey, params: &Params) -> [u8; 64] {
    key.sign(&emergency_message(params)).to_bytes()
}

pub(crate) fn verifying_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(bytes)
        .ok()
        .filter(|k| !k.is_weak())
}

/// Strict ed25519 verification (no malleable signatures, no small-order keys).
pub(crate) fn verify(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    verifying_key(public_key).is_some_and(|k| {
        k.verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    })
}
