//! An account's positions in other protocols, read from chain into the portfolio's `external`
//! list (docs/MODEL.md section 12, docs/FORMATS.md): Uniswap v3 liquidity positions by token
//! id ([`nonfungible`]), Aave v3 deposits and borrows by aToken and variable-debt token
//! ([`aave`]), all at one block.
//!
//! Tokens are named in the portfolio by their `symbol()` unless [`Names`] renames them (a
//! wrapped token to the asset its collateral entry is under: `WETH` to `ETH`). Each Uniswap
//! position must belong to the holder (`ownerOf`): a token id mistyped into somebody else's
//! position is an error, not their liquidity counted as the account's.

pub mod aave;
pub mod erc20;
pub mod nonfungible;
pub mod rpc;

use crate::ParseError;
use aave::Side;
use alloy_primitives::{Address, U256};
use erc20::Token;
use pmargin_core::input::portfolio::ExternalPosition;
use rpc::{Rpc, Transport};
use std::collections::BTreeMap;

/// Portfolio names for tokens, by address or by symbol (an address wins).
#[derive(Debug, Clone, Default)]
pub struct Names {
    by_address: BTreeMap<Address, String>,
    by_symbol: BTreeMap<String, String>,
}

impl Names {
    /// Adds `key=name`: `key` an address (`0x` and 40 hex digits) or a symbol.
    pub fn insert(&mut self, key: &str, name: &str) -> Result<(), String> {
        if name.is_empty() {
            return Err(format!("`{key}=`: the name is empty"));
        }
        if key.starts_with("0x") && key.len() == 42 {
            let address = key
                .parse::<Address>()
                .map_err(|e| format!("`{key}` is not an address ({e})"))?;
            self.by_address.insert(address, name.to_string());
        } else if key.is_empty() {
            return Err(format!("`={name}`: the symbol or address is empty"));
        } else {
            self.by_symbol.insert(key.to_string(), name.to_string());
        }
        Ok(())
    }

    /// The portfolio's name of `token`.
    pub fn name<'a>(&'a self, token: &'a Token) -> &'a str {
        self.by_address
            .get(&token.address)
            .or_else(|| self.by_symbol.get(&token.symbol))
            .map_or(token.symbol.as_str(), String::as_str)
    }
}

/// What to read.
#[derive(Debug, Clone)]
pub struct Request {
    /// The account's address: owner of the Uniswap positions, holder of the Aave balances.
    pub holder: Address,
    /// The Uniswap v3 `NonfungiblePositionManager`.
    pub position_manager: Address,
    /// Uniswap v3 position token ids.
    pub uniswap_positions: Vec<U256>,
    /// Aave v3 aTokens (deposits).
    pub atokens: Vec<Address>,
    /// Aave v3 variable-debt tokens (borrows).
    pub debt_tokens: Vec<Address>,
    pub names: Names,
    /// Portfolio names of the tokens a pair is quoted in: a position whose chain token0 is one
    /// of these (and token1 is not) is turned round so that it is the portfolio's token1.
    pub quote: Vec<String>,
    /// The names of the protocols in the parameters' `external_protocols`.
    pub uniswap_protocol: String,
    pub lending_protocol: String,
}

/// Reads every position of `request`, in its order: Uniswap positions, deposits, borrows.
pub fn read<T: Transport>(
    rpc: &mut Rpc<T>,
    request: &Request,
) -> Result<Vec<ExternalPosition>, ParseError> {
    let mut tokens = BTreeMap::new();
    let mut out = Vec::new();
    for &id in &request.uniswap_positions {
        out.push(ExternalPosition::UniswapV3Lp(read_uniswap(
            rpc,
            request,
            id,
            &mut tokens,
        )?));
    }
    for (side, list) in [
        (Side::Deposit, &request.atokens),
        (Side::Borrow, &request.debt_tokens),
    ] {
        for &token in list {
            let balance = aave::read_balance(rpc, token, side, request.holder)?;
            let role = format!("{} {token}'s underlying", side.role());
            let asset = token_of(rpc, &mut tokens, balance.underlying, &role)?;
            let position = aave::lending_position(
                balance.raw,
                balance.decimals,
                request.names.name(&asset),
                &request.lending_protocol,
            );
            out.push(match side {
                Side::Deposit => ExternalPosition::LendingDeposit(position),
                Side::Borrow => ExternalPosition::LendingBorrow(position),
            });
        }
    }
    Ok(out)
}

fn read_uniswap<T: Transport>(
    rpc: &mut Rpc<T>,
    request: &Request,
    id: U256,
    tokens: &mut BTreeMap<Address, Token>,
) -> Result<pmargin_core::input::portfolio::LiquidityPosition, ParseError> {
    let manager = request.position_manager;
    let what = format!("ownerOf({id})");
    let owner = nonfungible::decode_owner(
        id,
        &rpc.call(manager, nonfungible::owner_of_call(id), &what)?,
    )?;
    if owner != request.holder {
        return Err(ParseError::new(
            "uniswap_v3 position",
            what,
            format!(
                "is {owner}, not the holder {}: the position is not the account's (a staked \
                 position is owned by its staking contract)",
                request.holder
            ),
        ));
    }
    let what = format!("positions({id})");
    let raw = nonfungible::decode_position(
        id,
        &rpc.call(manager, nonfungible::positions_call(id), &what)?,
    )?;
    let t0 = token_of(rpc, tokens, raw.token0, &nonfungible::field(id, "token0"))?;
    let t1 = token_of(rpc, tokens, raw.token1, &nonfungible::field(id, "token1"))?;
    let names = (request.names.name(&t0), request.names.name(&t1));
    let quoted = |name: &str| request.quote.iter().any(|q| q == name);
    let invert = quoted(names.0) && !quoted(names.1);
    nonfungible::liquidity_position(
        id,
        &raw,
        (&t0, &t1),
        names,
        &request.uniswap_protocol,
        invert,
    )
}

/// A token's symbol and decimals, read once per token.
fn token_of<T: Transport>(
    rpc: &mut Rpc<T>,
    tokens: &mut BTreeMap<Address, Token>,
    address: Address,
    role: &str,
) -> Result<Token, ParseError> {
    if let Some(token) = tokens.get(&address) {
        return Ok(token.clone());
    }
    let token = erc20::read_token(rpc, address, role)?;
    tokens.insert(address, token.clone());
    Ok(token)
}
