//! When is a parameter set "only more conservative" than another?
//!
//! The guardian's emergency path may skip the vote and the timelock, so it may only turn knobs
//! in the direction that asks for more margin. The rule, checked field by field in this order
//! (the first offending field is named):
//!
//! 1. `version` is the active version + 1;
//! 2. the same underlyings and the same collateral assets, each collateral asset moving with
//!    the same underlying as before;
//! 3. per underlying, `price_scan_range`, `vol_scan_up`, `vol_scan_down`, `standard_im_rate`
//!    and `standard_mm_rate` are each at least the active value;
//! 4. per collateral asset, `haircut` is at least the active value;
//! 5. grid: the new price steps contain every old step (`price_steps - 1` is a multiple of the
//!    active `price_steps - 1`, e.g. 7 -> 13), and `extreme_multiple`, `extreme_cover` and
//!    `decoupling_fraction` are each at least the active value;
//! 6. statistical: `confidence` and `horizon_days` at least the active value; `ewma_lambda`,
//!    `filtered`, `model` and the Monte Carlo settings unchanged, because which way they move
//!    a requirement depends on the book;
//! 7. `som_rate`, `mm_fraction`, `short_option_im_base`, `short_option_im_floor` and
//!    `short_option_mm` each at least the active value.
//!
//! 8. every other field (the fill band, the vol term structure, the contingencies, liquidity,
//!    the extended moves, ...) unchanged: the guardian turns only the knobs named above.
//!
//! This is monotonicity knob by knob, the usual reading of "more conservative". It is not a
//! proof that every account's requirement rises: a wider scan range moves the grid points
//! outward, and a book whose loss peaks between them can in principle see a lower grid risk.
//!
//! ## The bound ([`check_emergency_bound`])
//!
//! Tightening alone is not enough: a guardian key (or whoever stole it) could set every scan
//! range to its maximum and liquidate the book at once. So an emergency set may move each knob
//! at most a factor [`EMERGENCY_FACTOR`] (2) away from the *base* set, the last set the
//! committee put in force (or ratified), not the active one, so that emergencies in a row
//! cannot compound 2 x 2 x ...:
//!
//! - per underlying, `price_scan_range`, `vol_scan_up`, `vol_scan_down`, `standard_im_rate`,
//!   `standard_mm_rate` at most twice the base value;
//! - per collateral asset, the value kept, `1 - haircut`, at least half the base one (a 0%
//!   haircut may go to 50%, a 10% one to 55%);
//! - grid: `price_steps - 1` at most twice the base (7 -> 13 steps), `extreme_multiple`,
//!   `extreme_cover`, `decoupling_fraction` at most twice the base;
//! - statistical: the tail `1 - confidence` at least half the base one (99% -> 99.5%),
//!   `horizon_days` at most twice the base;
//! - `som_rate`, `mm_fraction`, `short_option_im_base`, `short_option_im_floor`,
//!   `short_option_mm` at most twice the base.
//!
//! A knob at zero in the base set therefore stays at zero on the emergency path: raising it
//! from nothing is a committee decision.

use crate::error::GovError;
use pmargin_core::Params;
use serde_json::Value;

/// How far, as a factor, an emergency set may move a knob from the base set.
pub const EMERGENCY_FACTOR: f64 = 2.0;

/// `Ok` when `proposed` is at least as conservative as `active` in every field by the rule of
/// this module, else the first field that is less conservative.
pub fn check_more_conservative(active: &Params, proposed: &Params) -> Result<(), GovError> {
    let refuse =
        |field: String, message: String| Err(GovError::NotMoreConservative { field, message });
    let at_least = |field: String, new: f64, old: f64| {
        // `!(new >= old)` also refuses NaN.
        if new >= old {
            Ok(())
        } else {
            refuse(field, format!("{new} is below the active {old}"))
        }
    };
    let unchanged = |field: &str, same: bool| {
        if same {
            Ok(())
        } else {
            refuse(
                field.to_string(),
                "may not change on the emergency path (its direction depends on the book)".into(),
            )
        }
    };
    if proposed.version != active.version + 1 {
        return refuse(
            "version".into(),
            format!(
                "must be {} (the active version + 1), got {}",
                active.version + 1,
                proposed.version
            ),
        );
    }
    let sets = [
        (
            "underlyings",
            active.underlyings.keys().collect::<Vec<_>>(),
            proposed.underlyings.keys().collect::<Vec<_>>(),
        ),
        (
            "collateral",
            active.collateral.keys().collect(),
            proposed.collateral.keys().collect(),
        ),
    ];
    for (section, old, new) in sets {
        if let Some(k) = old.iter().find(|k| !new.contains(k)) {
            return refuse(format!("{section}.{k}"), "removed".into());
        }
        if let Some(k) = new.iter().find(|k| !old.contains(k)) {
            return refuse(format!("{section}.{k}"), "added".into());
        }
    }
    for (name, old) in &active.underlyings {
        let new = &proposed.underlyings[name];
        let p = format!("underlyings.{name}");
        at_least(
            format!("{p}.price_scan_range"),
            new.price_scan_range,
            old.price_scan_range,
        )?;
        at_least(format!("{p}.vol_scan_up"), new.vol_scan_up, old.vol_scan_up)?;
        at_least(
            format!("{p}.vol_scan_down"),
            new.vol_scan_down,
            old.vol_scan_down,
        )?;
        at_least(
            format!("{p}.standard_im_rate"),
            new.standard_im_rate,
            old.standard_im_rate,
        )?;
        at_least(
            format!("{p}.standard_mm_rate"),
            new.standard_mm_rate,
            old.standard_mm_rate,
        )?;
    }
    for (asset, old) in &active.collateral {
        let new = &proposed.collateral[asset];
        let p = format!("collateral.{asset}");
        unchanged(&format!("{p}.underlying"), new.underlying == old.underlying)?;
        at_least(format!("{p}.haircut"), new.haircut, old.haircut)?;
    }
    let (og, ng) = (&active.grid, &proposed.grid);
    if og.price_steps != ng.price_steps
        && !(ng.price_steps > og.price_steps
            && (ng.price_steps - 1).is_multiple_of(og.price_steps - 1))
    {
        return refuse(
            "grid.price_steps".into(),
            format!(
                "{} steps do not contain the active {} steps (steps - 1 must be a multiple of {})",
                ng.price_steps,
                og.price_steps,
                og.price_steps - 1
            ),
        );
    }
    at_least(
        "grid.extreme_multiple".into(),
        ng.extreme_multiple,
        og.extreme_multiple,
    )?;
    at_least(
        "grid.extreme_cover".into(),
        ng.extreme_cover,
        og.extreme_cover,
    )?;
    at_least(
        "grid.decoupling_fraction".into(),
        ng.decoupling_fraction,
        og.decoupling_fraction,
    )?;
    let (os, ns) = (&active.statistical, &proposed.statistical);
    at_least(
        "statistical.confidence".into(),
        ns.confidence,
        os.confidence,
    )?;
    if ns.horizon_days < os.horizon_days {
        return refuse(
            "statistical.horizon_days".into(),
            format!(
                "{} is below the active {}",
                ns.horizon_days, os.horizon_days
            ),
        );
    }
    unchanged("statistical.ewma_lambda", ns.ewma_lambda == os.ewma_lambda)?;
    unchanged("statistical.filtered", ns.filtered == os.filtered)?;
    unchanged("statistical.model", ns.model == os.model)?;
    unchanged("statistical.mc_paths", ns.mc_paths == os.mc_paths)?;
    unchanged("statistical.mc_dof", ns.mc_dof == os.mc_dof)?;
    unchanged(
        "statistical.mc_stress_weight",
        ns.mc_stress_weight == os.mc_stress_weight,
    )?;
    unchanged("statistical.mc_seed", ns.mc_seed == os.mc_seed)?;
    at_least("som_rate".into(), proposed.som_rate, active.som_rate)?;
    at_least(
        "mm_fraction".into(),
        proposed.mm_fraction,
        active.mm_fraction,
    )?;
    at_least(
        "short_option_im_base".into(),
        proposed.short_option_im_base,
        active.short_option_im_base,
    )?;
    at_least(
        "short_option_im_floor".into(),
        proposed.short_option_im_floor,
        active.short_option_im_floor,
    )?;
    at_least(
        "short_option_mm".into(),
        proposed.short_option_mm,
        active.short_option_mm,
    )?;
    if let Some(field) = other_field_changed(active, proposed) {
        return refuse(
            field,
            "may not change on the emergency path (only the knobs of the conservative rule may)"
                .into(),
        );
    }
    Ok(())
}

/// The JSON paths of the knobs [`check_more_conservative`] governs; everything else must stay.
fn governed_paths(p: &Params) -> Vec<Vec<String>> {
    let s = |x: &str| x.to_string();
    let mut paths = vec![vec![s("version")], vec![s("source")]];
    for name in p.underlyings.keys() {
        for knob in [
            "price_scan_range",
            "vol_scan_up",
            "vol_scan_down",
            "standard_im_rate",
            "standard_mm_rate",
        ] {
            paths.push(vec![s("underlyings"), name.clone(), s(knob)]);
        }
    }
    for asset in p.collateral.keys() {
        paths.push(vec![s("collateral"), asset.clone(), s("haircut")]);
    }
    for knob in [
        "price_steps",
        "extreme_multiple",
        "extreme_cover",
        "decoupling_fraction",
    ] {
        paths.push(vec![s("grid"), s(knob)]);
    }
    for knob in ["confidence", "horizon_days"] {
        paths.push(vec![s("statistical"), s(knob)]);
    }
    for knob in [
        "som_rate",
        "mm_fraction",
        "short_option_im_base",
        "short_option_im_floor",
        "short_option_mm",
    ] {
        paths.push(vec![s(knob)]);
    }
    paths
}

fn remove_path(v: &mut Value, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            if let Value::Object(m) = v {
                m.remove(last);
            }
        }
        [first, rest @ ..] => {
            if let Some(inner) = v.get_mut(first) {
                remove_path(inner, rest);
            }
        }
    }
}

/// The first path (dotted) where two JSON values differ.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_difference(p, q, &join(k)),
                _ => Some(join(k)),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &join(&i.to_string()))),
        _ if a == b => None,
        _ => Some(if at.is_empty() {
            "params".into()
        } else {
            at.into()
        }),
    }
}

/// A field outside the conservative rule that differs between the two sets, if any.
fn other_field_changed(active: &Params, proposed: &Params) -> Option<String> {
    // Serialising a plain struct of numbers, strings and maps cannot fail.
    let (mut a, mut b) = (
        serde_json::to_value(active).unwrap_or(Value::Null),
        serde_json::to_value(proposed).unwrap_or(Value::Null),
    );
    for path in governed_paths(active)
        .into_iter()
        .chain(governed_paths(proposed))
    {
        remove_path(&mut a, &path);
        remove_path(&mut b, &path);
    }
    first_difference(&a, &b, "")
}

/// `Ok` when `proposed` stays within [`EMERGENCY_FACTOR`] of `base` on every knob (the rule is
/// in the module docs), else the first knob beyond the bound.
pub fn check_emergency_bound(base: &Params, proposed: &Params) -> Result<(), GovError> {
    let beyond =
        |field: String, message: String| Err(GovError::BeyondEmergencyBound { field, message });
    // `!(new <= max)` also refuses NaN.
    let at_most_twice = |field: String, new: f64, old: f64| {
        let max = EMERGENCY_FACTOR * old;
        if new <= max {
            Ok(())
        } else {
            beyond(
                field,
                format!("{new} is more than {EMERGENCY_FACTOR} x the base {old} (at most {max})"),
            )
        }
    };
    // For a fraction kept (1 - haircut, 1 - confidence): at least half the base one.
    let keeps_half = |field: String, new: f64, old: f64| {
        let min_kept = (1.0 - old) / EMERGENCY_FACTOR;
        if 1.0 - new >= min_kept {
            Ok(())
        } else {
            beyond(
                field,
                format!(
                    "{new} leaves {} of the base's {}: at most {}",
                    1.0 - new,
                    1.0 - old,
                    1.0 - min_kept
                ),
            )
        }
    };
    for (name, new) in &proposed.underlyings {
        let Some(old) = base.underlyings.get(name) else {
            return beyond(format!("underlyings.{name}"), "not in the base set".into());
        };
        let p = format!("underlyings.{name}");
        at_most_twice(
            format!("{p}.price_scan_range"),
            new.price_scan_range,
            old.price_scan_range,
        )?;
        at_most_twice(format!("{p}.vol_scan_up"), new.vol_scan_up, old.vol_scan_up)?;
        at_most_twice(
            format!("{p}.vol_scan_down"),
            new.vol_scan_down,
            old.vol_scan_down,
        )?;
        at_most_twice(
            format!("{p}.standard_im_rate"),
            new.standard_im_rate,
            old.standard_im_rate,
        )?;
        at_most_twice(
            format!("{p}.standard_mm_rate"),
            new.standard_mm_rate,
            old.standard_mm_rate,
        )?;
    }
    for (asset, new) in &proposed.collateral {
        let Some(old) = base.collateral.get(asset) else {
            return beyond(format!("collateral.{asset}"), "not in the base set".into());
        };
        keeps_half(
            format!("collateral.{asset}.haircut"),
            new.haircut,
            old.haircut,
        )?;
    }
    let (og, ng) = (&base.grid, &proposed.grid);
    let max_steps = 2 * og.price_steps.saturating_sub(1) + 1;
    if ng.price_steps > max_steps {
        return beyond(
            "grid.price_steps".into(),
            format!(
                "{} steps: at most {max_steps} (twice the base's {} intervals)",
                ng.price_steps,
                og.price_steps.saturating_sub(1)
            ),
        );
    }
    at_most_twice(
        "grid.extreme_multiple".into(),
        ng.extreme_multiple,
        og.extreme_multiple,
    )?;
    at_most_twice(
        "grid.extreme_cover".into(),
        ng.extreme_cover,
        og.extreme_cover,
    )?;
    at_most_twice(
        "grid.decoupling_fraction".into(),
        ng.decoupling_fraction,
        og.decoupling_fraction,
    )?;
    let (os, ns) = (&base.statistical, &proposed.statistical);
    keeps_half(
        "statistical.confidence".into(),
        ns.confidence,
        os.confidence,
    )?;
    at_most_twice(
        "statistical.horizon_days".into(),
        f64::from(ns.horizon_days),
        f64::from(os.horizon_days),
    )?;
    at_most_twice("som_rate".into(), proposed.som_rate, base.som_rate)?;
    at_most_twice("mm_fraction".into(), proposed.mm_fraction, base.mm_fraction)?;
    at_most_twice(
        "short_option_im_base".into(),
        proposed.short_option_im_base,
        base.short_option_im_base,
    )?;
    at_most_twice(
        "short_option_im_floor".into(),
        proposed.short_option_im_floor,
        base.short_option_im_floor,
    )?;
    at_most_twice(
        "short_option_mm".into(),
        proposed.short_option_mm,
        base.short_option_mm,
    )?;
    Ok(())
}
