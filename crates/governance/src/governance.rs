//! The governance state machine: submit, approve, cancel, activate, and the guardian's
//! emergency path with its ratification or lapse.

use crate::committee::{
    approval_message, cancel_message, emergency_message, ratify_message, verify, Approval,
    Committee,
};
use crate::conservative::{check_emergency_bound, check_more_conservative};
use crate::error::GovError;
use crate::proposal::{validate_params, Proposal, ProposalId};
use pmargin_core::Params;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Where a proposal is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProposalState {
    /// Collecting approvals; may be activated once quorum and timelock are met.
    Pending,
    /// Its parameters became the active set at `at_ms`.
    Activated { at_ms: i64 },
    /// Another set took its version first (by vote or emergency); it can no longer pass.
    Superseded { by_version: u64 },
    /// M members cancelled it at `at_ms`; it can never be approved or activated.
    Cancelled { at_ms: i64, by: Vec<String> },
}

impl ProposalState {
    fn name(&self) -> String {
        match self {
            ProposalState::Pending => "pending".into(),
            ProposalState::Activated { at_ms } => format!("activated (at {at_ms} ms)"),
            ProposalState::Superseded { by_version } => {
                format!("superseded (version {by_version} was activated)")
            }
            ProposalState::Cancelled { at_ms, .. } => format!("cancelled (at {at_ms} ms)"),
        }
    }

    /// The one-word status (`pending`, `activated`, `superseded`, `cancelled`), for queries.
    pub fn status(&self) -> &'static str {
        match self {
            ProposalState::Pending => "pending",
            ProposalState::Activated { .. } => "activated",
            ProposalState::Superseded { .. } => "superseded",
            ProposalState::Cancelled { .. } => "cancelled",
        }
    }
}

/// A submitted proposal with the approvals gathered so far, in the order they came.
///
/// `quorum_ms` is the moment the M-th valid approval arrived; the timelock runs from there, so
/// the committee always has the full timelock to look at a proposal that can actually pass
/// (counting from submission would let a proposal sit unapproved through its timelock, gather
/// its approvals at once and activate in the same minute).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalRecord {
    pub proposal: Proposal,
    pub submitted_ms: i64,
    pub approvals: Vec<Approval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum_ms: Option<i64>,
    pub state: ProposalState,
}

impl ProposalRecord {
    /// The earliest moment the proposal may be activated: the moment quorum was reached (never
    /// before submission or creation) plus the committee's timelock; `None` before quorum.
    pub fn eligible_ms(&self, timelock_ms: i64) -> Option<i64> {
        self.quorum_ms.map(|q| {
            q.max(self.submitted_ms)
                .max(self.proposal.created_ms)
                .saturating_add(timelock_ms)
        })
    }
}

/// How a parameter version came into force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Activation {
    /// The first set, given when the governance was set up.
    Genesis,
    /// A proposal approved by the committee, after its timelock.
    Proposal {
        id: ProposalId,
        approvers: Vec<String>,
    },
    /// The guardian's emergency tightening.
    Emergency,
    /// The guardian's emergency set lapsed unratified: the base set's content is back in force
    /// under a new version number.
    EmergencyLapsed {
        emergency_version: u64,
        base_version: u64,
    },
    /// Found in force in the service's durable event log without a governance record of it
    /// (a crash between the activation event and the governance write); see
    /// [`Governance::record_recovered`].
    Recovered,
}

/// One parameter version that was in force, from `activated_ms` until the next entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u64,
    pub activated_ms: i64,
    #[serde(flatten)]
    pub activation: Activation,
    pub params: Params,
}

/// Where the guardian's latest emergency stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EmergencyState {
    /// In force, awaiting the committee's ratification until `expires_ms`.
    Pending,
    /// M members ratified it: it stays in force like any committee-approved set.
    Ratified { at_ms: i64, by: Vec<String> },
    /// Not ratified in time: the base set came back as `restored_version`.
    Lapsed { at_ms: i64, restored_version: u64 },
    /// A committee-approved version replaced it before it lapsed.
    Superseded { by_version: u64 },
}

/// The guardian's latest emergency episode. Emergencies in a row while one is pending belong
/// to one episode: they are bounded against the same base set and lapse at the same moment
/// (a second emergency does not extend the window).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyRecord {
    /// The emergency version in force (the latest of the episode).
    pub version: u64,
    /// The set the bound is measured from and restored on lapse: the last set the committee
    /// put in force or ratified.
    pub base_version: u64,
    pub started_ms: i64,
    pub expires_ms: i64,
    pub state: EmergencyState,
}

/// The governed parameters: the committee, the set in force, every version that was ever in
/// force, every proposal with its approvals, and the guardian's latest emergency.
///
/// Parameters change in only these ways: a proposal with approvals from M of the N members,
/// activated after the timelock counted from its M-th approval; the guardian's emergency set,
/// more conservative than the active one in every field and within a bound of the base set;
/// and the lapse of an unratified emergency set, which restores the base set. Every refused
/// step leaves the state as it was. Nothing here reads the clock: the caller passes `now_ms`
/// (from a [`crate::Clock`]).
///
/// Every signature is bound to a deployment id ([`Governance::set_deployment_id`]), which is
/// configuration rather than state: it is not serialized. A new governance starts with the
/// empty id; a service sets its own before taking any signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "GovernanceState")]
pub struct Governance {
    committee: Committee,
    active: Params,
    history: Vec<VersionRecord>,
    proposals: BTreeMap<ProposalId, ProposalRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    emergency: Option<EmergencyRecord>,
    #[serde(skip)]
    deployment_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GovernanceState {
    committee: Committee,
    active: Params,
    history: Vec<VersionRecord>,
    proposals: BTreeMap<ProposalId, ProposalRecord>,
    #[serde(default)]
    emergency: Option<EmergencyRecord>,
}

fn not_pending(id: ProposalId, state: &ProposalState) -> GovError {
    GovError::NotPending {
        proposal: id,
        state: state.name(),
    }
}

impl Governance {
    /// A stored state from its parts (as a database keeps them), checked like a deserialized
    /// one: a valid committee, a history whose last entry is the active set, proposals whose
    /// hashes match their content, an emergency record that names versions of the history.
    pub fn from_parts(
        committee: Committee,
        history: Vec<VersionRecord>,
        proposals: Vec<ProposalRecord>,
        emergency: Option<EmergencyRecord>,
    ) -> Result<Self, GovError> {
        let active = history
            .last()
            .map(|r| r.params.clone())
            .ok_or_else(|| GovError::params("history", "no parameter version"))?;
        Governance::try_from(GovernanceState {
            committee,
            active,
            history,
            proposals: proposals.into_iter().map(|r| (r.proposal.id, r)).collect(),
            emergency,
        })
    }

    /// Replaces the committee (a reconfigured service). Proposals and history are kept;
    /// approvals are re-verified against the new members' keys, so approvals of members no
    /// longer on the committee stop counting, and a proposal's quorum moment is re-derived
    /// (see [`Governance::reconcile_quorum`]).
    pub fn replace_committee(&mut self, committee: Committee, now_ms: i64) -> Result<(), GovError> {
        committee.validate()?;
        self.committee = committee;
        self.reconcile_quorum(now_ms);
        Ok(())
    }

    /// The deployment every signature must name (see [`crate::approval_message`]). Approvals
    /// signed for another id stop counting; quorum moments are re-derived.
    pub fn set_deployment_id(&mut self, deployment_id: impl Into<String>, now_ms: i64) {
        self.deployment_id = deployment_id.into();
        self.reconcile_quorum(now_ms);
    }

    pub fn deployment_id(&self) -> &str {
        &self.deployment_id
    }

    /// Brings each pending proposal's quorum moment in line with the approvals that verify
    /// now: cleared where quorum no longer holds, set to `now_ms` where it holds without a
    /// recorded moment (a state stored before the moment was kept, or a committee with a
    /// lower threshold): the timelock then runs from now, never from an unknown past.
    pub fn reconcile_quorum(&mut self, now_ms: i64) {
        let ids: Vec<ProposalId> = self
            .proposals
            .values()
            .filter(|r| r.state == ProposalState::Pending)
            .map(|r| r.proposal.id)
            .collect();
        for id in ids {
            let has_quorum = self
                .proposals
                .get(&id)
                .is_some_and(|r| self.valid_approvers(r).len() >= self.committee.threshold);
            if let Some(r) = self.proposals.get_mut(&id) {
                match (has_quorum, r.quorum_ms) {
                    (false, _) => r.quorum_ms = None,
                    (true, None) => r.quorum_ms = Some(now_ms),
                    (true, Some(_)) => {}
                }
            }
        }
    }

    /// Records a parameter set that the service found in force without a governance record
    /// (see [`Activation::Recovered`]): a pending proposal with exactly these parameters is
    /// marked activated (with its approvals); otherwise the version is recorded as recovered.
    /// Only for a version above the active one.
    pub fn record_recovered(&mut self, mut params: Params, now_ms: i64) -> Result<(), GovError> {
        params.source = String::new();
        if params.version <= self.active.version {
            return Err(GovError::params(
                "version",
                format!(
                    "version {} is not above the active version {}",
                    params.version, self.active.version
                ),
            ));
        }
        let matching = self
            .proposals
            .values()
            .find(|r| r.state == ProposalState::Pending && r.proposal.params == params)
            .map(|r| (r.proposal.id, self.valid_approvers(r)));
        let activation = match matching {
            Some((id, approvers)) => {
                if let Some(r) = self.proposals.get_mut(&id) {
                    r.state = ProposalState::Activated { at_ms: now_ms };
                }
                Activation::Proposal { id, approvers }
            }
            None => Activation::Recovered,
        };
        self.install(params, now_ms, activation);
        Ok(())
    }
}

impl TryFrom<GovernanceState> for Governance {
    type Error = GovError;
    /// A stored state is checked as it is read: a valid committee and active set, a history
    /// that ends in the active set, proposals whose hashes match their content, and an
    /// emergency record whose versions are in the history.
    fn try_from(s: GovernanceState) -> Result<Self, GovError> {
        s.committee.validate()?;
        validate_params(&s.active, None, &BTreeSet::new())?;
        if s.history.last().map(|r| &r.params) != Some(&s.active) {
            return Err(GovError::params(
                "history",
                "the last version in the history is not the active set",
            ));
        }
        for (id, r) in &s.proposals {
            if r.proposal.id != *id || !r.proposal.hash_matches() {
                return Err(GovError::HashMismatch(*id));
            }
        }
        if let Some(e) = &s.emergency {
            let known = |v: u64| s.history.iter().any(|r| r.version == v);
            if !known(e.version) || !known(e.base_version) {
                return Err(GovError::params(
                    "emergency",
                    format!(
                        "versions {} and {} must both be in the history",
                        e.version, e.base_version
                    ),
                ));
            }
            if e.state == EmergencyState::Pending && e.version != s.active.version {
                return Err(GovError::params(
                    "emergency",
                    "a pending emergency set must be the active set",
                ));
            }
        }
        Ok(Governance {
            committee: s.committee,
            active: s.active,
            history: s.history,
            proposals: s.proposals,
            emergency: s.emergency,
            deployment_id: String::new(),
        })
    }
}

impl Governance {
    /// Starts governance with a committee and a first (genesis) parameter set.
    pub fn new(committee: Committee, mut genesis: Params, now_ms: i64) -> Result<Self, GovError> {
        committee.validate()?;
        genesis.source = String::new();
        validate_params(&genesis, None, &BTreeSet::new())?;
        Ok(Governance {
            committee,
            history: vec![VersionRecord {
                version: genesis.version,
                activated_ms: now_ms,
                activation: Activation::Genesis,
                params: genesis.clone(),
            }],
            active: genesis,
            proposals: BTreeMap::new(),
            emergency: None,
            deployment_id: String::new(),
        })
    }

    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    /// The parameter set in force.
    pub fn active(&self) -> &Params {
        &self.active
    }

    pub fn active_version(&self) -> u64 {
        self.active.version
    }

    /// Every version that was in force, oldest first; the last is the active one.
    pub fn history(&self) -> &[VersionRecord] {
        &self.history
    }

    pub fn proposal(&self, id: ProposalId) -> Option<&ProposalRecord> {
        self.proposals.get(&id)
    }

    pub fn proposals(&self) -> impl Iterator<Item = &ProposalRecord> {
        self.proposals.values()
    }

    /// The guardian's latest emergency episode, if there was one.
    pub fn emergency_record(&self) -> Option<&EmergencyRecord> {
        self.emergency.as_ref()
    }

    /// The emergency awaiting ratification, if any.
    pub fn pending_emergency(&self) -> Option<&EmergencyRecord> {
        self.emergency
            .as_ref()
            .filter(|e| e.state == EmergencyState::Pending)
    }

    /// Accepts a proposal for voting. Refused when its id is taken, its hash does not match
    /// its content, it claims to be created after `now_ms`, or its parameters fail the rules
    /// against the set active now (ranges, next version, nothing dropped unannounced).
    pub fn submit(&mut self, proposal: Proposal, now_ms: i64) -> Result<ProposalId, GovError> {
        let id = proposal.id;
        if self.proposals.contains_key(&id) {
            return Err(GovError::DuplicateProposal(id));
        }
        if !proposal.hash_matches() {
            return Err(GovError::HashMismatch(id));
        }
        if proposal.created_ms > now_ms {
            return Err(GovError::CreatedInFuture {
                created_ms: proposal.created_ms,
                now_ms,
            });
        }
        validate_params(&proposal.params, Some(&self.active), &proposal.removals)?;
        self.proposals.insert(
            id,
            ProposalRecord {
                proposal,
                submitted_ms: now_ms,
                approvals: Vec::new(),
                quorum_ms: None,
                state: ProposalState::Pending,
            },
        );
        Ok(id)
    }

    fn member_signed(&self, member: &str, message: &[u8], signature: &[u8; 64]) -> bool {
        self.committee
            .member(member)
            .is_some_and(|m| verify(&m.public_key, message, signature))
    }

    /// Records one member's approval at `now_ms`. Refused for an unknown proposal, a proposal
    /// that is not pending, someone who is not a member, a signature that does not verify
    /// against that member's key for this proposal's hash on this deployment, or a second
    /// approval by the same member. The approval that brings the valid approvals to the
    /// threshold starts the timelock. Returns the number of approvals now held.
    pub fn approve(
        &mut self,
        id: ProposalId,
        approval: Approval,
        now_ms: i64,
    ) -> Result<usize, GovError> {
        let record = self
            .proposals
            .get(&id)
            .ok_or(GovError::UnknownProposal(id))?;
        if record.state != ProposalState::Pending {
            return Err(not_pending(id, &record.state));
        }
        if self.committee.member(&approval.member).is_none() {
            return Err(GovError::UnknownMember(approval.member));
        }
        let message = approval_message(&self.deployment_id, &record.proposal.hash);
        if !self.member_signed(&approval.member, &message, &approval.signature) {
            return Err(GovError::BadSignature {
                proposal: id,
                member: approval.member,
            });
        }
        // An earlier approval by this member that no longer verifies (signed for another
        // deployment id or under an old key) is replaced; one that verifies is a duplicate.
        if record.approvals.iter().any(|a| {
            a.member == approval.member && self.member_signed(&a.member, &message, &a.signature)
        }) {
            return Err(GovError::DuplicateApproval {
                proposal: id,
                member: approval.member,
            });
        }
        let mut record = record.clone();
        record.approvals.retain(|a| a.member != approval.member);
        record.approvals.push(approval);
        if record.quorum_ms.is_none()
            && self.valid_approvers(&record).len() >= self.committee.threshold
        {
            record.quorum_ms = Some(now_ms);
        }
        let count = record.approvals.len();
        self.proposals.insert(id, record);
        Ok(count)
    }

    /// Members whose approval of the proposal verifies now, each counted once. Approvals are
    /// re-checked here so a tampered stored state cannot add votes.
    fn valid_approvers(&self, record: &ProposalRecord) -> Vec<String> {
        let message = approval_message(&self.deployment_id, &record.proposal.hash);
        let mut seen = BTreeSet::new();
        record
            .approvals
            .iter()
            .filter(|a| self.member_signed(&a.member, &message, &a.signature))
            .filter(|a| seen.insert(a.member.clone()))
            .map(|a| a.member.clone())
            .collect()
    }

    /// The distinct members whose signatures in `signatures` all verify for `message`, when
    /// they are at least the threshold. Any signature from a non-member or that does not
    /// verify refuses the whole act: a committee act is presented complete and correct.
    fn committee_act(
        &self,
        act: &str,
        message: &[u8],
        signatures: &[Approval],
    ) -> Result<Vec<String>, GovError> {
        let mut by = BTreeSet::new();
        for s in signatures {
            if self.committee.member(&s.member).is_none() {
                return Err(GovError::UnknownMember(s.member.clone()));
            }
            if !self.member_signed(&s.member, message, &s.signature) {
                return Err(GovError::BadActSignature {
                    act: act.to_string(),
                    member: s.member.clone(),
                });
            }
            by.insert(s.member.clone());
        }
        if by.len() < self.committee.threshold {
            return Err(GovError::NotEnoughSignatures {
                act: act.to_string(),
                signatures: by.len(),
                threshold: self.committee.threshold,
            });
        }
        Ok(by.into_iter().collect())
    }

    /// Cancels a pending proposal with signatures of M distinct members over
    /// [`crate::cancel_message`] (this deployment, this proposal's hash). A cancelled
    /// proposal is never approved or activated again. Refused for a proposal that is not
    /// pending (an activated one is undone only by a new proposal), a non-member, a signature
    /// that does not verify, or fewer than M members. Returns the members who cancelled.
    pub fn cancel(
        &mut self,
        id: ProposalId,
        signatures: &[Approval],
        now_ms: i64,
    ) -> Result<Vec<String>, GovError> {
        let record = self
            .proposals
            .get(&id)
            .ok_or(GovError::UnknownProposal(id))?;
        if record.state != ProposalState::Pending {
            return Err(not_pending(id, &record.state));
        }
        let message = cancel_message(&self.deployment_id, &record.proposal.hash);
        let by = self.committee_act(
            &format!("the cancellation of proposal {id}"),
            &message,
            signatures,
        )?;
        if let Some(r) = self.proposals.get_mut(&id) {
            r.state = ProposalState::Cancelled {
                at_ms: now_ms,
                by: by.clone(),
            };
        }
        Ok(by)
    }

    /// Puts a pending proposal's parameters in force and returns them. Only with approvals
    /// from at least `threshold` distinct members, and only at or after the moment quorum was
    /// reached plus the timelock. Other pending proposals for the same or an older version are
    /// superseded.
    pub fn activate(&mut self, id: ProposalId, now_ms: i64) -> Result<Params, GovError> {
        let record = self
            .proposals
            .get(&id)
            .ok_or(GovError::UnknownProposal(id))?;
        if record.state != ProposalState::Pending {
            return Err(not_pending(id, &record.state));
        }
        if !record.proposal.hash_matches() {
            return Err(GovError::HashMismatch(id));
        }
        let approvers = self.valid_approvers(record);
        if approvers.len() < self.committee.threshold {
            return Err(GovError::NoQuorum {
                proposal: id,
                approvals: approvers.len(),
                threshold: self.committee.threshold,
            });
        }
        // Quorum without a recorded moment (a caller that skipped `reconcile_quorum`): the
        // timelock is taken to start now, so the proposal cannot pass early.
        let eligible_ms = record
            .eligible_ms(self.committee.timelock_ms)
            .unwrap_or_else(|| now_ms.saturating_add(self.committee.timelock_ms.max(1)));
        if now_ms < eligible_ms {
            return Err(GovError::Timelocked {
                proposal: id,
                now_ms,
                eligible_ms,
            });
        }
        validate_params(
            &record.proposal.params,
            Some(&self.active),
            &record.proposal.removals,
        )?;
        let params = record.proposal.params.clone();
        self.install(
            params.clone(),
            now_ms,
            Activation::Proposal { id, approvers },
        );
        if let Some(r) = self.proposals.get_mut(&id) {
            r.state = ProposalState::Activated { at_ms: now_ms };
        }
        Ok(params)
    }

    /// The parameter set of a version that was in force.
    fn version_params(&self, version: u64) -> Option<&Params> {
        self.history
            .iter()
            .find(|r| r.version == version)
            .map(|r| &r.params)
    }

    /// The guardian's emergency path: puts `params` in force at once, without vote or
    /// timelock, when the guardian's signature over [`crate::emergency_message`] (this
    /// deployment) verifies, the set passes every range rule, it is at least as conservative
    /// as the active set in every field ([`crate::conservative`]) and within the guardian's
    /// bound of the base set ([`crate::conservative::check_emergency_bound`]). Otherwise the
    /// first offending field is named.
    ///
    /// The set lapses at `now_ms` + the committee's `ratify_window_ms` unless ratified
    /// ([`Governance::ratify_emergency`]); a further emergency before then keeps the base and
    /// the deadline of the first.
    pub fn emergency(
        &mut self,
        mut params: Params,
        guardian_signature: [u8; 64],
        now_ms: i64,
    ) -> Result<Params, GovError> {
        let guardian = self.committee.guardian.ok_or(GovError::NoGuardian)?;
        params.source = String::new();
        if !verify(
            &guardian,
            &emergency_message(&self.deployment_id, &params),
            &guardian_signature,
        ) {
            return Err(GovError::BadGuardianSignature);
        }
        validate_params(&params, Some(&self.active), &BTreeSet::new())?;
        check_more_conservative(&self.active, &params)?;
        let episode = self.pending_emergency().cloned();
        let base_version = episode
            .as_ref()
            .map_or(self.active.version, |e| e.base_version);
        let base = self.version_params(base_version).ok_or_else(|| {
            GovError::params("emergency", "the base version is not in the history")
        })?;
        check_emergency_bound(base, &params)?;
        let record = match episode {
            Some(e) => EmergencyRecord {
                version: params.version,
                ..e
            },
            None => EmergencyRecord {
                version: params.version,
                base_version,
                started_ms: now_ms,
                expires_ms: now_ms.saturating_add(self.committee.ratify_window_ms),
                state: EmergencyState::Pending,
            },
        };
        self.install(params.clone(), now_ms, Activation::Emergency);
        self.emergency = Some(record);
        Ok(params)
    }

    /// Ratifies the pending emergency set with signatures of M distinct members over
    /// [`crate::ratify_message`] (this deployment, the emergency set in force). Refused when
    /// no emergency is pending, when its window has closed (`now_ms` at or after its
    /// deadline), for a non-member, a signature that does not verify, or fewer than M.
    /// Returns the members who ratified.
    pub fn ratify_emergency(
        &mut self,
        signatures: &[Approval],
        now_ms: i64,
    ) -> Result<Vec<String>, GovError> {
        let e = self
            .pending_emergency()
            .ok_or(GovError::NoPendingEmergency)?;
        if now_ms >= e.expires_ms {
            return Err(GovError::EmergencyExpired {
                version: e.version,
                expires_ms: e.expires_ms,
                now_ms,
            });
        }
        let act = format!("the ratification of emergency version {}", e.version);
        let message = ratify_message(&self.deployment_id, &self.active);
        let by = self.committee_act(&act, &message, signatures)?;
        if let Some(e) = self.emergency.as_mut() {
            e.state = EmergencyState::Ratified {
                at_ms: now_ms,
                by: by.clone(),
            };
        }
        Ok(by)
    }

    /// Whether a pending emergency set has reached its deadline at `now_ms`.
    pub fn emergency_due(&self, now_ms: i64) -> bool {
        self.pending_emergency()
            .is_some_and(|e| now_ms >= e.expires_ms)
    }

    /// Lapses the pending emergency set when its deadline has passed: the base set's content
    /// goes back in force as the next version ([`Activation::EmergencyLapsed`]) and is
    /// returned, for the service to put in force through its event log. `None` when nothing
    /// is due.
    pub fn expire_emergency(&mut self, now_ms: i64) -> Option<Params> {
        if !self.emergency_due(now_ms) {
            return None;
        }
        let e = self.emergency.clone()?;
        let mut restored = self.version_params(e.base_version)?.clone();
        restored.version = self.active.version + 1;
        self.install(
            restored.clone(),
            now_ms,
            Activation::EmergencyLapsed {
                emergency_version: e.version,
                base_version: e.base_version,
            },
        );
        if let Some(e) = self.emergency.as_mut() {
            e.state = EmergencyState::Lapsed {
                at_ms: now_ms,
                restored_version: restored.version,
            };
        }
        Some(restored)
    }

    fn install(&mut self, params: Params, now_ms: i64, activation: Activation) {
        let version = params.version;
        for r in self.proposals.values_mut() {
            if r.state == ProposalState::Pending && r.proposal.params.version <= version {
                r.state = ProposalState::Superseded {
                    by_version: version,
                };
            }
        }
        // A committee-approved set ends a pending emergency episode: nothing is left to lapse.
        if matches!(
            activation,
            Activation::Proposal { .. } | Activation::Recovered
        ) {
            if let Some(e) = self
                .emergency
                .as_mut()
                .filter(|e| e.state == EmergencyState::Pending)
            {
                e.state = EmergencyState::Superseded {
                    by_version: version,
                };
            }
        }
        self.history.push(VersionRecord {
            version,
            activated_ms: now_ms,
            activation,
            params: params.clone(),
        });
        self.active = params;
    }
}
