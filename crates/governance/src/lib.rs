//! # pmargin-governance: how risk parameters change
//!
//! The risk parameters decide every account's margin, so they change only through review:
//!
//! 1. someone drafts a [`Proposal`]: a full parameter set, a rationale, who proposes and when.
//!    It is checked ([`validate_params`]: ranges, cross-field rules, next version, nothing
//!    dropped unannounced) and fingerprinted with SHA-256;
//! 2. an [`ImpactReport`] shows what it would do to today's book: how many accounts change
//!    status, the total requirement before and after, the ten most affected accounts;
//! 3. members of the [`Committee`] approve it by signing its hash, bound to the deployment id,
//!    with ed25519 keys ([`Approval`]); the [`Governance`] state machine activates it only with
//!    M of N approvals and once the timelock, counted from the M-th approval, has passed; until
//!    then M members may cancel it ([`Governance::cancel`]);
//! 4. in an emergency the guardian key alone may make the parameters more conservative at
//!    once, within a bound ([`Governance::emergency`], rules in [`conservative`]); the set
//!    lapses back to the base set unless M members ratify it within the committee's window
//!    ([`Governance::ratify_emergency`], [`Governance::expire_emergency`]).
//!
//! Pure state machine: no I/O, deterministic, time passed in as `now_ms`; the service reads it
//! from a [`Clock`] (a [`ManualClock`] in tests). Every type is serde-serialisable so a server
//! can store it; keys, hashes and signatures are hex in JSON.

pub mod canonical;
pub mod clock;
pub mod committee;
pub mod conservative;
pub mod error;
pub mod governance;
mod hexbytes;
pub mod impact;
pub mod proposal;

pub use clock::{Clock, ManualClock, SystemClock};
pub use committee::{
    approval_message, cancel_message, emergency_hash, emergency_message, public_key_of,
    ratify_message, sign_approval, sign_emergency, Approval, Committee, CommitteeMember,
    DEFAULT_RATIFY_WINDOW_MS,
};
pub use conservative::{check_emergency_bound, check_more_conservative, EMERGENCY_FACTOR};
pub use error::GovError;
pub use governance::{
    Activation, EmergencyRecord, EmergencyState, Governance, ProposalRecord, ProposalState,
    VersionRecord,
};
pub use impact::{
    impact_report, impact_report_with_history, AccountStatus, AffectedAccount, ImpactReport,
};
pub use proposal::{validate_params, Proposal, ProposalId};
