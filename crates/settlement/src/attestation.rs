//! Positions held in other protocols, attested by the protocol (MODEL.md section 12, issue 20).
//!
//! An [`ExternalPositionAttestation`] is an EIP-712 message signed (secp256k1) by a protocol's
//! attester, whose address the risk parameters register (`external_protocols.<p>.attester`):
//! "account `account` holds this position in protocol `protocol`, as of nonce `nonce`, until
//! `validUntil`". The engine counts the position only once the signature recovers to that
//! address ([`verify_attestation`]), as Euler's vault connector lets only an authorised
//! controller act on an account.
//!
//! One flat type serves the three kinds, so a contract or a wallet has a single type hash to
//! know; the members of the other kinds must be empty (strings) or zero (numbers), which
//! [`ExternalPositionAttestation::validate`] enforces, so one position has exactly one signed
//! form:
//!
//! ```text
//! ExternalPositionAttestation(string account,string protocol,string kind,string token0,
//!   string token1,uint256 liquidity,uint256 priceLower,uint256 priceUpper,string asset,
//!   uint256 amount,uint64 nonce,uint64 validUntil)
//! ```
//!
//! Strings are the names pmargin uses (account id, protocol, `uniswap_v3_lp` /
//! `lending_deposit` / `lending_borrow`, collateral asset names), which a wallet shows as text;
//! EIP-712 encodes each as the keccak256 of its UTF-8 bytes. Numbers (liquidity, the price
//! range of token0 in token1, amounts) are unsigned integers with [`crate::WAD_DECIMALS`] = 18
//! decimals ([`crate::to_wad`], [`crate::from_wad`]); nothing in an attestation is negative (a
//! borrow is its own kind with a non-negative amount). `validUntil` is Unix time in seconds.
//! A zero `liquidity` or `amount` attests that the position is closed.
//!
//! The domain is the deployment's ([`Eip712Domain::pmargin`]): an attestation for one pmargin
//! deployment does not verify at another.

use serde::{Deserialize, Serialize};

use crate::eip712::{keccak256, word_uint, Eip712Domain, Value, Word};
use crate::messages::{typed_data_document, TypedMessage};
use crate::signer::recover_signer;
use crate::Error;

/// The kind of an external position (MODEL.md section 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExternalKind {
    /// Concentrated liquidity in a Uniswap v3 pool.
    UniswapV3Lp,
    /// A deposit in a lending market (collateral).
    LendingDeposit,
    /// A borrow from a lending market (a liability).
    LendingBorrow,
}

impl ExternalKind {
    /// The name signed in `kind` (and used in portfolio files).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UniswapV3Lp => "uniswap_v3_lp",
            Self::LendingDeposit => "lending_deposit",
            Self::LendingBorrow => "lending_borrow",
        }
    }

    /// Collateral that can be seized in a liquidation (a borrow is a liability).
    pub fn is_collateral(self) -> bool {
        !matches!(self, Self::LendingBorrow)
    }
}

/// A protocol's signed statement of one account's position. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalPositionAttestation {
    /// pmargin account id.
    pub account: String,
    /// Protocol name, a key of the parameters' `external_protocols`.
    pub protocol: String,
    /// Which position it is; it decides which of the members below are used.
    pub kind: ExternalKind,
    /// `uniswap_v3_lp`: the pool's token0 (empty for the lending kinds).
    #[serde(default)]
    pub token0: String,
    /// `uniswap_v3_lp`: the pool's token1.
    #[serde(default)]
    pub token1: String,
    /// `uniswap_v3_lp`: liquidity `L`, 18 decimals (`uint256`).
    #[serde(default, with = "crate::serde_hex::dec")]
    pub liquidity: u128,
    /// `uniswap_v3_lp`: lower end of the range, price of token0 in token1, 18 decimals.
    #[serde(default, with = "crate::serde_hex::dec")]
    pub price_lower: u128,
    /// `uniswap_v3_lp`: upper end of the range, 18 decimals.
    #[serde(default, with = "crate::serde_hex::dec")]
    pub price_upper: u128,
    /// Lending kinds: the asset deposited or borrowed.
    #[serde(default)]
    pub asset: String,
    /// Lending kinds: the amount of `asset`, 18 decimals.
    #[serde(default, with = "crate::serde_hex::dec")]
    pub amount: u128,
    /// The attester's nonce: each one is accepted once.
    #[serde(with = "crate::serde_hex::dec")]
    pub nonce: u64,
    /// Unix time in seconds after which the attestation no longer vouches for the position.
    #[serde(with = "crate::serde_hex::dec")]
    pub valid_until: u64,
}

/// A refusal naming the attestation's member.
fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidField {
        field,
        reason: reason.into(),
    }
}

impl ExternalPositionAttestation {
    /// Whether the attestation still vouches for its position at Unix time `now_s`
    /// (`validUntil` itself is the last second it does).
    pub fn is_valid_at(&self, now_s: u64) -> bool {
        now_s <= self.valid_until
    }

    /// Whether it attests a closed position (zero liquidity or amount).
    pub fn is_closed(&self) -> bool {
        match self.kind {
            ExternalKind::UniswapV3Lp => self.liquidity == 0,
            _ => self.amount == 0,
        }
    }

    /// The `bytes32` id of the position it attests (what a [`crate::SeizeInstruction`] names).
    pub fn position_id(&self) -> Word {
        match self.kind {
            ExternalKind::UniswapV3Lp => lp_position_id(
                &self.token0,
                &self.token1,
                crate::from_wad(self.price_lower),
                crate::from_wad(self.price_upper),
            ),
            kind => lending_position_id(kind, &self.asset),
        }
    }

    /// The `eth_signTypedData_v4` document an attester signs.
    pub fn typed_data_json(&self, domain: &Eip712Domain) -> serde_json::Value {
        typed_data_document(
            domain,
            Self::PRIMARY_TYPE,
            Self::FIELDS,
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null),
        )
    }
}

impl TypedMessage for ExternalPositionAttestation {
    const PRIMARY_TYPE: &'static str = "ExternalPositionAttestation";
    const TYPE_STRING: &'static str = "ExternalPositionAttestation(string account,string protocol,string kind,string token0,string token1,uint256 liquidity,uint256 priceLower,uint256 priceUpper,string asset,uint256 amount,uint64 nonce,uint64 validUntil)";
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("string", "account"),
        ("string", "protocol"),
        ("string", "kind"),
        ("string", "token0"),
        ("string", "token1"),
        ("uint256", "liquidity"),
        ("uint256", "priceLower"),
        ("uint256", "priceUpper"),
        ("string", "asset"),
        ("uint256", "amount"),
        ("uint64", "nonce"),
        ("uint64", "validUntil"),
    ];

    fn encode_data(&self) -> Vec<Word> {
        vec![
            keccak256(self.account.as_bytes()),
            keccak256(self.protocol.as_bytes()),
            keccak256(self.kind.as_str().as_bytes()),
            keccak256(self.token0.as_bytes()),
            keccak256(self.token1.as_bytes()),
            word_uint(self.liquidity),
            word_uint(self.price_lower),
            word_uint(self.price_upper),
            keccak256(self.asset.as_bytes()),
            word_uint(self.amount),
            word_uint(u128::from(self.nonce)),
            word_uint(u128::from(self.valid_until)),
        ]
    }

    /// Strings as strings, so the generic encoder hashes them itself.
    fn eip712_values(&self) -> Vec<Value> {
        let words = self.encode_data();
        let strings = [
            (0, &self.account),
            (1, &self.protocol),
            (3, &self.token0),
            (4, &self.token1),
            (8, &self.asset),
        ];
        let mut values: Vec<Value> = words.into_iter().map(Value::Word).collect();
        for (i, s) in strings {
            values[i] = Value::String(s.clone());
        }
        values[2] = Value::String(self.kind.as_str().into());
        values
    }

    fn nonce(&self) -> u64 {
        self.nonce
    }

    /// The members of the attested kind are set and those of the other kinds are empty:
    /// for a range, `0 < priceLower < priceUpper` and two different tokens.
    fn validate(&self) -> Result<(), Error> {
        if self.account.is_empty() {
            return Err(invalid("account", "is empty"));
        }
        if self.protocol.is_empty() {
            return Err(invalid("protocol", "is empty"));
        }
        let unused_string = |field: &'static str, value: &str| {
            if value.is_empty() {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!("must be empty for kind `{}`", self.kind.as_str()),
                ))
            }
        };
        let unused_number = |field: &'static str, value: u128| {
            if value == 0 {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!("must be 0 for kind `{}`", self.kind.as_str()),
                ))
            }
        };
        match self.kind {
            ExternalKind::UniswapV3Lp => {
                if self.token0.is_empty() {
                    return Err(invalid("token0", "is empty"));
                }
                if self.token1.is_empty() {
                    return Err(invalid("token1", "is empty"));
                }
                if self.token0 == self.token1 {
                    return Err(invalid("token1", "must differ from token0"));
                }
                if self.price_lower == 0 {
                    return Err(invalid("priceLower", "must be positive"));
                }
                if self.price_upper <= self.price_lower {
                    return Err(invalid("priceUpper", "must be above priceLower"));
                }
                unused_string("asset", &self.asset)?;
                unused_number("amount", self.amount)
            }
            ExternalKind::LendingDeposit | ExternalKind::LendingBorrow => {
                if self.asset.is_empty() {
                    return Err(invalid("asset", "is empty"));
                }
                unused_string("token0", &self.token0)?;
                unused_string("token1", &self.token1)?;
                unused_number("liquidity", self.liquidity)?;
                unused_number("priceLower", self.price_lower)?;
                unused_number("priceUpper", self.price_upper)
            }
        }
    }
}

/// Recovers the address that signed `attestation` under `domain` (65 bytes `r || s || v`,
/// `v` = 27 or 28, low `s`), after checking the attestation's members.
pub fn recover_attester(
    attestation: &ExternalPositionAttestation,
    signature: &[u8; 65],
    domain: &Eip712Domain,
) -> Result<[u8; 20], Error> {
    attestation.validate()?;
    recover_signer(&attestation.digest(domain), signature)
}

/// [`recover_attester`], then requires the signer to be the registered `attester`.
pub fn verify_attestation(
    attestation: &ExternalPositionAttestation,
    signature: &[u8; 65],
    domain: &Eip712Domain,
    attester: &[u8; 20],
) -> Result<(), Error> {
    let recovered = recover_attester(attestation, signature, domain)?;
    if recovered != *attester {
        return Err(Error::UntrustedSigner(recovered));
    }
    Ok(())
}

/// `bytes32` id of a protocol: `keccak256` of its name.
pub fn protocol_id(name: &str) -> Word {
    keccak256(name.as_bytes())
}

/// `bytes32` id of a lending position: `keccak256("<kind>:<asset>")`, e.g.
/// `keccak256("lending_deposit:ETH")` (one balance per asset and kind in a lending market).
pub fn lending_position_id(kind: ExternalKind, asset: &str) -> Word {
    keccak256(format!("{}:{asset}", kind.as_str()))
}

/// `bytes32` id of a liquidity position: `keccak256("uniswap_v3_lp:<token0>:<token1>:<pa>:<pb>")`
/// with the range's ends in their shortest decimal form (`2500`, `0.0003`), so the id made from
/// an attestation and the one made from the engine's numbers agree: one pool range of one
/// owner is one position, as in the pool contract itself.
pub fn lp_position_id(token0: &str, token1: &str, price_lower: f64, price_upper: f64) -> Word {
    keccak256(format!(
        "{}:{token0}:{token1}:{price_lower}:{price_upper}",
        ExternalKind::UniswapV3Lp.as_str()
    ))
}
