//! Bearer API keys and roles.
//!
//! A key is `pmk_` followed by 64 hex digits (32 random bytes). Only its SHA-256 is kept; a
//! presented key is hashed, looked up by hash, and the stored hash compared in constant time.

use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    RiskCommittee,
    OracleFeeder,
    Trader,
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::RiskCommittee => "risk_committee",
            Role::OracleFeeder => "oracle_feeder",
            Role::Trader => "trader",
            Role::ReadOnly => "read_only",
        }
    }
}

/// Roles that may read accounts (a trader only its own; see [`Caller::require_account`]).
pub const READERS: &[Role] = &[
    Role::Admin,
    Role::RiskCommittee,
    Role::ReadOnly,
    Role::Trader,
];
/// Roles that may read across accounts: the venue's staff.
pub const STAFF: &[Role] = &[Role::Admin, Role::RiskCommittee, Role::ReadOnly];

/// A stored key: never the key itself, only its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub id: String,
    pub role: Role,
    /// For a trader: the accounts it may read and trade.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Hex SHA-256 of the key.
    pub hash: String,
    pub created_ms: i64,
    #[serde(default)]
    pub label: Option<String>,
}

/// Who is calling (after authentication).
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
    pub accounts: Vec<String>,
}

impl Caller {
    /// The caller must hold one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role {} may not do this (allowed: {})",
                self.role.as_str(),
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }

    /// May the caller read (or act on) this account?
    pub fn may_access(&self, account: &str) -> bool {
        match self.role {
            Role::Admin | Role::RiskCommittee | Role::ReadOnly => true,
            Role::Trader => self.accounts.iter().any(|a| a == account),
            Role::OracleFeeder => false,
        }
    }

    pub fn require_account(&self, account: &str) -> Result<(), ApiError> {
        if self.may_access(account) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "key {} may not access account `{account}`",
                self.key_id
            )))
        }
    }
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A fresh random key and its id.
pub fn generate_key() -> Result<(String, String), String> {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| format!("no randomness for a key: {e}"))?;
    let mut id = [0u8; 6];
    getrandom::getrandom(&mut id).map_err(|e| format!("no randomness for a key id: {e}"))?;
    Ok((
        format!("key-{}", hex::encode(id)),
        format!("pmk_{}", hex::encode(secret)),
    ))
}

/// Every known key, indexed by hash.
#[derive(Debug, Default, Clone)]
pub struct KeyRing {
    by_hash: HashMap<[u8; 32], KeyRecord>,
}

impl KeyRing {
    pub fn new(records: Vec<KeyRecord>) -> KeyRing {
        let mut ring = KeyRing::default();
        for r in records {
            ring.insert(r);
        }
        ring
    }

    /// Adds (or replaces, by id) a key.
    pub fn insert(&mut self, record: KeyRecord) {
        self.by_hash.retain(|_, r| r.id != record.id);
        let mut hash = [0u8; 32];
        if hex::decode_to_slice(&record.hash, &mut hash).is_ok() {
            self.by_hash.insert(hash, record);
        }
    }

    pub fn records(&self) -> impl Iterator<Item = &KeyRecord> {
        self.by_hash.values()
    }

    pub fn by_id(&self, id: &str) -> Option<&KeyRecord> {
        self.by_hash.values().find(|r| r.id == id)
    }

    /// The caller a bearer key stands for: one SHA-256 of the presented key, one hash-map
    /// lookup by that hash, and a constant-time comparison with the stored hash (kept decoded,
    /// as the map's key).
    pub fn authenticate(&self, key: &str) -> Result<Caller, ApiError> {
        let presented = hash_key(key);
        let (stored, record) = self
            .by_hash
            .get_key_value(&presented)
            .ok_or_else(|| ApiError::unauthorized("unknown API key"))?;
        if !bool::from(stored.ct_eq(&presented)) {
            return Err(ApiError::unauthorized("unknown API key"));
        }
        Ok(Caller {
            key_id: record.id.clone(),
            role: record.role,
            accounts: record.accounts.clone(),
        })
    }
}

/// The key from an `Authorization: Bearer KEY` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, ApiError> {
    let value = header
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <API key> header"))?;
    let (scheme, key) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <API key>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
        return Err(ApiError::unauthorized(
            "Authorization must be `Bearer <API key>`",
        ));
    }
    Ok(key.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_authenticate_by_hash_only() {
        let (id, key) = generate_key().unwrap();
        assert!(key.starts_with("pmk_") && key.len() == 68);
        let ring = KeyRing::new(vec![KeyRecord {
            id: id.clone(),
            role: Role::Trader,
            accounts: vec!["alice".into()],
            hash: hex::encode(hash_key(&key)),
            created_ms: 0,
            label: None,
        }]);
        let caller = ring.authenticate(&key).unwrap();
        assert_eq!(caller.key_id, id);
        assert!(caller.may_access("alice") && !caller.may_access("bob"));
        assert_eq!(
            ring.authenticate("pmk_wrong").unwrap_err().status.as_u16(),
            401
        );
        assert!(caller.require(&[Role::Admin]).is_err());
        assert!(bearer(Some("Basic abc")).is_err() && bearer(None).is_err());
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
    }
}
