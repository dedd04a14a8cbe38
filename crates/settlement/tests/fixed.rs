//! Fixed-point conversion: 6 decimals, half away from zero, errors for what cannot be encoded.

use pmargin_settlement::*;

#[test]
fn exact_values() {
    assert_eq!(AMOUNT_DECIMALS, 6);
    assert_eq!(to_fixed(0.0), Ok(0));
    assert_eq!(to_fixed(-0.0), Ok(0));
    assert_eq!(to_fixed(1.0), Ok(1_000_000));
    assert_eq!(to_fixed(-1.0), Ok(-1_000_000));
    assert_eq!(to_fixed(1234.567891), Ok(1_234_567_891));
    assert_eq!(to_fixed(-1234.567891), Ok(-1_234_567_891));
    assert_eq!(to_fixed(0.000001), Ok(1));
    assert_eq!(to_fixed(-0.000001), Ok(-1));
    // 0.1 + 0.2 = 0.30000000000000004 -> 300000, not 300001.
    assert_eq!(to_fixed(0.1 + 0.2), Ok(300_000));
    assert_eq!(to_fixed(1e20), Ok(100_000_000_000_000_000_000_000_000));
    assert_eq!(to_fixed_unsigned(64_250.5), Ok(64_250_500_000));
}

#[test]
fn rounding_is_half_away_from_zero() {
    // Exactly half a unit (as written) rounds away from zero, in both signs.
    assert_eq!(to_fixed(0.0000005), Ok(1));
    assert_eq!(to_fixed(-0.0000005), Ok(-1));
    assert_eq!(to_fixed(0.0000025), Ok(3));
    assert_eq!(to_fixed(-0.0000025), Ok(-3));
    assert_eq!(to_fixed(1.0000005), Ok(1_000_001));
    assert_eq!(to_fixed(2.0000015), Ok(2_000_002));
    // Below half rounds toward zero, above half away.
    assert_eq!(to_fixed(0.00000049), Ok(0));
    assert_eq!(to_fixed(-0.00000049), Ok(0));
    assert_eq!(to_fixed(0.00000051), Ok(1));
    assert_eq!(to_fixed(-0.00000051), Ok(-1));
    assert_eq!(to_fixed(0.9999995), Ok(1_000_000));
    assert_eq!(to_fixed(-0.9999995), Ok(-1_000_000));
    // Far below a unit.
    assert_eq!(to_fixed(1e-300), Ok(0));
    assert_eq!(to_fixed(f64::MIN_POSITIVE), Ok(0));
    assert_eq!(to_fixed_unsigned(0.0000005), Ok(1));
}

#[test]
fn non_finite_is_an_error() {
    assert_eq!(to_fixed(f64::NAN), Err(Error::NonFinite));
    assert_eq!(to_fixed(f64::INFINITY), Err(Error::NonFinite));
    assert_eq!(to_fixed(f64::NEG_INFINITY), Err(Error::NonFinite));
    assert_eq!(to_fixed_unsigned(f64::NAN), Err(Error::NonFinite));
}

#[test]
fn overflow_is_an_error() {
    // i128::MAX / 10^6 is about 1.7e32.
    assert_eq!(to_fixed(1e33), Err(Error::OutOfRange(1e33)));
    assert_eq!(to_fixed(-1e33), Err(Error::OutOfRange(-1e33)));
    assert!(to_fixed(f64::MAX).is_err());
    assert!(to_fixed(1.7e32).is_ok());
    assert!(to_fixed(-1.7e32).is_ok());
    assert!(to_fixed(1.71e32).is_err());
    // u128::MAX / 10^6 is about 3.4e32.
    assert!(to_fixed_unsigned(3.4e32).is_ok());
    assert!(to_fixed_unsigned(3.41e32).is_err());
}

#[test]
fn negative_unsigned_is_an_error() {
    assert_eq!(to_fixed_unsigned(-1.0), Err(Error::Negative(-1.0)));
    assert_eq!(
        to_fixed_unsigned(-0.000001),
        Err(Error::Negative(-0.000001))
    );
    // Rounds to zero: accepted as 0.
    assert_eq!(to_fixed_unsigned(-0.0), Ok(0));
    assert_eq!(to_fixed_unsigned(-0.0000004), Ok(0));
}

#[test]
fn formatting_and_back() {
    assert_eq!(format_fixed(-1_234_567_891), "-1234.567891");
    assert_eq!(format_fixed(5), "0.000005");
    assert_eq!(format_fixed(-5), "-0.000005");
    assert_eq!(
        format_fixed(i128::MIN),
        "-170141183460469231731687303715884.105728"
    );
    assert_eq!(format_fixed_unsigned(1_500_000), "1.500000");
    assert_eq!(from_fixed(-2_500_000), -2.5);
    assert_eq!(from_fixed_unsigned(64_250_500_000), 64_250.5);
    // Every value with at most 6 decimals and 15 significant digits survives the round trip.
    for v in [
        0i128,
        1,
        -1,
        999_999,
        123_456_789_012_345,
        -987_654_321_098_765,
    ] {
        assert_eq!(to_fixed(from_fixed(v)), Ok(v), "{v}");
    }
}
