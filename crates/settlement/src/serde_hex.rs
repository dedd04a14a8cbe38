//! JSON forms: `0x`-prefixed hex for byte strings, EIP-55 checksummed addresses, and decimal
//! strings for integers wider than JavaScript's 2^53 (so no JSON reader loses precision).

use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

use crate::keccak::keccak256;
use crate::Error;

/// `0x` + lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// Parses `0x`-prefixed (or bare) hex of exactly `N` bytes.
pub fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], Error> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out)
        .map_err(|e| Error::Encoding(format!("expected {N} bytes of hex, got `{s}`: {e}")))?;
    Ok(out)
}

/// EIP-55 mixed-case checksum form of an address (`0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf`).
pub fn to_checksum_address(address: &[u8; 20]) -> String {
    let lower = hex::encode(address);
    let hash = keccak256(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
        out.push(if c.is_ascii_alphabetic() && nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    out
}

/// Parses an address. All-lowercase and all-uppercase hex are accepted as is; mixed case must
/// be a valid EIP-55 checksum (a mistyped address is refused rather than silently accepted).
pub fn parse_address(s: &str) -> Result<[u8; 20], Error> {
    let address = parse_hex::<20>(s)?;
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let has_lower = digits.chars().any(|c| c.is_ascii_lowercase());
    let has_upper = digits.chars().any(|c| c.is_ascii_uppercase());
    if has_lower && has_upper && to_checksum_address(&address)[2..] != *digits {
        return Err(Error::Encoding(format!(
            "address `{s}` has an invalid EIP-55 checksum"
        )));
    }
    Ok(address)
}

/// `[u8; 20]` as a checksummed address.
pub mod address {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8; 20], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_checksum_address(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 20], D::Error> {
        let s = String::deserialize(d)?;
        parse_address(&s).map_err(D::Error::custom)
    }
}

/// `[u8; N]` as `0x` hex.
pub mod bytes {
    use super::*;

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_hex(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        parse_hex::<N>(&s).map_err(D::Error::custom)
    }
}

/// Integers (`i128`, `u128`, `u64`) as decimal strings.
pub mod dec {
    use std::fmt::Display;
    use std::str::FromStr;

    use super::*;

    pub fn serialize<S: Serializer, T: Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
    {
        let s = String::deserialize(d)?;
        // `FromStr` for integers accepts a leading '+'; a canonical decimal string does not.
        if s.starts_with('+') || s.is_empty() {
            return Err(D::Error::custom(format!("`{s}` is not a decimal integer")));
        }
        s.parse::<T>()
            .map_err(|e| D::Error::custom(format!("`{s}` is not a decimal integer in range: {e}")))
    }
}
