//! Proposals: a full parameter set with its reasons, checked and fingerprinted.

use crate::canonical::canonical_params;
use crate::error::GovError;
use pmargin_core::Params;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Domain tag that starts the bytes a proposal's hash is computed over.
pub const PROPOSAL_HASH_DOMAIN: &[u8] = b"pmargin-proposal-hash-v1";

/// Identifier of a proposal, chosen by whoever drafts it and unique within one governance.
pub type ProposalId = u64;

/// A request to the risk committee to replace the active risk parameters with a new full set.
///
/// It carries the complete parameter set (not a diff), the reasons for the change, who asks
/// for it and when it was drafted. Removing an underlying or a collateral asset must be spelled
/// out in `removals` (as `underlyings.ETH` or `collateral.ETH`) so that nothing disappears by
/// accident. `hash` is the proposal's fingerprint: committee members sign it, so any change to
/// any of these fields after signing voids every approval. See [`Proposal::compute_hash`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    pub id: ProposalId,
    pub params: Params,
    pub rationale: String,
    pub proposer: String,
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub removals: BTreeSet<String>,
    #[serde(with = "crate::hexbytes")]
    pub hash: [u8; 32],
}

impl Proposal {
    /// Checks and fingerprints a proposal that removes nothing. `active` is the parameter set
    /// in force (None only for a first, genesis set): the new set must carry the next version
    /// and keep every underlying and collateral asset of the active one.
    pub fn new(
        id: ProposalId,
        params: Params,
        rationale: impl Into<String>,
        proposer: impl Into<String>,
        created_ms: i64,
        active: Option<&Params>,
    ) -> Result<Proposal, GovError> {
        Proposal::with_removals(
            id,
            params,
            rationale,
            proposer,
            created_ms,
            BTreeSet::new(),
            active,
        )
    }

    /// As [`Proposal::new`], with underlyings or collateral assets of the active set that the
    /// proposal deliberately drops, named by path (`underlyings.ETH`, `collateral.ETH`).
    pub fn with_removals(
        id: ProposalId,
        mut params: Params,
        rationale: impl Into<String>,
        proposer: impl Into<String>,
        created_ms: i64,
        removals: BTreeSet<String>,
        active: Option<&Params>,
    ) -> Result<Proposal, GovError> {
        params.source = String::new();
        let rationale = rationale.into();
        let proposer = proposer.into();
        if rationale.trim().is_empty() {
            return Err(GovError::InvalidProposal {
                field: "rationale".into(),
                message: "a proposal must say why".into(),
            });
        }
        if proposer.trim().is_empty() {
            return Err(GovError::InvalidProposal {
                field: "proposer".into(),
                message: "must name who proposes".into(),
            });
        }
        validate_params(&params, active, &removals)?;
        let mut proposal = Proposal {
            id,
            params,
            rationale,
            proposer,
            created_ms,
            removals,
            hash: [0; 32],
        };
        proposal.hash = proposal.compute_hash();
        Ok(proposal)
    }

    /// SHA-256 over a domain-separated, length-prefixed encoding:
    ///
    /// `"pmargin-proposal-hash-v1" || be64(id) || be64(created_ms) || field(proposer) ||
    /// field(rationale) || field(canonical JSON of params) || be64(#removals) ||
    /// field(removal)...` where `field(x) = be64(len(x)) || x` and removals are sorted.
    /// The canonical JSON has sorted keys and no whitespace (see [`crate::canonical`]).
    pub fn compute_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let field = |h: &mut Sha256, bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        h.update(PROPOSAL_HASH_DOMAIN);
        h.update(self.id.to_be_bytes());
        h.update(self.created_ms.to_be_bytes());
        field(&mut h, self.proposer.as_bytes());
        field(&mut h, self.rationale.as_bytes());
        field(&mut h, canonical_params(&self.params).as_bytes());
        h.update((self.removals.len() as u64).to_be_bytes());
        for r in &self.removals {
            field(&mut h, r.as_bytes());
        }
        h.finalize().into()
    }

    /// Whether the stored hash still matches the content.
    pub fn hash_matches(&self) -> bool {
        self.compute_hash() == self.hash
    }

    /// The hash as lower-case hex, for people and logs.
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

/// Largest accepted `vol_scan_up`: 500 vol points.
pub const MAX_VOL_SCAN_UP: f64 = 5.0;

/// Every rule a governed parameter set must pass, on top of [`Params::validate`]:
///
/// - per underlying: `vol_scan_down <= 1` (a vol cannot fall by more than 100 points),
///   `vol_scan_up <= 5`, `standard_im_rate <= 1`, and the extreme down move
///   `extreme_multiple * price_scan_range` below 1 (prices stay positive);
/// - `grid.extreme_multiple >= 1` (an extreme is at least the scan range);
/// - `som_rate`, `short_option_im_base <= 1`, `short_option_im_floor <= short_option_im_base`,
///   `short_option_mm <= short_option_im_floor` (maintenance never exceeds initial);
/// - with an active set: `version` is the active version + 1, and every underlying and
///   collateral asset of the active set is kept unless named in `removals`; each removal
///   names something that is really removed.
///
/// Errors name the field by its JSON path.
pub fn validate_params(
    params: &Params,
    active: Option<&Params>,
    removals: &BTreeSet<String>,
) -> Result<(), GovError> {
    params
        .validate("proposal")
        .map_err(|e| GovError::params(e.path, e.message))?;
    let at_most = |field: String, v: f64, max: f64| {
        if v <= max {
            Ok(())
        } else {
            Err(GovError::params(
                field,
                format!("must be at most {max}, got {v}"),
            ))
        }
    };
    let g = &params.grid;
    if g.extreme_multiple < 1.0 {
        return Err(GovError::params(
            "grid.extreme_multiple",
            format!(
                "must be at least 1 (an extreme move is at least the scan range), got {}",
                g.extreme_multiple
            ),
        ));
    }
    for (name, u) in &params.underlyings {
        let p = format!("underlyings.{name}");
        at_most(format!("{p}.vol_scan_down"), u.vol_scan_down, 1.0)?;
        at_most(format!("{p}.vol_scan_up"), u.vol_scan_up, MAX_VOL_SCAN_UP)?;
        at_most(format!("{p}.standard_im_rate"), u.standard_im_rate, 1.0)?;
        let extreme = g.extreme_multiple * u.price_scan_range;
        if extreme >= 1.0 {
            return Err(GovError::params(
                format!("{p}.price_scan_range"),
                format!(
                    "the extreme move grid.extreme_multiple x price_scan_range = {extreme} must stay below 1"
                ),
            ));
        }
    }
    at_most("som_rate".into(), params.som_rate, 1.0)?;
    at_most(
        "short_option_im_base".into(),
        params.short_option_im_base,
        1.0,
    )?;
    if params.short_option_im_floor > params.short_option_im_base {
        return Err(GovError::params(
            "short_option_im_floor",
            "must not exceed short_option_im_base",
        ));
    }
    if params.short_option_mm > params.short_option_im_floor {
        return Err(GovError::params(
            "short_option_mm",
            "must not exceed short_option_im_floor",
        ));
    }
    if let Some(active) = active {
        if params.version != active.version + 1 {
            return Err(GovError::params(
                "version",
                format!(
                    "must be {} (the active version {} + 1), got {}",
                    active.version + 1,
                    active.version,
                    params.version
                ),
            ));
        }
        // Underlyings first, then collateral: the first missing one is named.
        let dropped: Vec<String> = active
            .underlyings
            .keys()
            .filter(|k| !params.underlyings.contains_key(*k))
            .map(|k| format!("underlyings.{k}"))
            .chain(
                active
                    .collateral
                    .keys()
                    .filter(|k| !params.collateral.contains_key(*k))
                    .map(|k| format!("collateral.{k}")),
            )
            .collect();
        if let Some(missing) = dropped.iter().find(|d| !removals.contains(*d)) {
            return Err(GovError::params(
                missing.clone(),
                "present in the active set but missing here; list it in `removals` to remove it",
            ));
        }
        if let Some(extra) = removals.iter().find(|r| !dropped.contains(r)) {
            return Err(GovError::InvalidProposal {
                field: "removals".into(),
                message: format!("`{extra}` is not removed by this proposal"),
            });
        }
    } else if let Some(extra) = removals.iter().next() {
        return Err(GovError::InvalidProposal {
            field: "removals".into(),
            message: format!("`{extra}`: there is no active set to remove from"),
        });
    }
    Ok(())
}
