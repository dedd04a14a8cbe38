//! Recovery at start: the latest snapshot plus a replay of the later events (or of the whole
//! log). Each logged event carries what applying it produced ([`EventRecord`]), so the answers
//! to retried requests, the stream before the restart and the liquidation instructions come
//! from the log, not from a replay. A log written by an earlier build without those records is
//! replayed from genesis once, and the records stored.

use crate::auth::{generate_key, KeyRecord, KeyRing, KeySecret, Role};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::service::replay::restore_snapshot;
use crate::service::snapshots::Snapshots;
use crate::service::state::{event_hash, genesis_engine, now_ms, result_of, AppState};
use crate::service::stream::{apply_event, stored_messages, Hub};
use crate::service::writer::{self, Idem, Writer};
use crate::store::{EventRecord, Genesis, Store};
use pmargin_engine::{Engine, Event};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Records stored per transaction while a log written without them is upgraded.
const BACKFILL_CHUNK: usize = 10_000;

/// What a start found and did.
pub struct Started {
    pub state: Arc<AppState>,
    /// A new admin key, to print once (first start without `PMARGIN_ADMIN_KEY`).
    pub new_admin_key: Option<String>,
    /// Events the recovered state holds (the log's length).
    pub recovered_events: usize,
    /// Events applied at start: those after the snapshot, or the whole log without one.
    pub replayed_events: usize,
    /// The event after which the snapshot recovery started from was taken.
    pub snapshot_seq: Option<u64>,
    /// What recovery found worth telling an operator (a snapshot not used and why, records
    /// stored for an old log, stored outputs that differ from a replay's).
    pub notes: Vec<String>,
}

/// Opens the state from the store: genesis (stored, or `genesis` on first start), the latest
/// snapshot if any and a replay of the later events (else of the whole log), keys (with the
/// admin bootstrap), then starts the writer thread, which takes a snapshot every
/// `snapshot_every` events (0: only on a clean stop) where the store keeps snapshots.
pub fn start(
    mut store: Box<dyn Store>,
    genesis: Genesis,
    admin_key: Option<&str>,
    secret: KeySecret,
    ring: usize,
    snapshot_every: u64,
    limits: Limits,
) -> Result<Started, String> {
    let genesis = stored_genesis(&mut *store, genesis)?;
    let metrics = Metrics::default();
    let mut notes = Vec::new();
    let (engine, snapshot_seq, stream_next) =
        starting_point(&mut *store, &genesis, &metrics, &mut notes)?;
    let hub = Hub::resume(ring, stream_next);
    let finds_keys = store.finds_keys();
    let replayed = replay_log(&mut *store, engine, &hub, &metrics, finds_keys, &mut notes)?;
    let refill = snapshot_seq.and_then(|_| ring_refill(ring, &hub, stream_next));
    let (keys, new_admin_key) = bootstrap_keys(&mut *store, admin_key, &secret)?;
    let recovered_seq = replayed.engine.sequence();
    let replayed_events = replayed.events;
    let keeps_snapshots = store.keeps_snapshots();
    let replicated = store.replicated();
    let (state, rx) = AppState::new(
        replayed.engine,
        store,
        KeyRing::new(secret, keys),
        hub,
        metrics,
        genesis,
        limits,
    );
    if let Some(nats) = replicated {
        let _ = state.ha.set(crate::service::ha::Ha::new(nats));
    }
    // Every report computed before counts as stale: the cache starts after the recovery.
    state
        .reports
        .applied(recovered_seq, &Event::Liquidate, true, recovered_seq);
    let snapshots = if keeps_snapshots {
        Some(Snapshots::start(
            &state,
            snapshot_every,
            replayed_events as u64,
        )?)
    } else {
        None
    };
    writer::spawn(
        &state,
        rx,
        Writer::new(replayed.idem, finds_keys, snapshots),
    )?;
    if let Some((from, until)) = refill {
        refill_ring(&state, from, until, &mut notes);
    }
    Ok(Started {
        state,
        new_admin_key,
        recovered_events: recovered_seq as usize,
        replayed_events,
        snapshot_seq,
        notes,
    })
}

/// The stored genesis, or on first start `genesis` (checked to build, then stored).
fn stored_genesis(store: &mut dyn Store, genesis: Genesis) -> Result<Genesis, String> {
    match store.genesis()? {
        Some(g) => Ok(g),
        None => {
            genesis_engine(&genesis)?;
            store.init(&genesis)?;
            Ok(genesis)
        }
    }
}

/// The engine to replay the log onto, the snapshot it comes from (if any) and the number of
/// the next stream message: the latest usable snapshot (with its counters seeded into
/// `metrics`), else genesis.
fn starting_point(
    store: &mut dyn Store,
    genesis: &Genesis,
    metrics: &Metrics,
    notes: &mut Vec<String>,
) -> Result<(Engine, Option<u64>, u64), String> {
    // A snapshot is of use only if every event has its record: one without needs the replay
    // from genesis to compute it.
    let restored = match store.first_unrecorded()? {
        Some(seq) => {
            notes.push(format!(
                "events from {seq} on were logged without their records; replayed the log from genesis and stored them"
            ));
            None
        }
        None => restore_snapshot(store, notes),
    };
    Ok(match restored {
        Some((seq, engine, service)) => {
            metrics.seed(service.events_applied, service.events_rejected);
            (engine, Some(seq), service.stream_next)
        }
        None => (genesis_engine(genesis)?, None, 1),
    })
}

/// The engine after the log, the idempotency answers the writer keeps in memory, and the
/// number of events applied.
struct Replayed {
    engine: Engine,
    idem: HashMap<String, Idem>,
    events: usize,
}

/// Applies the events logged after `engine`'s sequence, publishing their stream messages
/// from their stored records (the truth clients were answered and streamed), storing the
/// records an older log lacks, and noting stored outputs that a replay no longer gives.
fn replay_log(
    store: &mut dyn Store,
    mut engine: Engine,
    hub: &Hub,
    metrics: &Metrics,
    finds_keys: bool,
    notes: &mut Vec<String>,
) -> Result<Replayed, String> {
    let mut idem: HashMap<String, Idem> = HashMap::new();
    let log = store.events_from(engine.sequence() + 1)?;
    let events = log.len();
    let mut missing: Vec<(u64, EventRecord)> = Vec::new();
    let mut diverged: Option<(u64, usize)> = None;
    for logged in log {
        let t = Instant::now();
        let applied = apply_event(&mut engine, &logged.event);
        if engine.sequence() != logged.seq {
            return Err(format!(
                "event log: entry {} found at engine sequence {}: the log has a gap",
                logged.seq,
                engine.sequence()
            ));
        }
        let computed = EventRecord {
            outputs: applied.outputs,
            stream_seq: hub.next_seq(),
            stream_extra: applied.extra,
            params_version: engine.params().version,
        };
        // The stored record is what clients were answered and streamed: it stays the truth
        // even if this build's engine computes something else for the event.
        let record = match logged.record {
            Some(stored) => {
                if stored != computed {
                    let d = diverged.get_or_insert((logged.seq, 0));
                    d.1 += 1;
                }
                stored
            }
            None => {
                missing.push((logged.seq, computed.clone()));
                computed
            }
        };
        if record.stream_seq != hub.next_seq() {
            return Err(format!(
                "event log: event {} starts at stream message {}, {} expected",
                logged.seq,
                record.stream_seq,
                hub.next_seq()
            ));
        }
        hub.publish(record.items(logged.seq));
        let result = result_of(logged.seq, record.outputs);
        metrics.record_event(result.accepted, t.elapsed());
        if !finds_keys {
            if let Some(k) = logged.idempotency_key {
                idem.insert(
                    k,
                    Idem {
                        hash: event_hash(&logged.event),
                        result,
                    },
                );
            }
        }
        if missing.len() >= BACKFILL_CHUNK {
            store.put_records(&missing)?;
            missing.clear();
        }
    }
    if !missing.is_empty() {
        store.put_records(&missing)?;
    }
    if let Some((seq, n)) = diverged {
        notes.push(format!(
            "{n} replayed events, the first {seq}, give other outputs than the stored ones (the engine changed since they were logged); the stored ones are served"
        ));
    }
    Ok(Replayed {
        engine,
        idem,
        events,
    })
}

/// After a start from a snapshot, the stream messages `from..until` from before it that the
/// ring has room for: the ring is to hold them too, as after a replay from genesis.
fn ring_refill(ring: usize, hub: &Hub, stream_next: u64) -> Option<(u64, u64)> {
    let capacity = ring.max(1) as u64;
    let published = (hub.next_seq() - stream_next).min(capacity);
    let older_from = stream_next.saturating_sub(capacity - published).max(1);
    (older_from < stream_next).then_some((older_from, stream_next))
}

/// Reads the messages `from..until` from the log into the ring in the background (that can
/// take longer than the replay itself; until then a resume reads the same messages from the
/// log).
fn refill_ring(state: &Arc<AppState>, from: u64, until: u64, notes: &mut Vec<String>) {
    let ring_state = state.clone();
    let spawned = std::thread::Builder::new()
        .name("pmargin-ring".into())
        .spawn(move || {
            let refilled = stored_messages(&ring_state.store, from, until)
                .and_then(|older| ring_state.hub.prepend(older));
            if let Err(e) = refilled {
                eprintln!("pmargin: the stream's ring holds only messages from {until} on: {e}");
            }
        });
    if let Err(e) = spawned {
        notes.push(format!(
            "the stream's ring holds only messages from {until} on: no thread to read older ones: {e}"
        ));
    }
}

/// The stored keys with the admin bootstrap (hashes under `secret`; see [`crate::auth`]):
/// `admin_key` installed as the admin key, or without it, a new admin key made when no active
/// admin key exists (returned, to be shown once).
fn bootstrap_keys(
    store: &mut dyn Store,
    admin_key: Option<&str>,
    secret: &KeySecret,
) -> Result<(Vec<KeyRecord>, Option<String>), String> {
    let mut keys = store.keys()?;
    let mut new_admin_key = None;
    if let Some(key) = admin_key {
        let hash = hex::encode(secret.hash(key));
        if !keys
            .iter()
            .any(|k| k.id == "admin" && k.hash == hash && k.is_active())
        {
            let mut record = secret.record("admin".into(), Role::Admin, key, now_ms());
            record.label = Some("PMARGIN_ADMIN_KEY".into());
            store.put_key(&record)?;
            keys.retain(|k| k.id != "admin");
            keys.push(record);
        }
    } else if !keys.iter().any(|k| k.role == Role::Admin && k.is_active()) {
        let (_, key) = generate_key()?;
        let mut record = secret.record("admin".into(), Role::Admin, &key, now_ms());
        record.label = Some("created on first start".into());
        store.put_key(&record)?;
        keys.retain(|k| k.id != "admin");
        keys.push(record);
        new_admin_key = Some(key);
    }
    Ok((keys, new_admin_key))
}
