//! The risk committee, its members' keys, and signed approvals.

use crate::canonical::canonical_params;
use crate::error::GovError;
use crate::proposal::Proposal;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use pmargin_core::Params;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Domain tag in front of the deployment id and a proposal hash in what a member signs to
/// approve. (`-v1` signed the hash alone, valid on every deployment.)
pub const APPROVAL_DOMAIN: &[u8] = b"pmargin-proposal-v2";
/// Domain tag of what a member signs to cancel a proposal.
pub const CANCEL_DOMAIN: &[u8] = b"pmargin-cancel-v1";
/// Domain tag in front of the deployment id and the parameter fingerprint in what the guardian
/// signs.
pub const EMERGENCY_DOMAIN: &[u8] = b"pmargin-emergency-v2";
/// Domain tag of what a member signs to ratify the guardian's emergency set.
pub const RATIFY_DOMAIN: &[u8] = b"pmargin-ratify-v1";
/// How long the committee has to ratify an emergency set before it lapses: 24 hours.
pub const DEFAULT_RATIFY_WINDOW_MS: i64 = 86_400_000;
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
/// signed it, and no sooner than `timelock_ms` milliseconds after the moment that M-th
/// approval arrived, so that everyone has time to object; M members may cancel it until then.
/// The optional `guardian` key may act alone and at once, but only to make the parameters more
/// conservative, within a bound (see [`crate::conservative`]), and only for
/// `ratify_window_ms` (default 24 h) unless M members ratify the emergency set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CommitteeSpec")]
pub struct Committee {
    pub members: Vec<CommitteeMember>,
    pub threshold: usize,
    pub timelock_ms: i64,
    #[serde(default, with = "crate::hexbytes::option")]
    pub guardian: Option<[u8; 32]>,
    pub ratify_window_ms: i64,
}

fn default_ratify_window() -> i64 {
    DEFAULT_RATIFY_WINDOW_MS
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitteeSpec {
    members: Vec<CommitteeMember>,
    threshold: usize,
    timelock_ms: i64,
    #[serde(default, with = "crate::hexbytes::option")]
    guardian: Option<[u8; 32]>,
    #[serde(default = "default_ratify_window")]
    ratify_window_ms: i64,
}

impl TryFrom<CommitteeSpec> for Committee {
    type Error = GovError;
    fn try_from(s: CommitteeSpec) -> Result<Self, GovError> {
        Committee::new(s.members, s.threshold, s.timelock_ms, s.guardian)?
            .with_ratify_window(s.ratify_window_ms)
    }
}

impl Committee {
    /// A checked committee: at least one member, `threshold` in `1..=members`, unique
    /// non-empty ids, unique valid (not weak) keys, a timelock of zero or more, and a
    /// guardian key, if any, that is valid and belongs to no member. The ratification window
    /// is [`DEFAULT_RATIFY_WINDOW_MS`]; see [`Committee::with_ratify_window`].
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
            ratify_window_ms: DEFAULT_RATIFY_WINDOW_MS,
        };
        c.validate()?;
        Ok(c)
    }

    /// The same committee with another ratification window (more than zero).
    pub fn with_ratify_window(mut self, ratify_window_ms: i64) -> Result<Committee, GovError> {
        self.ratify_window_ms = ratify_window_ms;
        self.validate()?;
        Ok(self)
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
        if self.ratify_window_ms <= 0 {
            return bad(format!(
                "ratify_window_ms must be more than zero, got {}",
                self.ratify_window_ms
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

/// A committee member's signature on one governance act: their id and their ed25519
/// signature (64 bytes, hex in JSON). As an approval it signs [`approval_message`]; the same
/// shape carries cancellations ([`cancel_message`]) and ratifications ([`ratify_message`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub member: String,
    #[serde(with = "crate::hexbytes")]
    pub signature: [u8; 64],
}

impl Approval {
    /// Signs an approval of `proposal` on `deployment` as `member` (for tools and tests; a
    /// server only verifies).
    pub fn sign(
        member: impl Into<String>,
        key: &SigningKey,
        deployment: &str,
        proposal: &Proposal,
    ) -> Approval {
        Approval::sign_message(member, key, &approval_message(deployment, &proposal.hash))
    }

    /// Signs any governance message (a cancellation, a ratification) as `member`.
    pub fn sign_message(member: impl Into<String>, key: &SigningKey, message: &[u8]) -> Approval {
        Approval {
            member: member.into(),
            signature: key.sign(message).to_bytes(),
        }
    }
}

/// `domain || be64(len(deployment)) || deployment || body`: every signed message names the
/// deployment, so a signature made for one deployment (staging) verifies on no other.
fn bound_message(domain: &[u8], deployment: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.len() + 8 + deployment.len() + body.len());
    m.extend_from_slice(domain);
    m.extend_from_slice(&(deployment.len() as u64).to_be_bytes());
    m.extend_from_slice(deployment.as_bytes());
    m.extend_from_slice(body);
    m
}

/// The bytes a member signs to approve, on `deployment`, the proposal with this hash:
/// `"pmargin-proposal-v2" || be64(len(deployment)) || deployment || hash`.
pub fn approval_message(deployment: &str, hash: &[u8; 32]) -> Vec<u8> {
    bound_message(APPROVAL_DOMAIN, deployment, hash)
}

/// The bytes a member signs to cancel, on `deployment`, the proposal with this hash:
/// `"pmargin-cancel-v1" || be64(len(deployment)) || deployment || hash`.
pub fn cancel_message(deployment: &str, hash: &[u8; 32]) -> Vec<u8> {
    bound_message(CANCEL_DOMAIN, deployment, hash)
}

/// The bytes a member signs to ratify the guardian's emergency set `params` on `deployment`:
/// `"pmargin-ratify-v1" || be64(len(deployment)) || deployment || emergency_hash(params)`.
pub fn ratify_message(deployment: &str, params: &Params) -> Vec<u8> {
    bound_message(RATIFY_DOMAIN, deployment, &emergency_hash(params))
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

/// The bytes the guardian signs on `deployment`:
/// `"pmargin-emergency-v2" || be64(len(deployment)) || deployment || emergency_hash(params)`.
pub fn emergency_message(deployment: &str, params: &Params) -> Vec<u8> {
    bound_message(EMERGENCY_DOMAIN, deployment, &emergency_hash(params))
}

/// The ed25519 public key of a 32-byte secret key (seed), as a committee lists it.
pub fn public_key_of(secret: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

/// A member's approval signature over a proposal hash on `deployment` with a 32-byte secret
/// key (for tools and demos; the same as signing [`approval_message`] with any ed25519
/// implementation).
pub fn sign_approval(secret: &[u8; 32], deployment: &str, hash: &[u8; 32]) -> [u8; 64] {
    SigningKey::from_bytes(secret)
        .sign(&approval_message(deployment, hash))
        .to_bytes()
}

/// The guardian's signature on an emergency parameter set for `deployment` (for tools and
/// tests).
pub fn sign_emergency(key: &SigningKey, deployment: &str, params: &Params) -> [u8; 64] {
    key.sign(&emergency_message(deployment, params)).to_bytes()
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
