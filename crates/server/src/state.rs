//! The service's state: the engine behind a lock written by one thread, the store, the keys,
//! the stream and the metrics; recovery from the store at start.
//!
//! Recovery is the latest snapshot plus a replay of the later events (the SQLite store; the
//! file store replays its whole log). Each logged event carries what applying it produced
//! ([`EventRecord`]), so the answers to retried requests, the stream before the restart and
//! the liquidation instructions come from the log, not from a replay. A log written by an
//! earlier build without those records is replayed from genesis once, and the records stored.
//! The writer takes a snapshot every [`SNAPSHOT_EVERY`] events (copying the engine between two
//! batches; serializing and storing it in the background) and on a clean stop.
//!
//! Writes go through one writer thread ([`Command`] over a channel), which takes every
//! pending command at once (group commit; under concurrent writes it lingers up to 2 ms for
//! the clients it just answered, see [`LINGER_MAX`]): it applies them to the engine in order,
//! commits them to the store in one transaction (one disk sync), and only then answers the
//! callers and publishes the stream.
//! So an event is acknowledged only once durable, and events are applied in one total order.
//!
//! A refused event changes nothing: it is answered (422) and counted in the metrics, but not
//! logged or audited, and takes no sequence number ([`Engine::apply_accepted`]). Reads never
//! show a figure before the event behind it is durable ([`AppState::read_durable`]). A failed
//! commit (a full disk) rolls back what the batch applied (the engine is rebuilt from the log,
//! as at a restart), refuses every write and turns `/healthz` to 503; the writer tries the
//! store again on the next write and every [`PROBE_EVERY`], and writes resume once it takes one.

use crate::auth::{generate_key, KeyRing, KeySecret, Role};
use crate::error::ApiError;
use crate::limits::{check_magnitudes, Limits, RateLimiter, StreamSlots};
use crate::metrics::Metrics;
use crate::store::{AuditEntry, EventRecord, Genesis, LoggedEvent, Store};
use crate::stream::{apply_event, apply_new_event, stored_messages, Hub};
use axum::body::Bytes;
use pmargin_core::{Market, Params, Portfolio};
use pmargin_engine::oracle::Health;
use pmargin_engine::{Engine, Event, Output};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, OnceCell};

/// Largest number of commands committed together.
pub const MAX_BATCH: usize = 4096;

/// The answer to one submitted event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventResult {
    pub sequence: u64,
    pub accepted: bool,
    pub outputs: Vec<Output>,
    /// True when this is the stored answer to a request retried with the same idempotency key.
    pub replayed: bool,
}

pub struct Submit {
    pub event: Event,
    pub key_id: String,
    /// Idempotency key (scoped by API key id) and the event's [`event_hash`].
    pub idempotency: Option<(String, [u8; 32])>,
    pub reply: oneshot::Sender<Result<EventResult, ApiError>>,
}

pub enum Command {
    Submit(Submit),
    Stop,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub struct AppState {
    pub engine: RwLock<Engine>,
    pub store: Mutex<Box<dyn Store>>,
    pub keys: RwLock<KeyRing>,
    /// How far a quote's `ts_ms` may be ahead of the server's clock (set at start).
    pub max_clock_skew_ms: std::sync::atomic::AtomicI64,
    pub hub: Hub,
    pub metrics: Metrics,
    pub genesis: Genesis,
    pub durable: bool,
    /// Set when a commit failed: every write is refused (and `/healthz` answers 503) until
    /// the writer, having rebuilt the engine from the log, finds the store writable again (it
    /// tries on the next write, and every [`PROBE_EVERY`] meanwhile).
    pub failed: RwLock<Option<String>>,
    /// The engine sequence of the last durable event: reads never show figures beyond it.
    committed: AtomicU64,
    committed_tx: tokio::sync::watch::Sender<u64>,
    pub limits: Limits,
    /// Per-key token buckets of writes.
    pub limiter: RateLimiter,
    /// Open streams per key.
    pub streams: StreamSlots,
    /// What changed when, so reads can reuse the reports computed since (see [`ReportCache`]).
    pub reports: ReportCache,
    /// Governed parameters (proposals, approvals, activation).
    pub gov: crate::governance::Gov,
    /// The settlement-message signer (set at start).
    pub settlement: std::sync::OnceLock<crate::settlement::Settlement>,
    writer: mpsc::SyncSender<Command>,
    /// Joined by [`AppState::stop_writer`], so a stop returns after the final snapshot.
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Per-account margin reports (with the liquidation-price search) reused until something that
/// affects the account is applied: an event on the account itself (deposit, withdrawal, trade
/// as either side), or anything that moves every account (prices, marks, vols, parameters,
/// settlements, funding, liquidation rounds, oracle quotes that move an index). The versions
/// are updated by the writer while it holds the engine's write lock, and read under the read
/// lock, so a version and the engine state it describes always agree.
///
/// Reports are kept serialized ([`ReportEntry::tail`]), so a hit costs a copy, not a
/// serialization. Concurrent misses of one account share one computation ([`Flights`]).
///
/// An oracle quote that moves an index is a *soft* change: a report computed less than
/// [`MAX_STALE`] ago whose account saw nothing else since may still be served (labelled
/// `report_stale`) while one recomputation runs; everything else is a *hard* change, after
/// which a read waits for the new report.
#[derive(Default)]
pub struct ReportCache {
    versions: RwLock<Versions>,
    reports: RwLock<HashMap<String, Arc<ReportEntry>>>,
    /// Report computations under way, by account.
    pub flights: Flights<String, Arc<ReportEntry>>,
    /// What-if answers (serialized) keyed by account and request body hash.
    what_ifs: RwLock<HashMap<WhatIfKey, (u64, Bytes)>>,
    /// What-if computations under way.
    pub what_if_flights: Flights<WhatIfKey, Bytes>,
}

/// How long a report superseded only by oracle quotes may still be served while a fresh one is
/// computed.
pub const MAX_STALE: Duration = Duration::from_secs(1);

/// An account and the SHA-256 of the what-if request body.
pub type WhatIfKey = (String, [u8; 32]);

#[derive(Default)]
struct Versions {
    /// Added to engine sequences: raised when events that were applied but never made durable
    /// are rolled back, so a version is never given again to other inputs.
    offset: u64,
    /// Last event that changed every account.
    global: u64,
    /// Last oracle quote that moved an index (a soft change).
    soft: u64,
    touched: HashMap<String, u64>,
}

/// The version of an account's inputs: `exact` changes with anything affecting the report,
/// `hard` with anything but index moves from oracle quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub exact: u64,
    pub hard: u64,
}

/// The parts of a margin report that depend only on the account's inputs.
#[derive(Debug, Serialize)]
pub struct CachedReport {
    pub as_of: String,
    pub params_version: u64,
    pub account: Option<pmargin_core::report::AccountReport>,
}

/// A cached report: its version, when it was computed, and its JSON members
/// (`"as_of":..,"params_version":..,"account":..}`, the closing brace included), ready to
/// follow the per-request members of the response.
#[derive(Debug)]
pub struct ReportEntry {
    pub version: Version,
    pub computed: Instant,
    pub tail: Bytes,
    /// The last whole response built on this report: the engine sequence it was read at,
    /// whether it was served stale, and the body. The engine's figures change only with an
    /// event, and every event moves the sequence, so reads in between serve these bytes.
    body: Mutex<Option<(u64, bool, Bytes)>>,
}

impl ReportEntry {
    pub fn new(version: Version, report: &CachedReport) -> Result<ReportEntry, String> {
        let mut tail = serde_json::to_vec(report).map_err(|e| e.to_string())?;
        // `{...}` -> `...}`: the members and the closing brace.
        if tail.first() != Some(&b'{') {
            return Err("a report must serialize as a JSON object".into());
        }
        tail.remove(0);
        Ok(ReportEntry {
            version,
            computed: Instant::now(),
            tail: Bytes::from(tail),
            body: Mutex::new(None),
        })
    }

    /// The response body last built at engine sequence `sequence` with this staleness.
    pub fn body_at(&self, sequence: u64, stale: bool) -> Option<Bytes> {
        match &*self.body.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((s, st, body)) if *s == sequence && *st == stale => Some(body.clone()),
            _ => None,
        }
    }

    pub fn keep_body(&self, sequence: u64, stale: bool, body: Bytes) {
        *self.body.lock().unwrap_or_else(|p| p.into_inner()) = Some((sequence, stale, body));
    }
}

/// What a read finds in the cache.
pub enum Lookup {
    /// Computed for the current inputs.
    Fresh(Arc<ReportEntry>),
    /// Superseded only by oracle quotes, recently computed: may be served while a new one is
    /// computed.
    Stale(Arc<ReportEntry>),
    Miss,
}

/// Entries kept at most (a cache miss recomputes; the map is cleared when full).
const REPORT_CACHE_MAX: usize = 100_000;

impl ReportCache {
    /// Records that the event applied at `seq` happened; `moved` tells whether an oracle quote
    /// moved its index (or its health). Call with the engine write-locked.
    pub fn applied(&self, seq: u64, event: &Event, moved: bool) {
        let mut v = self.versions.write().unwrap_or_else(|p| p.into_inner());
        let seq = seq + v.offset;
        match event {
            Event::Deposit { account, .. } | Event::Withdrawal { account, .. } => {
                v.touched.insert(account.clone(), seq);
            }
            Event::Trade {
                account,
                counterparty,
                ..
            } => {
                v.touched.insert(account.clone(), seq);
                if let Some(c) = counterparty {
                    v.touched.insert(c.clone(), seq);
                }
            }
            Event::Quote { .. } => {
                if moved {
                    v.soft = seq;
                }
            }
            _ => {
                v.global = seq;
                v.touched.clear();
            }
        }
    }

    /// The engine was rebuilt from the log at sequence `seq`, below `from` (events not made
    /// durable were dropped): every cached report and what-if is forgotten, and versions go on
    /// above any given before.
    pub fn rolled_back(&self, from: u64, seq: u64) {
        let mut v = self.versions.write().unwrap_or_else(|p| p.into_inner());
        v.offset += from.saturating_sub(seq) + 1;
        v.global = seq + v.offset;
        v.soft = 0;
        v.touched.clear();
        self.reports
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.what_ifs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The engine sequence of the last event that changed `account`'s inputs. Call with the
    /// engine read-locked.
    pub fn last_change(&self, account: &str) -> u64 {
        let v = self.versions.read().unwrap_or_else(|p| p.into_inner());
        let last = v
            .touched
            .get(account)
            .copied()
            .unwrap_or(0)
            .max(v.global)
            .max(v.soft);
        last.saturating_sub(v.offset)
    }

    /// The version of `account`'s inputs. Call with the engine read-locked.
    pub fn version(&self, account: &str) -> Version {
        let v = self.versions.read().unwrap_or_else(|p| p.into_inner());
        let hard = v.touched.get(account).copied().unwrap_or(0).max(v.global);
        Version {
            exact: hard.max(v.soft),
            hard,
        }
    }

    /// The cached report of `account` as seen at `version`.
    pub fn lookup(&self, account: &str, version: Version) -> Lookup {
        let r = self.reports.read().unwrap_or_else(|p| p.into_inner());
        match r.get(account) {
            Some(e) if e.version.exact == version.exact => Lookup::Fresh(e.clone()),
            Some(e)
                if e.version.hard == version.hard
                    && e.version.exact < version.exact
                    && e.computed.elapsed() < MAX_STALE =>
            {
                Lookup::Stale(e.clone())
            }
            _ => Lookup::Miss,
        }
    }

    /// Keeps a computed report (unless a newer one is there already).
    pub fn put(&self, account: &str, entry: Arc<ReportEntry>) {
        let mut r = self.reports.write().unwrap_or_else(|p| p.into_inner());
        if r.len() >= REPORT_CACHE_MAX && !r.contains_key(account) {
            r.clear();
        }
        match r.get(account) {
            Some(e) if e.version.exact > entry.version.exact => {}
            _ => {
                r.insert(account.to_string(), entry);
            }
        }
    }

    pub fn get_what_if(&self, key: &WhatIfKey, version: u64) -> Option<Bytes> {
        let r = self.what_ifs.read().unwrap_or_else(|p| p.into_inner());
        match r.get(key) {
            Some((v, w)) if *v == version => Some(w.clone()),
            _ => None,
        }
    }

    pub fn put_what_if(&self, key: WhatIfKey, version: u64, result: Bytes) {
        let mut r = self.what_ifs.write().unwrap_or_else(|p| p.into_inner());
        if r.len() >= REPORT_CACHE_MAX {
            r.clear();
        }
        match r.get(&key) {
            Some((v, _)) if *v > version => {}
            _ => {
                r.insert(key, (version, result));
            }
        }
    }
}

/// Computations under way, so that concurrent requests for the same thing at the same
/// version share one (single flight). A request joins the flight for its key if it is for the
/// same or a newer version, else starts a new one; the value is computed by whichever joined
/// request gets to it first (another takes over if that one is cancelled).
pub struct Flights<K, V> {
    map: Mutex<HashMap<K, Flight<V>>>,
}

/// A flight's version and the value it will hold.
type Flight<V> = (u64, Arc<OnceCell<V>>);

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Flights {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + std::hash::Hash, V> Flights<K, V> {
    /// The flight to wait on for `key` at `version` or newer.
    pub fn join<Q>(&self, key: &Q, version: u64) -> Arc<OnceCell<V>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ToOwned<Owned = K> + ?Sized,
    {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, cell)) = m.get(key) {
            if *v >= version {
                return cell.clone();
            }
        }
        if m.len() >= REPORT_CACHE_MAX {
            m.clear();
        }
        let cell = Arc::new(OnceCell::new());
        m.insert(key.to_owned(), (version, cell.clone()));
        cell
    }

    /// A new flight for `key` at `version`, unless one for it (or a newer version) exists or
    /// one is still running: for background refreshes, at most one at a time per key.
    pub fn start<Q>(&self, key: &Q, version: u64) -> Option<Arc<OnceCell<V>>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ToOwned<Owned = K> + ?Sized,
    {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, cell)) = m.get(key) {
            if *v >= version || !cell.initialized() {
                return None;
            }
        }
        let cell = Arc::new(OnceCell::new());
        m.insert(key.to_owned(), (version, cell.clone()));
        Some(cell)
    }

    /// Forgets a finished flight (the cache holds its value now).
    pub fn land<Q>(&self, key: &Q, cell: &Arc<OnceCell<V>>)
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ?Sized,
    {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if m.get(key).is_some_and(|(_, c)| Arc::ptr_eq(c, cell)) {
            m.remove(key);
        }
    }
}

struct Idem {
    hash: [u8; 32],
    result: EventResult,
}

/// Builds the genesis engine.
pub fn genesis_engine(g: &Genesis) -> Result<Engine, String> {
    let portfolio =
        Portfolio::parse("genesis/portfolio.json", &g.portfolio).map_err(|e| e.to_string())?;
    let market = Market::parse("genesis/market.json", &g.market).map_err(|e| e.to_string())?;
    let params = Params::parse("genesis/params.json", &g.params).map_err(|e| e.to_string())?;
    let mut engine =
        Engine::new(&portfolio, &market, &params, g.config.clone()).map_err(|e| e.to_string())?;
    engine
        .ensure_settlement_asset()
        .map_err(|e| e.to_string())?;
    Ok(engine)
}

/// The fingerprint an idempotency key is bound to: SHA-256 of the event's canonical JSON (so
/// it can be recomputed from the log after a restart).
pub fn event_hash(event: &Event) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(serde_json::to_vec(event).unwrap_or_default()).into()
}

/// What an oracle quote can move: its underlying's index price, stable price and health
/// (`None` for other events).
fn index_state(engine: &Engine, event: &Event) -> Option<(Option<u64>, Option<u64>, Health)> {
    let Event::Quote { underlying, .. } = event else {
        return None;
    };
    let s = engine.oracle()?.state(underlying)?;
    Some((
        s.price.map(f64::to_bits),
        s.stable_price.map(f64::to_bits),
        s.health,
    ))
}

fn result_of(sequence: u64, outputs: Vec<Output>) -> EventResult {
    let accepted = !outputs.iter().any(|o| matches!(o, Output::Rejected { .. }));
    EventResult {
        sequence,
        accepted,
        outputs,
        replayed: false,
    }
}

/// Events between two snapshots the writer takes (SQLite store), by default.
pub const SNAPSHOT_EVERY: u64 = 50_000;

/// Records stored per transaction while a log written without them is upgraded.
const BACKFILL_CHUNK: usize = 10_000;

/// Answers to idempotency keys kept in memory at most when the store finds keys itself (the
/// map is cleared when full: the store still has every answer).
const IDEM_CACHE_MAX: usize = 100_000;

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

/// The engine and the service's part of the latest snapshot, if there is one this build can
/// go on from; else why not (then recovery replays from genesis, which is always exact).
fn restore_snapshot(
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
    let Some(service) = state.service else {
        notes.push(format!(
            "the snapshot at event {seq} (format {}) has no service part; replayed the log from genesis",
            state.format
        ));
        return None;
    };
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
    let genesis = match store.genesis()? {
        Some(g) => g,
        None => {
            genesis_engine(&genesis)?;
            store.init(&genesis)?;
            genesis
        }
    };
    let metrics = Metrics::default();
    let mut notes = Vec::new();
    // A snapshot is of use only if every event has its record: one without needs the replay
    // from genesis to compute it.
    let restored = match store.first_unrecorded()? {
        Some(seq) => {
            notes.push(format!(
                "events from {seq} on were logged without their records; replayed the log from genesis and stored them"
            ));
            None
        }
        None => restore_snapshot(&mut *store, &mut notes),
    };
    let snapshot_seq = restored.as_ref().map(|(seq, _, _)| *seq);
    let (mut engine, from, stream_next) = match restored {
        Some((seq, engine, service)) => {
            metrics.seed(service.events_applied, service.events_rejected);
            (engine, seq, service.stream_next)
        }
        None => (genesis_engine(&genesis)?, 0, 1),
    };
    let hub = Hub::resume(ring, stream_next);
    let finds_keys = store.finds_keys();
    let mut idem: HashMap<String, Idem> = HashMap::new();
    let log = store.events_from(from + 1)?;
    let replayed_events = log.len();
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
    // The ring is to hold the messages from before the snapshot too, as after a replay from
    // genesis: read from the log in the background (until then a resume reads the same
    // messages from the log), as that can take longer than the replay itself.
    let refill = snapshot_seq.and_then(|_| {
        let capacity = ring.max(1) as u64;
        let published = (hub.next_seq() - stream_next).min(capacity);
        let older_from = stream_next.saturating_sub(capacity - published).max(1);
        (older_from < stream_next).then_some((older_from, stream_next))
    });
    // Keys: the admin bootstrap (hashes under `secret`; see `auth`).
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
    let (tx, rx) = mpsc::sync_channel(limits.writer_queue.max(1));
    let recovered_seq = engine.sequence();
    let keeps_snapshots = store.keeps_snapshots();
    let state = Arc::new(AppState {
        engine: RwLock::new(engine),
        durable: store.durable(),
        store: Mutex::new(store),
        keys: RwLock::new(KeyRing::new(secret, keys)),
        max_clock_skew_ms: std::sync::atomic::AtomicI64::new(crate::DEFAULT_MAX_CLOCK_SKEW_MS),
        hub,
        metrics,
        genesis,
        failed: RwLock::new(None),
        committed: AtomicU64::new(recovered_seq),
        committed_tx: tokio::sync::watch::Sender::new(recovered_seq),
        limiter: RateLimiter::new(limits.writes_per_second, limits.write_burst),
        streams: StreamSlots::default(),
        limits,
        reports: ReportCache::default(),
        gov: crate::governance::Gov::disabled(),
        settlement: std::sync::OnceLock::new(),
        writer: tx,
        writer_thread: Mutex::new(None),
    });
    state
        .reports
        .applied(recovered_seq, &Event::Liquidate, true);
    let snapshots = if keeps_snapshots {
        Some(Snapshots::start(
            &state,
            snapshot_every,
            replayed_events as u64,
        )?)
    } else {
        None
    };
    let w = Writer {
        idem,
        finds_keys,
        snapshots,
        rebuilt: true,
        probed: None,
    };
    let writer_state = state.clone();
    let handle = std::thread::Builder::new()
        .name("pmargin-writer".into())
        .spawn(move || writer(writer_state, rx, w))
        .map_err(|e| format!("cannot start the writer thread: {e}"))?;
    *state
        .writer_thread
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(handle);
    if let Some((from, until)) = refill {
        let ring_state = state.clone();
        let spawned = std::thread::Builder::new()
            .name("pmargin-ring".into())
            .spawn(move || {
                let refilled = stored_messages(&ring_state.store, from, until)
                    .and_then(|older| ring_state.hub.prepend(older));
                if let Err(e) = refilled {
                    eprintln!(
                        "pmargin: the stream's ring holds only messages from {until} on: {e}"
                    );
                }
            });
        if let Err(e) = spawned {
            notes.push(format!(
                "the stream's ring holds only messages from {until} on: no thread to read older ones: {e}"
            ));
        }
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

/// The writer's answer to a submitted event, once it is durable.
async fn answer(
    rx: oneshot::Receiver<Result<EventResult, ApiError>>,
) -> Result<EventResult, ApiError> {
    rx.await
        .map_err(|_| ApiError::unavailable("the engine writer has stopped"))?
}

impl AppState {
    /// Submits an event and waits until it is applied and durable.
    pub async fn submit(
        &self,
        event: Event,
        key_id: &str,
        idempotency: Option<(String, [u8; 32])>,
    ) -> Result<EventResult, ApiError> {
        answer(self.enqueue(event, key_id, idempotency)?).await
    }

    /// Submits events in order and waits until all are applied and durable. Queued together,
    /// they usually share one commit (and readers see one burst of changes, not one per event).
    pub async fn submit_all(
        &self,
        events: Vec<Event>,
        key_id: &str,
    ) -> Result<Vec<EventResult>, ApiError> {
        let queued: Vec<_> = events
            .into_iter()
            .map(|event| self.enqueue(event, key_id, None))
            .collect::<Result<_, _>>()?;
        let mut results = Vec::with_capacity(queued.len());
        for rx in queued {
            results.push(answer(rx).await?);
        }
        Ok(results)
    }

    /// Hands an event to the writer thread; the receiver gets its result once it is durable.
    fn enqueue(
        &self,
        event: Event,
        key_id: &str,
        idempotency: Option<(String, [u8; 32])>,
    ) -> Result<oneshot::Receiver<Result<EventResult, ApiError>>, ApiError> {
        check_magnitudes(&event).inspect_err(|_| self.metrics.refused("magnitude"))?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Submit(Submit {
            event,
            key_id: key_id.to_string(),
            idempotency,
            reply,
        });
        match self.writer.try_send(cmd) {
            Ok(()) => Ok(rx),
            Err(mpsc::TrySendError::Full(_)) => {
                self.metrics.refused("writer_queue_full");
                Err(ApiError::unavailable(format!(
                    "the write queue is full ({} events waiting); retry shortly",
                    self.limits.writer_queue
                )))
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                Err(ApiError::unavailable("the engine writer has stopped"))
            }
        }
    }

    /// Stops the writer thread (after the commands already queued) and waits until it has
    /// stopped, the final snapshot taken (blocking).
    pub fn stop_writer(&self) {
        let _ = self.writer.send(Command::Stop);
        let handle = self
            .writer_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    pub fn engine(&self) -> std::sync::RwLockReadGuard<'_, Engine> {
        self.engine.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn failure(&self) -> Option<String> {
        self.failed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The engine sequence of the last durable event.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    fn set_committed(&self, seq: u64) {
        self.committed.store(seq, Ordering::Release);
        self.committed_tx.send_replace(seq);
    }

    /// Reads the engine with `read` once every event it shows (for `account`, or for every
    /// account) is durable: a figure is never shown, or signed, before the event behind it
    /// is in the log (were its commit to fail, the event would be rolled back). Waits for the
    /// commit under way if needed; 503 if none comes within [`DURABLE_WAIT`].
    pub async fn read_durable<T>(
        &self,
        account: Option<&str>,
        mut read: impl FnMut(&Engine) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let deadline = tokio::time::Instant::now() + DURABLE_WAIT;
        let mut rx = self.committed_tx.subscribe();
        loop {
            {
                let engine = self.engine();
                let needed = match account {
                    Some(a) => self.reports.last_change(a),
                    None => engine.sequence(),
                };
                if needed <= self.committed() {
                    return read(&engine);
                }
            }
            // Any change is looked at afresh: a rollback lowers what is needed.
            let waited = tokio::time::timeout_at(deadline, rx.changed()).await;
            if !matches!(waited, Ok(Ok(()))) {
                return Err(ApiError::unavailable(
                    "the figures are not durable yet (a commit is under way or failed); retry shortly",
                ));
            }
        }
    }

    /// Records writes other than events (keys, proposals) in the audit trail, durably.
    pub fn audit(&self, entry: AuditEntry) -> Result<(), ApiError> {
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .commit(&[], &[entry])
            .map_err(|e| ApiError::unavailable(format!("audit trail: {e}")))
    }
}

type Reply = (
    oneshot::Sender<Result<EventResult, ApiError>>,
    Result<EventResult, ApiError>,
);

/// How long a read waits at most for the commit of the figures it is to show.
pub const DURABLE_WAIT: Duration = Duration::from_secs(2);

/// After a failed commit, how often the writer tries the store again while no write comes.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Under concurrent writes, how long a batch may wait at most for more submitters.
pub const LINGER_MAX: Duration = Duration::from_micros(2000);
/// ... and for the next one to arrive.
pub const LINGER_GAP: Duration = Duration::from_micros(400);
/// Batches smaller than this do not wait at all (a lone writer is never delayed).
pub const LINGER_MIN_BATCH: usize = 8;

/// The writer thread's own state.
struct Writer {
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
}

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
struct Snapshots {
    every: u64,
    /// Events committed since the last snapshot (at start: those replayed).
    since: u64,
    /// A job is under way: the next snapshot waits for it (the copy is not taken meanwhile).
    busy: Arc<AtomicBool>,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Snapshots {
    fn start(state: &Arc<AppState>, every: u64, since: u64) -> Result<Snapshots, String> {
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
    fn maybe_take(&mut self, state: &AppState) {
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
    fn finish(&mut self, state: &AppState) {
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
    let doc = pmargin_store::State::capture(&engine).with_service(pmargin_store::ServiceState {
        stream_next: state.hub.next_seq(),
        events_applied: applied,
        events_rejected: rejected,
    });
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

fn writer(state: Arc<AppState>, rx: mpsc::Receiver<Command>, mut w: Writer) {
    // A long replay at start is worth a snapshot right away.
    if let Some(snapshots) = &mut w.snapshots {
        snapshots.maybe_take(&state);
    }
    // The sizes of the last two batches: with N clients each waiting for its acknowledgement,
    // batches alternate between those answered by the last commit and those that arrived
    // during it; their sum estimates N.
    let mut last = (0usize, 0usize);
    loop {
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
        } else {
            match rx.recv() {
                Ok(c) => c,
                Err(_) => break,
            }
        };
        let mut batch = Vec::with_capacity(64);
        let mut stop = false;
        match first {
            Command::Submit(s) => batch.push(s),
            Command::Stop => stop = true,
        }
        while !stop && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Command::Submit(s)) => batch.push(s),
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
                    Ok(Command::Submit(s)) => batch.push(s),
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
        snapshots.finish(&state);
    }
}

/// Rebuilds the engine from the log (the latest snapshot and the events after it), dropping
/// the events applied but not made durable by a failed commit, as a restart would.
fn rebuild(state: &AppState) -> Result<(), String> {
    let mut notes = Vec::new();
    let (mut engine, log) = {
        let mut store = state.store.lock().unwrap_or_else(|p| p.into_inner());
        let (engine, from) = match restore_snapshot(&mut **store, &mut notes) {
            Some((seq, engine, _)) => (engine, seq),
            None => (genesis_engine(&state.genesis)?, 0),
        };
        (engine, store.events_from(from + 1)?)
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
            let _ = s.reply.send(Err(ApiError::unavailable(format!(
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
                let answer = Err(ApiError::unavailable(format!(
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
                    Err(ApiError::unprocessable(
                        "this Idempotency-Key was already used with a different request body",
                    )
                    .with_field("Idempotency-Key"))
                };
                replies.push((s.reply, answer));
                continue;
            }
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
                state.reports.applied(engine.sequence(), &s.event, moved);
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
                let _ = reply.send(Err(ApiError::unavailable(format!(
                    "the event could not be made durable (nothing was applied): {e}"
                ))));
            }
            0
        }
    }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(exact: u64, hard: u64) -> Arc<ReportEntry> {
        let report = CachedReport {
            as_of: "t".into(),
            params_version: 1,
            account: None,
        };
        Arc::new(ReportEntry::new(Version { exact, hard }, &report).unwrap())
    }

    fn quote() -> Event {
        Event::Quote {
            source: "a".into(),
            underlying: "BTC".into(),
            price: 1.0,
            ts_ms: 0,
        }
    }

    #[test]
    fn only_index_moves_leave_a_report_servable_while_it_is_recomputed() {
        let cache = ReportCache::default();
        let v0 = cache.version("a");
        cache.put("a", entry(v0.exact, v0.hard));
        assert!(matches!(cache.lookup("a", v0), Lookup::Fresh(_)));
        assert_eq!(
            &entry(0, 0).tail[..],
            br#""as_of":"t","params_version":1,"account":null}"#
        );
        // A quote that moved nothing changes nothing.
        cache.applied(1, &quote(), false);
        assert_eq!(cache.version("a"), v0);
        // One that moved the index: stale, servable.
        cache.applied(2, &quote(), true);
        let v2 = cache.version("a");
        assert_eq!((v2.exact, v2.hard), (2, 0));
        assert!(matches!(cache.lookup("a", v2), Lookup::Stale(_)));
        // Another account's deposit does not touch it; its own does: a miss.
        let deposit = |account: &str| Event::Deposit {
            account: account.into(),
            asset: "USDC".into(),
            amount: 1.0,
        };
        cache.applied(3, &deposit("b"), false);
        assert!(matches!(
            cache.lookup("a", cache.version("a")),
            Lookup::Stale(_)
        ));
        cache.applied(4, &deposit("a"), false);
        assert!(matches!(
            cache.lookup("a", cache.version("a")),
            Lookup::Miss
        ));
        // A price (not an oracle quote) changes every account: a miss.
        cache.put("a", entry(4, 4));
        cache.applied(5, &Event::Liquidate, false);
        assert!(matches!(
            cache.lookup("a", cache.version("a")),
            Lookup::Miss
        ));
        // An older report never replaces a newer one.
        cache.put("a", entry(5, 5));
        cache.put("a", entry(4, 4));
        assert!(matches!(
            cache.lookup("a", cache.version("a")),
            Lookup::Fresh(_)
        ));
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_computation() {
        let flights: Flights<String, u64> = Flights::default();
        let a = flights.join("x", 3);
        let b = flights.join("x", 2);
        assert!(
            Arc::ptr_eq(&a, &b),
            "an older request joins the newer flight"
        );
        // A background refresh does not start while a flight runs.
        assert!(flights.start("x", 4).is_none());
        let n = std::sync::atomic::AtomicU64::new(0);
        let compute = || async {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, ()>(7)
        };
        assert_eq!(*a.get_or_try_init(compute).await.unwrap(), 7);
        assert_eq!(*b.get_or_try_init(compute).await.unwrap(), 7);
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
        flights.land("x", &a);
        let c = flights.join("x", 3);
        assert!(!Arc::ptr_eq(&a, &c), "a landed flight is gone");
        assert!(
            flights.start("x", 5).is_none(),
            "a running flight blocks refreshes"
        );
    }
}
