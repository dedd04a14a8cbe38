//! What snapshots cost and what they save (ignored by default: it writes a log of 100,000
//! events, twice). Run with
//! `cargo test --release -p pmargin-server --test recovery_cost -- --ignored --nocapture`;
//! `PMARGIN_COST_EVENTS` (default 100000) and `PMARGIN_COST_ACCOUNTS` (default 10000 for the
//! large book) size it.
//!
//! For the demo book and for a large synthetic one: ingest through the writer (with the
//! periodic snapshots on), the writer's pause to copy the engine and the background write of
//! the latest snapshot, its size; then the start-up time from the snapshot, from genesis with
//! the records stored, and from genesis upgrading a log without records.

mod common;

use common::*;
use pmargin_engine::Event;
use pmargin_server::demo::demo_genesis;
use pmargin_server::store::Genesis;
use pmargin_server::{start, ServerConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn var(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Event `i` of the load: deposits and small trades against `basis-fund`, an oracle quote
/// every 10 events, and every `price_every` events a price move re-margining the book.
fn event(i: usize, price_every: usize) -> Event {
    let account = format!("load-{}", i % 97);
    let s = |x: &str| x.to_string();
    if i % price_every == price_every - 1 {
        return Event::Price {
            underlying: s("ETH"),
            price: 3050.0 + (i % 37) as f64,
        };
    }
    match i % 10 {
        0 => Event::Quote {
            source: ["a", "b", "c"][i % 3].into(),
            underlying: s("BTC"),
            price: 91_500.0 + (i % 50) as f64,
            ts_ms: i as i64 * 100,
            confidence: None,
            weight: None,
        },
        1..=5 => Event::Deposit {
            account,
            asset: s("USDC"),
            amount: 100.0 + (i % 13) as f64,
        },
        _ => Event::Trade {
            account,
            instrument: s("BTC-PERPETUAL"),
            size: if i.is_multiple_of(2) { 0.001 } else { -0.001 },
            price: 91_540.0,
            fee: 0.0,
            counterparty: Some(s("basis-fund")),
        },
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(f64::NAN)
}

async fn timed_start(dir: &Path, genesis: &Genesis, every: u64) -> (pmargin_server::Running, f64) {
    let mut cfg = ServerConfig::new("127.0.0.1:0", Some(dir.to_path_buf()), genesis.clone());
    cfg.admin_key = Some(ADMIN.into());
    cfg.snapshot_every = every;
    let t = Instant::now();
    let r = start(cfg).await.unwrap();
    (r, t.elapsed().as_secs_f64())
}

async fn measure(name: &str, genesis: Genesis, events: usize, price_every: usize) {
    let dir = std::env::temp_dir().join(format!("pmargin-cost-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let every = pmargin_server::state::SNAPSHOT_EVERY;
    let (r, _) = timed_start(&dir, &genesis, every).await;
    let t = Instant::now();
    // 64 submitters: group commits of up to 64 events.
    let mut tasks = Vec::new();
    for w in 0..64 {
        let state = Arc::clone(&r.state);
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < events {
                state
                    .submit(event(i, price_every), "admin", None)
                    .await
                    .unwrap();
                i += 64;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ingest = t.elapsed().as_secs_f64();
    let periodic = r.state.metrics.render(&r.state.engine(), 0, true);
    let state = Arc::clone(&r.state);
    r.stop().await.unwrap();
    let last = state.metrics.render(&state.engine(), 0, true);
    drop(state);
    eprintln!(
        "{name}: {events} events ingested in {ingest:.1} s ({:.0}/s) with a snapshot every {every}",
        events as f64 / ingest
    );
    eprintln!(
        "{name}: periodic snapshot after event {}: writer paused {:.2} ms to copy the engine, background write {:.1} ms, {:.0} KiB",
        metric(&periodic, "pmargin_snapshot_sequence"),
        metric(&periodic, "pmargin_snapshot_capture_seconds") * 1e3,
        metric(&periodic, "pmargin_snapshot_write_seconds") * 1e3,
        metric(&periodic, "pmargin_snapshot_bytes") / 1024.0
    );
    eprintln!(
        "{name}: final snapshot on stop after event {}: copy {:.2} ms, write {:.1} ms, {:.0} KiB",
        metric(&last, "pmargin_snapshot_sequence"),
        metric(&last, "pmargin_snapshot_capture_seconds") * 1e3,
        metric(&last, "pmargin_snapshot_write_seconds") * 1e3,
        metric(&last, "pmargin_snapshot_bytes") / 1024.0
    );
    let (r, from_snapshot) = timed_start(&dir, &genesis, 0).await;
    assert_eq!(
        (r.snapshot_seq, r.replayed_events),
        (Some(events as u64), 0)
    );
    r.stop().await.unwrap();
    let db = rusqlite::Connection::open(dir.join(pmargin_store::DB_FILE)).unwrap();
    db.execute_batch("DELETE FROM snapshots").unwrap();
    let (r, from_genesis) = timed_start(&dir, &genesis, 0).await;
    assert_eq!((r.snapshot_seq, r.replayed_events), (None, events));
    r.stop().await.unwrap();
    db.execute_batch(
        "DELETE FROM snapshots; UPDATE events SET outputs = NULL, stream_seq = NULL, stream_extra = NULL, params_version = NULL",
    )
    .unwrap();
    drop(db);
    let (r, upgrade) = timed_start(&dir, &genesis, 0).await;
    assert_eq!(r.replayed_events, events);
    r.stop().await.unwrap();
    let db_size = std::fs::metadata(dir.join(pmargin_store::DB_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!(
        "{name}: start-up on {events} events: from the snapshot {from_snapshot:.2} s, from genesis {from_genesis:.2} s, \
         from genesis storing the records of an old log {upgrade:.2} s (database {:.0} MiB)",
        db_size as f64 / (1 << 20) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn snapshot_cost_and_start_up_time() {
    let events = var("PMARGIN_COST_EVENTS", 100_000);
    measure("demo book", demo_genesis(), events, 50).await;
    let accounts = var("PMARGIN_COST_ACCOUNTS", 10_000);
    if accounts > 0 {
        measure(
            &format!("{accounts}-account book"),
            big_genesis(accounts),
            events,
            1_000,
        )
        .await;
    }
}
