//! # pmargin-settlement: signed settlement messages
//!
//! Risk is computed off-chain; settlement happens on-chain. Results leave the engine as
//! [EIP-712](https://eips.ethereum.org/EIPS/eip-712) typed-data messages signed with a
//! secp256k1 key, so an EVM contract can check them with `ecrecover`:
//!
//! * [`fixed`]: amounts as integers with [`AMOUNT_DECIMALS`] = 6 decimals (rounding half away
//!   from zero), signed ones encoded as `int256` two's complement; the external-protocol
//!   messages use [`WAD_DECIMALS`] = 18;
//! * [`keccak`]: Keccak-256 and the 32-byte [`Word`];
//! * [`eip712`]: word encoding, a small generic struct encoder, the domain;
//! * [`messages`]: [`MarginUpdate`], [`LiquidationInstruction`] and [`SeizeInstruction`], with
//!   ids `keccak256(name)`;
//! * [`seize`]: [`SeizeInstruction::for_seized`], the instruction for a part of a position the
//!   engine seized;
//! * [`attestation`]: [`ExternalPositionAttestation`], a position in another protocol signed by
//!   that protocol's attester, and its verification ([`verify_attestation`]);
//! * [`signer`]: [`Signer`] (address, signing with `v` = 27/28 and low `s`), [`verify`],
//!   [`NonceCounter`].
//!
//! ```
//! use pmargin_settlement::*;
//!
//! let domain = Eip712Domain::pmargin(1, [0x11; 20]);
//! let mut signer = Signer::new([7; 32]).unwrap();
//! let update = MarginUpdate {
//!     account: account_id("acct-1"),
//!     equity: to_fixed(1_250.5).unwrap(),
//!     margin_balance: to_fixed(-20.25).unwrap(),
//!     initial_margin: to_fixed_unsigned(1_270.75).unwrap(),
//!     maintenance_margin: to_fixed_unsigned(900.0).unwrap(),
//!     status: AccountStatus::Restricted.code(),
//!     params_version: 3,
//!     nonce: signer.next_nonce().unwrap(),
//!     timestamp: 1_700_000_000,
//! };
//! let signed = signer.sign_margin_update(&domain, &update).unwrap();
//! assert_eq!(verify(&signed, &domain).unwrap(), signer.address());
//! ```
//!
//! Pure library: no I/O.

pub mod attestation;
pub mod eip712;
pub mod fixed;
pub mod keccak;
pub mod messages;
pub mod seize;
pub mod serde_hex;
pub mod signer;

pub use attestation::{
    lending_position_id, lp_position_id, protocol_id, recover_attester, verify_attestation,
    ExternalKind, ExternalPositionAttestation,
};
pub use eip712::{keccak256, typed_data_digest, Eip712Domain, Types, Value, Word};
pub use fixed::{
    format_fixed, format_fixed_unsigned, format_wad, from_fixed, from_fixed_unsigned, from_wad,
    to_fixed, to_fixed_unsigned, to_wad, AMOUNT_DECIMALS, AMOUNT_SCALE, WAD_DECIMALS,
};
pub use messages::{
    account_id, instrument_id, AccountStatus, LiquidationInstruction, MarginUpdate,
    SeizeInstruction, SettlementMessage, StatusCode, TypedMessage,
};
pub use serde_hex::{parse_address, parse_hex, to_checksum_address, to_hex};
pub use signer::{
    address_of, recover_signer, verify, verify_from, NonceCounter, SignedMessage, Signer,
};

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// NaN or an infinity given as an amount.
    #[error("amount is not finite")]
    NonFinite,
    /// An amount too large for its fixed-point type.
    #[error("amount {0} is out of the fixed-point range")]
    OutOfRange(f64),
    /// A negative amount where only non-negative ones are allowed.
    #[error("amount {0} is negative where an unsigned amount is required")]
    Negative(f64),
    /// Malformed hex, address, type or value.
    #[error("encoding: {0}")]
    Encoding(String),
    /// A status code other than 0..=3.
    #[error(
        "invalid account status code {0} (0 healthy, 1 restricted, 2 liquidatable, 3 bankrupt)"
    )]
    InvalidStatus(u8),
    /// A secret key of zero or not below the curve order.
    #[error("invalid secp256k1 secret key")]
    InvalidKey,
    /// The signing primitive failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// A malformed or non-canonical signature.
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
    /// The stated digest is not the digest of the message under the domain.
    #[error("digest does not match the message and domain")]
    DigestMismatch,
    /// The signature recovers to another address than the stated signer.
    #[error(
        "signature recovers to {} but the message states {}",
        to_checksum_address(recovered),
        to_checksum_address(stated)
    )]
    SignerMismatch {
        /// The signer written in the message.
        stated: [u8; 20],
        /// The signer recovered from the signature.
        recovered: [u8; 20],
    },
    /// A valid signature by a key that is not the trusted one.
    #[error("signed by untrusted {}", to_checksum_address(.0))]
    UntrustedSigner([u8; 20]),
    /// A member of a message that breaks its rules, by its EIP-712 name.
    #[error("`{field}` {reason}")]
    InvalidField {
        /// The member's EIP-712 name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A nonce at or below the last one used.
    #[error("nonce {got} is not above the last nonce {last}")]
    NonceNotIncreasing {
        /// The last nonce used.
        last: u64,
        /// The nonce offered.
        got: u64,
    },
    /// The nonce counter reached `u64::MAX`.
    #[error("nonces exhausted")]
    NonceExhausted,
}
