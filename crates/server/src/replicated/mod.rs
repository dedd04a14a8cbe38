//! The replicated event log on NATS JetStream (issue 19): `serve --event-log nats://h1,h2,h3
//! --node-id A`.
//!
//! What goes where, for a log named `pmargin` (the name lets K shard groups share a cluster,
//! docs/DEPLOYMENT.md):
//!
//! - stream `PMARGIN_EVENTS` (subjects `pmargin.ev.>`, R=3 by default with three servers): one
//!   message per logged event, in order, so an event's sequence number is its stream sequence.
//!   An event with an idempotency key goes to `pmargin.ev.k.<hash of the key>`, the others to
//!   `pmargin.ev.n`: the stream itself then answers "which event holds this key" (the last
//!   message of that subject), atomically with the event.
//! - stream `PMARGIN_AUDIT` (`pmargin.audit`): the audit trail, a batch's entries per message.
//! - KV `pmargin_meta`: the genesis (created once), the governance state, the API key records.
//! - KV `pmargin_leader`: the writer's lease, one key whose entries age out after the TTL.
//! - object store `pmargin_snapshots`: the latest engine snapshot.
//!
//! A write is acknowledged only after JetStream's publish acknowledgement, which it sends once
//! the stream's quorum stored the message; every publish carries the sequence it expects the
//! stream to end at (`Nats-Expected-Last-Sequence`), so two nodes that both think they lead
//! cannot interleave events: the second one's publish is refused (see [`crate::service::ha`]).
//!
//! The server's code is synchronous where it touches its store (the writer thread, recovery);
//! the NATS client is async. [`Nats`] owns a small runtime of its own and runs each call there,
//! so a call may come from any thread, a tokio worker included.

pub mod shard;
pub mod store;

use async_nats::jetstream::{self, kv, object_store, stream};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long one call to the cluster may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the replicated log is and who this node is (from `serve --event-log`).
#[derive(Debug, Clone, PartialEq)]
pub struct EventLogConfig {
    /// `nats://host:port` of every server given (the client fails over between them).
    pub servers: Vec<String>,
    /// This node's name (in the lease, `/healthz` and the logs).
    pub node_id: String,
    /// The log's name: its streams, buckets and subjects are named after it.
    pub name: String,
    /// Copies JetStream keeps of each stream and bucket.
    pub replicas: usize,
    /// A leader that stops renewing its lease loses it after this long.
    pub lease_ttl: Duration,
    /// The URL other nodes forward writes to (default: `http://` and the bound address).
    pub advertise: Option<String>,
}

impl EventLogConfig {
    /// Parses `nats://h1:4222,h2:4222,h3:4222` (the scheme may be given once, or on each
    /// server). Three servers or more give R=3; fewer give R=1 (one server cannot hold three
    /// copies, and two copies would survive no failure that one does not).
    pub fn parse(url: &str, node_id: &str) -> Result<EventLogConfig, String> {
        let rest = url.strip_prefix("nats://").ok_or_else(|| {
            format!("--event-log: expected nats://host:port[,host:port...], got `{url}`")
        })?;
        let servers: Vec<String> = rest
            .split(',')
            .map(|s| s.trim().trim_start_matches("nats://"))
            .map(|s| {
                let ok = !s.is_empty()
                    && s.rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                if ok {
                    Ok(format!("nats://{s}"))
                } else {
                    Err(format!("--event-log: `{s}` is not host:port"))
                }
            })
            .collect::<Result<_, _>>()?;
        let valid_id = !node_id.is_empty()
            && node_id.len() <= 64
            && node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_id {
            return Err(format!(
                "--node-id: 1 to 64 letters, digits, '-' or '_', got `{node_id}`"
            ));
        }
        Ok(EventLogConfig {
            replicas: if servers.len() >= 3 { 3 } else { 1 },
            servers,
            node_id: node_id.to_string(),
            name: "pmargin".into(),
            lease_ttl: Duration::from_secs(3),
            advertise: None,
        })
    }
}

/// A runtime owned by [`Nats`], shut down without waiting when the last handle goes (which
/// may happen inside another runtime, where a plain drop would panic).
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The connection to the cluster and the log's streams and buckets.
pub struct Nats {
    pub config: EventLogConfig,
    rt: OwnedRuntime,
    handle: tokio::runtime::Handle,
    pub js: jetstream::Context,
    pub events: stream::Stream,
    pub audit: stream::Stream,
    pub meta: kv::Store,
    pub lease: kv::Store,
    pub snapshots: object_store::ObjectStore,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("config", &self.config)
            .finish()
    }
}

/// Publishes awaiting their acknowledgement at once: the writer pipelines a whole batch (up to
/// `service::writer::MAX_BATCH` events, which asserts it fits twice over) before waiting.
pub const MAX_ACKS_IN_FLIGHT: usize = 8192;

/// Stream and bucket names of a log.
pub struct Names {
    pub events: String,
    pub audit: String,
    pub meta: String,
    pub lease: String,
    pub snapshots: String,
    pub subject: String,
}

impl Names {
    pub fn of(name: &str) -> Names {
        let upper = name.to_ascii_uppercase();
        Names {
            events: format!("{upper}_EVENTS"),
            audit: format!("{upper}_AUDIT"),
            meta: format!("{name}_meta"),
            lease: format!("{name}_leader"),
            snapshots: format!("{name}_snapshots"),
            subject: name.to_string(),
        }
    }
}

fn err(what: &str) -> impl Fn(String) -> String + '_ {
    move |e| format!("NATS {what}: {e}")
}

impl Nats {
    /// Connects (waiting up to [`CALL_TIMEOUT`] for a first server) and creates the streams and
    /// buckets that do not exist yet.
    pub fn connect(config: EventLogConfig) -> Result<Arc<Nats>, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pmargin-nats")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the NATS runtime: {e}"))?;
        let handle = rt.handle().clone();
        let rt = OwnedRuntime(Some(rt));
        let cfg = config.clone();
        let opened = run(&handle, async move { open(&cfg).await })??;
        let (js, events, audit, meta, lease, snapshots) = opened;
        Ok(Arc::new(Nats {
            config,
            rt,
            handle,
            js,
            events,
            audit,
            meta,
            lease,
            snapshots,
        }))
    }

    /// Runs `fut` on the NATS runtime and waits for it (at most [`CALL_TIMEOUT`]), from any
    /// thread.
    pub fn call<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, String>> + Send + 'static,
    ) -> Result<T, String> {
        if self.rt.0.is_none() {
            return Err("NATS: the client has stopped".into());
        }
        run(&self.handle, async move {
            match tokio::time::timeout(CALL_TIMEOUT, fut).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "NATS: no answer within {} s",
                    CALL_TIMEOUT.as_secs()
                )),
            }
        })?
    }

    /// Runs `fut` to its end on this thread, which must not be a runtime's (the writer's).
    pub fn block_on<T>(&self, fut: impl Future<Output = T>) -> T {
        self.handle.block_on(fut)
    }

    /// Starts `fut` on the NATS runtime (the lease, the follower's feed).
    pub fn spawn(
        &self,
        fut: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        self.handle.spawn(fut)
    }

    pub fn names(&self) -> Names {
        Names::of(&self.config.name)
    }
}

/// Runs `fut` on `handle` and blocks this thread (never a runtime: it waits on a channel)
/// until it ends.
fn run<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| "NATS: the client's runtime stopped".to_string())
}

type Opened = (
    jetstream::Context,
    stream::Stream,
    stream::Stream,
    kv::Store,
    kv::Store,
    object_store::ObjectStore,
);

async fn open(config: &EventLogConfig) -> Result<Opened, String> {
    let addrs = config
        .servers
        .iter()
        .map(|s| s.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--event-log: {e}"))?;
    let options = async_nats::ConnectOptions::new()
        .name(format!("pmargin-{}", config.node_id))
        .connection_timeout(CALL_TIMEOUT)
        // Reconnects go on forever: a node outlives a cluster restart.
        .max_reconnects(None)
        .retry_on_initial_connect();
    let client = tokio::time::timeout(CALL_TIMEOUT, options.connect(addrs))
        .await
        .map_err(|_| {
            format!(
                "NATS: no server of {} answered within {} s",
                config.servers.join(","),
                CALL_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| err("connect")(e.to_string()))?;
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
        .backpressure_on_inflight(true)
        .timeout(CALL_TIMEOUT)
        .build(client);
    // A cluster that just started elects its meta leader first: creation is retried until
    // then.
    let deadline = tokio::time::Instant::now() + 4 * CALL_TIMEOUT;
    loop {
        match create_all(&js, config).await {
            Ok((events, audit, meta, lease, snapshots)) => {
                return Ok((js, events, audit, meta, lease, snapshots))
            }
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

type Buckets = (
    stream::Stream,
    stream::Stream,
    kv::Store,
    kv::Store,
    object_store::ObjectStore,
);

/// Creates the streams and buckets that do not exist yet (and opens those that do).
async fn create_all(js: &jetstream::Context, config: &EventLogConfig) -> Result<Buckets, String> {
    let n = Names::of(&config.name);
    let r = config.replicas;
    let events = js
        .get_or_create_stream(stream::Config {
            name: n.events.clone(),
            subjects: vec![format!("{}.ev.>", n.subject)],
            num_replicas: r,
            storage: stream::StorageType::File,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(|e| err("event stream")(e.to_string()))?;
    let audit = js
        .get_or_create_stream(stream::Config {
            name: n.audit.clone(),
            subjects: vec![format!("{}.audit", n.subject)],
            num_replicas: r,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| err("audit stream")(e.to_string()))?;
    let meta = key_value(js, &n.meta, Duration::ZERO, r)
        .await
        .map_err(err("meta bucket"))?;
    let lease = key_value(js, &n.lease, config.lease_ttl, r)
        .await
        .map_err(err("lease bucket"))?;
    // Opened as it is when it exists (a node given fewer servers would ask for fewer copies).
    if let Ok(snapshots) = js.get_object_store(&n.snapshots).await {
        return Ok((events, audit, meta, lease, snapshots));
    }
    let snapshots = js
        .create_object_store(object_store::Config {
            bucket: n.snapshots.clone(),
            num_replicas: r,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| err("snapshot store")(e.to_string()))?;
    Ok((events, audit, meta, lease, snapshots))
}

/// A KV bucket of one value per key, created as its backing stream (what
/// `create_key_value` would make): the client's own creation first reads the account's
/// JetStream info, whose 2.9 form (Debian's server) it cannot parse.
async fn key_value(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, String> {
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    js.get_key_value(bucket).await.map_err(|e| e.to_string())
}
