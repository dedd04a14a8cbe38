//! `pmargin serve --feeds feeds.toml` (issue 18): venue feeds into the oracle and the surface.
//!
//! Each feed's quotes go in as the oracle identity of its venue: an `oracle_feeder` bound to
//! the feed's one source, through the checks of `POST /v1/quotes` (the source must be the
//! caller's, the time not ahead of the server's clock), then the writer like any quote. Forwards
//! and smile points (a Deribit feed with `surface = true`) are market events an operator's
//! file configured, logged under the key id `feed:<name>`. Messages are handed to the writer in
//! arrival order without waiting (the writer batches commits); a second task awaits each
//! message's results in the same order and records its lag, receipt to durable.

use crate::auth::{Caller, Role};
use crate::error::ServiceError;
use crate::http::events::quote_event;
use crate::service::state::{AppState, EventResult};
use pmargin_engine::Event;
use pmargin_feeds::config::FeedsConfig;
use pmargin_feeds::connection::{self, Received};
use pmargin_feeds::health::{FeedHealth, Health};
use pmargin_feeds::pipeline::{Pipeline, Post};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

type Pending = Vec<oneshot::Receiver<Result<EventResult, ServiceError>>>;

/// Starts the feeds' connections and the ingest; their tasks (aborted at stop).
pub fn start(state: Arc<AppState>, config: &FeedsConfig) -> Vec<JoinHandle<()>> {
    let health = Health::new(config);
    let _ = state.feeds.set(health.clone());
    let (mut tasks, rx) = connection::spawn(config, &health);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    tasks.push(tokio::spawn(ingest(
        state,
        config.clone(),
        health.clone(),
        rx,
        done_tx,
    )));
    tasks.push(tokio::spawn(acknowledge(health, done_rx)));
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

/// Runs each message through the pipeline and hands its posts to the writer.
pub async fn ingest(
    state: Arc<AppState>,
    config: FeedsConfig,
    health: Health,
    mut rx: mpsc::Receiver<Received>,
    done: mpsc::UnboundedSender<(usize, Instant, Pending)>,
) {
    let mut pipeline = Pipeline::new(&config);
    let callers: Vec<Caller> = config
        .feeds
        .iter()
        .map(|f| identity(&f.name, f.source()))
        .collect();
    while let Some(msg) = rx.recv().await {
        let (Some(caller), Some(h)) = (callers.get(msg.feed), health.feeds.get(msg.feed)) else {
            continue;
        };
        let mut pending = Pending::new();
        for post in pipeline.ingest(&health, &msg) {
            let queued =
                event(&state, caller, post).and_then(|e| state.enqueue(e, &caller.key_id, None));
            match queued {
                Ok(rx) => pending.push(rx),
                Err(e) => {
                    FeedHealth::add(&h.rejected, 1);
                    eprintln!("pmargin: feed {}: post refused: {e}", h.name);
                }
            }
        }
        if done.send((msg.feed, msg.at, pending)).is_err() {
            return;
        }
    }
}

fn event(state: &AppState, caller: &Caller, post: Post) -> Result<Event, ServiceError> {
    match event_of(post) {
        Event::Quote {
            source,
            underlying,
            price,
            ts_ms,
        } => quote_event(state, caller, source, underlying, price, Some(ts_ms)),
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
            ts_ms,
            ..
        } => Event::Quote {
            source,
            underlying,
            price,
            ts_ms,
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

/// Awaits each message's results in order: counts what was accepted and refused, and records
/// the message's lag once all its posts are durable.
pub async fn acknowledge(
    health: Health,
    mut done: mpsc::UnboundedReceiver<(usize, Instant, Pending)>,
) {
    while let Some((feed, at, pending)) = done.recv().await {
        let Some(h) = health.feeds.get(feed) else {
            continue;
        };
        let had_posts = !pending.is_empty();
        for rx in pending {
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
        if had_posts {
            h.record_lag(i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX));
        }
    }
}
