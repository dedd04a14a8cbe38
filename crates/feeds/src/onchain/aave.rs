//! Aave v3 deposits and borrows into the portfolio's `lending_deposit` and `lending_borrow`
//! (docs/MODEL.md section 12).
//!
//! An aToken's `balanceOf(account)` is the account's deposit with the interest earned so far,
//! and a variable-debt token's is its borrow with the interest owed: both in the underlying
//! asset's smallest unit (the tokens have the underlying's `decimals`). Each names its asset
//! through `UNDERLYING_ASSET_ADDRESS()`, whose `symbol()` names the asset in the portfolio.

use crate::onchain::erc20;
use crate::onchain::rpc::{Rpc, Transport};
use crate::ParseError;
use alloy_primitives::{Address, U256};
use alloy_sol_types::{sol, SolCall};
use pmargin_core::input::portfolio::LendingPosition;

const VENUE: &str = "aave_v3";

sol! {
    function UNDERLYING_ASSET_ADDRESS() external view returns (address);
}

/// Which side of the market an Aave token records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// An aToken: a deposit.
    Deposit,
    /// A variable-debt token: a borrow.
    Borrow,
}

impl Side {
    pub fn role(self) -> &'static str {
        match self {
            Side::Deposit => "aToken",
            Side::Borrow => "variable-debt token",
        }
    }
}

/// `UNDERLYING_ASSET_ADDRESS()`'s calldata.
pub fn underlying_call() -> Vec<u8> {
    UNDERLYING_ASSET_ADDRESSCall {}.abi_encode()
}

/// `UNDERLYING_ASSET_ADDRESS()`'s answer.
pub fn decode_underlying(answer: &[u8], what: &str) -> Result<Address, ParseError> {
    UNDERLYING_ASSET_ADDRESSCall::abi_decode_returns_validate(answer)
        .map_err(|e| ParseError::new(VENUE, what, format!("is not an address ({e})")))
}

/// The portfolio's position for `balance` (raw) of an Aave token with `decimals`, on the
/// asset named `asset`.
pub fn lending_position(
    balance: U256,
    decimals: u8,
    asset: &str,
    protocol: &str,
) -> LendingPosition {
    LendingPosition {
        protocol: protocol.to_string(),
        asset: asset.to_string(),
        amount: erc20::amount(balance, decimals),
    }
}

/// What one Aave token says of `holder`: the underlying token and the raw balance, with the
/// Aave token's own decimals.
pub struct Balance {
    pub underlying: Address,
    pub decimals: u8,
    pub raw: U256,
}

/// Reads `holder`'s balance of the Aave token at `token` and the asset it is in.
pub fn read_balance<T: Transport>(
    rpc: &mut Rpc<T>,
    token: Address,
    side: Side,
    holder: Address,
) -> Result<Balance, ParseError> {
    let role = side.role();
    let what = format!("{role} {token}: UNDERLYING_ASSET_ADDRESS()");
    let underlying = decode_underlying(&rpc.call(token, underlying_call(), &what)?, &what)?;
    let decimals = erc20::read_decimals(rpc, token, role)?;
    let raw = erc20::read_balance(rpc, token, holder, role)?;
    Ok(Balance {
        underlying,
        decimals,
        raw,
    })
}

/// The selector, for tests that check it against the published one.
pub const SELECTORS: [(&str, [u8; 4]); 1] = [(
    "UNDERLYING_ASSET_ADDRESS()",
    UNDERLYING_ASSET_ADDRESSCall::SELECTOR,
)];
