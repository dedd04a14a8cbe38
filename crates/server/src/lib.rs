//! # pmargin-server: the risk service
//!
//! Turns the real-time engine into the service a venue runs (issue 5): an HTTP/WebSocket API
//! under `/v1` ([`api`]), bearer API keys with roles ([`auth`]), an event log that makes every
//! acknowledged event durable and, with periodic snapshots, rebuilds the exact state on restart
//! from the latest snapshot and the events after it ([`store`], [`state`]),
//! a resumable stream of margin changes, liquidations and oracle health ([`stream`]),
//! Prometheus metrics ([`metrics`]), a demo that replays real prices ([`demo`]) and a web
//! dashboard at `/`, live over the stream ([`dashboard`], issue 6).

pub mod auth;
pub mod demo;
pub mod error;
pub mod feeds;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod replicated;
pub mod router;
pub mod service;
pub mod store;

// The paths of the modules before the service and HTTP layers were split apart (used by the
// tests and the CLI).
pub use http::dashboard;
pub use service::{settlement, stream};

/// The HTTP API under `/v1`: the router and the OpenAPI document.
pub mod api {
    pub use crate::http::{router, Shared, BODY_LIMIT, OPENAPI};
}

/// The service's state, and starting it from the store.
pub mod state {
    pub use crate::service::recovery::{start, Started};
    pub use crate::service::snapshots::SNAPSHOT_EVERY;
    pub use crate::service::state::*;
}

/// Governed parameters: the service's governance and the committee's acts.
pub mod governance {
    pub use crate::service::committee::{lapse_emergency, GovFailure};
    pub use crate::service::governance::*;
}

use crate::service::committee;
use crate::service::recovery::Started;
use crate::service::state::{now_ms, AppState};
use crate::store::{open_dir, Genesis, MemoryStore, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One thread per core but one (at least one): the default of the HTTP workers, and the size
/// of the heavy computations' pool, so that neither takes the core of the writer thread that
/// applies and commits every event.
pub fn cores_but_one() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

/// How far ahead of the server's clock a quote's `ts_ms` may be, by default.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: i64 = 2_000;

/// Where a first start without `PMARGIN_ADMIN_KEY` leaves the admin key it made (mode 0600,
/// in the data directory): never in the log.
pub const ADMIN_KEY_FILE: &str = "admin_key";

/// Messages kept in memory for stream resumption.
pub const DEFAULT_RING: usize = 65_536;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: String,
    /// `None`: nothing is kept (a memory store).
    pub data_dir: Option<PathBuf>,
    /// The state a new data directory starts from (ignored when the store has one).
    pub genesis: Genesis,
    /// The admin key to install (`PMARGIN_ADMIN_KEY`); without it, the first start makes one.
    pub admin_key: Option<String>,
    pub ring_capacity: usize,
    /// Feed the oracle from the bundled price history.
    pub demo_feed: Option<demo::FeedConfig>,
    /// The risk committee; without it, `<data_dir>/committee.json` if present, else the
    /// governance endpoints answer 409.
    pub committee: Option<pmargin_governance::Committee>,
    /// The EIP-712 domain and signing key of settlement messages.
    pub settlement: settlement::SettlementConfig,
    /// The id every governance signature names, so one made for another deployment (staging)
    /// is refused; `None`: [`governance::default_deployment_id`] of `settlement`.
    pub deployment_id: Option<String>,
    /// The clock governance reads (timelocks, ratification windows); tests inject a
    /// [`pmargin_governance::ManualClock`] instead of sleeping.
    pub governance_clock: Arc<dyn pmargin_governance::Clock>,
    /// Events between two snapshots (stores that keep them; 0: only on a clean stop).
    pub snapshot_every: u64,
    /// Rate limits, queue bounds, page caps, timeouts (see [`limits`]).
    pub limits: limits::Limits,
    /// How far ahead of the server's clock a quote's `ts_ms` may be (422 beyond).
    pub max_clock_skew_ms: i64,
    /// The replicated event log (issue 19; `None`: the data directory's SQLite database).
    pub event_log: Option<replicated::EventLogConfig>,
    /// Venue feeds into the oracle and the surface (`serve --feeds`, issue 18).
    pub feeds: Option<pmargin_feeds::config::FeedsConfig>,
    /// This node's group in a sharded deployment (`serve --shard I/K`, issue 19).
    pub shard: Option<replicated::shard::Shard>,
}

impl ServerConfig {
    pub fn new(
        listen: impl Into<String>,
        data_dir: Option<PathBuf>,
        genesis: Genesis,
    ) -> ServerConfig {
        ServerConfig {
            listen: listen.into(),
            data_dir,
            genesis,
            admin_key: None,
            ring_capacity: DEFAULT_RING,
            demo_feed: None,
            committee: None,
            settlement: settlement::SettlementConfig::default(),
            deployment_id: None,
            governance_clock: Arc::new(pmargin_governance::SystemClock),
            snapshot_every: state::SNAPSHOT_EVERY,
            // The oracle's clock runs in `pmargin serve` (see its `--oracle-tick-ms`); here only
            // quotes move it, so tests may date quotes in the past.
            limits: limits::Limits {
                oracle_tick: None,
                ..limits::Limits::default()
            },
            max_clock_skew_ms: DEFAULT_MAX_CLOCK_SKEW_MS,
            event_log: None,
            feeds: None,
            shard: None,
        }
    }
}

/// A started server.
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    /// The admin key made on first start (only its hash is stored); with a data directory it
    /// is also in [`Running::admin_key_file`], for the operator.
    pub new_admin_key: Option<String>,
    /// The 0600 file holding the admin key made on this start.
    pub admin_key_file: Option<PathBuf>,
    /// Events the recovered state holds.
    pub recovered_events: usize,
    /// Of those, the events applied at start (after the snapshot, or all without one).
    pub replayed_events: usize,
    /// The event after which the snapshot the start went on from was taken.
    pub snapshot_seq: Option<u64>,
    shutdown: Option<oneshot::Sender<()>>,
    task: ServerTask,
    feed: Option<JoinHandle<()>>,
    /// The venue feeds' connections and ingest ([`feeds::start`]).
    feeds: Vec<JoinHandle<()>>,
    clock: Option<JoinHandle<()>>,
    /// Expires attested collateral ([`service::external::attestation_clock`]).
    attestations: Option<JoinHandle<()>>,
}

/// Opens the store, recovers the state, binds the listener and serves in the background.
pub async fn start(config: ServerConfig) -> Result<Running, String> {
    // (Before the store is opened: a refused start leaves no data directory behind.)
    if let Some(key) = &config.admin_key {
        auth::check_admin_key(key)?;
    }
    let store: Box<dyn Store> = match (&config.event_log, &config.data_dir) {
        (Some(log), _) => replicated::store::open(log.clone()).await?,
        (None, Some(dir)) => open_dir(dir)?,
        (None, None) => Box::new(MemoryStore::default()),
    };
    start_with_store(config, store).await
}

/// [`start`] on a store opened by the caller (a wrapper that injects storage failures, in
/// tests and drills); `config.data_dir` still locates the committee and the signing key.
pub async fn start_with_store(
    config: ServerConfig,
    store: Box<dyn Store>,
) -> Result<Running, String> {
    check_config(&config)?;
    let started = recover(&config, store).await?;
    let admin_key_file = keep_new_admin_key(&config, started.new_admin_key.as_deref())?;
    open_governance(&config, &started.state).await?;
    let signer = settlement::Settlement::open(&config.settlement, config.data_dir.as_deref())?;
    let _ = started.state.settlement.set(signer);
    let (addr, shutdown, task) = listen(&config, &started.state).await?;
    if let Some(ha) = started.state.ha.get() {
        let state = Arc::downgrade(&started.state);
        ha.start(addr, move |records| match state.upgrade() {
            Some(state) => {
                state.take_keys(records);
                service::ha::KeysTaken::Taken
            }
            None => service::ha::KeysTaken::Stop,
        });
    }
    let feed = config
        .demo_feed
        .map(|f| tokio::spawn(demo::feed(started.state.clone(), f)));
    let feeds = config
        .feeds
        .as_ref()
        .map(|f| feeds::start(started.state.clone(), f))
        .unwrap_or_default();
    let clock = config
        .limits
        .oracle_tick
        .map(|every| tokio::spawn(oracle_clock(started.state.clone(), every)));
    let attestations = Some(tokio::spawn(service::external::attestation_clock(
        started.state.clone(),
        service::external::ATTESTATION_TICK,
    )));
    Ok(Running {
        addr,
        state: started.state,
        new_admin_key: started.new_admin_key,
        admin_key_file,
        recovered_events: started.recovered_events,
        replayed_events: started.replayed_events,
        snapshot_seq: started.snapshot_seq,
        shutdown: Some(shutdown),
        task,
        feed,
        feeds,
        clock,
        attestations,
    })
}

/// Refuses a configuration the service must not start with.
fn check_config(config: &ServerConfig) -> Result<(), String> {
    if let Some(key) = &config.admin_key {
        auth::check_admin_key(key)?;
    }
    if config.max_clock_skew_ms < 0 {
        return Err(format!(
            "max_clock_skew_ms must be non-negative, got {}",
            config.max_clock_skew_ms
        ));
    }
    Ok(())
}

/// Recovers the state from `store` (on a blocking thread: it reads the log) and starts the
/// writer; prints what recovery found worth telling.
async fn recover(config: &ServerConfig, store: Box<dyn Store>) -> Result<Started, String> {
    let secret = auth::KeySecret::open(config.data_dir.as_deref())?;
    let (genesis, admin, ring, every, limits) = (
        config.genesis.clone(),
        config.admin_key.clone(),
        config.ring_capacity,
        config.snapshot_every,
        config.limits.clone(),
    );
    let started = tokio::task::spawn_blocking(move || {
        service::recovery::start(
            store,
            genesis,
            admin.as_deref(),
            secret,
            ring,
            every,
            limits,
        )
    })
    .await
    .map_err(|e| format!("start: {e}"))??;
    for note in &started.notes {
        eprintln!("pmargin: recovery: {note}");
    }
    if let Some(shard) = config.shard {
        let _ = started.state.shard.set(shard);
    }
    started.state.max_clock_skew_ms.store(
        config.max_clock_skew_ms,
        std::sync::atomic::Ordering::Relaxed,
    );
    Ok(started)
}

/// Writes an admin key made on this start to its 0600 file in the data directory (never to
/// the log); its path.
fn keep_new_admin_key(config: &ServerConfig, key: Option<&str>) -> Result<Option<PathBuf>, String> {
    match (key, &config.data_dir) {
        (Some(key), Some(dir)) => {
            let path = dir.join(ADMIN_KEY_FILE);
            auth::write_private(&path, format!("{key}\n").as_bytes())?;
            Ok(Some(path))
        }
        _ => Ok(None),
    }
}

/// Opens the governance against the recovered parameters and starts its lapse timer.
async fn open_governance(config: &ServerConfig, state: &Arc<AppState>) -> Result<(), String> {
    let active = state.engine().params().clone();
    let deployment_id = config
        .deployment_id
        .clone()
        .unwrap_or_else(|| governance::default_deployment_id(&config.settlement));
    state
        .gov
        .open(
            &state.store,
            config.data_dir.as_deref(),
            config.committee.clone(),
            &active,
            &deployment_id,
            config.governance_clock.clone(),
        )
        .await?;
    committee::start_lapse_timer(state);
    Ok(())
}

/// Binds the listener and serves the API in the background until the sender is used: the
/// address, the sender, and the server's task.
async fn listen(
    config: &ServerConfig,
    state: &Arc<AppState>,
) -> Result<(SocketAddr, oneshot::Sender<()>, ServerTask), String> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = api::router(state.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(http::serve::serve(
        listener,
        app,
        config.limits.header_read_timeout,
        async move {
            let _ = rx.await;
        },
    ));
    Ok((addr, tx, task))
}

type ServerTask = JoinHandle<Result<(), String>>;

/// The oracle's clock: every `every`, if re-assessing the indices now would change one (its
/// quotes aged out, say), an [`pmargin_engine::Event::OracleTick`] goes through the writer like
/// any event (logged, so a replay sees the same staleness at the same point).
async fn oracle_clock(state: Arc<AppState>, every: std::time::Duration) {
    let mut interval = tokio::time::interval(every.max(std::time::Duration::from_millis(10)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let now = now_ms();
        let due = state.failure().is_none()
            && state.takes_writes()
            && state.engine().oracle_tick_due(now);
        if due {
            let tick = pmargin_engine::Event::OracleTick { now_ms: now };
            if let Err(e) = state.submit(tick, "oracle-clock", None).await {
                eprintln!("pmargin: oracle clock: {e}");
            }
        }
    }
}

impl Running {
    /// Stops accepting, finishes in-flight requests, stops the writer (which takes a final
    /// snapshot) and waits for it.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(feed) = self.feed.take() {
            feed.abort();
        }
        self.feeds.drain(..).for_each(|t| t.abort());
        if let Some(clock) = self.clock.take() {
            clock.abort();
        }
        if let Some(clock) = self.attestations.take() {
            clock.abort();
        }
        self.state.gov.stop_timer();
        if let Some(ha) = self.state.ha.get() {
            ha.stop();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let result = self.task.await.map_err(|e| e.to_string())?;
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || state.stop_writer())
            .await
            .map_err(|e| e.to_string())?;
        result
    }
}
