//! The full grid-model backtest of the six reference portfolios over the bundled history
//! (target: under 10 s on 2 cores).

use criterion::{criterion_group, criterion_main, Criterion};
use pmargin_backtest::engine::{run_backtest, BacktestConfig};
use pmargin_backtest::{data, reference_portfolios};
use std::time::Duration;

fn full_grid_backtest(c: &mut Criterion) {
    let history = data::history().unwrap();
    let params = data::params().unwrap();
    let portfolios = reference_portfolios();
    let config = BacktestConfig::default();
    let mut group = c.benchmark_group("backtest");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("grid_6_reference_portfolios_full_history", |b| {
        b.iter(|| run_backtest(&history, &params, &portfolios, &config, &|_, _| {}).unwrap())
    });
    group.finish();
}

criterion_group!(benches, full_grid_backtest);
criterion_main!(benches);
