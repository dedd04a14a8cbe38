//! The recommended version 2 set: the shipped files are exactly what `pmargin calibrate
//! --recommend` derives from the bundled data, and its values follow the documented rules.

use pmargin_backtest::data;
use pmargin_backtest::recommend::{basis_by_day, ceil4, recommend};
use pmargin_core::Params;
use std::path::Path;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// `UPDATE_RECOMMENDED=1` rewrites the shipped sets from the bundled data (review the diff).
fn check_shipped(base_path: &str, shipped_path: &str) -> Params {
    let base = Params::parse(
        base_path,
        &std::fs::read_to_string(repo(base_path)).expect("base set"),
    )
    .unwrap();
    let r = recommend(&data::real_data().unwrap(), &base).unwrap();
    let json = r.params.to_json_pretty() + "\n";
    if std::env::var_os("UPDATE_RECOMMENDED").is_some() {
        std::fs::write(repo(shipped_path), &json).unwrap();
        let rationale = shipped_path.replace(".json", ".rationale.json");
        std::fs::write(
            repo(&rationale),
            serde_json::to_string_pretty(&r.rationale).unwrap() + "\n",
        )
        .unwrap();
    }
    let shipped = std::fs::read_to_string(repo(shipped_path)).expect("shipped set");
    assert_eq!(
        shipped, json,
        "{shipped_path} is not what calibrate --recommend derives from {base_path}"
    );
    r.params
}

#[test]
fn shipped_sets_are_what_calibrate_recommends() {
    let p = check_shipped(
        "crates/backtest/data/params.json",
        "data/params/recommended.json",
    );
    let mut embedded = data::params().unwrap();
    embedded.source = p.source.clone();
    assert_eq!(p, embedded, "the binary embeds the shipped set");
    let demo = check_shipped(
        "crates/cli/demo/params_v1.json",
        "crates/cli/demo/params.json",
    );
    // SOL has no data: its scan values stay, it takes the largest calibrated power.
    let v1 = Params::parse(
        "v1",
        &std::fs::read_to_string(repo("crates/cli/demo/params_v1.json")).unwrap(),
    )
    .unwrap();
    let sol = &demo.underlyings["SOL"];
    assert_eq!(sol.price_scan_range, v1.underlyings["SOL"].price_scan_range);
    let powers = [&demo.underlyings["BTC"], &demo.underlyings["ETH"]]
        .map(|u| u.vol_power_short)
        .into_iter()
        .fold(0.0, f64::max);
    assert_eq!(sol.vol_power_short, powers);
    assert!(sol.basis_contingency > 0.0);
}

#[test]
fn recommended_values_follow_their_rules() {
    let d = data::real_data().unwrap();
    let p = data::params().unwrap();
    let btc = &p.underlyings["BTC"];
    // Range: the larger of the 99% one-day rise and fall over btc_long, recomputed here
    // without the library: sort the moves, interpolate at 0.99 (n - 1) and 0.01 (n - 1).
    let closes = d.closes["BTC"].column("BTC").unwrap();
    let mut moves: Vec<f64> = closes.windows(2).map(|w| w[1] / w[0] - 1.0).collect();
    moves.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = q * (moves.len() - 1) as f64;
        let i = pos.floor() as usize;
        moves[i] + (moves[i + 1] - moves[i]) * (pos - i as f64)
    };
    assert_eq!(btc.price_scan_range, ceil4(at(0.99).max(-at(0.01))));
    // Tenor power within the rough-volatility band and the same short and long.
    assert!(btc.vol_power_short > 0.0 && btc.vol_power_short < 0.5);
    assert_eq!(btc.vol_power_short, btc.vol_power_long);
    // Basis: the worst of the three stress days, each funding + gap.
    let days = basis_by_day(&d).unwrap();
    assert_eq!(days.len(), 3);
    let worst = days.iter().map(|x| x.3).fold(0.0, f64::max);
    assert_eq!(btc.basis_contingency, ceil4(worst));
    // 2020-03-12: the funding of 2020-03-13 (-0.00127 per 8h) x 3, no spot low/high bundled.
    assert!((days[0].1 - 3.0 * 0.001_271_503_333_333_33).abs() < 1e-12);
    assert_eq!(days[0].2, 0.0);
    // Extended moves: a fall and a rise, vol up, cover = 0.35 x 2 x smallest range / |move|.
    let e = &p.grid.extended_moves;
    assert_eq!(e.len(), 2);
    assert!(e[0].price_move < -0.5 && e[1].price_move > 0.5, "{e:?}");
    for m in e {
        let expected = ceil4(0.35 * 2.0 * btc.price_scan_range / m.price_move.abs());
        assert_eq!(m.cover, expected);
    }
    // Haircuts: 1 - the lowest close; USDC's 2023-03-11 close 0.9715 is within 0.15% of it.
    let usdc = p.collateral["USDC"].haircut;
    assert!(
        (1.0 - 0.9715..1.0 - 0.9715 + 0.0015).contains(&usdc),
        "{usdc}"
    );
}

/// With `keep_scans` (the cascade demo's book, built on its own 4% / 5% ranges) the scans stay
/// and the extended moves' cover follows the base's smallest range: 0.35 x 2 x 0.04 / |move|.
#[test]
fn keep_scans_leaves_the_ranges_and_scales_the_covers() {
    let base = Params::parse(
        "sim.json",
        r#"{"version": 1, "underlyings": {
          "BTC": {"price_scan_range": 0.04, "vol_scan_up": 0.1, "vol_scan_down": 0.1,
                  "standard_im_rate": 0.04, "standard_mm_rate": 0.03},
          "ETH": {"price_scan_range": 0.05, "vol_scan_up": 0.1, "vol_scan_down": 0.1,
                  "standard_im_rate": 0.05, "standard_mm_rate": 0.0375}},
          "collateral": {"USDC": {"haircut": 0.0}}}"#,
    )
    .unwrap();
    let r = pmargin_backtest::recommend_with(&data::real_data().unwrap(), &base, true).unwrap();
    let btc = &r.params.underlyings["BTC"];
    assert_eq!(
        (btc.price_scan_range, btc.vol_scan_up, btc.vol_scan_down),
        (0.04, 0.1, 0.1)
    );
    assert!(btc.vol_power_short > 0.0 && btc.basis_contingency > 0.0);
    for m in &r.params.grid.extended_moves {
        assert_eq!(m.cover, ceil4(0.35 * 2.0 * 0.04 / m.price_move.abs()));
    }
    assert!(r.params.collateral["USDC"].haircut > 0.0);
    assert!(!r
        .rationale
        .derivations
        .iter()
        .any(|d| d.parameter.ends_with("price_scan_range")));
}
