//! Fixed-point amounts: integers with [`AMOUNT_DECIMALS`] decimals.
//!
//! An amount `x` (in the settlement asset) travels as the integer `round(x * 10^6)`.
//! Signed amounts (equity, margin balance, position size) are `i128` and are encoded on-chain as
//! `int256` (two's complement, sign-extended); unsigned amounts (requirements, prices, penalties)
//! are `u128` and are encoded as `uint256`.
//!
//! ## Rounding
//! The conversion rounds **half away from zero**, applied to the *shortest decimal
//! representation* of the `f64` (the digits Rust's `{}` prints, which read back to the same
//! `f64`). So `to_fixed(0.0000005) == Ok(1)` and `to_fixed(-0.0000025) == Ok(-3)`, as a person
//! reading the number expects, even though the nearest `f64` to `0.0000005` lies a hair below
//! it. The scaling itself is done in exact integer arithmetic on those digits; no `x * 1e6`
//! product in floating point is ever formed.

use crate::Error;

/// Number of decimals of every fixed-point amount in a settlement message.
pub const AMOUNT_DECIMALS: u32 = 6;

/// `10^AMOUNT_DECIMALS`.
pub const AMOUNT_SCALE: i128 = 1_000_000;

/// Decimals of the numbers of the messages exchanged with external protocols
/// ([`crate::ExternalPositionAttestation`], [`crate::SeizeInstruction`]): 18, the "WAD" of
/// Ethereum contracts. Their amounts meet the external protocol's token units (ETH has 18
/// decimals) and their Uniswap price ranges can be small numbers (a price of USDC in ETH is
/// about 0.0003), which 6 decimals would cut to three significant digits.
pub const WAD_DECIMALS: u32 = 18;

/// Converts an amount to a signed fixed-point integer with [`AMOUNT_DECIMALS`] decimals.
///
/// Rounds half away from zero (see the module documentation). Fails with
/// [`Error::NonFinite`] for NaN and infinities and with [`Error::OutOfRange`] when the result
/// does not fit an `i128` (|x| above about 1.7e32).
pub fn to_fixed(x: f64) -> Result<i128, Error> {
    let magnitude = magnitude_fixed(x, AMOUNT_DECIMALS)?;
    if x.is_sign_negative() {
        // i128::MIN's magnitude is one more than i128::MAX.
        if magnitude == i128::MIN.unsigned_abs() {
            Ok(i128::MIN)
        } else {
            i128::try_from(magnitude)
                .map(|m| -m)
                .map_err(|_| Error::OutOfRange(x))
        }
    } else {
        i128::try_from(magnitude).map_err(|_| Error::OutOfRange(x))
    }
}

/// Converts a non-negative amount to an unsigned fixed-point integer with [`AMOUNT_DECIMALS`]
/// decimals, rounding half away from zero.
///
/// Fails with [`Error::Negative`] for a value that is negative after rounding (`-0.0` and
/// values that round to zero are accepted as 0), [`Error::NonFinite`] and
/// [`Error::OutOfRange`] (above `u128::MAX / 10^6`, about 3.4e32).
pub fn to_fixed_unsigned(x: f64) -> Result<u128, Error> {
    unsigned_fixed(x, AMOUNT_DECIMALS)
}

/// Converts a non-negative number to an unsigned integer with [`WAD_DECIMALS`] = 18 decimals,
/// rounding half away from zero as [`to_fixed_unsigned`] does; fails the same ways (above
/// `u128::MAX / 10^18`, about 3.4e20).
pub fn to_wad(x: f64) -> Result<u128, Error> {
    unsigned_fixed(x, WAD_DECIMALS)
}

/// The nearest `f64` to an 18-decimal integer, correctly rounded (read through its decimal
/// string), so `from_wad(to_wad(x)) == x` for every `x` written with at most 18 decimals.
pub fn from_wad(v: u128) -> f64 {
    // The decimal text of an integer always parses.
    format_unsigned(v, WAD_DECIMALS).parse().unwrap_or(f64::NAN)
}

/// Decimal string of an 18-decimal integer, exact: `1500000000000000000` -> `"1.500000000000000000"`.
pub fn format_wad(v: u128) -> String {
    format_unsigned(v, WAD_DECIMALS)
}

fn unsigned_fixed(x: f64, decimals: u32) -> Result<u128, Error> {
    let magnitude = magnitude_fixed(x, decimals)?;
    if x.is_sign_negative() && magnitude != 0 {
        return Err(Error::Negative(x));
    }
    Ok(magnitude)
}

/// The nearest `f64` to a signed fixed-point amount (for display and reports; not exact above
/// 2^53 units).
pub fn from_fixed(v: i128) -> f64 {
    v as f64 / AMOUNT_SCALE as f64
}

/// The nearest `f64` to an unsigned fixed-point amount.
pub fn from_fixed_unsigned(v: u128) -> f64 {
    v as f64 / AMOUNT_SCALE as f64
}

/// Decimal string of a signed fixed-point amount, exact: `-1234567` -> `"-1.234567"`.
pub fn format_fixed(v: i128) -> String {
    let sign = if v < 0 { "-" } else { "" };
    format!("{sign}{}", format_fixed_unsigned(v.unsigned_abs()))
}

/// Decimal string of an unsigned fixed-point amount, exact: `1500000` -> `"1.500000"`.
pub fn format_fixed_unsigned(v: u128) -> String {
    format_unsigned(v, AMOUNT_DECIMALS)
}

fn format_unsigned(v: u128, decimals: u32) -> String {
    let scale = 10u128.pow(decimals);
    format!(
        "{}.{:0width$}",
        v / scale,
        v % scale,
        width = decimals as usize
    )
}

/// `round_half_away(|x| * 10^decimals)` as an unsigned integer.
fn magnitude_fixed(x: f64, decimals: u32) -> Result<u128, Error> {
    if !x.is_finite() {
        return Err(Error::NonFinite);
    }
    // Shortest round-trip representation, never in exponent form for `{}` on f64.
    let text = format!("{}", x.abs());
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text.as_str(), ""),
    };
    let out_of_range = || Error::OutOfRange(x);
    let mut value: u128 = 0;
    let digits = int_part.bytes().chain(
        frac_part
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(decimals as usize),
    );
    for d in digits {
        debug_assert!(d.is_ascii_digit());
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(d - b'0')))
            .ok_or_else(out_of_range)?;
    }
    // Half away from zero on the magnitude: the first dropped digit decides.
    if frac_part
        .as_bytes()
        .get(decimals as usize)
        .is_some_and(|&d| d >= b'5')
    {
        value = value.checked_add(1).ok_or_else(out_of_range)?;
    }
    Ok(value)
}
