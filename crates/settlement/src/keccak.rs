//! Keccak-256 and the 32-byte word it yields: the one primitive both the EIP-712 encoder
//! (`eip712`) and the EIP-55 address checksum (`serde_hex`) need, in a module of its own so
//! that neither of those has to import the other for it.

use sha3::{Digest, Keccak256};

/// A 32-byte word (hash or ABI-encoded atomic value).
pub type Word = [u8; 32];

/// Keccak-256 (the original Keccak padding used by Ethereum, not NIST SHA3-256).
pub fn keccak256(data: impl AsRef<[u8]>) -> Word {
    Keccak256::digest(data.as_ref()).into()
}
