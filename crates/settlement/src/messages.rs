//! The engine's settlement messages and their EIP-712 encodings.
//!
//! Identifiers are `bytes32`: an account is `keccak256(utf8(account id string))`
//! ([`account_id`]) and an instrument `keccak256(utf8(instrument name))` ([`instrument_id`]),
//! so a contract can check a known id with `keccak256(bytes("..."))` and no string is stored
//! on-chain. Amounts are fixed-point integers with [`crate::AMOUNT_DECIMALS`] decimals.
//!
//! In JSON, members use the EIP-712 (camelCase) names, `bytes32` values are `0x` hex and every
//! integer except `status` is a decimal string.

use serde::{Deserialize, Serialize};

use crate::eip712::{
    keccak256, typed_data_digest, word_int, word_uint, Eip712Domain, Types, Value, Word,
    DOMAIN_TYPE,
};
use crate::Error;
use pmargin_core::Status;

/// `bytes32` id of an account: `keccak256` of the UTF-8 bytes of its id string.
pub fn account_id(id: &str) -> [u8; 32] {
    keccak256(id.as_bytes())
}

/// `bytes32` id of an instrument: `keccak256` of the UTF-8 bytes of its name.
pub fn instrument_id(name: &str) -> [u8; 32] {
    keccak256(name.as_bytes())
}

/// Account status: the core's [`Status`], carried by [`MarginUpdate::status`] as its
/// [`StatusCode::code`].
pub use pmargin_core::Status as AccountStatus;

/// The `uint8` encoding of an account status in a [`MarginUpdate`] (EIP-712 `uint8 status`):
/// 0 healthy, 1 restricted, 2 liquidatable, 3 bankrupt. The codes are part of the signed
/// message: they never change.
pub trait StatusCode: Sized {
    /// The `uint8` code.
    fn code(self) -> u8;
    /// The status of a code; [`Error::InvalidStatus`] for any other.
    fn from_code(code: u8) -> Result<Self, Error>;
}

impl StatusCode for Status {
    fn code(self) -> u8 {
        match self {
            Status::Healthy => 0,
            Status::Restricted => 1,
            Status::Liquidatable => 2,
            Status::Bankrupt => 3,
        }
    }

    fn from_code(code: u8) -> Result<Status, Error> {
        match code {
            0 => Ok(Status::Healthy),
            1 => Ok(Status::Restricted),
            2 => Ok(Status::Liquidatable),
            3 => Ok(Status::Bankrupt),
            _ => Err(Error::InvalidStatus(code)),
        }
    }
}

/// A margin update: an account's equity, balance, requirements and status under one parameter
/// version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MarginUpdate {
    /// `bytes32` account id ([`account_id`]).
    #[serde(with = "crate::serde_hex::bytes")]
    pub account: [u8; 32],
    /// Equity, fixed 6 decimals (`int256`).
    #[serde(with = "crate::serde_hex::dec")]
    pub equity: i128,
    /// Margin balance (equity with collateral haircuts applied), fixed 6 decimals (`int256`).
    #[serde(with = "crate::serde_hex::dec")]
    pub margin_balance: i128,
    /// Initial margin requirement, fixed 6 decimals (`uint256`).
    #[serde(with = "crate::serde_hex::dec")]
    pub initial_margin: u128,
    /// Maintenance margin requirement, fixed 6 decimals (`uint256`).
    #[serde(with = "crate::serde_hex::dec")]
    pub maintenance_margin: u128,
    /// [`AccountStatus`] code (`uint8`): 0 healthy, 1 restricted, 2 liquidatable, 3 bankrupt.
    pub status: u8,
    /// Version of the risk parameters the figures were computed with (`uint64`).
    #[serde(with = "crate::serde_hex::dec")]
    pub params_version: u64,
    /// Signer's nonce, strictly increasing over all of that signer's messages (`uint64`).
    #[serde(with = "crate::serde_hex::dec")]
    pub nonce: u64,
    /// Unix time in seconds of the figures (`uint64`).
    #[serde(with = "crate::serde_hex::dec")]
    pub timestamp: u64,
}

/// A liquidation instruction: close `size` of `instrument` in `account` at `price`, charging
/// `penalty`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiquidationInstruction {
    /// `bytes32` account id ([`account_id`]).
    #[serde(with = "crate::serde_hex::bytes")]
    pub account: [u8; 32],
    /// `bytes32` instrument id ([`instrument_id`]).
    #[serde(with = "crate::serde_hex::bytes")]
    pub instrument: [u8; 32],
    /// Signed quantity to trade, fixed 6 decimals (`int256`; positive buys, negative sells).
    #[serde(with = "crate::serde_hex::dec")]
    pub size: i128,
    /// Limit price, fixed 6 decimals (`uint256`).
    #[serde(with = "crate::serde_hex::dec")]
    pub price: u128,
    /// Liquidation penalty charged to the account, fixed 6 decimals (`uint256`).
    #[serde(with = "crate::serde_hex::dec")]
    pub penalty: u128,
    /// Version of the risk parameters (`uint64`).
    #[serde(with = "crate::serde_hex::dec")]
    pub params_version: u64,
    /// Signer's nonce (`uint64`).
    #[serde(with = "crate::serde_hex::dec")]
    pub nonce: u64,
    /// Unix time in seconds (`uint64`).
    #[serde(with = "crate::serde_hex::dec")]
    pub timestamp: u64,
}

/// Seize collateral held in another protocol: the engine's order to that protocol's
/// controller, as Euler's Ethereum Vault Connector lets an account's controller call
/// `controlCollateral(targetCollateral, onBehalfOfAccount, value, data)` on the collateral
/// vault during a liquidation. The controller checks the engine's signature (the same key and
/// domain as the margin updates), that `protocol` is its own id, that `deadline` has not
/// passed and that `nonce` is new, then moves `amount` of `position` from `account` to
/// `receiver` (pmargin's liquidator).
///
/// Sent only after the account's perpetuals and options have been liquidated and it is still
/// below its requirement; only collateral (a deposit, a liquidity position) is seized, never a
/// borrow. `amount` has [`crate::WAD_DECIMALS`] = 18 decimals, in the position's own units: the
/// asset for a deposit, liquidity `L` for a liquidity position (the attestation's units).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeizeInstruction {
    /// `bytes32` account id ([`account_id`]).
    #[serde(with = "crate::serde_hex::bytes")]
    pub account: [u8; 32],
    /// `bytes32` protocol id ([`crate::protocol_id`]): the controller's own.
    #[serde(with = "crate::serde_hex::bytes")]
    pub protocol: [u8; 32],
    /// `bytes32` position id ([`crate::lending_position_id`], [`crate::lp_position_id`]).
    #[serde(with = "crate::serde_hex::bytes")]
    pub position: [u8; 32],
    /// Amount to seize, 18 decimals (`uint256`), positive.
    #[serde(with = "crate::serde_hex::dec")]
    pub amount: u128,
    /// `bytes32` id of the account that receives it ([`account_id`] of the liquidator).
    #[serde(with = "crate::serde_hex::bytes")]
    pub receiver: [u8; 32],
    /// The liquidation: the sequence number of the event whose liquidation round seized, the
    /// same event as the [`LiquidationInstruction`]s of its fills (`uint64`).
    #[serde(with = "crate::serde_hex::dec")]
    pub liquidation_id: u64,
    /// Version of the risk parameters (`uint64`).
    #[serde(with = "crate::serde_hex::dec")]
    pub params_version: u64,
    /// Signer's nonce (`uint64`).
    #[serde(with = "crate::serde_hex::dec")]
    pub nonce: u64,
    /// Unix time in seconds after which the controller must refuse it (`uint64`).
    #[serde(with = "crate::serde_hex::dec")]
    pub deadline: u64,
}

/// Common to the typed messages.
pub trait TypedMessage {
    /// EIP-712 primary type name.
    const PRIMARY_TYPE: &'static str;
    /// `encodeType` of the message (it references no other struct).
    const TYPE_STRING: &'static str;
    /// The members as `(type, name)`, in order (for the generic encoder and typed-data JSON).
    const FIELDS: &'static [(&'static str, &'static str)];

    /// The encoded members, one word each, in order.
    fn encode_data(&self) -> Vec<Word>;
    /// The signer's nonce.
    fn nonce(&self) -> u64;
    /// Checks the values a contract would refuse.
    fn validate(&self) -> Result<(), Error> {
        Ok(())
    }

    /// `typeHash` = keccak256 of [`TypedMessage::TYPE_STRING`].
    fn type_hash() -> Word {
        keccak256(Self::TYPE_STRING)
    }

    /// `hashStruct(message)`.
    fn struct_hash(&self) -> Word {
        let words = self.encode_data();
        let mut enc = Vec::with_capacity(32 * (1 + words.len()));
        enc.extend_from_slice(&Self::type_hash());
        for w in &words {
            enc.extend_from_slice(w);
        }
        keccak256(enc)
    }

    /// The digest signed under `domain`.
    fn digest(&self, domain: &Eip712Domain) -> Word {
        typed_data_digest(&domain.separator(), &self.struct_hash())
    }

    /// The type as a generic [`Types`] set (to cross-check the hand encoding).
    fn eip712_types() -> Types {
        Types::new().with(Self::PRIMARY_TYPE, Self::FIELDS)
    }

    /// The members as generic [`Value`]s.
    fn eip712_values(&self) -> Vec<Value> {
        self.encode_data().into_iter().map(Value::Word).collect()
    }
}

impl TypedMessage for MarginUpdate {
    const PRIMARY_TYPE: &'static str = "MarginUpdate";
    const TYPE_STRING: &'static str = "MarginUpdate(bytes32 account,int256 equity,int256 marginBalance,uint256 initialMargin,uint256 maintenanceMargin,uint8 status,uint64 paramsVersion,uint64 nonce,uint64 timestamp)";
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("bytes32", "account"),
        ("int256", "equity"),
        ("int256", "marginBalance"),
        ("uint256", "initialMargin"),
        ("uint256", "maintenanceMargin"),
        ("uint8", "status"),
        ("uint64", "paramsVersion"),
        ("uint64", "nonce"),
        ("uint64", "timestamp"),
    ];

    fn encode_data(&self) -> Vec<Word> {
        vec![
            self.account,
            word_int(self.equity),
            word_int(self.margin_balance),
            word_uint(self.initial_margin),
            word_uint(self.maintenance_margin),
            word_uint(u128::from(self.status)),
            word_uint(u128::from(self.params_version)),
            word_uint(u128::from(self.nonce)),
            word_uint(u128::from(self.timestamp)),
        ]
    }

    fn nonce(&self) -> u64 {
        self.nonce
    }

    fn validate(&self) -> Result<(), Error> {
        Status::from_code(self.status).map(|_| ())
    }
}

impl TypedMessage for LiquidationInstruction {
    const PRIMARY_TYPE: &'static str = "LiquidationInstruction";
    const TYPE_STRING: &'static str = "LiquidationInstruction(bytes32 account,bytes32 instrument,int256 size,uint256 price,uint256 penalty,uint64 paramsVersion,uint64 nonce,uint64 timestamp)";
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("bytes32", "account"),
        ("bytes32", "instrument"),
        ("int256", "size"),
        ("uint256", "price"),
        ("uint256", "penalty"),
        ("uint64", "paramsVersion"),
        ("uint64", "nonce"),
        ("uint64", "timestamp"),
    ];

    fn encode_data(&self) -> Vec<Word> {
        vec![
            self.account,
            self.instrument,
            word_int(self.size),
            word_uint(self.price),
            word_uint(self.penalty),
            word_uint(u128::from(self.params_version)),
            word_uint(u128::from(self.nonce)),
            word_uint(u128::from(self.timestamp)),
        ]
    }

    fn nonce(&self) -> u64 {
        self.nonce
    }

    fn validate(&self) -> Result<(), Error> {
        if self.size == 0 {
            return Err(Error::Encoding("liquidation size is zero".into()));
        }
        Ok(())
    }
}

impl TypedMessage for SeizeInstruction {
    const PRIMARY_TYPE: &'static str = "SeizeInstruction";
    const TYPE_STRING: &'static str = "SeizeInstruction(bytes32 account,bytes32 protocol,bytes32 position,uint256 amount,bytes32 receiver,uint64 liquidationId,uint64 paramsVersion,uint64 nonce,uint64 deadline)";
    const FIELDS: &'static [(&'static str, &'static str)] = &[
        ("bytes32", "account"),
        ("bytes32", "protocol"),
        ("bytes32", "position"),
        ("uint256", "amount"),
        ("bytes32", "receiver"),
        ("uint64", "liquidationId"),
        ("uint64", "paramsVersion"),
        ("uint64", "nonce"),
        ("uint64", "deadline"),
    ];

    fn encode_data(&self) -> Vec<Word> {
        vec![
            self.account,
            self.protocol,
            self.position,
            word_uint(self.amount),
            self.receiver,
            word_uint(u128::from(self.liquidation_id)),
            word_uint(u128::from(self.params_version)),
            word_uint(u128::from(self.nonce)),
            word_uint(u128::from(self.deadline)),
        ]
    }

    fn nonce(&self) -> u64 {
        self.nonce
    }

    fn validate(&self) -> Result<(), Error> {
        if self.amount == 0 {
            return Err(Error::Encoding("seize amount is zero".into()));
        }
        if self.receiver == self.account {
            return Err(Error::Encoding(
                "seize receiver is the seized account".into(),
            ));
        }
        Ok(())
    }
}

/// Any message the engine signs, tagged with its EIP-712 primary type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "primaryType", content = "message")]
pub enum SettlementMessage {
    /// A [`MarginUpdate`].
    MarginUpdate(MarginUpdate),
    /// A [`LiquidationInstruction`].
    LiquidationInstruction(LiquidationInstruction),
    /// A [`SeizeInstruction`].
    SeizeInstruction(SeizeInstruction),
}

impl SettlementMessage {
    /// EIP-712 primary type name.
    pub fn primary_type(&self) -> &'static str {
        match self {
            Self::MarginUpdate(_) => MarginUpdate::PRIMARY_TYPE,
            Self::LiquidationInstruction(_) => LiquidationInstruction::PRIMARY_TYPE,
            Self::SeizeInstruction(_) => SeizeInstruction::PRIMARY_TYPE,
        }
    }

    /// The signer's nonce.
    pub fn nonce(&self) -> u64 {
        match self {
            Self::MarginUpdate(m) => m.nonce,
            Self::LiquidationInstruction(m) => m.nonce,
            Self::SeizeInstruction(m) => m.nonce,
        }
    }

    /// See [`TypedMessage::validate`].
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Self::MarginUpdate(m) => m.validate(),
            Self::LiquidationInstruction(m) => m.validate(),
            Self::SeizeInstruction(m) => m.validate(),
        }
    }

    /// `hashStruct(message)`.
    pub fn struct_hash(&self) -> Word {
        match self {
            Self::MarginUpdate(m) => m.struct_hash(),
            Self::LiquidationInstruction(m) => m.struct_hash(),
            Self::SeizeInstruction(m) => m.struct_hash(),
        }
    }

    /// The digest signed under `domain`.
    pub fn digest(&self, domain: &Eip712Domain) -> Word {
        typed_data_digest(&domain.separator(), &self.struct_hash())
    }

    /// The full typed-data document of `eth_signTypedData_v4` (`types`, `primaryType`,
    /// `domain`, `message`), which wallets and EVM libraries can hash and verify themselves.
    pub fn typed_data_json(&self, domain: &Eip712Domain) -> serde_json::Value {
        // Serializing these plain structs cannot fail.
        let (primary, members, message) = match self {
            Self::MarginUpdate(m) => (
                MarginUpdate::PRIMARY_TYPE,
                MarginUpdate::FIELDS,
                serde_json::to_value(m),
            ),
            Self::LiquidationInstruction(m) => (
                LiquidationInstruction::PRIMARY_TYPE,
                LiquidationInstruction::FIELDS,
                serde_json::to_value(m),
            ),
            Self::SeizeInstruction(m) => (
                SeizeInstruction::PRIMARY_TYPE,
                SeizeInstruction::FIELDS,
                serde_json::to_value(m),
            ),
        };
        typed_data_document(
            domain,
            primary,
            members,
            message.unwrap_or(serde_json::Value::Null),
        )
    }
}

/// The `eth_signTypedData_v4` document of a message of a flat struct type.
pub(crate) fn typed_data_document(
    domain: &Eip712Domain,
    primary: &str,
    members: &[(&str, &str)],
    message: serde_json::Value,
) -> serde_json::Value {
    fn fields(list: &[(&str, &str)]) -> serde_json::Value {
        list.iter()
            .map(|(ty, name)| serde_json::json!({ "name": name, "type": ty }))
            .collect()
    }
    debug_assert!(DOMAIN_TYPE.starts_with("EIP712Domain("));
    let domain_fields = [
        ("string", "name"),
        ("string", "version"),
        ("uint256", "chainId"),
        ("address", "verifyingContract"),
    ];
    serde_json::json!({
        "types": { "EIP712Domain": fields(&domain_fields), primary: fields(members) },
        "primaryType": primary,
        "domain": domain,
        "message": message,
    })
}

impl From<MarginUpdate> for SettlementMessage {
    fn from(m: MarginUpdate) -> Self {
        Self::MarginUpdate(m)
    }
}

impl From<LiquidationInstruction> for SettlementMessage {
    fn from(m: LiquidationInstruction) -> Self {
        Self::LiquidationInstruction(m)
    }
}

impl From<SeizeInstruction> for SettlementMessage {
    fn from(m: SeizeInstruction) -> Self {
        Self::SeizeInstruction(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes are signed into every margin update (and rebuilt by the on-chain verifier):
    /// fixed by hand here, not by the order of the enum.
    #[test]
    fn status_codes_are_fixed_and_read_back() {
        let table = [
            (Status::Healthy, 0),
            (Status::Restricted, 1),
            (Status::Liquidatable, 2),
            (Status::Bankrupt, 3),
        ];
        for (status, code) in table {
            assert_eq!(status.code(), code);
            assert_eq!(Status::from_code(code), Ok(status));
        }
        for code in 4..=u8::MAX {
            assert_eq!(Status::from_code(code), Err(Error::InvalidStatus(code)));
        }
    }
}
