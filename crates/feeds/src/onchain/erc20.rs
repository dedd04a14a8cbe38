//! The ERC-20 calls a position read needs: `decimals()` and `symbol()` (what a token is, read
//! once per token) and `balanceOf(account)` (an Aave aToken's or debt token's balance).
//!
//! A token's amounts on chain are integers in units of `10^-decimals`; nothing here guesses a
//! token's decimals: a token that does not answer `decimals()` is an error naming it.

use crate::onchain::rpc::{Rpc, Transport};
use crate::ParseError;
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::{sol, SolCall, SolValue};

const VENUE: &str = "erc20";

sol! {
    function decimals() external view returns (uint8);
    function symbol() external view returns (string);
    function balanceOf(address account) external view returns (uint256);
}

/// What the portfolio needs of a token: its symbol and its scale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub address: Address,
    pub symbol: String,
    pub decimals: u8,
}

/// `decimals()`'s answer; `what` names the call (`token0 0x…: decimals()`).
pub fn decode_decimals(answer: &[u8], what: &str) -> Result<u8, ParseError> {
    decimalsCall::abi_decode_returns_validate(answer)
        .map_err(|e| ParseError::new(VENUE, what, format!("is not a uint8 ({e})")))
}

/// `symbol()`'s answer: a string, or the `bytes32` that tokens older than the standard (MKR)
/// return, without its zero padding.
pub fn decode_symbol(answer: &[u8], what: &str) -> Result<String, ParseError> {
    let symbol = match symbolCall::abi_decode_returns_validate(answer) {
        Ok(symbol) => symbol,
        Err(e) => {
            let word = B256::abi_decode(answer)
                .map_err(|_| ParseError::new(VENUE, what, format!("is not a string ({e})")))?;
            let end = word.iter().position(|b| *b == 0).unwrap_or(32);
            String::from_utf8(word[..end].to_vec()).map_err(|_| {
                ParseError::new(VENUE, what, "is a bytes32 that is not text".to_string())
            })?
        }
    };
    if symbol.trim().is_empty() {
        return Err(ParseError::new(VENUE, what, "is empty"));
    }
    Ok(symbol.trim().to_string())
}

/// `balanceOf(account)`'s answer, in the token's smallest unit.
pub fn decode_balance(answer: &[u8], what: &str) -> Result<U256, ParseError> {
    balanceOfCall::abi_decode_returns_validate(answer)
        .map_err(|e| ParseError::new(VENUE, what, format!("is not a uint256 ({e})")))
}

/// An integer amount in units of `10^-decimals` as a number of tokens.
pub fn amount(raw: U256, decimals: u8) -> f64 {
    // A division by 10^d (exact in f64 up to d = 22, every real token) rounds once; a product
    // with 10^-d, which is not exact, rounds 100.5 ETH to 100.50000000000001.
    f64::from(raw) / 10f64.powi(i32::from(decimals))
}

/// Reads a token's symbol and decimals; `role` says what it is to the position (`token0`,
/// `the aToken's underlying`), for errors.
pub fn read_token<T: Transport>(
    rpc: &mut Rpc<T>,
    address: Address,
    role: &str,
) -> Result<Token, ParseError> {
    let decimals = read_decimals(rpc, address, role)?;
    let what = format!("{role} {address}: symbol()");
    let symbol = decode_symbol(
        &rpc.call(address, symbolCall {}.abi_encode(), &what)?,
        &what,
    )?;
    Ok(Token {
        address,
        symbol,
        decimals,
    })
}

/// Reads a token's decimals.
pub fn read_decimals<T: Transport>(
    rpc: &mut Rpc<T>,
    address: Address,
    role: &str,
) -> Result<u8, ParseError> {
    let what = format!("{role} {address}: decimals()");
    decode_decimals(
        &rpc.call(address, decimalsCall {}.abi_encode(), &what)?,
        &what,
    )
}

/// Reads `account`'s balance of `token`, in its smallest unit.
pub fn read_balance<T: Transport>(
    rpc: &mut Rpc<T>,
    token: Address,
    account: Address,
    role: &str,
) -> Result<U256, ParseError> {
    let what = format!("{role} {token}: balanceOf({account})");
    let answer = rpc.call(token, balanceOfCall { account }.abi_encode(), &what)?;
    decode_balance(&answer, &what)
}

/// The selectors, for tests that check them against the published ones.
pub const SELECTORS: [(&str, [u8; 4]); 3] = [
    ("decimals()", decimalsCall::SELECTOR),
    ("symbol()", symbolCall::SELECTOR),
    ("balanceOf(address)", balanceOfCall::SELECTOR),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bytes32_symbol_is_read_without_its_padding() {
        let mut word = [0u8; 32];
        word[..3].copy_from_slice(b"MKR");
        assert_eq!(decode_symbol(&word, "symbol()").unwrap(), "MKR");
        let string = "USDC".to_string().abi_encode();
        assert_eq!(decode_symbol(&string, "symbol()").unwrap(), "USDC");
    }

    #[test]
    fn decimals_beyond_a_uint8_are_refused() {
        let big = U256::from(300u32).abi_encode();
        let err = decode_decimals(&big, "token0 0x1: decimals()").unwrap_err();
        assert!(err.to_string().contains("token0 0x1: decimals()"), "{err}");
    }
}
