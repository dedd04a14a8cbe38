//! Benchmark: 10,000 Student-t paths for 3 correlated underlyings.

use criterion::{criterion_group, criterion_main, Criterion};
use pmargin_stats::montecarlo::{simulate, McConfig};
use pmargin_stats::Matrix;
use std::hint::black_box;

fn bench_simulate(c: &mut Criterion) {
    let cfg = McConfig {
        paths: 10_000,
        seed: 1,
        ..McConfig::default()
    };
    let vols = [0.03, 0.04, 0.05];
    let corr = Matrix::from_row_slice(3, 3, &[1.0, 0.8, 0.7, 0.8, 1.0, 0.75, 0.7, 0.75, 1.0]);
    c.bench_function("simulate_10k_paths_3_underlyings", |b| {
        b.iter(|| simulate(black_box(&cfg), black_box(&vols), black_box(&corr)))
    });
}

criterion_group!(benches, bench_simulate);
criterion_main!(benches);
