//! Rebuilding the engine from the store: the latest snapshot this build can go on from, and
//! the events logged after it (or the whole log from genesis).

use crate::service::state::{genesis_engine, AppState};
use crate::service::stream::apply_event;
use crate::store::Store;
use pmargin_engine::Engine;

/// The engine and the service's part of the latest snapshot, if there is one this build can
/// go on from; else why not (then recovery replays from genesis, which is always exact).
pub(crate) fn restore_snapshot(
    store: &mut dyn Store,
    notes: &mut Vec<String>,
) -> Option<(u64, Engine, pmargin_store::ServiceState)> {
    let (seq, state) = match store.latest_snapshot() {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        Err(e) => {
            notes.push(format!(
                "the latest snapshot cannot be read ({e}); replayed the log from genesis"
            ));
            return None;
        }
    };
    let service = state.service;
    match state.restore() {
        Ok(engine) if engine.sequence() == seq => Some((seq, engine, service)),
        Ok(engine) => {
            notes.push(format!(
                "the snapshot at event {seq} holds engine sequence {}; replayed the log from genesis",
                engine.sequence()
            ));
            None
        }
        Err(e) => {
            notes.push(format!(
                "the snapshot at event {seq} cannot be restored ({e}); replayed the log from genesis"
            ));
            None
        }
    }
}

/// Rebuilds the engine from the log (the latest snapshot and the events after it), dropping
/// the events applied but not made durable by a failed commit, as a restart would.
pub(crate) fn rebuild(state: &AppState) -> Result<(), String> {
    let engine = replayed(state, None)?;
    let seq = engine.sequence();
    {
        let mut current = state.engine.write().unwrap_or_else(|p| p.into_inner());
        let from = current.sequence();
        *current = engine;
        state.reports.rolled_back(from, seq);
    }
    state.set_committed(seq);
    Ok(())
}

/// The engine rebuilt from the log up to event `until` (the whole log when `None`): the latest
/// snapshot at or before it, else genesis, then the events after it, each checked to land on
/// its own sequence number.
pub(crate) fn replayed(state: &AppState, until: Option<u64>) -> Result<Engine, String> {
    let mut notes = Vec::new();
    let (mut engine, log) = {
        let mut store = state.store.lock().unwrap_or_else(|p| p.into_inner());
        let (engine, from) = match restore_snapshot(&mut **store, &mut notes) {
            Some((seq, engine, _)) if until.is_none_or(|u| seq <= u) => (engine, seq),
            _ => (genesis_engine(&state.genesis)?, 0),
        };
        let log = match until {
            Some(u) => store.events_page(from + 1, usize::try_from(u - from).unwrap_or(usize::MAX)),
            None => store.events_from(from + 1),
        };
        (engine, log?)
    };
    for logged in log {
        apply_event(&mut engine, &logged.event);
        if engine.sequence() != logged.seq {
            return Err(format!(
                "event log: entry {} found at engine sequence {}",
                logged.seq,
                engine.sequence()
            ));
        }
    }
    Ok(engine)
}
