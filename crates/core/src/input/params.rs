//! The risk parameter set: scan ranges, collateral haircuts, grid shape and model settings.
//!
//! Parameters are versioned; a risk committee approves each version. The same schema is read
//! from JSON or TOML. Every section but `version` and `underlyings` may be left out and then
//! takes the defaults of docs/FORMATS.md.

use super::{check_number, from_value, key_path, parse_json};
use crate::error::{InputError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The file this set was read from, quoted in errors; not part of the schema.
    #[serde(skip)]
    pub source: String,
    pub version: u64,
    pub underlyings: BTreeMap<String, UnderlyingParams>,
    #[serde(default = "default_collateral")]
    pub collateral: BTreeMap<String, CollateralParams>,
    #[serde(default)]
    pub grid: GridParams,
    #[serde(default)]
    pub statistical: StatisticalParams,
    #[serde(default = "default_som_rate")]
    pub som_rate: f64,
    #[serde(default = "default_mm_fraction")]
    pub mm_fraction: f64,
    #[serde(default = "default_im_base")]
    pub short_option_im_base: f64,
    #[serde(default = "default_im_floor")]
    pub short_option_im_floor: f64,
    #[serde(default = "default_short_mm")]
    pub short_option_mm: f64,
    /// docs/MODEL.md section 12: the protocols whose positions an account may hold, by name.
    /// Left out of the serialization when empty, so parameter sets written before it keep their
    /// bytes (and their governance hashes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_protocols: BTreeMap<String, ExternalProtocol>,
}

/// Another protocol whose positions count (docs/MODEL.md section 12): its `haircut`, in
/// [0, 1), on the margin-balance value of a deposit or a liquidity position on it, and
/// `attester`, the 0x address whose signature the service accepts as proof of a position (the
/// command line trusts its input files and does not read it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalProtocol {
    #[serde(default)]
    pub haircut: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attester: Option<String>,
}

/// Scan ranges and isolated-margin rates of one underlying. All are fractions:
/// `price_scan_range` 0.10 is a 10% move, `vol_scan_up` 0.10 is ten vol points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnderlyingParams {
    pub price_scan_range: f64,
    pub vol_scan_up: f64,
    pub vol_scan_down: f64,
    pub standard_im_rate: f64,
    pub standard_mm_rate: f64,
    /// Price band of a fill: a trade more than this fraction away from the instrument's mark
    /// is refused (issue 15: a fill at a made-up price moves value between its two sides).
    /// In (0, 1]; default 0.10. Left out of the serialization at its default, so parameter
    /// sets written before it keep their bytes (and their hashes).
    #[serde(
        default = "default_max_fill_deviation",
        skip_serializing_if = "is_default_max_fill_deviation"
    )]
    pub max_fill_deviation: f64,
    /// docs/MODEL.md section 9, vol shocks scaled by tenor: an option `d` days from expiry takes
    /// `(vol_tenor_days / max(d, vol_min_days))^p` times the scan's vol shift, `p` the short
    /// power under `vol_tenor_days`, the long one from it. Both powers 0 (the default): 1.
    #[serde(default = "default_vol_tenor_days", skip_serializing_if = "is_thirty")]
    pub vol_tenor_days: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub vol_power_short: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub vol_power_long: f64,
    #[serde(default = "default_vol_min_days", skip_serializing_if = "is_one")]
    pub vol_min_days: f64,
    /// docs/MODEL.md section 11, the contingency add-ons (all 0, off, by default): per short option
    /// contract, as a fraction of spot; on the smaller of the long and short linear exposures;
    /// times the oracle's confidence per unit held; and the square-root impact of closing the
    /// net delta against `adv`, the average daily volume in units of the underlying.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub option_contingency: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub basis_contingency: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub oracle_confidence_multiple: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub liquidity_coefficient: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub adv: f64,
}

// The version 2 fields are left out of the serialization at their defaults, as
// `max_fill_deviation` is: a version 1 set keeps its bytes, and its governance hash.
fn default_vol_tenor_days() -> f64 {
    30.0
}
fn default_vol_min_days() -> f64 {
    1.0
}
fn is_thirty(v: &f64) -> bool {
    *v == 30.0
}
fn is_one(v: &f64) -> bool {
    *v == 1.0
}
fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

pub const DEFAULT_MAX_FILL_DEVIATION: f64 = 0.10;

fn default_max_fill_deviation() -> f64 {
    DEFAULT_MAX_FILL_DEVIATION
}

fn is_default_max_fill_deviation(v: &f64) -> bool {
    *v == DEFAULT_MAX_FILL_DEVIATION
}

/// How an asset counts as collateral. No `underlying` means a stablecoin: it never moves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollateralParams {
    #[serde(default)]
    pub haircut: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlying: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GridParams {
    pub price_steps: usize,
    pub extreme_multiple: f64,
    pub extreme_cover: f64,
    pub decoupling_fraction: f64,
    /// docs/MODEL.md section 10: absolute price moves added to the single and tandem families.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extended_moves: Vec<ExtendedMove>,
}

/// One extended price move: `move` an absolute fraction of the price (-0.66 a 66% fall), in
/// (-1, inf) and not 0; its vol direction; its weight `cover`, in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendedMove {
    #[serde(rename = "move")]
    pub price_move: f64,
    #[serde(default)]
    pub vol: VolDirection,
    #[serde(default = "default_cover")]
    pub cover: f64,
}

fn default_cover() -> f64 {
    1.0
}

/// The vol shift an extended move takes: `+V+`, none, or `-V-` (tenor-scaled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolDirection {
    Up,
    #[default]
    None,
    Down,
}

impl VolDirection {
    pub fn as_str(&self) -> &'static str {
        match self {
            VolDirection::Up => "up",
            VolDirection::None => "none",
            VolDirection::Down => "down",
        }
    }
}

impl Default for GridParams {
    fn default() -> Self {
        GridParams {
            price_steps: 7,
            extreme_multiple: 2.0,
            extreme_cover: 0.35,
            decoupling_fraction: 0.5,
            extended_moves: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatisticalParams {
    pub confidence: f64,
    pub horizon_days: u32,
    pub ewma_lambda: f64,
    pub filtered: bool,
    /// Which scenarios feed the statistical risk: `fhs` (docs/MODEL.md section 5, the default) or
    /// `mc` (Monte Carlo, see `crate::montecarlo`). The `mc_*` fields only matter for `mc`.
    pub model: StatisticalModel,
    /// Monte Carlo: number of simulated joint scenarios.
    pub mc_paths: usize,
    /// Monte Carlo: Student-t degrees of freedom (> 2, so the variance is finite).
    pub mc_dof: f64,
    /// Monte Carlo: weight `w` of the correlation stress `(1 - w) rho + w J`, in [0, 1].
    pub mc_stress_weight: f64,
    /// Monte Carlo: random seed; the same seed gives the same scenarios on any machine.
    pub mc_seed: u64,
}

/// The statistical model behind `statistical_risk`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatisticalModel {
    /// Filtered historical simulation (exact, docs/MODEL.md section 5).
    #[default]
    Fhs,
    /// Monte Carlo: multivariate Student-t with EWMA vols and a stressed correlation.
    Mc,
}

/// Largest accepted `mc_paths`: the risk arrays hold one f64 per instrument and path.
pub const MAX_MC_PATHS: usize = 1_000_000;

impl Default for StatisticalParams {
    fn default() -> Self {
        StatisticalParams {
            confidence: 0.99,
            horizon_days: 1,
            ewma_lambda: 0.94,
            filtered: true,
            model: StatisticalModel::Fhs,
            mc_paths: 10_000,
            mc_dof: 4.0,
            mc_stress_weight: 0.3,
            mc_seed: 1,
        }
    }
}

fn default_collateral() -> BTreeMap<String, CollateralParams> {
    let entry = |haircut: f64, underlying: Option<&str>| CollateralParams {
        haircut,
        underlying: underlying.map(str::to_string),
    };
    BTreeMap::from([
        ("USDC".to_string(), entry(0.0, None)),
        ("BTC".to_string(), entry(0.05, Some("BTC"))),
        ("ETH".to_string(), entry(0.07, Some("ETH"))),
    ])
}
fn default_som_rate() -> f64 {
    0.01
}
fn default_mm_fraction() -> f64 {
    0.75
}
fn default_im_base() -> f64 {
    0.15
}
fn default_im_floor() -> f64 {
    0.10
}
fn default_short_mm() -> f64 {
    0.075
}

impl Params {
    /// Reads a parameter set; `file` ending in `.toml` is read as TOML, anything else as JSON.
    pub fn parse(file: &str, text: &str) -> Result<Params> {
        let value = if file.to_ascii_lowercase().ends_with(".toml") {
            toml_to_json(file, text)?
        } else {
            parse_json(file, text)?
        };
        let collateral_given = value.get("collateral").is_some();
        let mut params: Params = from_value(file, value)?;
        if !collateral_given {
            // The documented default names BTC and ETH; keep only what this set can margin.
            let known = params.underlyings.clone();
            params
                .collateral
                .retain(|_, c| c.underlying.as_ref().is_none_or(|u| known.contains_key(u)));
        }
        params.validate(file)?;
        params.source = file.to_string();
        Ok(params)
    }

    /// Range and cross-field rules. A parameter set that passes can be margined with.
    pub fn validate(&self, file: &str) -> Result<()> {
        let num =
            |path: &str, v: f64, min: f64, strict: bool| check_number(file, path, v, min, strict);
        let at_most = |path: &str, v: f64, max: f64| {
            if v <= max {
                Ok(())
            } else {
                Err(InputError::new(
                    file,
                    path,
                    format!("must be at most {max}, got {v}"),
                ))
            }
        };
        if self.version == 0 {
            return Err(InputError::new(
                file,
                "version",
                "must be a positive integer",
            ));
        }
        if self.underlyings.is_empty() {
            return Err(InputError::new(
                file,
                "underlyings",
                "at least one underlying is required",
            ));
        }
        for (name, u) in &self.underlyings {
            let p = key_path("underlyings", name);
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            {
                return Err(InputError::new(
                    file,
                    p,
                    "underlying names are upper-case letters and digits",
                ));
            }
            num(
                &format!("{p}.price_scan_range"),
                u.price_scan_range,
                0.0,
                true,
            )?;
            at_most(&format!("{p}.price_scan_range"), u.price_scan_range, 1.0)?;
            num(&format!("{p}.vol_scan_up"), u.vol_scan_up, 0.0, false)?;
            num(&format!("{p}.vol_scan_down"), u.vol_scan_down, 0.0, false)?;
            num(
                &format!("{p}.standard_im_rate"),
                u.standard_im_rate,
                0.0,
                false,
            )?;
            num(
                &format!("{p}.standard_mm_rate"),
                u.standard_mm_rate,
                0.0,
                false,
            )?;
            num(
                &format!("{p}.max_fill_deviation"),
                u.max_fill_deviation,
                0.0,
                true,
            )?;
            at_most(
                &format!("{p}.max_fill_deviation"),
                u.max_fill_deviation,
                1.0,
            )?;
            num(&format!("{p}.vol_tenor_days"), u.vol_tenor_days, 0.0, true)?;
            num(&format!("{p}.vol_min_days"), u.vol_min_days, 0.0, true)?;
            for (field, v) in [
                ("vol_power_short", u.vol_power_short),
                ("vol_power_long", u.vol_power_long),
                ("option_contingency", u.option_contingency),
                ("basis_contingency", u.basis_contingency),
                ("oracle_confidence_multiple", u.oracle_confidence_multiple),
                ("liquidity_coefficient", u.liquidity_coefficient),
                ("adv", u.adv),
            ] {
                num(&format!("{p}.{field}"), v, 0.0, false)?;
            }
            if u.liquidity_coefficient > 0.0 && u.adv <= 0.0 {
                return Err(InputError::new(
                    file,
                    format!("{p}.adv"),
                    "must be positive (average daily volume, in units) where liquidity_coefficient is set",
                ));
            }
            if u.standard_mm_rate > u.standard_im_rate {
                return Err(InputError::new(
                    file,
                    format!("{p}.standard_mm_rate"),
                    "must not exceed standard_im_rate",
                ));
            }
        }
        for (asset, c) in &self.collateral {
            let p = key_path("collateral", asset);
            num(&format!("{p}.haircut"), c.haircut, 0.0, false)?;
            if c.haircut >= 1.0 {
                return Err(InputError::new(
                    file,
                    format!("{p}.haircut"),
                    "must be below 1",
                ));
            }
            if let Some(u) = &c.underlying {
                if !self.underlyings.contains_key(u) {
                    return Err(InputError::new(
                        file,
                        format!("{p}.underlying"),
                        format!("`{u}` is not one of the underlyings"),
                    ));
                }
            }
        }
        for (name, protocol) in &self.external_protocols {
            let p = key_path("external_protocols", name);
            if !crate::input::portfolio::valid_account_id(name) {
                return Err(InputError::new(
                    file,
                    p,
                    "a protocol name is 1 to 64 characters of A-Z a-z 0-9 _ . : -",
                ));
            }
            num(&format!("{p}.haircut"), protocol.haircut, 0.0, false)?;
            if protocol.haircut >= 1.0 {
                return Err(InputError::new(
                    file,
                    format!("{p}.haircut"),
                    format!("must be below 1, got {}", protocol.haircut),
                ));
            }
            if let Some(attester) = &protocol.attester {
                let hex = attester.strip_prefix("0x").unwrap_or("");
                if hex.len() != 40 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(InputError::new(
                        file,
                        format!("{p}.attester"),
                        format!("must be a 0x-prefixed 20-byte hex address, got `{attester}`"),
                    ));
                }
            }
        }
        let g = &self.grid;
        if g.price_steps < 3 || g.price_steps.is_multiple_of(2) || g.price_steps > 101 {
            return Err(InputError::new(
                file,
                "grid.price_steps",
                format!("must be odd, between 3 and 101, got {}", g.price_steps),
            ));
        }
        num("grid.extreme_multiple", g.extreme_multiple, 0.0, false)?;
        num("grid.extreme_cover", g.extreme_cover, 0.0, false)?;
        at_most("grid.extreme_cover", g.extreme_cover, 1.0)?;
        num(
            "grid.decoupling_fraction",
            g.decoupling_fraction,
            0.0,
            false,
        )?;
        at_most("grid.decoupling_fraction", g.decoupling_fraction, 1.0)?;
        for (i, e) in g.extended_moves.iter().enumerate() {
            let p = format!("grid.extended_moves[{i}]");
            num(&format!("{p}.move"), e.price_move, -1.0, true)?;
            if e.price_move == 0.0 {
                return Err(InputError::new(
                    file,
                    format!("{p}.move"),
                    "must not be 0 (an absolute fraction of the price: -0.66 is a 66% fall)",
                ));
            }
            num(&format!("{p}.cover"), e.cover, 0.0, true)?;
            at_most(&format!("{p}.cover"), e.cover, 1.0)?;
        }
        let s = &self.statistical;
        num("statistical.confidence", s.confidence, 0.0, true)?;
        if s.confidence >= 1.0 {
            return Err(InputError::new(
                file,
                "statistical.confidence",
                "must be below 1",
            ));
        }
        if s.horizon_days == 0 {
            return Err(InputError::new(
                file,
                "statistical.horizon_days",
                "must be at least 1",
            ));
        }
        num("statistical.ewma_lambda", s.ewma_lambda, 0.0, true)?;
        if s.ewma_lambda >= 1.0 {
            return Err(InputError::new(
                file,
                "statistical.ewma_lambda",
                "must be below 1",
            ));
        }
        if s.mc_paths == 0 || s.mc_paths > MAX_MC_PATHS {
            return Err(InputError::new(
                file,
                "statistical.mc_paths",
                format!("must be between 1 and {MAX_MC_PATHS}, got {}", s.mc_paths),
            ));
        }
        num("statistical.mc_dof", s.mc_dof, 2.0, true)?;
        num(
            "statistical.mc_stress_weight",
            s.mc_stress_weight,
            0.0,
            false,
        )?;
        at_most("statistical.mc_stress_weight", s.mc_stress_weight, 1.0)?;
        num("som_rate", self.som_rate, 0.0, false)?;
        num("mm_fraction", self.mm_fraction, 0.0, true)?;
        at_most("mm_fraction", self.mm_fraction, 1.0)?;
        num(
            "short_option_im_base",
            self.short_option_im_base,
            0.0,
            false,
        )?;
        num(
            "short_option_im_floor",
            self.short_option_im_floor,
            0.0,
            false,
        )?;
        num("short_option_mm", self.short_option_mm, 0.0, false)?;
        Ok(())
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// TOML is read through its JSON equivalent so both formats share one schema and one error
/// style. TOML allows `inf` and `nan`, which JSON cannot hold: they are refused here by path.
fn toml_to_json(file: &str, text: &str) -> Result<serde_json::Value> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        InputError::new(file, "", format!("invalid TOML: {}", e.message()))
    })?;
    let value = toml::Value::Table(table);
    find_non_finite(file, &value, "")?;
    serde_json::to_value(&value)
        .map_err(|e| InputError::new(file, "", format!("invalid TOML: {e}")))
}

fn find_non_finite(file: &str, value: &toml::Value, path: &str) -> Result<()> {
    match value {
        toml::Value::Float(f) if !f.is_finite() => Err(InputError::new(
            file,
            path,
            format!("must be a finite number, got {f}"),
        )),
        toml::Value::Table(t) => t.iter().try_for_each(|(k, v)| {
            let p = if path.is_empty() {
                k.clone()
            } else {
                key_path(path, k)
            };
            find_non_finite(file, v, &p)
        }),
        toml::Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| find_non_finite(file, v, &format!("{path}[{i}]"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"version": 3, "underlyings": {"BTC": {"price_scan_range": 0.1,
        "vol_scan_up": 0.1, "vol_scan_down": 0.1, "standard_im_rate": 0.1, "standard_mm_rate": 0.05}}}"#;

    #[test]
    fn omitted_sections_take_the_documented_defaults() {
        let p = Params::parse("p.json", MINIMAL).unwrap();
        assert_eq!(p.grid.price_steps, 7);
        assert_eq!(p.grid.extreme_multiple, 2.0);
        assert_eq!(p.grid.extreme_cover, 0.35);
        assert_eq!(p.grid.decoupling_fraction, 0.5);
        assert_eq!(p.statistical.confidence, 0.99);
        assert_eq!(p.statistical.ewma_lambda, 0.94);
        assert_eq!((p.som_rate, p.mm_fraction), (0.01, 0.75));
        assert_eq!(p.collateral["BTC"].haircut, 0.05);
        assert_eq!(p.collateral["USDC"].underlying, None);
        // The default's ETH entry is dropped: this set has no ETH underlying to move it with.
        assert!(!p.collateral.contains_key("ETH"));
    }

    #[test]
    fn toml_and_json_read_the_same_schema() {
        let toml = r#"
version = 3
som_rate = 0.02
[underlyings.BTC]
price_scan_range = 0.1
vol_scan_up = 0.1
vol_scan_down = 0.1
standard_im_rate = 0.1
standard_mm_rate = 0.05
[grid]
price_steps = 9
"#;
        let p = Params::parse("p.toml", toml).unwrap();
        let j = Params::parse("p.json", MINIMAL).unwrap();
        assert_eq!(p.underlyings, j.underlyings);
        assert_eq!((p.grid.price_steps, p.som_rate), (9, 0.02));
    }

    #[test]
    fn max_fill_deviation_defaults_to_a_tenth_and_must_be_in_zero_one() {
        let p = Params::parse("p.json", MINIMAL).unwrap();
        assert_eq!(p.underlyings["BTC"].max_fill_deviation, 0.10);
        // At its default it is not written, so older parameter sets keep their bytes.
        assert!(!serde_json::to_string(&p)
            .unwrap()
            .contains("max_fill_deviation"));
        let with =
            |v: &str| MINIMAL.replace("0.05}", &format!("0.05, \"max_fill_deviation\": {v}}}"));
        let p = Params::parse("p.json", &with("1")).unwrap();
        assert_eq!(p.underlyings["BTC"].max_fill_deviation, 1.0);
        for bad in ["0", "-0.1", "1.5"] {
            let err = Params::parse("p.json", &with(bad)).expect_err(bad);
            assert_eq!(err.path, "underlyings.BTC.max_fill_deviation", "{bad}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                MINIMAL.replace("\"version\": 3", "\"version\": 3, \"som_rte\": 1"),
                "som_rte",
            ),
            (
                MINIMAL.replace("\"vol_scan_up\"", "\"vol_scan_upp\""),
                "underlyings.BTC.vol_scan_upp",
            ),
            (
                MINIMAL.replace("0.05}", "0.05, \"x\": 1}"),
                "underlyings.BTC.x",
            ),
            (
                MINIMAL.replace("\"price_scan_range\": 0.1", "\"price_scan_range\": -0.1"),
                "underlyings.BTC.price_scan_range",
            ),
            (
                MINIMAL.replace(
                    "\"version\": 3",
                    "\"version\": 3, \"grid\": {\"price_steps\": 6}",
                ),
                "grid.price_steps",
            ),
            (
                MINIMAL.replace("\"version\": 3", "\"version\": 3, \"mm_fraction\": 1.5"),
                "mm_fraction",
            ),
            (
                MINIMAL.replace(
                    "\"version\": 3",
                    "\"version\": 3, \"collateral\": {\"SOL\": {\"underlying\": \"SOL\"}}",
                ),
                "collateral.SOL.underlying",
            ),
            (
                MINIMAL.replace(
                    "\"version\": 3",
                    "\"version\": 3, \"statistical\": {\"confidence\": 1.0}",
                ),
                "statistical.confidence",
            ),
        ];
        for (text, path) in cases {
            let err = Params::parse("p.json", &text).unwrap_err();
            assert_eq!(err.path, path, "{err}");
            assert_eq!(err.file, "p.json");
        }
    }

    #[test]
    fn toml_infinity_is_refused_by_path() {
        let toml = "version = 1\n[underlyings.BTC]\nprice_scan_range = inf\nvol_scan_up = 0.1\nvol_scan_down = 0.1\nstandard_im_rate = 0.1\nstandard_mm_rate = 0.05\n";
        let err = Params::parse("p.toml", toml).unwrap_err();
        assert_eq!(err.path, "underlyings.BTC.price_scan_range");
    }
}
