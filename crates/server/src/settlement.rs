//! Signed settlement messages: an account's margin figures as an EIP-712 `MarginUpdate`
//! signed with the service's secp256k1 key, so an EVM contract can check them with ecrecover.
//!
//! The key comes from `PMARGIN_SIGNING_KEY` (hex, 32 bytes), else from `signing.key` in the
//! data directory (generated there on first start, mode 0600), else (no data directory) a
//! fresh key per start. Nonces are strictly increasing: they continue from the wall clock in
//! microseconds at start, so they also keep increasing across restarts.

use crate::api::Shared;
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::now_ms;
use axum::extract::{Path, State};
use axum::Json;
use pmargin_settlement::{
    account_id, to_checksum_address, to_fixed, to_fixed_unsigned, Eip712Domain, MarginUpdate,
    NonceCounter, Signer,
};
use serde_json::{json, Value};
use std::path::Path as FsPath;
use std::sync::Mutex;

/// The EIP-712 domain settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementConfig {
    pub chain_id: u64,
    pub verifying_contract: [u8; 20],
    /// The secret key (overrides the environment and the data directory).
    pub signing_key: Option<[u8; 32]>,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            chain_id: 31337,
            verifying_contract: [0; 20],
            signing_key: None,
        }
    }
}

pub const SIGNING_KEY_ENV: &str = "PMARGIN_SIGNING_KEY";

pub struct Settlement {
    pub domain: Eip712Domain,
    signer: Mutex<Signer>,
}

fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    hex::decode(t)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "a signing key must be 32 bytes of hex".to_string())
}

fn random_key() -> Result<[u8; 32], String> {
    let mut k = [0u8; 32];
    getrandom::getrandom(&mut k).map_err(|e| format!("no randomness: {e}"))?;
    Ok(k)
}

impl Settlement {
    pub fn open(config: &SettlementConfig, dir: Option<&FsPath>) -> Result<Settlement, String> {
        let secret = match (config.signing_key, std::env::var(SIGNING_KEY_ENV).ok(), dir) {
            (Some(k), _, _) => k,
            (None, Some(env), _) => {
                parse_key(&env).map_err(|e| format!("{SIGNING_KEY_ENV}: {e}"))?
            }
            (None, None, Some(dir)) => {
                let path = dir.join("signing.key");
                match std::fs::read_to_string(&path) {
                    Ok(text) => parse_key(&text).map_err(|e| format!("{}: {e}", path.display()))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let k = random_key()?;
                        crate::store::write_file_atomic(&path, &hex::encode(k))?;
                        #[cfg(unix)]
                        {
                            use std::os::unix::fs::PermissionsExt;
                            let _ = std::fs::set_permissions(
                                &path,
                                std::fs::Permissions::from_mode(0o600),
                            );
                        }
                        k
                    }
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                }
            }
            (None, None, None) => random_key()?,
        };
        let start = u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(0);
        let signer = Signer::with_nonces(secret, NonceCounter::resume_after(start))
            .map_err(|e| format!("signing key: {e}"))?;
        Ok(Settlement {
            domain: Eip712Domain::pmargin(config.chain_id, config.verifying_contract),
            signer: Mutex::new(signer),
        })
    }

    pub fn address(&self) -> [u8; 20] {
        self.signer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .address()
    }
}

const READERS: &[Role] = &[
    Role::Admin,
    Role::RiskCommittee,
    Role::ReadOnly,
    Role::Trader,
];

/// `GET /v1/accounts/{id}/settlement`: the account's figures now, signed.
pub async fn get_settlement(
    caller: Caller,
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READERS)?;
    caller.require_account(&id)?;
    let settlement = state
        .settlement
        .get()
        .ok_or_else(|| ApiError::unavailable("no signing key is configured"))?;
    let (sequence, risk, params_version) = {
        let engine = state.engine();
        let risk = engine
            .risk(&id)
            .ok_or_else(|| ApiError::not_found(format!("no account `{id}`")))?;
        (engine.sequence(), risk, engine.params().version)
    };
    let fixed = |e: pmargin_settlement::Error| ApiError::unprocessable(e.to_string());
    let status = match risk.status.as_str() {
        "healthy" => 0,
        "restricted" => 1,
        "liquidatable" => 2,
        _ => 3,
    };
    let mut update = MarginUpdate {
        account: account_id(&id),
        equity: to_fixed(risk.equity).map_err(fixed)?,
        margin_balance: to_fixed(risk.margin_balance).map_err(fixed)?,
        initial_margin: to_fixed_unsigned(risk.initial_margin.max(0.0)).map_err(fixed)?,
        maintenance_margin: to_fixed_unsigned(risk.maintenance_margin.max(0.0)).map_err(fixed)?,
        status,
        params_version,
        nonce: 0,
        timestamp: u64::try_from(now_ms() / 1000).unwrap_or(0),
    };
    let signed = {
        let mut signer = settlement.signer.lock().unwrap_or_else(|p| p.into_inner());
        update.nonce = signer.next_nonce().map_err(fixed)?;
        signer
            .sign_margin_update(&settlement.domain, &update)
            .map_err(|e| ApiError::internal(e.to_string()))?
    };
    Ok(Json(json!({
        "sequence": sequence,
        "account": id,
        "domain": settlement.domain,
        "signer": to_checksum_address(&settlement.address()),
        "signed": signed,
    })))
}
