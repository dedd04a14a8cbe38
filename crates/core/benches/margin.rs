//! Benchmarks of the stated performance targets:
//! - full grid recompute (risk arrays + every account) of 100,000 accounts on one core, under
//!   methodology v1 and v2;
//! - liquidation prices of one account with 10 positions.

use criterion::{criterion_group, criterion_main, Criterion};
use pmargin_core::liquidation::liquidation_prices;
use pmargin_core::synthetic;
use pmargin_core::{Evaluator, RiskArrays};
use std::hint::black_box;

fn grid_recompute(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let mut group = c.benchmark_group("grid");
    group.sample_size(20);
    // The same book under methodology v1 and v2 (issue 16: v2 keeps 1M accounts/s or more).
    for (name, book) in [
        (
            "recompute_100k_accounts_1_core",
            synthetic::book(100_000, 42),
        ),
        (
            "recompute_100k_accounts_1_core_v2",
            synthetic::book_v2(100_000, 42),
        ),
    ] {
        let book = book.expect("synthetic book");
        group.bench_function(name, |b| {
            b.iter(|| {
                pool.install(|| {
                    let arrays = RiskArrays::compute(&book, None).expect("arrays");
                    let reqs = Evaluator::new(&book, &arrays)
                        .requirements()
                        .expect("requirements");
                    black_box(reqs.len())
                })
            })
        });
    }
    group.finish();
}

fn liquidation(c: &mut Criterion) {
    let book = synthetic::book(64, 7).expect("synthetic book");
    let arrays = RiskArrays::compute(&book, None).expect("arrays");
    let evaluator = Evaluator::new(&book, &arrays);
    // A solvent account that the search has to scan on every exposure.
    let account = book
        .accounts
        .iter()
        .find(|a| {
            let r = evaluator.requirement(a).expect("requirement");
            !r.below_maintenance() && a.exposures.len() >= 3
        })
        .expect("a healthy multi-underlying account");
    let options = account
        .positions
        .iter()
        .filter(|p| book.instruments[p.instrument].option.is_some())
        .count();
    let mut group = c.benchmark_group("liquidation");
    group.bench_function(format!("prices_10_positions_{options}_options"), |b| {
        b.iter(|| black_box(liquidation_prices(&evaluator, account, false)))
    });
    group.finish();
}

criterion_group!(benches, grid_recompute, liquidation);
criterion_main!(benches);
