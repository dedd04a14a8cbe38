//! Instruments and their names.
//!
//! Traders already speak a naming convention (`BTC-PERPETUAL`, `BTC-27DEC26`,
//! `BTC-27DEC26-60000-C`), so the engine parses names into an [`Instrument`] once at the edge
//! and works with the parsed form afterwards. Every contract is linear and cash-settled in the
//! quote currency: one contract is one unit of the underlying.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
pub use pmargin_pricing::OptionKind;
use std::fmt;

/// Seconds in the year used for every year fraction (docs/MODEL.md: 365 days).
pub const SECONDS_PER_YEAR: f64 = 365.0 * 86_400.0;

/// What a contract is. Options carry their strike and side.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Perpetual,
    Future,
    Option { strike: f64, side: OptionKind },
}

/// A parsed instrument name. `expiry` is `None` only for perpetuals.
#[derive(Clone, Debug, PartialEq)]
pub struct Instrument {
    pub name: String,
    pub underlying: String,
    pub expiry: Option<NaiveDate>,
    pub kind: Kind,
}

impl Instrument {
    /// Parses `U-PERPETUAL`, `U-DMMMYY` or `U-DMMMYY-STRIKE-C|P`.
    pub fn parse(name: &str) -> Result<Instrument, String> {
        let parts: Vec<&str> = name.split('-').collect();
        let underlying = parts[0];
        if underlying.is_empty()
            || !underlying
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return Err(format!(
                "instrument `{name}`: the underlying must be upper-case letters and digits, like BTC"
            ));
        }
        let kind_and_expiry = match parts.as_slice() {
            [_, "PERPETUAL"] => Ok((Kind::Perpetual, None)),
            [_, expiry] => parse_expiry(expiry).map(|d| (Kind::Future, Some(d))),
            [_, expiry, strike, side] => {
                let date = parse_expiry(expiry)?;
                let strike = parse_strike(strike)?;
                let side = match *side {
                    "C" => OptionKind::Call,
                    "P" => OptionKind::Put,
                    other => return Err(format!("option side `{other}` is neither C nor P")),
                };
                Ok((Kind::Option { strike, side }, Some(date)))
            }
            _ => Err(
                "expected UNDERLYING-PERPETUAL, UNDERLYING-DMMMYY or UNDERLYING-DMMMYY-STRIKE-C|P"
                    .to_string(),
            ),
        };
        let (kind, expiry) = kind_and_expiry.map_err(|e| format!("instrument `{name}`: {e}"))?;
        // One name per contract: positions, marks, vols and settlements are keyed by the name,
        // so `BTC-07DEC26` beside `BTC-7DEC26` (or strike `060000` or `60000.0` beside `60000`)
        // would be a second book entry for the same contract, left open by a settlement of the
        // first. Non-canonical spellings are refused, naming the canonical one, rather than
        // rewritten: a name the caller sent is then always the name the engine keys by.
        let canonical = canonical_name(underlying, expiry, kind);
        if canonical != name {
            return Err(format!(
                "instrument `{name}` is not written canonically: the same contract is `{canonical}` \
                 (expiry day without a leading zero, strike in its shortest decimal form)"
            ));
        }
        Ok(Instrument {
            name: name.to_string(),
            underlying: underlying.to_string(),
            expiry,
            kind,
        })
    }

    pub fn is_option(&self) -> bool {
        matches!(self.kind, Kind::Option { .. })
    }

    /// Expiry instant: 08:00:00 UTC of the expiry date.
    pub fn expiry_time(&self) -> Option<DateTime<Utc>> {
        self.expiry.map(expiry_instant)
    }
}

impl fmt::Display for Instrument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The one spelling of a contract: `U-PERPETUAL`, `U-DMMMYY` (day without a leading zero) or
/// `U-DMMMYY-STRIKE-C|P` (strike in its shortest decimal form: `60000`, `0.25`).
pub fn canonical_name(underlying: &str, expiry: Option<NaiveDate>, kind: Kind) -> String {
    let code = |d: NaiveDate| {
        format!(
            "{}{}{:02}",
            d.day(),
            MONTHS[d.month0() as usize],
            d.year().rem_euclid(100)
        )
    };
    match (kind, expiry) {
        (Kind::Option { strike, side }, Some(d)) => {
            let side = match side {
                OptionKind::Call => "C",
                OptionKind::Put => "P",
            };
            // (`Display` of an f64 is its shortest round-trip decimal, without `.0`.)
            format!("{underlying}-{}-{strike}-{side}", code(d))
        }
        (Kind::Future, Some(d)) => format!("{underlying}-{}", code(d)),
        _ => format!("{underlying}-PERPETUAL"),
    }
}

/// 08:00 UTC on `date`: when crypto venues settle dated contracts.
pub fn expiry_instant(date: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_hms_opt(8, 0, 0).unwrap_or_default())
}

/// Year fraction from `as_of` to `expiry`, negative once expired.
pub fn year_fraction(as_of: DateTime<Utc>, expiry: DateTime<Utc>) -> f64 {
    (expiry - as_of).num_milliseconds() as f64 / 1000.0 / SECONDS_PER_YEAR
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// Parses an expiry code `DMMMYY` or `DDMMMYY` (`7MAR27`, `27DEC26`) into a calendar date.
pub fn parse_expiry(code: &str) -> Result<NaiveDate, String> {
    let bad = || format!("expiry `{code}` is not a date of the form DDMMMYY, like 27DEC26");
    let digits = code.chars().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=2).contains(&digits) || code.len() != digits + 5 || !code.is_ascii() {
        return Err(bad());
    }
    let day: u32 = code[..digits].parse().map_err(|_| bad())?;
    let month = MONTHS
        .iter()
        .position(|m| *m == &code[digits..digits + 3])
        .ok_or_else(bad)? as u32
        + 1;
    let year_digits = &code[digits + 3..];
    if !year_digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let year: i32 = 2000 + year_digits.parse::<i32>().map_err(|_| bad())?;
    NaiveDate::from_ymd_opt(year, month, day)
        .ok_or_else(|| format!("expiry `{code}` is not a calendar date"))
}

fn parse_strike(text: &str) -> Result<f64, String> {
    let ok_chars = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
        && text.chars().filter(|c| *c == '.').count() <= 1;
    let strike: f64 = if ok_chars {
        text.parse()
            .map_err(|_| format!("strike `{text}` is not a number"))?
    } else {
        return Err(format!("strike `{text}` is not a positive decimal number"));
    };
    if strike > 0.0 && strike.is_finite() {
        Ok(strike)
    } else {
        Err(format!("strike `{text}` must be positive"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        let p = Instrument::parse("BTC-PERPETUAL").unwrap();
        assert_eq!((p.kind, p.expiry), (Kind::Perpetual, None));
        let f = Instrument::parse("BTC-27DEC26").unwrap();
        assert_eq!(f.kind, Kind::Future);
        assert_eq!(f.expiry, NaiveDate::from_ymd_opt(2026, 12, 27));
        let c = Instrument::parse("BTC-27DEC26-60000-C").unwrap();
        assert_eq!(
            c.kind,
            Kind::Option {
                strike: 60000.0,
                side: OptionKind::Call
            }
        );
        let d = Instrument::parse("DOGE-7MAR27-0.25-P").unwrap();
        assert_eq!(d.underlying, "DOGE");
        assert_eq!(d.expiry, NaiveDate::from_ymd_opt(2027, 3, 7));
        assert_eq!(
            d.kind,
            Kind::Option {
                strike: 0.25,
                side: OptionKind::Put
            }
        );
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "",
            "BTC",
            "btc-PERPETUAL",
            "BTC-PERP",
            "BTC-31FEB26",
            "BTC-27DEC26-60000-X",
            "BTC-27DEC26-0-C",
            "BTC-27DEC26--5-C",
            "BTC-27DEC26-1e3-C",
            "BTC-27DEC26-60000",
            "BTC-27Dec26",
            "BTC-127DEC26",
        ] {
            assert!(Instrument::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn one_name_per_contract_non_canonical_spellings_name_the_canonical_one() {
        for (bad, canonical) in [
            ("BTC-07DEC26", "BTC-7DEC26"),
            ("BTC-7DEC26-060000-C", "BTC-7DEC26-60000-C"),
            ("BTC-7DEC26-60000.0-C", "BTC-7DEC26-60000-C"),
            ("BTC-7DEC26-60000.-P", "BTC-7DEC26-60000-P"),
            ("BTC-07DEC26-060000.00-P", "BTC-7DEC26-60000-P"),
            ("DOGE-7MAR27-.25-P", "DOGE-7MAR27-0.25-P"),
            ("DOGE-7MAR27-0.250-P", "DOGE-7MAR27-0.25-P"),
        ] {
            let err = Instrument::parse(bad).expect_err(bad);
            assert!(err.contains(&format!("`{canonical}`")), "{bad}: {err}");
            let ok = Instrument::parse(canonical).expect(canonical);
            assert_eq!(ok.name, canonical);
        }
        for good in [
            "BTC-27DEC26",
            "BTC-1JAN27-100000-C",
            "ETH-25DEC26-3000-P",
            "X1-PERPETUAL",
        ] {
            assert_eq!(Instrument::parse(good).expect(good).name, good);
        }
    }

    #[test]
    fn expiry_is_eight_utc_and_year_is_365_days() {
        let as_of = Utc.with_ymd_and_hms(2026, 11, 24, 8, 0, 0).unwrap();
        let exp = Instrument::parse("BTC-27DEC26")
            .unwrap()
            .expiry_time()
            .unwrap();
        // 33 days from 24 Nov 08:00 to 27 Dec 08:00.
        assert_eq!(year_fraction(as_of, exp), 33.0 / 365.0);
    }
}
