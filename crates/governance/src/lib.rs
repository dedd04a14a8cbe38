//! # pmargin-governance: how risk parameters change
//!
//! The risk parameters decide every account's margin, so they change only through review:
//!
//! 1. someone drafts a [`Proposal`]: a full parameter set, a rationale, who proposes and when.
//!    It is checked ([`validate_params`]: ranges, cross-field rules, next version, nothing
//!    dropped unannounced) and fingerprinted with SHA-256;
//! 2. an [`ImpactReport`] shows what it would do to today's book: how many accounts change
//!    status, the total requirement before and after, the ten most affected accounts;
//! 3. members of the [`Committee`] approve it by signing its hash with ed25519 keys
//!    ([`Approval`]); the [`Governance`] state machine activates it only with M of N approvals
//!    and after the timelock;
//! 4. in an emergency the guardian key alone may make the parameters more conservative at
//!    once ([`Governance::emergency`], rule in [`conservative`]).
//!
//! Pure library: no I/O, no clock (time is passed in as `now_ms`), deterministic. Every type
//! is serde-serialisable so a server can store it; keys, hashes and signatures are hex in JSON.

pub mod canonical;
pub mod committee;
pub mod conservative;
pub mod error;
pub mod governance;
mod hexbytes;
pub mod impact;
pub mod proposal;

pub use committee::{
    approval_message, emergency_hash, emergency_message, public_key_of, sign_approval,
    sign_emergency, Approval, Committee, CommitteeMember,
};
pub use conservative::check_more_conservative;
pub use error::GovError;
pub use governance::{Activation, Governance, ProposalRecord, ProposalState, VersionRecord};
pub use impact::{
    impact_report, impact_report_with_history, AccountStatus, AffectedAccount, ImpactReport,
};
pub use proposal::{validate_params, Proposal, ProposalId};
