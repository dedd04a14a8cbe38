//! Uniswap v3 liquidity positions, as the `NonfungiblePositionManager` holds them
//! (`positions(tokenId)`), into the portfolio's `uniswap_v3_lp` (docs/MODEL.md section 12).
//!
//! On chain a position is `liquidity` between two ticks; the price at tick `t` is
//! `1.0001^t` raw token1 per raw token0. In the portfolio's units (whole tokens) that is the
//! price of token0 in token1 times `10^(decimals0 - decimals1)`, and liquidity, whose raw unit
//! is `sqrt(raw token0 × raw token1)`, is divided by `10^((decimals0 + decimals1) / 2)`.
//! Section 12's formulas are symmetric in the two tokens: the same position quoted the other
//! way round (token1's price in token0) has its tokens swapped, its bounds `1/upper` and
//! `1/lower`, and the same liquidity. Fees owed (`tokensOwed0/1`) are not part of a section 12
//! position and are left out, which only understates what the holder has.

use crate::onchain::erc20::Token;
use crate::ParseError;
use alloy_primitives::{Address, U256};
use alloy_sol_types::{sol, SolCall};
use pmargin_core::input::portfolio::LiquidityPosition;

const VENUE: &str = "uniswap_v3 position";

sol! {
    function positions(uint256 tokenId) external view returns (
        uint96 nonce, address operator, address token0, address token1, uint24 fee,
        int24 tickLower, int24 tickUpper, uint128 liquidity,
        uint256 feeGrowthInside0LastX128, uint256 feeGrowthInside1LastX128,
        uint128 tokensOwed0, uint128 tokensOwed1);
    function ownerOf(uint256 tokenId) external view returns (address);
}

/// The `NonfungiblePositionManager` of Ethereum mainnet (and of most chains Uniswap deployed
/// v3 on: Arbitrum, Optimism, Polygon).
pub const MAINNET_POSITION_MANAGER: Address =
    alloy_primitives::address!("C36442b4a4522E871399CD717aBDD847Ab11FE88");

/// The ticks a pool allows (`TickMath.MIN_TICK`, `MAX_TICK`).
pub const MAX_TICK: i32 = 887_272;

/// What a position is on chain, in raw units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPosition {
    pub token0: Address,
    pub token1: Address,
    pub tick_lower: i32,
    pub tick_upper: i32,
    pub liquidity: u128,
}

/// `positions(tokenId)`'s calldata.
pub fn positions_call(token_id: U256) -> Vec<u8> {
    positionsCall { tokenId: token_id }.abi_encode()
}

/// `ownerOf(tokenId)`'s calldata.
pub fn owner_of_call(token_id: U256) -> Vec<u8> {
    ownerOfCall { tokenId: token_id }.abi_encode()
}

/// The field path errors of position `token_id` name.
pub fn field(token_id: U256, name: &str) -> String {
    format!("positions({token_id}).{name}")
}

/// `positions(tokenId)`'s answer, checked: a range the pool allows, and liquidity in it.
pub fn decode_position(token_id: U256, answer: &[u8]) -> Result<RawPosition, ParseError> {
    let p = positionsCall::abi_decode_returns_validate(answer).map_err(|e| {
        ParseError::new(
            VENUE,
            format!("positions({token_id})"),
            format!("is not an answer of positions() ({e})"),
        )
    })?;
    let tick_lower = p.tickLower.as_i32();
    let tick_upper = p.tickUpper.as_i32();
    for (name, tick) in [("tickLower", tick_lower), ("tickUpper", tick_upper)] {
        if tick.abs() > MAX_TICK {
            return Err(ParseError::new(
                VENUE,
                field(token_id, name),
                format!("{tick} is outside the ticks a pool allows (±{MAX_TICK})"),
            ));
        }
    }
    if tick_lower >= tick_upper {
        return Err(ParseError::new(
            VENUE,
            field(token_id, "tickLower"),
            format!("{tick_lower} is not below tickUpper {tick_upper}"),
        ));
    }
    if p.liquidity == 0 {
        return Err(ParseError::new(
            VENUE,
            field(token_id, "liquidity"),
            "is 0: the position holds nothing (its liquidity was withdrawn)",
        ));
    }
    Ok(RawPosition {
        token0: p.token0,
        token1: p.token1,
        tick_lower,
        tick_upper,
        liquidity: p.liquidity,
    })
}

/// `ownerOf(tokenId)`'s answer.
pub fn decode_owner(token_id: U256, answer: &[u8]) -> Result<Address, ParseError> {
    ownerOfCall::abi_decode_returns_validate(answer).map_err(|e| {
        ParseError::new(
            VENUE,
            format!("ownerOf({token_id})"),
            format!("is not an address ({e})"),
        )
    })
}

/// The price of token0 in token1, in whole tokens, at `tick`: `1.0001^tick ×
/// 10^(decimals0 - decimals1)`.
pub fn tick_price(tick: i32, decimals0: u8, decimals1: u8) -> f64 {
    // exp(t ln 1.0001) keeps the relative error near one ulp per unit of t·ln(1.0001) (≤ 89),
    // where powi's repeated squaring compounds one rounding per squaring.
    let raw = (f64::from(tick) * 0.0001f64.ln_1p()).exp();
    raw * 10f64.powi(i32::from(decimals0) - i32::from(decimals1))
}

/// Liquidity in the portfolio's units: `sqrt(token0 × token1)` in whole tokens.
pub fn scaled_liquidity(liquidity: u128, decimals0: u8, decimals1: u8) -> f64 {
    // u128 → f64 rounds to 53 bits, far below any risk figure's precision. An even sum of
    // decimals divides by an exact power of ten, as erc20::amount does.
    let sum = i32::from(decimals0) + i32::from(decimals1);
    let scale = 10f64.powi(sum / 2) * if sum % 2 == 1 { 10f64.sqrt() } else { 1.0 };
    liquidity as f64 / scale
}

/// The portfolio's position: tokens named `name0`/`name1` (the chain's token0/token1), quoted
/// as the chain does (token0 in token1) unless `invert`, which quotes token1 in token0.
pub fn liquidity_position(
    token_id: U256,
    raw: &RawPosition,
    tokens: (&Token, &Token),
    names: (&str, &str),
    protocol: &str,
    invert: bool,
) -> Result<LiquidityPosition, ParseError> {
    let (t0, t1) = tokens;
    let lower = tick_price(raw.tick_lower, t0.decimals, t1.decimals);
    let upper = tick_price(raw.tick_upper, t0.decimals, t1.decimals);
    let liquidity = scaled_liquidity(raw.liquidity, t0.decimals, t1.decimals);
    let (token0, token1, price_lower, price_upper) = if invert {
        (names.1, names.0, 1.0 / upper, 1.0 / lower)
    } else {
        (names.0, names.1, lower, upper)
    };
    for (name, x) in [
        ("tickLower", price_lower),
        ("tickUpper", price_upper),
        ("liquidity", liquidity),
    ] {
        if !(x.is_finite() && x > 0.0) {
            return Err(ParseError::new(
                VENUE,
                field(token_id, name),
                format!(
                    "gives {x} with token decimals {} and {}: not a positive number",
                    t0.decimals, t1.decimals
                ),
            ));
        }
    }
    if token0 == token1 {
        return Err(ParseError::new(
            VENUE,
            field(token_id, "token1"),
            format!("is named `{token1}` as token0 is: give the two tokens distinct names"),
        ));
    }
    Ok(LiquidityPosition {
        protocol: protocol.to_string(),
        token0: token0.to_string(),
        token1: token1.to_string(),
        liquidity,
        price_lower,
        price_upper,
    })
}

/// The selectors, for tests that check them against the published ones.
pub const SELECTORS: [(&str, [u8; 4]); 2] = [
    ("positions(uint256)", positionsCall::SELECTOR),
    ("ownerOf(uint256)", ownerOfCall::SELECTOR),
];
