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
//! This is monotonicity knob by knob, the usual reading of "more conservative". It is not a
//! proof that every account's requirement rises: a wider scan range moves the grid points
//! outward, and a book whose loss peaks between them can in principle see a lower grid risk.

use crate::error::GovError;
use pmargin_core::Params;

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
    Ok(())
}
