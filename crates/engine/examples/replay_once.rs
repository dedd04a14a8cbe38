//! The replay bench's `2k_events_50pct_ticks` work run once, for instruction counts under
//! callgrind (stable on a loaded machine, where wall time is not):
//!
//! ```text
//! cargo build --release -p pmargin-engine --example replay_once
//! valgrind --tool=callgrind --toggle-collect='*Engine*apply_all*' \
//!     target/release/examples/replay_once v2_equal_health
//! ```
//!
//! The argument is the variant (`v1`, `v2_same_cash`, `v2_equal_health`). Only the replay is
//! counted with `--toggle-collect` (the book, the engines and the log are built first). The
//! run prints how many liquidation fills and close-outs, margin changes and rejections the
//! replay gave, so a change meant to be exact can be checked to give the same.

#[path = "../benches/replay_setup.rs"]
mod replay_setup;

use pmargin_engine::Output;
use replay_setup::{engine, engine_for, event_log, replay_portfolio, Variant};
use std::process::ExitCode;

// As in the `pmargin` binary and the bench.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "v1".into());
    // (Version 1's suffix is empty: it is named `v1`.)
    let name = |v: Variant| match v.suffix() {
        "" => "v1",
        suffix => suffix.trim_start_matches('/'),
    };
    let Some(variant) = std::iter::once(Variant::V1)
        .chain(Variant::V2)
        .find(|&v| name(v) == arg)
    else {
        eprintln!("replay_once: unknown variant {arg:?} (v1, v2_same_cash or v2_equal_health)");
        return ExitCode::from(2);
    };
    let p = replay_portfolio();
    // The bench's log: drawn against version 1's engine, the same events for every variant.
    let log = event_log(&engine(&p, false), 2_000, 0.5);
    let mut e = engine_for(&p, variant);
    let (mut fills, mut close_outs, mut changes, mut rejected) = (0usize, 0usize, 0usize, 0usize);
    e.apply_all(&log, |_, _, out| {
        for o in &out {
            match o {
                Output::LiquidationFill { .. } => fills += 1,
                Output::CloseOut { .. } => close_outs += 1,
                Output::MarginChange { .. } => changes += 1,
                Output::Rejected { .. } => rejected += 1,
                _ => {}
            }
        }
    });
    println!(
        "{arg}: {} events, {fills} liquidation fills, {close_outs} close-outs, \
         {changes} margin changes, {rejected} rejected",
        log.len()
    );
    ExitCode::SUCCESS
}
