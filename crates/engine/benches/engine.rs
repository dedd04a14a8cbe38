//! Speed of the real-time engine (issue 4 targets), on books built from `synthetic::book`:
//!
//! - `tick_100k`: a BTC price tick with 100,000 accounts of which about half are exposed to
//!   BTC (the other half have their BTC positions removed). Target: under 50 ms on 2 cores.
//! - `check_trade_20_positions`: the pre-trade check of one trade on an account with 20
//!   positions. Target: under 20 microseconds.
//! - `replay_10k_accounts/10k_events_1pct_ticks`: events replayed over 10,000 accounts, 1% price
//!   ticks (a random walk of +-0.2% on a random underlying) and 99% trades between two random
//!   accounts on a random instrument at its mark (throughput in events/s). Target: at least
//!   200,000 events per second. The log has 1,000,000 events and accounts gather positions
//!   along it (from 10 to about 200 each), so later events cost more: every sample replays the
//!   same window, events 500,000 to 510,000 (accounts then hold about 100 positions), from a
//!   copy of the engine at its start. With `PMARGIN_BENCH_FULL=1` the whole log is also
//!   replayed once and timed.
//! - `replay_10k_accounts/2k_events_50pct_ticks`: the first 2,000 events of a log with half
//!   the events price ticks, from the starting book.
//!
//! Those are margined with MODEL.md version 1. Issue 16 asks version 2 (every part on:
//! `synthetic::market_and_params_v2`) to stay within 25% of version 1 on the tick and the
//! replay, so both have two version 2 variants, the same events on the same positions:
//!
//! - `.../v2_same_cash`: each account keeps version 1's USDC. Version 2 asks more margin, so
//!   more accounts sit near their boundaries (and leave their screening bands, or fail) than
//!   under version 1: this times a book that is riskier, not only a model that costs more.
//! - `.../v2_equal_health`: each account's USDC is set so that its health (margin balance over
//!   maintenance margin) under version 2 is its health under version 1, account by account
//!   ([`replay_setup::equal_health`]): the same distribution of distances to failure, so the comparison
//!   with version 1 times the model alone. This is the one the 25% applies to.
//!
//! The replays go through `Engine::apply_all`, as `pmargin replay` does, with the allocator
//! the `pmargin` binary uses (mimalloc).
//!
//! Price ticks are screened (see the engine module documentation): only accounts whose
//! status a tick could change are re-margined, and a fill that provably leaves an account
//! healthy is applied without evaluating it.

mod replay_setup;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pmargin_core::synthetic;
use pmargin_engine::{Engine, Event, Output};
use replay_setup::{engine, engine_for, event_log, portfolio, replay_portfolio, Variant};
use std::hint::black_box;
use std::time::Instant;

// As in the `pmargin` binary: fills, trials and re-margins allocate small buffers all along.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Prints the deciles of the accounts' health (margin balance / maintenance margin) and how
/// many start below maintenance, to show what a variant's book is like.
fn health_report(label: &str, e: &Engine) {
    let mut health: Vec<f64> = e
        .risks()
        .filter(|(id, r)| *id != "liquidator" && r.maintenance_margin > 0.0)
        .map(|(_, r)| r.margin_balance / r.maintenance_margin)
        .collect();
    health.sort_by(f64::total_cmp);
    if health.is_empty() {
        return;
    }
    let decile = |d: usize| health[(d * (health.len() - 1)) / 10];
    let under = health.iter().filter(|h| **h < 1.0).count();
    let near = health.iter().filter(|h| **h < 1.5).count();
    eprintln!(
        "{label}: health MB/MM deciles 10%..90%: {}; {under} of {} below 1, {near} below 1.5",
        (1..10)
            .map(|d| format!("{:.2}", decile(d)))
            .collect::<Vec<_>>()
            .join(" "),
        health.len()
    );
}

/// CPU seconds (user + system, every thread) this process has used, from /proc/self/stat
/// (clock ticks of 1/100 s). On a shared machine, CPU time / cores estimates the wall time
/// on idle cores better than the wall time does.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime field 11, stime field 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `f` `n` times and prints wall and CPU time per run.
fn cpu_report(label: &str, n: usize, mut f: impl FnMut()) {
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    for _ in 0..n {
        f();
    }
    let (wall, cpu) = (
        wall.elapsed().as_secs_f64() / n as f64,
        (cpu_seconds() - cpu) / n as f64,
    );
    eprintln!(
        "{label}: wall {:.3} ms, CPU {:.3} ms per run (CPU / 2 cores = {:.3} ms)",
        wall * 1e3,
        cpu * 1e3,
        cpu * 500.0
    );
}

fn count_liquidations(out: &[Output]) -> usize {
    out.iter()
        .filter(|o| matches!(o, Output::LiquidationFill { .. } | Output::CloseOut { .. }))
        .count()
}

fn tick_100k(c: &mut Criterion) {
    for variant in [Variant::V1, Variant::V2SameCash, Variant::V2EqualHealth] {
        tick_100k_variant(c, variant);
    }
}

fn tick_100k_variant(c: &mut Criterion, variant: Variant) {
    let label = format!("tick_100k{}", variant.suffix());
    let book = synthetic::book(100_000, 42).expect("book");
    // 56% of accounts keep everything (89% of those hold BTC: 1 - 0.8^10), the rest lose their
    // BTC positions: about 0.56 x 0.89 = 50% exposed.
    let p = portfolio(&book, |i, u| i % 100 < 56 || u != "BTC");
    drop(book);
    let mut e = engine_for(&p, variant);
    drop(p);
    eprintln!(
        "{label}: {} accounts, {} exposed to BTC",
        e.account_ids().count(),
        e.accounts_exposed_to("BTC")
    );
    health_report(&label, &e);
    // A first tick at each of the two prices lets the liquidations the book starts with happen.
    let warm = [
        e.apply(&Event::Price {
            underlying: "BTC".into(),
            price: 60_060.0,
        }),
        e.apply(&Event::Price {
            underlying: "BTC".into(),
            price: 60_000.0,
        }),
    ];
    eprintln!(
        "{label}: warm-up liquidation fills/close-outs: {}",
        warm.iter().map(|o| count_liquidations(o)).sum::<usize>()
    );
    let mut up = false;
    let mut liquidations = 0;
    let name = format!("tick_100k_accounts_50k_exposed{}", variant.suffix());
    c.bench_function(&name, |b| {
        b.iter(|| {
            up = !up;
            let price = if up { 60_060.0 } else { 60_000.0 };
            let out = e.apply(black_box(&Event::Price {
                underlying: "BTC".into(),
                price,
            }));
            liquidations += count_liquidations(&out);
            out
        })
    });
    eprintln!("{label}: liquidation fills/close-outs during the measurement: {liquidations}");
    cpu_report(&format!("{label} (50 ticks)"), 50, || {
        up = !up;
        let price = if up { 60_060.0 } else { 60_000.0 };
        black_box(e.apply(&Event::Price {
            underlying: "BTC".into(),
            price,
        }));
    });
}

fn check_trade_20(c: &mut Criterion) {
    let book = synthetic::book(1_000, 7).expect("book");
    let mut p = portfolio(&book, |_, _| true);
    // Account 0 takes account 1's positions too: 20 positions (merged if an instrument repeats).
    let extra = p.accounts[1].positions.clone();
    p.accounts[0].positions.extend(extra);
    p.accounts[0].balances.insert("USDC".into(), 5e6);
    let n = p.accounts[0].positions.len();
    let id = p.accounts[0].id.clone();
    let instrument = p.accounts[0].positions[3].instrument.name.clone();
    let mut e = engine(&p, false);
    let mark = {
        let b = e.book();
        let i = b.instrument_index(&instrument).expect("instrument");
        b.instruments[i].value_at(1.0, b.rate)
    };
    eprintln!(
        "check_trade: account {id} with {n} positions, trade 0.5 {instrument} at {mark}: {:?}",
        e.check_trade(&id, &instrument, 0.5, mark, 0.0)
    );
    c.bench_function("check_trade_20_positions", |b| {
        b.iter(|| black_box(e.check_trade(black_box(&id), black_box(&instrument), 0.5, mark, 0.0)))
    });
}

fn replay(c: &mut Criterion) {
    const CHUNK: usize = 10_000;
    const CHUNK50: usize = 2_000;
    const LOG: usize = 1_000_000;
    // Where the measured window starts: mid-log, where accounts hold ~100 positions.
    const WARM: usize = 500_000;
    let p = replay_portfolio();
    let fresh = engine(&p, false);
    let log = event_log(&fresh, LOG, 0.01);
    let ticks = log
        .iter()
        .filter(|e| matches!(e, Event::Price { .. }))
        .count();
    eprintln!(
        "replay: {} accounts, {LOG} events of which {ticks} ticks",
        fresh.account_ids().count()
    );
    health_report("replay", &fresh);

    if std::env::var("PMARGIN_BENCH_FULL").is_ok() {
        let mut e = fresh.clone();
        let start = Instant::now();
        let mut rejected = 0usize;
        e.apply_all(&log, |_, _, out| {
            rejected += matches!(out.as_slice(), [Output::Rejected { .. }]) as usize;
        });
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "replay: full {LOG} events in {secs:.2} s = {:.0} events/s ({rejected} rejected)",
            LOG as f64 / secs
        );
    }

    // Accounts grow as the log goes on (trades add positions), so later events cost more: the
    // benches measure fixed windows, from a clone of the engine at the window's start, so that
    // every sample (and every run) times the same work.
    let mut warm = fresh.clone();
    warm.apply_all(&log[..WARM], |_, _, out| drop(black_box(out)));
    let window = &log[WARM..WARM + CHUNK];
    let held = warm.portfolio();
    eprintln!(
        "replay: at event {WARM}, accounts hold {:.1} positions on average",
        held.accounts
            .iter()
            .map(|a| a.positions.len())
            .sum::<usize>() as f64
            / held.accounts.len() as f64
    );
    let mut group = c.benchmark_group("replay_10k_accounts");
    group.throughput(Throughput::Elements(CHUNK as u64));
    group.sample_size(20);
    group.bench_function("10k_events_1pct_ticks", |b| {
        b.iter_batched_ref(
            || warm.clone(),
            |e| e.apply_all(window, |_, _, out| drop(black_box(out))),
            BatchSize::PerIteration,
        )
    });
    let log50 = event_log(&fresh, CHUNK50, 0.5);
    group.throughput(Throughput::Elements(CHUNK50 as u64));
    group.sample_size(10);
    group.bench_function("2k_events_50pct_ticks", |b| {
        b.iter_batched_ref(
            || fresh.clone(),
            |e| e.apply_all(&log50, |_, _, out| drop(black_box(out))),
            BatchSize::PerIteration,
        )
    });
    // Version 2 on the same positions and the same events (the log's fills are at marks,
    // which version 2 does not change).
    for variant in Variant::V2 {
        let fresh = engine_for(&p, variant);
        health_report(&format!("replay{}", variant.suffix()), &fresh);
        let name = format!("2k_events_50pct_ticks{}", variant.suffix());
        group.bench_function(&name, |b| {
            b.iter_batched_ref(
                || fresh.clone(),
                |e| e.apply_all(&log50, |_, _, out| drop(black_box(out))),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
    // Copies made beforehand, and dropped afterwards, so only the replay is timed.
    let mut copies: Vec<Engine> = (0..10).map(|_| warm.clone()).collect();
    let mut done = Vec::with_capacity(copies.len());
    cpu_report("replay (the window of 10,000 events)", 10, || {
        if let Some(mut e) = copies.pop() {
            e.apply_all(window, |_, _, out| drop(black_box(out)));
            done.push(e);
        }
    });
}

// The replay first: the other benches build (and drop) books of up to 100,000 accounts, and a
// replay run after them works in the heap they leave behind, slower than a `pmargin replay`
// process (about 7% on the full log).
criterion_group!(benches, replay, tick_100k, check_trade_20);
criterion_main!(benches);
