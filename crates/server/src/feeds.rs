//! `pmargin serve --feeds feeds.toml` (issue 18): venue feeds into the oracle and the surface.
//!
//! Each feed's quotes go in as the oracle identity of its venue: an `oracle_feeder` bound to
//! the feed's one source, through the checks of `POST /v1/quotes` (the source must be the
//! caller's, the time not ahead of the server's clock), then the writer like any quote. Forwards
//! and smile points (a Deribit feed with `surface = true`) are market events an operator's
//! file configured, logged under the key id `feed:<name>`.
//!
//! One batch of posts is with the writer at a time. Posts that arrive meanwhile wait in a
//! [`Coalescer`], which keeps only the newest of each feed's key (an underlying's quote, an
//! instrument's mark or vol); when the batch is durable they go as the next. A message is thus
//! posted at once when the engine is idle, and a burst the engine cannot take message by message
//! (a slow disk, a starved CPU) costs one post per key instead of a queue that grows: the lag,
//! receipt to durable, stays about two commits. The log holds what was posted, so a replay of it
//! gives what the service did; `pmargin replay --feeds`, which posts every message of a
//! recording, gives the same index where no post was replaced.

use crate::auth::{Caller, Role};
use crate::error::ServiceError;
use crate::http::events::checked_quote_time;
use crate::service::state::{AppState, EventResult};
use pmargin_engine::Event;
use pmargin_feeds::config::FeedsConfig;
use pmargin_feeds::connection::{self, Received};
use pmargin_feeds::health::{FeedHealth, Health};
use pmargin_feeds::pipeline::{Batch, Coalescer, Pipeline, Post};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Messages taken from the connections at one wake-up at most (the rest at the next).
const DRAIN: usize = 1024;

/// Starts the feeds' connections and the ingest; their tasks (aborted at stop).
pub fn start(state: Arc<AppState>, config: &FeedsConfig) -> Vec<JoinHandle<()>> {
    let health = Health::new(config);
    let _ = state.feeds.set(health.clone());
    let (mut tasks, rx) = connection::spawn(config, &health);
    tasks.push(tokio::spawn(ingest(state, config.clone(), health, rx)));
    tasks
}

/// The identity a feed posts as.
fn identity(name: &str, source: &str) -> Caller {
    Caller {
        key_id: format!("feed:{name}"),
        role: Role::OracleFeeder,
        accounts: Vec::new(),
        sources: vec![source.to_string()],
    }
}

/// Runs each message through the pipeline, and hands the posts to the writer a batch at a time
/// (see the module documentation).
pub async fn ingest(
    state: Arc<AppState>,
    config: FeedsConfig,
    health: Health,
    mut rx: mpsc::Receiver<Received>,
) {
    let mut pipeline = Pipeline::new(&config);
    let callers: Arc<Vec<Caller>> = Arc::new(
        config
            .feeds
            .iter()
            .map(|f| identity(&f.name, f.source()))
            .collect(),
    );
    let mut waiting = Coalescer::default();
    // The batch with the writer signals here once durable.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut busy = false;
    let mut take = |waiting: &mut Coalescer<Instant>, msg: Received| {
        let posts = pipeline.ingest(&health, &msg);
        let replaced = waiting.push(msg.feed, msg.at, posts);
        if let Some(h) = health.feeds.get(msg.feed) {
            FeedHealth::add(&h.coalesced, replaced);
        }
    };
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { return };
                take(&mut waiting, msg);
                for _ in 1..DRAIN {
                    let Ok(msg) = rx.try_recv() else { break };
                    take(&mut waiting, msg);
                }
            }
            Some(()) = done_rx.recv(), if busy => busy = false,
        }
        if !busy && !waiting.is_empty() {
            let Batch { posts, received } = waiting.take();
            let pending = enqueue(&state, &callers, &health, posts);
            busy = true;
            tokio::spawn(acknowledge(
                health.clone(),
                pending,
                received,
                done_tx.clone(),
            ));
        }
    }
}

type Reply = oneshot::Receiver<Result<EventResult, ServiceError>>;

/// Hands a batch's posts to the writer, in order; the answers to await, with their feed.
fn enqueue(
    state: &AppState,
    callers: &[Caller],
    health: &Health,
    posts: Vec<(usize, Post)>,
) -> Vec<(usize, Reply)> {
    let mut pending = Vec::with_capacity(posts.len());
    for (feed, post) in posts {
        let (Some(caller), Some(h)) = (callers.get(feed), health.feeds.get(feed)) else {
            continue;
        };
        match event(state, caller, post).and_then(|e| state.enqueue(e, &caller.key_id, None)) {
            Ok(rx) => pending.push((feed, rx)),
            Err(e) => {
                FeedHealth::add(&h.rejected, 1);
                eprintln!("pmargin: feed {}: post refused: {e}", h.name);
            }
        }
    }
    pending
}

fn event(state: &AppState, caller: &Caller, post: Post) -> Result<Event, ServiceError> {
    match event_of(post) {
        // The checks of `POST /v1/quotes`.
        Event::Quote {
            source,
            underlying,
            price,
            ts_ms,
            confidence,
            weight,
        } => Ok(Event::Quote {
            ts_ms: checked_quote_time(state, caller, &source, Some(ts_ms))?,
            source,
            underlying,
            price,
            confidence,
            weight,
        }),
        other => Ok(other),
    }
}

/// A post as the engine's event, without the service's checks (a recording replayed through
/// `pmargin replay --feeds` is trusted as a replay file is).
pub fn event_of(post: Post) -> Event {
    match post {
        Post::Quote {
            source,
            underlying,
            price,
            confidence,
            weight,
            ts_ms,
        } => Event::Quote {
            source,
            underlying,
            price,
            ts_ms,
            confidence,
            weight,
        },
        Post::Mark {
            instrument, price, ..
        } => Event::Mark { instrument, price },
        Post::Vol {
            underlying,
            instrument,
            iv,
            ..
        } => Event::Vol {
            underlying,
            vol: iv,
            instrument: Some(instrument),
        },
    }
}

/// Awaits a batch's answers: counts what was accepted and refused, records the lag of each
/// message the batch carried once all of it is durable, then tells the ingest.
async fn acknowledge(
    health: Health,
    pending: Vec<(usize, Reply)>,
    received: Vec<(usize, Instant)>,
    done: mpsc::Sender<()>,
) {
    for (feed, rx) in pending {
        let Some(h) = health.feeds.get(feed) else {
            continue;
        };
        match rx.await {
            Ok(Ok(result)) if result.accepted => FeedHealth::add(&h.posted, 1),
            Ok(Ok(result)) => {
                FeedHealth::add(&h.rejected, 1);
                eprintln!("pmargin: feed {}: rejected: {:?}", h.name, result.outputs);
            }
            Ok(Err(e)) => {
                FeedHealth::add(&h.rejected, 1);
                eprintln!("pmargin: feed {}: {e}", h.name);
            }
            Err(_) => FeedHealth::add(&h.rejected, 1),
        }
    }
    for (feed, at) in received {
        if let Some(h) = health.feeds.get(feed) {
            h.record_lag(i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX));
        }
    }
    let _ = done.send(()).await;
}
