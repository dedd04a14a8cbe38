//! The writer thread: every write goes through it ([`Command`] over a channel). It takes every
//! pending command at once (group commit; under concurrent writes it lingers up to 2 ms for
//! the clients it just answered, see [`LINGER_MAX`]): it applies them to the engine in order,
//! commits them to the store in one transaction (one disk sync), and only then answers the
//! callers and publishes the stream. So an event is acknowledged only once durable, and events
//! are applied in one total order.
//!
//! A refused event changes nothing: it is answered (422) and counted in the metrics, but not
//! logged or audited, and takes no sequence number ([`Engine::apply_accepted`]). A failed
//! commit (a full disk) rolls back what the batch applied (the engine is rebuilt from the log,
//! as at a restart, [`rebuild`]), refuses every write and turns `/healthz` to 503; the writer
//! tries the store again on the next write and every [`PROBE_EVERY`], and writes resume once
//! it takes one.

use crate::error::ServiceError;
use crate::service::follower::{Follower, FOLLOW_WAIT};
use crate::service::replay::rebuild;
use crate::service::snapshots::Snapshots;
use crate::service::state::{
    event_hash, now_ms, result_of, AppState, Command, EventResult, Submit,
};
use crate::service::stream::apply_new_event;
use crate::store::{AuditEntry, EventRecord, LoggedEvent};
use pmargin_engine::oracle::Health;
use pmargin_engine::{Engine, Event, Output};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Largest number of commands committed together.
pub const MAX_BATCH: usize = 4096;
// A replicated log pipelines a whole batch of publishes before awaiting their acknowledgements.
const _: () = assert!(crate::replicated::MAX_ACKS_IN_FLIGHT >= 2 * MAX_BATCH);

/// The stored answer to an idempotency key: the request's fingerprint and its result.
pub(crate) struct Idem {
    pub hash: [u8; 32],
    pub result: EventResult,
}

/// What an oracle quote can move: its underlying's index price, stable price, health and the
/// market's confidence (`None` for other events).
type IndexBits = (Option<u64>, Option<u64>, Health, Option<u64>);

fn index_state(engine: &Engine, event: &Event) -> Option<IndexBits> {
    let Event::Quote { underlying, .. } = event else {
        return None;
    };
    let s = engine.oracle()?.state(underlying)?;
    Some((
        s.price.map(f64::to_bits),
        s.stable_price.map(f64::to_bits),
        s.health,
        engine
            .market()
            .confidence
            .get(underlying)
            .map(|c| c.to_bits()),
    ))
}

/// Answers to idempotency keys kept in memory at most when the store finds keys itself (the
/// map is cleared when full: the store still has every answer).
const IDEM_CACHE_MAX: usize = 100_000;

type Reply = (
    oneshot::Sender<Result<EventResult, ServiceError>>,
    Result<EventResult, ServiceError>,
);

/// After a failed commit, how often the writer tries the store again while no write comes.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Under concurrent writes, how long a batch may wait at most for more submitters.
pub const LINGER_MAX: Duration = Duration::from_micros(2000);
/// ... and for the next one to arrive.
pub const LINGER_GAP: Duration = Duration::from_micros(400);
/// Batches smaller than this do not wait at all (a lone writer is never delayed).
pub const LINGER_MIN_BATCH: usize = 8;

/// The writer thread's own state.
pub(crate) struct Writer {
    /// Answers to idempotency keys: every key's where the store cannot find keys, else a cache
    /// of recent ones (and those of the batch being applied).
    idem: HashMap<String, Idem>,
    finds_keys: bool,
    /// `None`: the store keeps no snapshots.
    snapshots: Option<Snapshots>,
    /// After a failed commit: whether the engine was rebuilt from the log yet.
    rebuilt: bool,
    /// When the store was last tried after a failure.
    probed: Option<Instant>,
    /// On a node of a replicated deployment: leading or following (`None`: a single node).
    follower: Option<Follower>,
}

impl Writer {
    /// The writer's state after a recovery: the idempotency answers it found, whether the
    /// store finds keys itself, and the snapshots (`None`: the store keeps none).
    pub(crate) fn new(
        idem: HashMap<String, Idem>,
        finds_keys: bool,
        snapshots: Option<Snapshots>,
    ) -> Writer {
        Writer {
            idem,
            finds_keys,
            snapshots,
            rebuilt: true,
            probed: None,
            follower: None,
        }
    }
}

/// Starts the writer thread on `rx` (its handle kept by `state`, for a stop to join).
pub(crate) fn spawn(
    state: &Arc<AppState>,
    rx: mpsc::Receiver<Command>,
    w: Writer,
) -> Result<(), String> {
    let writer_state = state.clone();
    let handle = std::thread::Builder::new()
        .name("pmargin-writer".into())
        .spawn(move || writer(writer_state, rx, w))
        .map_err(|e| format!("cannot start the writer thread: {e}"))?;
    state.keep_writer_thread(handle);
    Ok(())
}

fn writer(state: Arc<AppState>, rx: mpsc::Receiver<Command>, mut w: Writer) {
    w.follower = state.ha.get().map(|ha| Follower::new(ha.clone()));
    // A long replay at start is worth a snapshot right away (on a replicated node, once it
    // leads: one node writes them).
    if let (Some(snapshots), None) = (&mut w.snapshots, &w.follower) {
        snapshots.maybe_take(&state);
    }
    // The sizes of the last two batches: with N clients each waiting for its acknowledgement,
    // batches alternate between those answered by the last commit and those that arrived
    // during it; their sum estimates N.
    let mut last = (0usize, 0usize);
    loop {
        if let Some(f) = &mut w.follower {
            if !f.ha.leading() {
                if !f.step(&state, &rx) {
                    break;
                }
                continue;
            }
        }
        // After a storage failure the store is tried again now and then, writes or not.
        let first = if state.failure().is_some() {
            match rx.recv_timeout(PROBE_EVERY) {
                Ok(c) => c,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    w.recover(&state);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else if w.follower.is_some() {
            // A leader looks at its lease now and then, writes or not.
            match rx.recv_timeout(FOLLOW_WAIT) {
                Ok(c) => c,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(c) => c,
                Err(_) => break,
            }
        };
        let mut batch = Vec::with_capacity(64);
        let mut stop = false;
        match first {
            Command::Submit(s) => batch.push(*s),
            Command::Stop => stop = true,
        }
        while !stop && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Command::Submit(s)) => batch.push(*s),
                Ok(Command::Stop) => stop = true,
                Err(_) => break,
            }
        }
        // Group commit with a short linger: the clients just acknowledged are usually on
        // their way back; one disk sync for all of them beats two half-full ones (one sync
        // per batch is the limit, so fuller batches are more events per second).
        if last.0 >= LINGER_MIN_BATCH {
            let expected = (last.0 + last.1).min(MAX_BATCH);
            let deadline = Instant::now() + LINGER_MAX;
            while !stop && batch.len() < expected {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match rx.recv_timeout(LINGER_GAP.min(deadline - now)) {
                    Ok(Command::Submit(s)) => batch.push(*s),
                    Ok(Command::Stop) => stop = true,
                    Err(_) => break,
                }
            }
        }
        last = (batch.len(), last.0);
        if !batch.is_empty() {
            let committed = process(&state, batch, &mut w);
            if let Some(snapshots) = &mut w.snapshots {
                snapshots.since += committed as u64;
                snapshots.maybe_take(&state);
            }
        }
        if stop {
            break;
        }
    }
    if let Some(snapshots) = &mut w.snapshots {
        if w.follower.as_ref().is_some_and(|f| !f.ha.leading()) {
            snapshots.since = 0;
        }
        snapshots.finish(&state);
    }
}

impl Writer {
    /// After a storage failure: rebuilds the engine from the log (once), then tries a write
    /// (an audit entry saying so); true once the store took it and writes may go on.
    fn recover(&mut self, state: &AppState) -> bool {
        let Some(failure) = state.failure() else {
            return true;
        };
        if !self.rebuilt {
            match rebuild(state) {
                Ok(()) => self.rebuilt = true,
                Err(e) => {
                    eprintln!("pmargin: cannot rebuild the engine from the log: {e}");
                    return false;
                }
            }
        }
        self.probed = Some(Instant::now());
        let entry = AuditEntry {
            ts_ms: now_ms(),
            key_id: "service".into(),
            action: "storage_recovered".into(),
            target: format!("seq {}", state.committed()),
            outcome: "writes resumed".into(),
            detail: serde_json::json!({ "failure": failure }),
        };
        let probe = state
            .store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .commit(&[], &[entry]);
        match probe {
            Ok(()) => {
                *state.failed.write().unwrap_or_else(|p| p.into_inner()) = None;
                state.metrics.storage_failed.store(false, Ordering::Relaxed);
                eprintln!("pmargin: the store takes writes again; writes resumed");
                true
            }
            Err(e) => {
                *state.failed.write().unwrap_or_else(|p| p.into_inner()) = Some(e);
                false
            }
        }
    }

    /// Fetches from the store (one lock for the batch) the answers to the batch's idempotency
    /// keys not in memory: keys used before this start, or dropped from the cache. Returns
    /// the keys whose look-up failed, with why: those requests are refused, as applying them
    /// might apply a retry twice.
    fn look_up_keys(&mut self, state: &AppState, batch: &[Submit]) -> HashMap<String, String> {
        let mut failed = HashMap::new();
        if !self.finds_keys {
            return failed;
        }
        // Every answer in memory now is durable (a batch that failed to commit stops all
        // writes), so the store answers for any key dropped here.
        if self.idem.len() >= IDEM_CACHE_MAX {
            self.idem.clear();
        }
        let wanted: Vec<&String> = batch
            .iter()
            .filter_map(|s| s.idempotency.as_ref().map(|(k, _)| k))
            .filter(|k| !self.idem.contains_key(*k))
            .collect();
        if wanted.is_empty() {
            return failed;
        }
        let mut store = state.store.lock().unwrap_or_else(|p| p.into_inner());
        for key in wanted {
            match store.event_by_key(key) {
                Ok(None) => {}
                Ok(Some(LoggedEvent {
                    seq,
                    event,
                    record: Some(record),
                    ..
                })) => {
                    self.idem.insert(
                        key.clone(),
                        Idem {
                            hash: event_hash(&event),
                            result: result_of(seq, record.outputs),
                        },
                    );
                }
                Ok(Some(logged)) => {
                    failed.insert(
                        key.clone(),
                        format!("event {} is logged without its outputs", logged.seq),
                    );
                }
                Err(e) => {
                    failed.insert(key.clone(), e);
                }
            }
        }
        failed
    }
}

/// Applies, commits and answers a batch; returns how many events it committed.
fn process(state: &AppState, batch: Vec<Submit>, w: &mut Writer) -> usize {
    if !w.recover(state) {
        let failure = state.failure().unwrap_or_default();
        for s in batch {
            state.metrics.refused("storage_failed");
            let _ = s.reply.send(Err(ServiceError::unavailable(format!(
                "writes are suspended after a storage failure: {failure}"
            ))));
        }
        return 0;
    }
    // Idempotency answers kept for this batch: forgotten if its commit fails.
    let mut remembered: Vec<String> = Vec::new();
    let ts = now_ms();
    let lookup_failed = w.look_up_keys(state, &batch);
    // Only this thread publishes, so the numbers the batch's messages will get are known
    // before the commit that stores them.
    let mut stream_next = state.hub.next_seq();
    let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
    let mut logged = Vec::with_capacity(batch.len());
    let mut audit = Vec::with_capacity(batch.len());
    let mut items = Vec::new();
    for s in batch {
        if let Some((key, hash)) = &s.idempotency {
            if let Some(why) = lookup_failed.get(key) {
                let answer = Err(ServiceError::unavailable(format!(
                    "the stored answer to this Idempotency-Key cannot be read: {why}"
                ))
                .with_field("Idempotency-Key"));
                replies.push((s.reply, answer));
                continue;
            }
            if let Some(prev) = w.idem.get(key) {
                let answer = if &prev.hash == hash {
                    Ok(EventResult {
                        replayed: true,
                        ..prev.result.clone()
                    })
                } else {
                    Err(ServiceError::unprocessable(
                        "this Idempotency-Key was already used with a different request body",
                    )
                    .with_field("Idempotency-Key"))
                };
                replies.push((s.reply, answer));
                continue;
            }
        }
        let cap = state.limits.instruments_per_underlying;
        if let Some(refusal) = beyond_instrument_cap(&state.engine(), &s.event, cap) {
            state.metrics.refused("instrument_cap");
            replies.push((s.reply, Err(refusal)));
            continue;
        }
        let t = Instant::now();
        // The write lock is taken per event, not per batch, so reads interleave with a long
        // batch (they see applied events before they are durable either way).
        let (sequence, record, accepted) = {
            let mut engine = state.engine.write().unwrap_or_else(|p| p.into_inner());
            let before = index_state(&engine, &s.event);
            let applied = apply_new_event(&mut engine, &s.event);
            let accepted = !applied
                .outputs
                .iter()
                .any(|o| matches!(o, Output::Rejected { .. }));
            if accepted {
                let moved = before != index_state(&engine, &s.event);
                state
                    .reports
                    .applied(engine.sequence(), &s.event, moved, state.committed());
            }
            let record = EventRecord {
                outputs: applied.outputs,
                stream_seq: stream_next,
                stream_extra: applied.extra,
                params_version: engine.params().version,
            };
            (engine.sequence(), record, accepted)
        };
        if !accepted {
            // A refusal changed nothing: it is answered and counted, not logged or audited
            // (a client could otherwise fill the log and the trail with refusals forever).
            state.metrics.record_event(false, t.elapsed());
            state
                .metrics
                .refused(refusal_reason(&s.event, &record.outputs));
            replies.push((s.reply, Ok(result_of(sequence, record.outputs))));
            continue;
        }
        let event_items = record.items(sequence);
        stream_next += event_items.len() as u64;
        items.extend(event_items);
        let result = result_of(sequence, record.outputs.clone());
        state.metrics.record_event(result.accepted, t.elapsed());
        audit.push(AuditEntry {
            ts_ms: ts,
            key_id: s.key_id.clone(),
            action: "event".into(),
            target: format!("seq {}", result.sequence),
            outcome: if result.accepted {
                "applied".into()
            } else {
                "rejected".into()
            },
            detail: serde_json::to_value(&s.event).unwrap_or_default(),
        });
        logged.push(LoggedEvent {
            seq: result.sequence,
            ts_ms: ts,
            key_id: s.key_id,
            idempotency_key: s.idempotency.as_ref().map(|(k, _)| k.clone()),
            request_hash: s.idempotency.as_ref().map(|(_, h)| hex::encode(h)),
            event: s.event,
            record: Some(record),
        });
        if let Some((key, hash)) = s.idempotency {
            remembered.push(key.clone());
            w.idem.insert(
                key,
                Idem {
                    hash,
                    result: result.clone(),
                },
            );
        }
        replies.push((s.reply, Ok(result)));
    }
    let committed = if logged.is_empty() {
        Ok(())
    } else {
        let t = Instant::now();
        let committed = state
            .store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .commit(&logged, &audit);
        state.metrics.record_commit(logged.len(), t.elapsed());
        committed
    };
    match committed {
        Ok(()) => {
            if let Some(last) = logged.last() {
                state.set_committed(last.seq);
            }
            state.hub.publish(items);
            for (reply, answer) in replies {
                let _ = reply.send(answer);
            }
            logged.len()
        }
        Err(e) if w.follower.is_some() => {
            // The replicated log may hold the batch or part of it (an acknowledgement lost),
            // or another leader's events: the engine goes back to the last event known to be
            // logged, and follows the log from there before it leads again.
            eprintln!("pmargin: commit failed, following the log again: {e}");
            for key in remembered {
                w.idem.remove(&key);
            }
            if let Some(f) = &mut w.follower {
                f.roll_back(state);
            }
            for (reply, _) in replies {
                state.metrics.refused("commit_unknown");
                let _ = reply.send(Err(ServiceError::unavailable(format!(
                    "the replicated log did not acknowledge the event, which may or may not be logged: retry with the same Idempotency-Key ({e})"
                ))));
            }
            0
        }
        Err(e) => {
            // The engine holds events the log does not: they are rolled back (the engine is
            // rebuilt from the log) and writes are refused until the store takes one again.
            eprintln!("pmargin: commit failed, writes suspended: {e}");
            *state.failed.write().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            state.metrics.storage_failed.store(true, Ordering::Relaxed);
            for key in remembered {
                w.idem.remove(&key);
            }
            w.rebuilt = false;
            match rebuild(state) {
                Ok(()) => w.rebuilt = true,
                Err(why) => eprintln!("pmargin: cannot rebuild the engine from the log: {why}"),
            }
            for (reply, _) in replies {
                state.metrics.refused("storage_failed");
                let _ = reply.send(Err(ServiceError::unavailable(format!(
                    "the event could not be made durable (nothing was applied): {e}"
                ))));
            }
            0
        }
    }
}

/// The refusal of a fill that would list one more instrument on an underlying listing
/// `max` already (the service's cap, at most the engine's own; checked by the writer, the
/// only thread that adds instruments, just before it applies the fill).
fn beyond_instrument_cap(engine: &Engine, event: &Event, max: usize) -> Option<ServiceError> {
    let Event::Trade { instrument, .. } = event else {
        return None;
    };
    let book = engine.book();
    if book.instrument_index(instrument).is_some() {
        return None;
    }
    // A name that does not parse, or on an unknown underlying, is the engine's to refuse.
    let parsed = pmargin_core::instrument::Instrument::parse(instrument).ok()?;
    let u = book.underlying_index(&parsed.underlying)?;
    let listed = book
        .instruments
        .iter()
        .filter(|p| p.underlying == u)
        .count();
    (listed >= max).then(|| {
        ServiceError::unprocessable(format!(
            "trade: {} already lists {listed} instruments, the most allowed",
            parsed.underlying
        ))
        .with_field("instrument")
    })
}

/// The metrics label of a refused event: its type, or why for the refusals that say
/// something about the market (a withdrawal on a stale index).
fn refusal_reason(event: &Event, outputs: &[Output]) -> &'static str {
    let stale = outputs.iter().any(|o| {
        matches!(o, Output::Rejected { reason, .. }
            if reason.starts_with(pmargin_engine::engine::STALE_INDEX_REJECTION))
    });
    if stale {
        return "stale_index";
    }
    match event {
        Event::Deposit { .. } => "rejected_deposit",
        Event::Withdrawal { .. } => "rejected_withdrawal",
        Event::Trade { .. } => "rejected_trade",
        Event::Quote { .. } => "rejected_quote",
        Event::OracleTick { .. } => "rejected_oracle_tick",
        Event::Price { .. } | Event::Mark { .. } | Event::Vol { .. } => "rejected_market",
        Event::ActivateParams { .. } => "rejected_params",
        Event::Settlement { .. } | Event::Funding { .. } => "rejected_settlement",
        Event::Liquidate => "rejected_liquidate",
        Event::Attestation { .. } | Event::AttestationTick { .. } => "rejected_attestation",
    }
}
