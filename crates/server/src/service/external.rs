//! Attested positions in other protocols (docs/MODEL.md section 12, issue 20): checking an
//! `ExternalPositionAttestation` and its signature before it becomes an event, and the clock
//! that expires attested collateral.
//!
//! The signature is the authority on what the position is: it must recover (EIP-712 under the
//! deployment's domain, secp256k1) to the attester the active parameters register for the
//! protocol (`external_protocols.<p>.attester`, which only governance changes). The engine then
//! refuses, deterministically and with nothing changed, a nonce the attester used, an expired
//! or a stale attestation, and re-checks the protocol and the attester against the parameters
//! in force when the event is applied (`pmargin_engine::engine::attested`).

use crate::error::{ErrorKind, ServiceError};
use crate::service::state::AppState;
use pmargin_core::input::portfolio::{ExternalPosition, LendingPosition, LiquidityPosition};
use pmargin_engine::engine::ATTESTATION_REJECTION;
use pmargin_engine::{Engine, Event, Output};
use pmargin_settlement::{
    from_wad, parse_address, parse_hex, recover_attester, to_checksum_address, Eip712Domain,
    Error as SettlementError, ExternalKind, ExternalPositionAttestation,
};
use serde::Deserialize;
use std::sync::Arc;

/// The body of `POST /v1/external`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationIn {
    pub attestation: ExternalPositionAttestation,
    /// `0x` + 65 bytes `r || s || v` (v = 27 or 28).
    pub signature: String,
}

/// The attestation as a portfolio position, its numbers read from 18 decimals.
pub fn position_of(att: &ExternalPositionAttestation) -> ExternalPosition {
    match att.kind {
        ExternalKind::UniswapV3Lp => ExternalPosition::UniswapV3Lp(LiquidityPosition {
            protocol: att.protocol.clone(),
            token0: att.token0.clone(),
            token1: att.token1.clone(),
            liquidity: from_wad(att.liquidity),
            price_lower: from_wad(att.price_lower),
            price_upper: from_wad(att.price_upper),
        }),
        ExternalKind::LendingDeposit | ExternalKind::LendingBorrow => {
            let lending = LendingPosition {
                protocol: att.protocol.clone(),
                asset: att.asset.clone(),
                amount: from_wad(att.amount),
            };
            if att.kind == ExternalKind::LendingDeposit {
                ExternalPosition::LendingDeposit(lending)
            } else {
                ExternalPosition::LendingBorrow(lending)
            }
        }
    }
}

fn attestation_error(kind: ErrorKind, code: &'static str, message: String) -> ServiceError {
    ServiceError::new(kind, code, message)
}

/// Checks a posted attestation against the engine's parameters and makes its event, stamped
/// `now_s`: a member that breaks the format (400 naming `attestation.<member>`), a malformed
/// signature (400), a protocol without an entry or an attester (422 `unknown_protocol`), a
/// signature by anyone but the registered attester (403 `forged_attestation`).
pub fn attestation_event(
    engine: &Engine,
    domain: &Eip712Domain,
    body: &AttestationIn,
    now_s: u64,
) -> Result<Event, ServiceError> {
    let att = &body.attestation;
    let signature = parse_hex::<65>(&body.signature).map_err(|e| {
        ServiceError::bad_request(format!("signature: {e}")).with_field("signature")
    })?;
    let protocol = engine.params().external_protocols.get(&att.protocol);
    let registered = protocol
        .and_then(|p| p.attester.as_deref())
        .ok_or_else(|| {
            attestation_error(
                ErrorKind::Unprocessable,
                "unknown_protocol",
                format!(
                    "protocol `{}` has no attester in the parameters' external_protocols",
                    att.protocol
                ),
            )
            .with_field("attestation.protocol")
        })?;
    let registered = parse_address(&registered.to_ascii_lowercase()).map_err(|e| {
        ServiceError::internal(format!("the registered attester is not an address: {e}"))
    })?;
    let recovered = recover_attester(att, &signature, domain).map_err(|e| match e {
        SettlementError::InvalidField { field, reason } => {
            ServiceError::bad_request(format!("attestation.{field} {reason}"))
                .with_field(format!("attestation.{field}"))
        }
        other => attestation_error(
            ErrorKind::Forbidden,
            "forged_attestation",
            format!("the signature does not verify: {other}"),
        )
        .with_field("signature"),
    })?;
    if recovered != registered {
        return Err(attestation_error(
            ErrorKind::Forbidden,
            "forged_attestation",
            format!(
                "signed by {}, not by the attester of `{}` ({})",
                to_checksum_address(&recovered),
                att.protocol,
                to_checksum_address(&registered)
            ),
        )
        .with_field("signature"));
    }
    Ok(Event::Attestation {
        account: att.account.clone(),
        position: position_of(att),
        attester: format!("0x{}", hex::encode(recovered)),
        nonce: att.nonce,
        valid_until: att.valid_until,
        now_s,
    })
}

/// The refusal of an attestation event the engine refused: why, as a status and a code.
pub fn refusal(outputs: &[Output]) -> Option<ServiceError> {
    let reason = outputs.iter().find_map(|o| match o {
        Output::Rejected { reason, .. } => Some(reason.clone()),
        _ => None,
    })?;
    let why = reason
        .strip_prefix(ATTESTATION_REJECTION)
        .and_then(|r| r.trim_start().split(':').next())
        .unwrap_or("");
    let (kind, code) = match why {
        "forged" => (ErrorKind::Forbidden, "forged_attestation"),
        "replayed" => (ErrorKind::Conflict, "replayed_attestation"),
        "stale" => (ErrorKind::Conflict, "stale_attestation"),
        "expired" => (ErrorKind::Unprocessable, "expired_attestation"),
        "unknown_protocol" => (ErrorKind::Unprocessable, "unknown_protocol"),
        _ => (ErrorKind::Unprocessable, "rejected"),
    };
    Some(ServiceError::new(kind, code, reason))
}

/// How often the attestations' clock looks for expired collateral.
pub const ATTESTATION_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Seconds since the epoch.
pub fn now_s() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

/// The attestations' clock: every `every`, if some attested collateral has expired, an
/// [`Event::AttestationTick`] goes through the writer like any event (logged, so a replay
/// expires the same positions at the same point).
pub async fn attestation_clock(state: Arc<AppState>, every: std::time::Duration) {
    let mut interval = tokio::time::interval(every.max(std::time::Duration::from_millis(10)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let now = now_s();
        let due = state.failure().is_none()
            && state.takes_writes()
            && state.engine().attestation_tick_due(now);
        if due {
            let tick = Event::AttestationTick { now_s: now };
            if let Err(e) = state.submit(tick, "attestation-clock", None).await {
                eprintln!("pmargin: attestation clock: {e}");
            }
        }
    }
}
