//! Positions attested by other protocols (docs/MODEL.md section 12, issue 20): applying an
//! [`Event::Attestation`](crate::event::Event::Attestation) and the attestations' clock,
//! [`Event::AttestationTick`](crate::event::Event::AttestationTick).
//!
//! The service verifies an attestation's signature before it logs the event; the engine keeps
//! what makes the decision deterministic on replay: which nonces each attester has used, and
//! until when each attested position is vouched for. It refuses (changing nothing) a protocol
//! the parameters do not list, an attester other than the one they register, a nonce the
//! attester already used, an attestation expired at the event's time, and one older (a lower
//! nonce of the same attester) than the position's current attestation.
//!
//! Expiry is conservative: once `valid_until` has passed, an attested deposit or liquidity
//! position stops counting (it is removed), while a borrow keeps counting until a newer
//! attestation replaces it: an attester that stops vouching must never make an account look
//! richer. A used nonce is remembered until its attestation expires; after that the
//! attestation is refused as expired anyway, so the set stays bounded by the live ones.

use super::{reject, Engine};
use crate::event::Output;
use crate::rejection::{RejectReason, Rejection};
use pmargin_core::input::portfolio::ExternalPosition;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the engine remembers of the attestations it accepted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attested {
    /// Per attester (lowercase `0x` address): each nonce it used, with that attestation's
    /// `valid_until` (Unix seconds).
    pub used: BTreeMap<String, BTreeMap<u64, u64>>,
    /// Per account, per position key ([`position_key`]): the attestation it counts on.
    pub positions: BTreeMap<String, BTreeMap<String, Stamp>>,
}

impl Attested {
    pub fn is_empty(&self) -> bool {
        self.used.is_empty() && self.positions.is_empty()
    }
}

/// The attestation a position counts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stamp {
    pub attester: String,
    pub nonce: u64,
    pub valid_until: u64,
    /// A deposit or a liquidity position (it expires); a borrow does not.
    pub collateral: bool,
}

/// One position per key: a lending market holds one balance per asset and kind, a pool one
/// position per owner and range. The range's ends in shortest decimals, as the settlement
/// crate's `lp_position_id` writes them.
pub fn position_key(p: &ExternalPosition) -> String {
    match p {
        ExternalPosition::UniswapV3Lp(x) => format!(
            "{}:uniswap_v3_lp:{}:{}:{}:{}",
            x.protocol, x.token0, x.token1, x.price_lower, x.price_upper
        ),
        ExternalPosition::LendingDeposit(x) => {
            format!("{}:lending_deposit:{}", x.protocol, x.asset)
        }
        ExternalPosition::LendingBorrow(x) => format!("{}:lending_borrow:{}", x.protocol, x.asset),
    }
}

/// A zero liquidity or amount attests that the position is closed.
fn is_closed(p: &ExternalPosition) -> bool {
    match p {
        ExternalPosition::UniswapV3Lp(x) => x.liquidity == 0.0,
        ExternalPosition::LendingDeposit(x) | ExternalPosition::LendingBorrow(x) => x.amount == 0.0,
    }
}

fn refused(label: &'static str, detail: String) -> Rejection {
    reject(RejectReason::Attestation { label, detail })
}

/// An attestation as the event carries it.
pub struct Attestation<'a> {
    pub account: &'a str,
    pub position: &'a ExternalPosition,
    pub attester: &'a str,
    pub nonce: u64,
    pub valid_until: u64,
    pub now_s: u64,
}

impl Engine {
    /// The attestations the engine accepted and still remembers.
    pub fn attested(&self) -> &Attested {
        &self.attested
    }

    /// Whether an attestation tick at `now_s` would stop counting some attested collateral
    /// (the service's clock logs a tick only then).
    pub fn attestation_tick_due(&self, now_s: u64) -> bool {
        self.attested
            .positions
            .values()
            .flat_map(|m| m.values())
            .any(|s| s.collateral && s.valid_until < now_s)
    }

    /// Applies an attested position: replaces the account's position with the same key, adds
    /// it, or (zero liquidity or amount) removes it. See the module documentation.
    pub(super) fn attest(
        &mut self,
        att: &Attestation<'_>,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        let protocol = att.position.protocol();
        let registered = self
            .book
            .params
            .external_protocols
            .get(protocol)
            .ok_or_else(|| {
                refused(
                    "unknown_protocol",
                    format!(
                        "protocol `{protocol}` has no entry in the parameters' external_protocols"
                    ),
                )
            })?
            .attester
            .clone();
        let attester = att.attester.to_ascii_lowercase();
        if !registered.is_some_and(|r| r.eq_ignore_ascii_case(&attester)) {
            return Err(refused(
                "forged",
                format!("{attester} is not the attester the parameters register for `{protocol}`"),
            ));
        }
        if att.valid_until < att.now_s {
            return Err(refused(
                "expired",
                format!(
                    "valid until {} but it is {} (Unix seconds)",
                    att.valid_until, att.now_s
                ),
            ));
        }
        if self
            .attested
            .used
            .get(&attester)
            .is_some_and(|n| n.contains_key(&att.nonce))
        {
            return Err(refused(
                "replayed",
                format!("nonce {} of {attester} was already used", att.nonce),
            ));
        }
        let key = position_key(att.position);
        if let Some(current) = self
            .attested
            .positions
            .get(att.account)
            .and_then(|m| m.get(&key))
        {
            if current.attester == attester && current.nonce > att.nonce {
                return Err(refused(
                    "stale",
                    format!(
                        "nonce {} is older than the position's current attestation, nonce {}",
                        att.nonce, current.nonce
                    ),
                ));
            }
        }
        let mut external = self
            .account(att.account)
            .map(|a| a.external)
            .unwrap_or_default();
        let closed = is_closed(att.position);
        match external.iter().position(|x| position_key(x) == key) {
            Some(j) if closed => {
                external.remove(j);
            }
            Some(j) => external[j] = att.position.clone(),
            None if closed => {}
            None => external.push(att.position.clone()),
        }
        // 20a's handler checks every position against the format and the parameters and
        // changes nothing when it refuses.
        self.set_external_into(att.account, &external, out)?;
        let positions = self
            .attested
            .positions
            .entry(att.account.to_string())
            .or_default();
        if closed {
            positions.remove(&key);
        } else {
            positions.insert(
                key,
                Stamp {
                    attester: attester.clone(),
                    nonce: att.nonce,
                    valid_until: att.valid_until,
                    collateral: !matches!(att.position, ExternalPosition::LendingBorrow(_)),
                },
            );
        }
        self.attested
            .used
            .entry(attester)
            .or_default()
            .insert(att.nonce, att.valid_until);
        self.expire_attestations(att.now_s, out)?;
        self.liquidation_round(out);
        Ok(())
    }

    /// The attestations' clock: at `now_s`, every attested deposit or liquidity position whose
    /// attestation has expired stops counting (a borrow keeps counting), and the nonces of
    /// expired attestations are forgotten.
    pub(super) fn attestation_tick(
        &mut self,
        now_s: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejection> {
        self.expire_attestations(now_s, out)?;
        self.liquidation_round(out);
        Ok(())
    }

    fn expire_attestations(&mut self, now_s: u64, out: &mut Vec<Output>) -> Result<(), Rejection> {
        for nonces in self.attested.used.values_mut() {
            nonces.retain(|_, valid_until| *valid_until >= now_s);
        }
        self.attested.used.retain(|_, n| !n.is_empty());
        let mut expired: Vec<(String, Vec<String>)> = Vec::new();
        for (account, positions) in &self.attested.positions {
            let keys: Vec<String> = positions
                .iter()
                .filter(|(_, s)| s.collateral && s.valid_until < now_s)
                .map(|(k, _)| k.clone())
                .collect();
            if !keys.is_empty() {
                expired.push((account.clone(), keys));
            }
        }
        for (account, keys) in expired {
            let mut external = self
                .account(&account)
                .map(|a| a.external)
                .unwrap_or_default();
            external.retain(|x| !keys.contains(&position_key(x)));
            self.set_external_into(&account, &external, out)?;
            if let Some(positions) = self.attested.positions.get_mut(&account) {
                positions.retain(|k, _| !keys.contains(k));
            }
        }
        self.attested.positions.retain(|_, p| !p.is_empty());
        Ok(())
    }
}
