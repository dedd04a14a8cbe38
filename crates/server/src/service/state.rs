//! The service's state: the engine behind a lock written by one thread (the writer, see
//! [`crate::service::writer`]), the store, the keys, the stream hub, the report cache, the
//! limits and the metrics; submitting events to the writer and reading durable figures.
//!
//! An event is acknowledged only once durable. Reads never show a figure before the event
//! behind it is durable ([`AppState::read_durable`]).

use crate::auth::{KeyRecord, KeyRing};
use crate::error::ServiceError;
use crate::limits::{check_magnitudes, Limits, RateLimiter, StreamSlots};
use crate::metrics::Metrics;
use crate::service::cache::ReportCache;
use crate::service::governance::Gov;
use crate::service::ha::Ha;
use crate::service::heavy::Heavy;
use crate::service::settlement::Settlement;
use crate::service::stream::Hub;
use crate::store::{AuditEntry, Genesis, Store};
use pmargin_core::{Market, Params, Portfolio};
use pmargin_engine::{Engine, Event, Output};
use serde::Serialize;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;

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
    pub reply: oneshot::Sender<Result<EventResult, ServiceError>>,
}

pub enum Command {
    /// (Boxed: an event can be large, and a command waits in a bounded queue.)
    Submit(Box<Submit>),
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
    pub max_clock_skew_ms: AtomicI64,
    /// This node's group in a sharded deployment (set at start): only then does it take a
    /// cross-group leg.
    pub shard: OnceLock<crate::replicated::shard::Shard>,
    pub hub: Hub,
    pub metrics: Metrics,
    pub genesis: Genesis,
    pub durable: bool,
    /// Set when a commit failed: every write is refused (and `/healthz` answers 503) until
    /// the writer, having rebuilt the engine from the log, finds the store writable again (it
    /// tries on the next write, and every [`crate::service::writer::PROBE_EVERY`] meanwhile).
    pub failed: RwLock<Option<String>>,
    /// The engine sequence of the last durable event: reads never show figures beyond it.
    committed: AtomicU64,
    committed_tx: tokio::sync::watch::Sender<u64>,
    pub limits: Limits,
    /// Per-key token buckets of writes.
    pub limiter: RateLimiter,
    /// Open streams per key.
    pub streams: StreamSlots,
    /// The bounded pool of heavy computations.
    pub heavy: Heavy,
    /// What changed when, so reads can reuse the reports computed since (see [`ReportCache`]).
    pub reports: ReportCache,
    /// Governed parameters (proposals, approvals, activation).
    pub gov: Gov,
    /// The settlement-message signer (set at start).
    pub settlement: OnceLock<Settlement>,
    writer: mpsc::SyncSender<Command>,
    /// Joined by [`AppState::stop_writer`], so a stop returns after the final snapshot.
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// A node of a replicated deployment: its role (set at start; unset on a single node).
    pub ha: OnceLock<Arc<Ha>>,
    /// The venue feeds' health (`serve --feeds`; set at start).
    pub feeds: OnceLock<pmargin_feeds::health::Health>,
}

impl AppState {
    /// The state over a recovered `engine` and its `store`, and the receiving end of the
    /// writer's channel (bounded by the limits' writer queue), for the writer thread.
    pub(crate) fn new(
        engine: Engine,
        store: Box<dyn Store>,
        keys: KeyRing,
        hub: Hub,
        metrics: Metrics,
        genesis: Genesis,
        limits: Limits,
    ) -> (Arc<AppState>, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::sync_channel(limits.writer_queue.max(1));
        let recovered_seq = engine.sequence();
        let state = AppState {
            engine: RwLock::new(engine),
            durable: store.durable(),
            store: Mutex::new(store),
            keys: RwLock::new(keys),
            max_clock_skew_ms: AtomicI64::new(crate::DEFAULT_MAX_CLOCK_SKEW_MS),
            shard: OnceLock::new(),
            hub,
            metrics,
            genesis,
            failed: RwLock::new(None),
            committed: AtomicU64::new(recovered_seq),
            committed_tx: tokio::sync::watch::Sender::new(recovered_seq),
            limiter: RateLimiter::new(limits.writes_per_second, limits.write_burst),
            streams: StreamSlots::default(),
            heavy: Heavy::new(limits.heavy_queue),
            limits,
            reports: ReportCache::default(),
            gov: Gov::disabled(),
            settlement: OnceLock::new(),
            writer: tx,
            writer_thread: Mutex::new(None),
            ha: OnceLock::new(),
            feeds: OnceLock::new(),
        };
        (Arc::new(state), rx)
    }

    /// Keeps the writer thread's handle, for [`AppState::stop_writer`] to join.
    pub(crate) fn keep_writer_thread(&self, handle: std::thread::JoinHandle<()>) {
        *self.writer_thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }
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

pub(crate) fn result_of(sequence: u64, outputs: Vec<Output>) -> EventResult {
    let accepted = !outputs.iter().any(|o| matches!(o, Output::Rejected { .. }));
    EventResult {
        sequence,
        accepted,
        outputs,
        replayed: false,
    }
}

/// The writer's answer to a submitted event, once it is durable.
async fn answer(
    rx: oneshot::Receiver<Result<EventResult, ServiceError>>,
) -> Result<EventResult, ServiceError> {
    rx.await
        .map_err(|_| ServiceError::unavailable("the engine writer has stopped"))?
}

impl AppState {
    /// The `/healthz` fields of the node's role: a node of a replicated deployment says whether
    /// it leads and where the leader is; a single node (no replicated log) is its own leader.
    pub fn role_health(&self) -> serde_json::Value {
        match self.ha.get() {
            Some(ha) => ha.health(),
            None => serde_json::json!({ "role": "leader", "leader": null }),
        }
    }

    /// Whether this node's writer takes writes (a single node always does).
    pub fn takes_writes(&self) -> bool {
        self.ha.get().is_none_or(|ha| ha.leading())
    }

    /// Replaces the node's API keys by `records` (the replicated log's) when they differ.
    pub(crate) fn take_keys(&self, mut records: Vec<KeyRecord>) {
        records.sort_by(|a, b| a.id.cmp(&b.id));
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let mut now: Vec<_> = keys.records().cloned().collect();
        now.sort_by(|a, b| a.id.cmp(&b.id));
        if now != records {
            *keys = KeyRing::new(keys.secret().clone(), records);
        }
    }
}

impl AppState {
    /// Submits an event and waits until it is applied and durable.
    pub async fn submit(
        &self,
        event: Event,
        key_id: &str,
        idempotency: Option<(String, [u8; 32])>,
    ) -> Result<EventResult, ServiceError> {
        answer(self.enqueue(event, key_id, idempotency)?).await
    }

    /// Submits events in order and waits until all are applied and durable. Queued together,
    /// they usually share one commit (and readers see one burst of changes, not one per event).
    pub async fn submit_all(
        &self,
        events: Vec<Event>,
        key_id: &str,
    ) -> Result<Vec<EventResult>, ServiceError> {
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
    pub(crate) fn enqueue(
        &self,
        event: Event,
        key_id: &str,
        idempotency: Option<(String, [u8; 32])>,
    ) -> Result<oneshot::Receiver<Result<EventResult, ServiceError>>, ServiceError> {
        check_magnitudes(&event).inspect_err(|_| self.metrics.refused("magnitude"))?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Submit(Box::new(Submit {
            event,
            key_id: key_id.to_string(),
            idempotency,
            reply,
        }));
        match self.writer.try_send(cmd) {
            Ok(()) => Ok(rx),
            Err(mpsc::TrySendError::Full(_)) => {
                self.metrics.refused("writer_queue_full");
                Err(ServiceError::unavailable(format!(
                    "the write queue is full ({} events waiting); retry shortly",
                    self.limits.writer_queue
                )))
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                Err(ServiceError::unavailable("the engine writer has stopped"))
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

    pub(crate) fn set_committed(&self, seq: u64) {
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
        mut read: impl FnMut(&Engine) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
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
                return Err(ServiceError::unavailable(
                    "the figures are not durable yet (a commit is under way or failed); retry shortly",
                ));
            }
        }
    }

    /// Runs a heavy computation on the bounded heavy pool (see [`crate::service::heavy`]).
    pub async fn heavy_job<T: Send + 'static, E: From<ServiceError> + Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        self.heavy.run(&self.metrics, f).await
    }

    /// Records writes other than events (keys, proposals) in the audit trail, durably.
    pub fn audit(&self, entry: AuditEntry) -> Result<(), ServiceError> {
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .commit(&[], &[entry])
            .map_err(|e| ServiceError::unavailable(format!("audit trail: {e}")))
    }
}

/// How long a read waits at most for the commit of the figures it is to show.
pub const DURABLE_WAIT: Duration = Duration::from_secs(2);
