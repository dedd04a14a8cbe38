use pmargin_backtest::calibrate::{
    calibrate, defaults, rationale_path, simple_range, CalibrationConfig,
};
use pmargin_core::{History, Params};

const PARAMS: &str = r#"{"version": 7, "underlyings": {
    "BTC": {"price_scan_range": 0.1, "vol_scan_up": 0.1, "vol_scan_down": 0.1, "standard_im_rate": 0.1, "standard_mm_rate": 0.05},
    "SOL": {"price_scan_range": 0.2, "vol_scan_up": 0.1, "vol_scan_down": 0.1, "standard_im_rate": 0.1, "standard_mm_rate": 0.05}},
    "som_rate": 0.02}"#;

/// xorshift64* and Box-Muller: a small reproducible normal source for the test.
struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.uniform()).cos()
    }
}

/// Integrated GARCH(1,1) with alpha = 1 - lambda, beta = lambda: the EWMA shares its recursion,
/// so the true conditional vol of the next day is known. Returns the price history and that vol.
fn garch_history(n: usize, lambda: f64, seed: u64) -> (History, f64) {
    let omega = 1e-9;
    let mut rng = Rng(seed);
    let mut sig2: f64 = 4e-4;
    let mut price = 30000.0;
    let mut csv = String::from("date,BTC\n");
    let start = chrono::NaiveDate::from_ymd_opt(2015, 1, 1).unwrap();
    let mut returns = Vec::new();
    for t in 0..=n {
        csv.push_str(&format!(
            "{},{price}\n",
            start + chrono::Days::new(t as u64)
        ));
        let r = sig2.sqrt() * rng.normal();
        returns.push(r);
        sig2 = omega + (1.0 - lambda) * r * r + lambda * sig2;
        price *= r.exp();
    }
    // The last simulated return is not in the csv: recompute the conditional variance after
    // the n returns that are.
    let mut s2: f64 = 4e-4;
    for r in &returns[..n] {
        s2 = omega + (1.0 - lambda) * r * r + lambda * s2;
    }
    (History::parse("garch.csv", &csv).unwrap(), s2.sqrt())
}

#[test]
fn garch_range_matches_the_known_quantile_and_only_ranges_change() {
    let (history, sigma) = garch_history(600, 0.94, 11);
    let params = Params::parse("live.json", PARAMS).unwrap();
    let options = CalibrationConfig {
        horizon_days: 2.0,
        ..defaults(&params)
    };
    let proposal = calibrate(&history, &params, &options).unwrap();
    let z = 2.326_347_874_040_841; // N^-1(0.99)
    let expected_log = z * sigma * 2f64.sqrt();
    let btc = &proposal.params.underlyings["BTC"];
    let expected = expected_log.exp_m1();
    assert!(
        (btc.price_scan_range / expected - 1.0).abs() < 0.01,
        "{} vs {expected}",
        btc.price_scan_range
    );
    // Version + 1; only the calibrated range moved; SOL (no history) is unchanged.
    let mut same = params.clone();
    same.version += 1;
    same.underlyings.get_mut("BTC").unwrap().price_scan_range = btc.price_scan_range;
    assert_eq!(proposal.params, same);
    let sol = proposal
        .rationale
        .underlyings
        .iter()
        .find(|c| c.underlying == "SOL")
        .unwrap();
    assert!(!sol.calibrated);
    let side = proposal.side_by_side();
    assert!(
        side.contains("BTC") && side.contains("10.00%") && side.contains("unchanged"),
        "{side}"
    );

    // Written to a proposal file and a rationale beside it; never over the input.
    let dir = std::env::temp_dir().join(format!("pmargin-calibrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("live.json");
    std::fs::write(&input, PARAMS).unwrap();
    assert!(proposal.write(&input, Some(&input)).is_err());
    let out = dir.join("proposal.json");
    let (a, b) = proposal.write(&out, Some(&input)).unwrap();
    assert_eq!(b, rationale_path(&out));
    let back = Params::parse("proposal.json", &std::fs::read_to_string(&a).unwrap()).unwrap();
    assert_eq!(back.version, 8);
    assert_eq!(back.underlyings, proposal.params.underlyings);
    assert_eq!(back.som_rate, 0.02);
    let rationale: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&b).unwrap()).unwrap();
    assert_eq!(rationale["new_version"], 8);
    assert_eq!(rationale["underlyings"][0]["underlying"], "BTC");
    // The settings record every field the range was computed with, the horizon as overridden
    // and the rest from the parameter set.
    let mut keys: Vec<&str> = rationale["settings"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "buffer",
            "coverage",
            "dof",
            "floor_stressed",
            "horizon_days",
            "lambda",
            "release_buffer_in_stress",
            "stress_lookback",
            "stressed_weight"
        ]
    );
    assert_eq!(rationale["settings"]["horizon_days"], 2.0);
    assert_eq!(rationale["settings"]["coverage"], 0.99);
    assert_eq!(std::fs::read_to_string(&input).unwrap(), PARAMS);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn anti_procyclicality_tools_raise_a_calm_range() {
    let (history, _) = garch_history(600, 0.94, 5);
    let params = Params::parse("live.json", PARAMS).unwrap();
    let plain = calibrate(&history, &params, &defaults(&params)).unwrap();
    let apc = calibrate(
        &history,
        &params,
        &CalibrationConfig {
            floor_stressed: true,
            buffer: 0.25,
            stressed_weight: 0.25,
            ..defaults(&params)
        },
    )
    .unwrap();
    let r = |p: &pmargin_backtest::Proposal| p.params.underlyings["BTC"].price_scan_range;
    assert!(r(&apc) >= r(&plain));
    let c = &apc.rationale.underlyings[0];
    assert!(c.floor_log_range.is_some());
    assert_eq!(simple_range(c.final_log_range.unwrap()).0, r(&apc));
}

#[test]
fn conversion_covers_both_directions_and_caps() {
    let (r, capped) = simple_range(0.1);
    assert!((r - (0.1f64.exp() - 1.0)).abs() < 1e-15 && !capped);
    assert!(r >= 1.0 - (-0.1f64).exp());
    assert_eq!(simple_range(2.0), (1.0, true));
}
