//! Periodic snapshots: the engine is copied by the writer between two batches (the engine,
//! the stream numbering and the counters then agree with the log's last event), and
//! serialized and stored by a thread of its own, so ingest goes on meanwhile; and on a clean
//! stop. Recovery starts from the latest ([`crate::service::replay`]).

use crate::service::state::AppState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Events between two snapshots the writer takes (SQLite store), by default.
pub const SNAPSHOT_EVERY: u64 = 50_000;

/// A snapshot the writer copied, for the snapshot thread to serialize and store.
struct Job {
    seq: u64,
    state: pmargin_store::State,
    /// How long copying it held the writer up.
    capture: Duration,
}

/// The periodic snapshots: the engine is copied by the writer between two batches (the
/// engine, the stream numbering and the counters then agree with the log's last event), and
/// serialized and stored by a thread of its own, so ingest goes on meanwhile.
pub(crate) struct Snapshots {
    every: u64,
    /// Events committed since the last snapshot (at start: those replayed).
    pub(crate) since: u64,
    /// A job is under way: the next snapshot waits for it (the copy is not taken meanwhile).
    busy: Arc<AtomicBool>,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Snapshots {
    pub(crate) fn start(
        state: &Arc<AppState>,
        every: u64,
        since: u64,
    ) -> Result<Snapshots, String> {
        let (tx, rx) = mpsc::channel::<Job>();
        let busy = Arc::new(AtomicBool::new(false));
        let (thread_state, thread_busy) = (state.clone(), busy.clone());
        let thread = std::thread::Builder::new()
            .name("pmargin-snapshot".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    save_snapshot(&thread_state, job);
                    thread_busy.store(false, Ordering::Release);
                }
            })
            .map_err(|e| format!("cannot start the snapshot thread: {e}"))?;
        Ok(Snapshots {
            every,
            since,
            busy,
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands a snapshot to the snapshot thread when one is due and none is under way.
    pub(crate) fn maybe_take(&mut self, state: &AppState) {
        if self.every == 0 || self.since < self.every || self.busy.load(Ordering::Acquire) {
            return;
        }
        let Some(job) = capture(state) else { return };
        self.busy.store(true, Ordering::Release);
        let sent = match &self.jobs {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        };
        if sent {
            self.since = 0;
        } else {
            self.busy.store(false, Ordering::Release);
        }
    }

    /// On a clean stop: waits for the snapshot under way, then takes one of the final state
    /// (unless nothing happened since the last).
    pub(crate) fn finish(&mut self, state: &AppState) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.since > 0 {
            if let Some(job) = capture(state) {
                save_snapshot(state, job);
            }
        }
    }
}

/// The engine's state and the service's part as of the last committed event; `None` after a
/// storage failure (the engine may then hold events the log does not).
fn capture(state: &AppState) -> Option<Job> {
    if state.failure().is_some() {
        return None;
    }
    let t = Instant::now();
    let engine = state.engine();
    let (applied, rejected) = state.metrics.counts();
    let doc = pmargin_store::State::capture(
        &engine,
        pmargin_store::ServiceState {
            stream_next: state.hub.next_seq(),
            events_applied: applied,
            events_rejected: rejected,
        },
    );
    Some(Job {
        seq: engine.sequence(),
        state: doc,
        capture: t.elapsed(),
    })
}

/// Serializes (without the store's lock) and stores a snapshot. A failure is reported and
/// otherwise harmless: recovery starts from the previous snapshot.
fn save_snapshot(state: &AppState, job: Job) {
    let t = Instant::now();
    let saved = serde_json::to_string(&job.state)
        .map_err(|e| e.to_string())
        .and_then(|json| {
            state
                .store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .save_snapshot(job.seq, &json)
                .map(|()| json.len())
        });
    match saved {
        Ok(bytes) => state
            .metrics
            .record_snapshot(job.seq, bytes, job.capture, t.elapsed()),
        Err(e) => eprintln!("pmargin: snapshot after event {}: {e}", job.seq),
    }
}
