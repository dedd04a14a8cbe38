//! # pmargin-server: the risk service
//!
//! Turns the real-time engine into the service a venue runs (issue 5): an HTTP/WebSocket API
//! under `/v1` ([`api`]), bearer API keys with roles ([`auth`]), an event log that makes every
//! acknowledged event durable and, with periodic snapshots, rebuilds the exact state on restart
//! from the latest snapshot and the events after it ([`store`], [`state`]),
//! a resumable stream of margin changes, liquidations and oracle health ([`stream`]),
//! Prometheus metrics ([`metrics`]), a demo that replays real prices ([`demo`]) and a web
//! dashboard at `/`, live over the stream ([`dashboard`], issue 6).

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod demo;
pub mod error;
pub mod governance;
pub mod metrics;
pub mod settlement;
pub mod state;
pub mod store;
pub mod stream;

use crate::state::AppState;
use crate::store::{open_dir, Genesis, MemoryStore, Store, StoreKind};
use axum::serve::ListenerExt;
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
    /// The store of the data directory (default: SQLite).
    pub store_kind: StoreKind,
    /// The risk committee; without it, `<data_dir>/committee.json` if present, else the
    /// governance endpoints answer 409.
    pub committee: Option<pmargin_governance::Committee>,
    /// The EIP-712 domain and signing key of settlement messages.
    pub settlement: settlement::SettlementConfig,
    /// Events between two snapshots (stores that keep them; 0: only on a clean stop).
    pub snapshot_every: u64,
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
            store_kind: StoreKind::default(),
            committee: None,
            settlement: settlement::SettlementConfig::default(),
            snapshot_every: state::SNAPSHOT_EVERY,
        }
    }
}

/// A started server.
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    /// The admin key made on first start: shown once, only its hash is stored.
    pub new_admin_key: Option<String>,
    /// Events the recovered state holds.
    pub recovered_events: usize,
    /// Of those, the events applied at start (after the snapshot, or all without one).
    pub replayed_events: usize,
    /// The event after which the snapshot the start went on from was taken.
    pub snapshot_seq: Option<u64>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), String>>,
    feed: Option<JoinHandle<()>>,
}

/// Opens the store, recovers the state, binds the listener and serves in the background.
pub async fn start(config: ServerConfig) -> Result<Running, String> {
    let store: Box<dyn Store> = match &config.data_dir {
        Some(dir) => open_dir(dir, config.store_kind)?,
        None => Box::new(MemoryStore::default()),
    };
    let (genesis, admin, ring, every) = (
        config.genesis.clone(),
        config.admin_key.clone(),
        config.ring_capacity,
        config.snapshot_every,
    );
    let started = tokio::task::spawn_blocking(move || {
        state::start(store, genesis, admin.as_deref(), ring, every)
    })
    .await
    .map_err(|e| format!("start: {e}"))??;
    for note in &started.notes {
        eprintln!("pmargin: recovery: {note}");
    }
    let active = started.state.engine().params().clone();
    started
        .state
        .gov
        .open(
            &started.state.store,
            config.data_dir.as_deref(),
            config.committee.clone(),
            &active,
        )
        .await?;
    let signer = settlement::Settlement::open(&config.settlement, config.data_dir.as_deref())?;
    let _ = started.state.settlement.set(signer);
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = api::router(started.state.clone());
    let (tx, rx) = oneshot::channel::<()>();
    // Answers (and stream frames) go out at once rather than waiting, under Nagle's rule, for
    // the acknowledgement of an earlier small segment.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
            .map_err(|e| format!("server: {e}"))
    });
    let feed = config
        .demo_feed
        .map(|f| tokio::spawn(demo::feed(started.state.clone(), f)));
    Ok(Running {
        addr,
        state: started.state,
        new_admin_key: started.new_admin_key,
        recovered_events: started.recovered_events,
        replayed_events: started.replayed_events,
        snapshot_seq: started.snapshot_seq,
        shutdown: Some(tx),
        task,
        feed,
    })
}

impl Running {
    /// Stops accepting, finishes in-flight requests, stops the writer (which takes a final
    /// snapshot) and waits for it.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(feed) = self.feed.take() {
            feed.abort();
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
