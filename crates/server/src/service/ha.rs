//! Leader and followers over the replicated log (issue 19).
//!
//! Every node runs the same engine. One of them, the leader, takes writes: it holds the lease
//! (a key in the `<name>_leader` KV bucket whose entries age out after the TTL, renewed every
//! third of it) **and** has applied the whole log. The others follow: they apply the stream as
//! it grows (a hot engine), serve every read from it, and forward writes to the leader
//! ([`crate::http::forward`]).
//!
//! The lease decides who should write; JetStream decides who can. Every publish expects the
//! stream to end at the event before it, so a leader that lost its lease without knowing it
//! (paused, cut off) cannot write after the new leader did: its publish is refused, it rolls
//! back to what the log holds and follows. An event it had acknowledged is in the log, so no
//! acknowledged event is lost.
//!
//! A dead leader is replaced once its lease ages out (the TTL, 3 s by default) and a follower's
//! next try to take it ([`LEASE_EVERY`] of the TTL); the new leader applies the rest of the
//! log before it takes writes.

use crate::auth::KeyRecord;
use crate::replicated::store::read_keys;
use crate::replicated::Nats;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The lease key in the lease bucket.
const LEASE_KEY: &str = "leader";

/// The lease is renewed (or, by a follower, tried) this many times per TTL.
pub const LEASE_EVERY: u32 = 3;

/// Who holds the lease: its value in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    pub node: String,
    /// Where it takes writes.
    pub url: String,
}

/// A node's part in a replicated deployment.
pub struct Ha {
    pub nats: Arc<Nats>,
    /// This node's lease value.
    me: RwLock<LeaderInfo>,
    /// The lease task holds the lease.
    lease_held: AtomicBool,
    /// The writer takes writes: the lease is held and the whole log applied.
    leading: AtomicBool,
    /// The last lease holder seen.
    leader: RwLock<Option<LeaderInfo>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Ha {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ha")
            .field("node", &self.node_id())
            .field("leading", &self.leading())
            .finish()
    }
}

impl Ha {
    pub fn new(nats: Arc<Nats>) -> Arc<Ha> {
        let node = nats.config.node_id.clone();
        Arc::new(Ha {
            nats,
            me: RwLock::new(LeaderInfo {
                node,
                url: String::new(),
            }),
            lease_held: AtomicBool::new(false),
            leading: AtomicBool::new(false),
            leader: RwLock::new(None),
            task: Mutex::new(None),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.nats.config.node_id
    }

    /// Whether this node takes writes now.
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    pub(crate) fn lease_held(&self) -> bool {
        self.lease_held.load(Ordering::Acquire)
    }

    /// Set by the writer: on once it has applied the whole log while holding the lease, off
    /// when a commit failed or the lease was lost.
    pub(crate) fn set_leading(&self, on: bool) {
        let was = self.leading.swap(on, Ordering::AcqRel);
        if was != on {
            let me = self.me();
            if on {
                *self.leader.write().unwrap_or_else(|p| p.into_inner()) = Some(me.clone());
            }
            eprintln!(
                "pmargin: node {} is now {}",
                me.node,
                if on { "the leader" } else { "a follower" }
            );
        }
    }

    fn me(&self) -> LeaderInfo {
        self.me.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The leader as last seen (this node when it leads).
    pub fn leader(&self) -> Option<LeaderInfo> {
        self.leader
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts the lease task once the node listens on `addr` (its URL goes in the lease).
    /// `keys` receives the API keys the leader keeps in the bucket, read on every round this
    /// node follows (a revocation reaches every node within one round).
    pub fn start(
        self: &Arc<Ha>,
        addr: std::net::SocketAddr,
        keys: impl Fn(Vec<KeyRecord>) -> KeysTaken + Send + Sync + 'static,
    ) {
        let url = self
            .nats
            .config
            .advertise
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        self.me.write().unwrap_or_else(|p| p.into_inner()).url = url;
        let task = self.nats.spawn(lease_loop(self.clone(), keys));
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Stops taking writes and gives the lease up (a clean stop: a follower takes over at
    /// once rather than after the TTL).
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        self.leading.store(false, Ordering::Release);
        if self.lease_held.swap(false, Ordering::AcqRel) {
            let lease = self.nats.lease.clone();
            let _ = self.nats.call(async move {
                lease
                    .delete(LEASE_KEY)
                    .await
                    .map_err(|e| format!("NATS lease: {e}"))
            });
        }
    }

    /// The health fields of this node: its role and the leader's URL.
    pub fn health(&self) -> serde_json::Value {
        let leader = self.leader();
        serde_json::json!({
            "role": if self.leading() { "leader" } else { "follower" },
            "leader": leader.as_ref().map(|l| l.url.clone()),
            "leader_node": leader.map(|l| l.node),
            "node": self.node_id(),
        })
    }
}

/// Whether the node's keys took the bucket's: [`KeysTaken::Stop`] once the node is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysTaken {
    Taken,
    Stop,
}

/// Holds or tries the lease, every TTL / [`LEASE_EVERY`]; on a follower, also reloads the
/// API keys (the leader writes them to the bucket; a revocation reaches every node within one
/// round).
async fn lease_loop(ha: Arc<Ha>, keys: impl Fn(Vec<KeyRecord>) -> KeysTaken) {
    let ttl = ha.nats.config.lease_ttl;
    let every = ttl / LEASE_EVERY;
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut revision: Option<u64> = None;
    loop {
        interval.tick().await;
        let value = match serde_json::to_vec(&ha.me()) {
            Ok(v) => bytes::Bytes::from(v),
            Err(_) => continue,
        };
        let lease = &ha.nats.lease;
        // A renewal that takes longer than a round counts as failed: the lease may be gone.
        let held = match revision {
            Some(rev) => tokio::time::timeout(every, lease.update(LEASE_KEY, value, rev))
                .await
                .ok()
                .and_then(Result::ok),
            None => tokio::time::timeout(every, lease.create(LEASE_KEY, value))
                .await
                .ok()
                .and_then(Result::ok),
        };
        let was_held = revision.is_some();
        revision = held;
        ha.lease_held.store(held.is_some(), Ordering::Release);
        if was_held && held.is_none() {
            eprintln!("pmargin: node {} lost the lease", ha.node_id());
            ha.set_leading(false);
        }
        if held.is_none() {
            let seen = tokio::time::timeout(every, lease.get(LEASE_KEY))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .and_then(|b| serde_json::from_slice::<LeaderInfo>(&b).ok());
            if let Some(l) = seen {
                *ha.leader.write().unwrap_or_else(|p| p.into_inner()) = Some(l);
            }
            let read = tokio::time::timeout(ttl, read_keys(&ha.nats.meta)).await;
            if let Ok(Ok(records)) = read {
                if keys(records) == KeysTaken::Stop {
                    return;
                }
            }
        }
    }
}
