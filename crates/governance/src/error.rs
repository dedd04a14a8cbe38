//! Why a governance step was refused.

use pmargin_core::InputError;
use thiserror::Error;

/// A refused governance step. Every refusal leaves the governance state exactly as it was.
///
/// Messages name the field, member or proposal at fault so the committee can act on them.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GovError {
    /// A parameter is out of range or breaks a cross-field rule; `field` is its JSON path
    /// such as `underlyings.BTC.price_scan_range`.
    #[error("parameter `{field}`: {message}")]
    InvalidParams { field: String, message: String },
    /// A part of the proposal other than the parameters (rationale, proposer, removals).
    #[error("proposal `{field}`: {message}")]
    InvalidProposal { field: String, message: String },
    /// The committee itself is malformed (threshold, duplicate ids or keys, bad key bytes).
    #[error("committee: {0}")]
    InvalidCommittee(String),
    #[error("no proposal with id {0}")]
    UnknownProposal(u64),
    #[error("a proposal with id {0} was already submitted")]
    DuplicateProposal(u64),
    /// The stored hash does not match the proposal's content: it was altered after hashing.
    #[error("proposal {0}: its hash does not match its content")]
    HashMismatch(u64),
    /// The proposal says it was created after the moment it is submitted.
    #[error("proposal created at {created_ms} ms cannot be submitted earlier, at {now_ms} ms")]
    CreatedInFuture { created_ms: i64, now_ms: i64 },
    #[error("`{0}` is not a committee member")]
    UnknownMember(String),
    /// The signature does not verify against the member's key for this proposal's hash.
    #[error("signature of `{member}` does not verify for proposal {proposal}")]
    BadSignature { proposal: u64, member: String },
    #[error("`{member}` has already approved proposal {proposal}")]
    DuplicateApproval { proposal: u64, member: String },
    #[error("proposal {proposal} is {state}, not pending")]
    NotPending { proposal: u64, state: String },
    #[error("proposal {proposal} has {approvals} valid approvals of the {threshold} required")]
    NoQuorum {
        proposal: u64,
        approvals: usize,
        threshold: usize,
    },
    #[error("proposal {proposal} is timelocked until {eligible_ms} ms (now {now_ms} ms)")]
    Timelocked {
        proposal: u64,
        now_ms: i64,
        eligible_ms: i64,
    },
    #[error("no guardian key is configured")]
    NoGuardian,
    #[error("the guardian signature does not verify for these parameters")]
    BadGuardianSignature,
    /// The emergency set loosens something; `field` is the first such field.
    #[error("emergency parameters are less conservative at `{field}`: {message}")]
    NotMoreConservative { field: String, message: String },
    /// The emergency set moves a knob further from the base set than the guardian may
    /// ([`crate::conservative::check_emergency_bound`]); `field` is the first such knob.
    #[error("emergency parameters are beyond the guardian's bound at `{field}`: {message}")]
    BeyondEmergencyBound { field: String, message: String },
    /// Ratifying when no emergency set awaits ratification.
    #[error("no emergency set awaits ratification")]
    NoPendingEmergency,
    /// Ratifying after the window closed: the emergency set has lapsed (or is about to).
    #[error("the emergency set of version {version} lapsed at {expires_ms} ms (now {now_ms} ms)")]
    EmergencyExpired {
        version: u64,
        expires_ms: i64,
        now_ms: i64,
    },
    /// A committee act (cancellation, ratification) signed by fewer than M distinct members.
    #[error("{act} has {signatures} valid member signatures of the {threshold} required")]
    NotEnoughSignatures {
        act: String,
        signatures: usize,
        threshold: usize,
    },
    /// A signature in a committee act that does not verify for this act on this deployment.
    #[error("signature of `{member}` does not verify for {act}")]
    BadActSignature { act: String, member: String },
    /// A margin run of the impact report failed (the book cannot be margined with a set).
    #[error("margin run failed: {0}")]
    Margin(#[from] InputError),
}

impl GovError {
    pub(crate) fn params(field: impl Into<String>, message: impl Into<String>) -> Self {
        GovError::InvalidParams {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field this error names, if it names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            GovError::InvalidParams { field, .. }
            | GovError::InvalidProposal { field, .. }
            | GovError::NotMoreConservative { field, .. }
            | GovError::BeyondEmergencyBound { field, .. } => Some(field),
            _ => None,
        }
    }
}
