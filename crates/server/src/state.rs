//! The service's state: the engine behind a lock written by one thread, the store, the keys,
//! the stream and the metrics; recovery from the store at start.
//!
//! Writes go through one writer thread ([`Command`] over a channel), which takes every
//! pending command at once (group commit): it applies them to the engine in order, commits
//! them to the store in one go, and only then answers the callers and publishes the stream.
//! So an event is acknowledged only once durable, and events are applied in one total order.

use crate::auth::{generate_key, hash_key, KeyRecord, KeyRing, Role};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::store::{AuditEntry, Genesis, LoggedEvent, Store};
use crate::stream::{apply_event, Hub};
use pmargin_core::{Market, Params, Portfolio};
use pmargin_engine::{Engine, Event, Output};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tokio::sync::oneshot;

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
    pub hub: Hub,
    pub metrics: Metrics,
    pub genesis: Genesis,
    pub durable: bool,
    /// Set when a commit failed: the engine may hold events the log does not, so every
    /// further write is refused until a restart recovers from the log.
    pub failed: RwLock<Option<String>>,
    /// What changed when, so reads can reuse the reports computed since (see [`ReportCache`]).
    pub reports: ReportCache,
    /// Governed parameters (proposals, approvals, activation).
    pub gov: crate::governance::Gov,
    /// The settlement-message signer (set at start).
    pub settlement: std::sync::OnceLock<crate::settlement::Settlement>,
    writer: Mutex<mpsc::Sender<Command>>,
}

/// Per-account margin reports (with the liquidation-price search) reused until something that
/// affects the account is applied: an event on the account itself (deposit, withdrawal, trade
/// as either side), or anything that moves every account (prices, marks, vols, parameters,
/// settlements, funding, liquidation rounds). The versions are updated by the writer while it
/// holds the engine's write lock, and read under the read lock, so a version and the engine
/// state it describes always agree.
#[derive(Default)]
pub struct ReportCache {
    versions: Mutex<Versions>,
    reports: RwLock<HashMap<String, (u64, Arc<CachedReport>)>>,
    /// What-if answers keyed by account and request body hash.
    what_ifs: RwLock<HashMap<WhatIfKey, (u64, Arc<serde_json::Value>)>>,
}

/// An account and the SHA-256 of the what-if request body.
type WhatIfKey = (String, [u8; 32]);

#[derive(Default)]
struct Versions {
    global: u64,
    touched: HashMap<String, u64>,
}

/// The parts of a margin report that depend only on the account's inputs.
#[derive(Debug, Serialize)]
pub struct CachedReport {
    pub as_of: String,
    pub params_version: u64,
    pub account: Option<pmargin_core::report::AccountReport>,
}

/// Entries kept at most (a cache miss recomputes; the map is cleared when full).
const REPORT_CACHE_MAX: usize = 100_000;

impl ReportCache {
    /// Records that the event applied at `seq` happened. Call with the engine write-locked.
    pub fn applied(&self, seq: u64, event: &Event) {
        let mut v = self.versions.lock().unwrap_or_else(|p| p.into_inner());
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
            _ => {
                v.global = seq;
                v.touched.clear();
            }
        }
    }

    /// The version of `account`'s inputs. Call with the engine read-locked.
    pub fn version(&self, account: &str) -> u64 {
        let v = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        v.touched.get(account).copied().unwrap_or(0).max(v.global)
    }

    pub fn get(&self, account: &str, version: u64) -> Option<Arc<CachedReport>> {
        let r = self.reports.read().unwrap_or_else(|p| p.into_inner());
        match r.get(account) {
            Some((v, rep)) if *v == version => Some(rep.clone()),
            _ => None,
        }
    }

    pub fn get_what_if(
        &self,
        account: &str,
        body: [u8; 32],
        version: u64,
    ) -> Option<Arc<serde_json::Value>> {
        let r = self.what_ifs.read().unwrap_or_else(|p| p.into_inner());
        match r.get(&(account.to_string(), body)) {
            Some((v, w)) if *v == version => Some(w.clone()),
            _ => None,
        }
    }

    pub fn put_what_if(
        &self,
        account: &str,
        body: [u8; 32],
        version: u64,
        result: Arc<serde_json::Value>,
    ) {
        let mut r = self.what_ifs.write().unwrap_or_else(|p| p.into_inner());
        if r.len() >= REPORT_CACHE_MAX {
            r.clear();
        }
        r.insert((account.to_string(), body), (version, result));
    }

    pub fn put(&self, account: &str, version: u64, report: Arc<CachedReport>) {
        let mut r = self.reports.write().unwrap_or_else(|p| p.into_inner());
        if r.len() >= REPORT_CACHE_MAX && !r.contains_key(account) {
            r.clear();
        }
        match r.get(account) {
            Some((v, _)) if *v > version => {}
            _ => {
                r.insert(account.to_string(), (version, report));
            }
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

fn result_of(sequence: u64, outputs: Vec<Output>) -> EventResult {
    let accepted = !outputs.iter().any(|o| matches!(o, Output::Rejected { .. }));
    EventResult {
        sequence,
        accepted,
        outputs,
        replayed: false,
    }
}

/// What a start found and did.
pub struct Started {
    pub state: Arc<AppState>,
    /// A new admin key, to print once (first start without `PMARGIN_ADMIN_KEY`).
    pub new_admin_key: Option<String>,
    pub recovered_events: usize,
}

/// Opens the state from the store: genesis (stored, or `genesis` on first start), replay of
/// the log, keys (with the admin bootstrap), then starts the writer thread.
pub fn start(
    mut store: Box<dyn Store>,
    genesis: Genesis,
    admin_key: Option<&str>,
    ring: usize,
) -> Result<Started, String> {
    let genesis = match store.genesis()? {
        Some(g) => g,
        None => {
            genesis_engine(&genesis)?;
            store.init(&genesis)?;
            genesis
        }
    };
    let mut engine = genesis_engine(&genesis)?;
    let hub = Hub::new(ring);
    let metrics = Metrics::default();
    let mut idem: HashMap<String, Idem> = HashMap::new();
    let log = store.events_from(0)?;
    let recovered_events = log.len();
    for logged in &log {
        let t = Instant::now();
        let applied = apply_event(&mut engine, &logged.event);
        if engine.sequence() != logged.seq {
            return Err(format!(
                "event log: entry {} found at engine sequence {}: the log has a gap",
                logged.seq,
                engine.sequence()
            ));
        }
        let result = result_of(engine.sequence(), applied.outputs);
        metrics.record_event(result.accepted, t.elapsed());
        hub.publish(applied.items);
        if let Some(k) = &logged.idempotency_key {
            idem.insert(
                k.clone(),
                Idem {
                    hash: event_hash(&logged.event),
                    result,
                },
            );
        }
    }
    // Keys: the admin bootstrap.
    let mut keys = store.keys()?;
    let mut new_admin_key = None;
    if let Some(key) = admin_key {
        let hash = hex::encode(hash_key(key));
        if !keys.iter().any(|k| k.id == "admin" && k.hash == hash) {
            let record = KeyRecord {
                id: "admin".into(),
                role: Role::Admin,
                accounts: Vec::new(),
                hash,
                created_ms: now_ms(),
                label: Some("PMARGIN_ADMIN_KEY".into()),
            };
            store.put_key(&record)?;
            keys.retain(|k| k.id != "admin");
            keys.push(record);
        }
    } else if !keys.iter().any(|k| k.role == Role::Admin) {
        let (_, key) = generate_key()?;
        let record = KeyRecord {
            id: "admin".into(),
            role: Role::Admin,
            accounts: Vec::new(),
            hash: hex::encode(hash_key(&key)),
            created_ms: now_ms(),
            label: Some("created on first start".into()),
        };
        store.put_key(&record)?;
        keys.push(record);
        new_admin_key = Some(key);
    }
    let (tx, rx) = mpsc::channel();
    let recovered_seq = engine.sequence();
    let state = Arc::new(AppState {
        engine: RwLock::new(engine),
        durable: store.durable(),
        store: Mutex::new(store),
        keys: RwLock::new(KeyRing::new(keys)),
        hub,
        metrics,
        genesis,
        failed: RwLock::new(None),
        reports: ReportCache::default(),
        gov: crate::governance::Gov::disabled(),
        settlement: std::sync::OnceLock::new(),
        writer: Mutex::new(tx),
    });
    state.reports.applied(recovered_seq, &Event::Liquidate);
    let writer_state = state.clone();
    std::thread::Builder::new()
        .name("pmargin-writer".into())
        .spawn(move || writer(writer_state, rx, idem))
        .map_err(|e| format!("cannot start the writer thread: {e}"))?;
    Ok(Started {
        state,
        new_admin_key,
        recovered_events,
    })
}

impl AppState {
    /// Submits an event and waits until it is applied and durable.
    pub async fn submit(
        &self,
        event: Event,
        key_id: &str,
        idempotency: Option<(String, [u8; 32])>,
    ) -> Result<EventResult, ApiError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Submit(Submit {
            event,
            key_id: key_id.to_string(),
            idempotency,
            reply,
        });
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(cmd)
            .map_err(|_| ApiError::unavailable("the engine writer has stopped"))?;
        rx.await
            .map_err(|_| ApiError::unavailable("the engine writer has stopped"))?
    }

    /// Stops the writer thread (after the commands already queued).
    pub fn stop_writer(&self) {
        let _ = self
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Command::Stop);
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

fn writer(state: Arc<AppState>, rx: mpsc::Receiver<Command>, mut idem: HashMap<String, Idem>) {
    while let Ok(first) = rx.recv() {
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
        if !batch.is_empty() {
            process(&state, batch, &mut idem);
        }
        if stop {
            break;
        }
    }
}

fn process(state: &AppState, batch: Vec<Submit>, idem: &mut HashMap<String, Idem>) {
    if let Some(failure) = state.failure() {
        for s in batch {
            let _ = s.reply.send(Err(ApiError::unavailable(format!(
                "writes are suspended after a storage failure: {failure}"
            ))));
        }
        return;
    }
    let ts = now_ms();
    let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
    let mut logged = Vec::with_capacity(batch.len());
    let mut audit = Vec::with_capacity(batch.len());
    let mut items = Vec::new();
    {
        let mut engine = state.engine.write().unwrap_or_else(|p| p.into_inner());
        for s in batch {
            if let Some((key, hash)) = &s.idempotency {
                if let Some(prev) = idem.get(key) {
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
            let applied = apply_event(&mut engine, &s.event);
            let result = result_of(engine.sequence(), applied.outputs);
            state.reports.applied(result.sequence, &s.event);
            state.metrics.record_event(result.accepted, t.elapsed());
            items.extend(applied.items);
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
            });
            if let Some((key, hash)) = s.idempotency {
                idem.insert(
                    key,
                    Idem {
                        hash,
                        result: result.clone(),
                    },
                );
            }
            replies.push((s.reply, Ok(result)));
        }
    }
    let committed = state
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .commit(&logged, &audit);
    match committed {
        Ok(()) => {
            state.hub.publish(items);
            for (reply, answer) in replies {
                let _ = reply.send(answer);
            }
        }
        Err(e) => {
            *state.failed.write().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            for (reply, _) in replies {
                let _ = reply.send(Err(ApiError::unavailable(format!(
                    "the event could not be made durable: {e}"
                ))));
            }
        }
    }
}
