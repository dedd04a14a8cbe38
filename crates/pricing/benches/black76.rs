//! Throughput of the pricing kernels the margin engine calls per scenario.

use criterion::{criterion_group, criterion_main, Criterion};
use pmargin_pricing::{black76, black76_greeks, implied_vol, OptionKind};
use std::hint::black_box;

fn bench_black76(c: &mut Criterion) {
    // Near-the-money call on a BTC-like forward, 30 days, 55% vol.
    let (f, k, t, sigma, r) = (60_000.0, 61_000.0, 30.0 / 365.0, 0.55, 0.03);

    c.bench_function("black76", |b| {
        b.iter(|| {
            black76(
                black_box(OptionKind::Call),
                black_box(f),
                black_box(k),
                black_box(t),
                black_box(sigma),
                black_box(r),
            )
        })
    });

    // The margin engine's usual case: stablecoin-settled books margined at a zero rate.
    c.bench_function("black76_zero_rate", |b| {
        b.iter(|| {
            black76(
                black_box(OptionKind::Call),
                black_box(f),
                black_box(k),
                black_box(t),
                black_box(sigma),
                black_box(0.0),
            )
        })
    });

    c.bench_function("black76_greeks", |b| {
        b.iter(|| {
            black76_greeks(
                black_box(OptionKind::Call),
                black_box(f),
                black_box(k),
                black_box(t),
                black_box(sigma),
                black_box(r),
            )
        })
    });

    let price = black76(OptionKind::Call, f, k, t, sigma, r);
    c.bench_function("implied_vol", |b| {
        b.iter(|| {
            implied_vol(
                black_box(OptionKind::Call),
                black_box(price),
                black_box(f),
                black_box(k),
                black_box(t),
                black_box(r),
            )
        })
    });

    // Deep out of the money, one day: exercises the log-space branch.
    let (k_otm, t_otm) = (75_000.0, 1.0 / 365.0);
    let price_otm = black76(OptionKind::Call, f, k_otm, t_otm, sigma, r);
    c.bench_function("implied_vol_deep_otm", |b| {
        b.iter(|| {
            implied_vol(
                black_box(OptionKind::Call),
                black_box(price_otm),
                black_box(f),
                black_box(k_otm),
                black_box(t_otm),
                black_box(r),
            )
        })
    });
}

criterion_group!(benches, bench_black76);
criterion_main!(benches);
