use super::*;

#[test]
fn status_is_written_and_read_as_its_lowercase_name() {
    let names = [
        (Status::Healthy, "healthy"),
        (Status::Restricted, "restricted"),
        (Status::Liquidatable, "liquidatable"),
        (Status::Bankrupt, "bankrupt"),
    ];
    for (status, name) in names {
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(json, format!("\"{name}\""));
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), status);
        assert_eq!(status.to_string(), name);
        assert!(status == name);
    }
    assert!(serde_json::from_str::<Status>("\"Healthy\"").is_err());
    assert!(Status::Healthy != "bankrupt");
}

#[test]
fn status_thresholds() {
    assert_eq!(Status::of(100.0, 100.0, 75.0), Status::Healthy);
    assert_eq!(Status::of(99.0, 100.0, 75.0), Status::Restricted);
    assert_eq!(Status::of(75.0, 100.0, 75.0), Status::Restricted);
    assert_eq!(Status::of(74.9, 100.0, 75.0), Status::Liquidatable);
    assert_eq!(Status::of(0.0, 100.0, 75.0), Status::Liquidatable);
    assert_eq!(Status::of(-0.01, 100.0, 75.0), Status::Bankrupt);
    assert_eq!(Status::of(0.0, 0.0, 0.0), Status::Healthy);
    assert_eq!(Status::of(f64::NAN, 100.0, 75.0), Status::Bankrupt);
    assert_eq!(Status::of(1e9, f64::NAN, 75.0), Status::Bankrupt);
    assert_eq!(Status::of(1e9, 100.0, f64::NAN), Status::Bankrupt);
}

#[test]
fn reused_rows_give_the_full_requirement_bit_for_bit() {
    // Synthetic accounts (options, futures, perpetuals and coin collateral on five
    // underlyings): rows and sums kept once, then every subset of them reused, give
    // exactly the requirement of a full evaluation; with a price history too (whose
    // series an evaluation sums in full whatever it reuses).
    use crate::fhs::FhsScenarios;
    use crate::{synthetic, History, RiskArrays};
    let mut book = synthetic::book(40, 3).unwrap();
    let btc = book.assets.iter().position(|a| a.name == "BTC");
    if let Some(btc) = btc {
        book.accounts[0].balances.push(crate::book::BookBalance {
            asset: btc,
            amount: 1.5,
        });
    }
    let names: Vec<String> = book.underlyings.iter().map(|u| u.name.clone()).collect();
    let mut csv = format!("date,{}\n", names.join(","));
    for day in 0..30u32 {
        let closes: Vec<String> = (0..names.len())
            .map(|k| {
                format!(
                    "{}",
                    100.0 * (1.0 + 0.01 * ((day * 7 + k as u32 * 3) % 11) as f64)
                )
            })
            .collect();
        csv.push_str(&format!("2024-01-{:02},{}\n", day + 1, closes.join(",")));
    }
    let history = History::parse("history.csv", &csv).unwrap();
    let scenarios = FhsScenarios::build(&history, &book.params.statistical).unwrap();
    let mut histories = Vec::new();
    for arrays in [
        RiskArrays::compute(&book, None).unwrap(),
        RiskArrays::compute(&book, Some(&scenarios)).unwrap(),
    ] {
        kept_sums_give_the_full_requirement(&book, &arrays);
        histories.push(arrays.has_history());
    }
    assert_eq!(histories, [false, true]);
}

fn kept_sums_give_the_full_requirement(book: &Book, arrays: &RiskArrays) {
    let evaluator = Evaluator::new(book, arrays);
    let bits = |r: &Requirement| {
        (
            r.equity.to_bits(),
            r.margin_balance.to_bits(),
            r.initial_margin.to_bits(),
            r.maintenance_margin.to_bits(),
            r.grid.clone(),
            r.status,
        )
    };
    for account in &book.accounts {
        let full = evaluator.requirement(account).unwrap();
        let mut kept = Kept::default();
        let none = evaluator
            .requirement_reusing(account, &[], false, &mut kept)
            .unwrap();
        assert_eq!(bits(&none), bits(&full), "account {}", account.id);
        assert_eq!(kept.rows(), evaluator.partial(account).rows);
        assert_eq!(kept.sums(), evaluator.exposure_sums(account));
        let k = account.exposures.len();
        for mask in 0..(1u32 << k) {
            let reuse: Vec<bool> = (0..k).map(|e| mask & (1 << e) != 0).collect();
            for same_positions in [true, false] {
                let mut again = kept.clone();
                let r = evaluator
                    .requirement_reusing(account, &reuse, same_positions, &mut again)
                    .unwrap();
                assert_eq!(bits(&r), bits(&full), "account {} mask {mask}", account.id);
                assert_eq!(again.rows(), kept.rows());
                assert_eq!(again.sums(), kept.sums());
            }
        }
        // What is reused is taken as it stands (the caller vouches for it).
        if k > 0 {
            let mut stale = kept.clone();
            stale.rows[0] += 1e9;
            stale.sums[0].equity += 1e9;
            let mut reuse = vec![false; k];
            reuse[0] = true;
            let r = evaluator
                .requirement_reusing(account, &reuse, true, &mut stale)
                .unwrap();
            assert_eq!(stale.rows[0], kept.rows[0] + 1e9);
            // With a history the exposure's holdings are read for its series anyway, and its
            // sums summed anew.
            if arrays.has_history() {
                assert_eq!(r.equity.to_bits(), full.equity.to_bits());
            } else {
                assert!((r.equity - full.equity - 1e9).abs() < 1e-3);
            }
        }
    }
}

#[test]
fn haircut_applies_to_holdings_not_borrows() {
    assert_eq!(haircut_value(100.0, 0.05), 95.0);
    assert_eq!(haircut_value(-100.0, 0.05), -100.0);
}
