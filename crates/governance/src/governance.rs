//! The governance state machine: submit, approve, activate, and the guardian's emergency path.

use crate::committee::{approval_message, emergency_message, verify, Approval, Committee};
use crate::conservative::check_more_conservative;
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
}

impl ProposalState {
    fn name(&self) -> String {
        match self {
            ProposalState::Pending => "pending".into(),
            ProposalState::Activated { at_ms } => format!("activated (at {at_ms} ms)"),
            ProposalState::Superseded { by_version } => {
                format!("superseded (version {by_version} was activated)")
            }
        }
    }
}

/// A submitted proposal with the approvals gathered so far, in the order they came.
///
/// The timelock runs from `submitted_ms`: a proposal cannot shorten it by claiming an earlier
/// creation time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalRecord {
    pub proposal: Proposal,
    pub submitted_ms: i64,
    pub approvals: Vec<Approval>,
    pub state: ProposalState,
}

impl ProposalRecord {
    /// The earliest moment the proposal may be activated: submission (never before its
    /// creation) plus the committee's timelock.
    pub fn eligible_ms(&self, timelock_ms: i64) -> i64 {
        self.submitted_ms
            .max(self.proposal.created_ms)
            .saturating_add(timelock_ms)
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

/// The governed parameters: the committee, the set in force, every version that was ever in
/// force, and every proposal with its approvals.
///
/// Parameters change in only two ways: a proposal with approvals from M of the N members,
/// activated after its timelock; or the guardian's emergency set, which must be more
/// conservative than the active one in every field. Every refused step leaves the state as it
/// was. Nothing here reads the clock: the caller passes `now_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "GovernanceState")]
pub struct Governance {
    committee: Committee,
    active: Params,
    history: Vec<VersionRecord>,
    proposals: BTreeMap<ProposalId, ProposalRecord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GovernanceState {
    committee: Committee,
    active: Params,
    history: Vec<VersionRecord>,
    proposals: BTreeMap<ProposalId, ProposalRecord>,
}

impl Governance {
    /// A stored state from its parts (as a database keeps them), checked like a deserialized
    /// one: a valid committee, a history whose last entry is the active set, proposals whose
    /// hashes match their content.
    pub fn from_parts(
        committee: Committee,
        history: Vec<VersionRecord>,
        proposals: Vec<ProposalRecord>,
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
        })
    }

    /// Replaces the committee (a reconfigured service). Proposals and history are kept;
    /// approvals are re-verified against the new members' keys at activation, so approvals of
    /// members no longer on the committee stop counting.
    pub fn replace_committee(&mut self, committee: Committee) -> Result<(), GovError> {
        committee.validate()?;
        self.committee = committee;
        Ok(())
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
    /// that ends in the active set, and proposals whose hashes match their content.
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
        Ok(Governance {
            committee: s.committee,
            active: s.active,
            history: s.history,
            proposals: s.proposals,
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
                state: ProposalState::Pending,
            },
        );
        Ok(id)
    }

    /// Records one member's approval. Refused for an unknown proposal, a proposal that is not
    /// pending, someone who is not a member, a signature that does not verify against that
    /// member's key for this proposal's hash, or a second approval by the same member.
    /// Returns the number of approvals now held.
    pub fn approve(&mut self, id: ProposalId, approval: Approval) -> Result<usize, GovError> {
        let record = self
            .proposals
            .get_mut(&id)
            .ok_or(GovError::UnknownProposal(id))?;
        if record.state != ProposalState::Pending {
            return Err(GovError::NotPending {
                proposal: id,
                state: record.state.name(),
            });
        }
        let member = self
            .committee
            .member(&approval.member)
            .ok_or_else(|| GovError::UnknownMember(approval.member.clone()))?;
        if !verify(
            &member.public_key,
            &approval_message(&record.proposal.hash),
            &approval.signature,
        ) {
            return Err(GovError::BadSignature {
                proposal: id,
                member: approval.member,
            });
        }
        if record.approvals.iter().any(|a| a.member == approval.member) {
            return Err(GovError::DuplicateApproval {
                proposal: id,
                member: approval.member,
            });
        }
        record.approvals.push(approval);
        Ok(record.approvals.len())
    }

    /// Members whose approval of the proposal verifies now, each counted once. Approvals are
    /// re-checked here so a tampered stored state cannot add votes.
    fn valid_approvers(&self, record: &ProposalRecord) -> Vec<String> {
        let message = approval_message(&record.proposal.hash);
        let mut seen = BTreeSet::new();
        record
            .approvals
            .iter()
            .filter(|a| {
                self.committee
                    .member(&a.member)
                    .is_some_and(|m| verify(&m.public_key, &message, &a.signature))
            })
            .filter(|a| seen.insert(a.member.clone()))
            .map(|a| a.member.clone())
            .collect()
    }

    /// Puts a pending proposal's parameters in force and returns them. Only with approvals
    /// from at least `threshold` distinct members, and only at or after submission plus the
    /// timelock. Other pending proposals for the same or an older version are superseded.
    pub fn activate(&mut self, id: ProposalId, now_ms: i64) -> Result<Params, GovError> {
        let record = self
            .proposals
            .get(&id)
            .ok_or(GovError::UnknownProposal(id))?;
        if record.state != ProposalState::Pending {
            return Err(GovError::NotPending {
                proposal: id,
                state: record.state.name(),
            });
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
        let eligible_ms = record.eligible_ms(self.committee.timelock_ms);
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

    /// The guardian's emergency path: puts `params` in force at once, without vote or
    /// timelock, when the guardian's signature over [`crate::emergency_message`] verifies,
    /// the set passes every range rule, and it is at least as conservative as the active set
    /// in every field ([`crate::conservative`]). Otherwise the first less conservative field
    /// is named.
    pub fn emergency(
        &mut self,
        mut params: Params,
        guardian_signature: [u8; 64],
        now_ms: i64,
    ) -> Result<Params, GovError> {
        let guardian = self.committee.guardian.ok_or(GovError::NoGuardian)?;
        params.source = String::new();
        if !verify(&guardian, &emergency_message(&params), &guardian_signature) {
            return Err(GovError::BadGuardianSignature);
        }
        validate_params(&params, Some(&self.active), &BTreeSet::new())?;
        check_more_conservative(&self.active, &params)?;
        self.install(params.clone(), now_ms, Activation::Emergency);
        Ok(params)
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
        self.history.push(VersionRecord {
            version,
            activated_ms: now_ms,
            activation,
            params: params.clone(),
        });
        self.active = params;
    }
}
