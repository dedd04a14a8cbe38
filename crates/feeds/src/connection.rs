//! One WebSocket per feed, kept open: connect, send the feed's subscriptions, hand every text
//! message on with its receive time; on a close, an error or silence longer than
//! `idle_timeout_ms`, wait (exponential backoff from `backoff_min_ms` to `backoff_max_ms`,
//! back to the minimum once a connection has delivered) and connect again. Never gives up:
//! a venue that is down for an hour is back in the index a backoff after it returns.

use crate::config::{FeedSpec, FeedsConfig};
use crate::health::{FeedHealth, Health};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// One message as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Index of the feed in the configuration.
    pub feed: usize,
    /// Wall-clock receive time, ms since the epoch.
    pub recv_ms: i64,
    /// When it was received, for the lag.
    pub at: Instant,
    pub text: String,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Messages waiting for the ingest loop at most; beyond, the newest are dropped and counted
/// as rejected (a stalled engine must not grow memory without bound).
pub const QUEUE: usize = 65_536;

/// Starts one connection task per feed; their messages arrive, in order per feed, on the
/// receiver. The tasks end when the receiver is dropped.
pub fn spawn(
    config: &FeedsConfig,
    health: &Health,
) -> (Vec<JoinHandle<()>>, mpsc::Receiver<Received>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let tasks = config
        .feeds
        .iter()
        .zip(&health.feeds)
        .enumerate()
        .map(|(i, (spec, h))| tokio::spawn(run(i, spec.clone(), h.clone(), tx.clone())))
        .collect();
    (tasks, rx)
}

/// The backoff after `failures` failed attempts in a row.
pub fn backoff(spec: &FeedSpec, failures: u32) -> Duration {
    let ms = spec
        .backoff_min_ms
        .saturating_mul(1u64 << failures.min(20))
        .min(spec.backoff_max_ms);
    Duration::from_millis(ms)
}

async fn run(feed: usize, spec: FeedSpec, health: Arc<FeedHealth>, tx: mpsc::Sender<Received>) {
    let mut failures = 0u32;
    loop {
        let delivered = session(feed, &spec, &health, &tx).await;
        health.connected.store(false, Relaxed);
        if tx.is_closed() {
            return;
        }
        failures = if delivered {
            0
        } else {
            failures.saturating_add(1)
        };
        tokio::time::sleep(backoff(&spec, failures)).await;
    }
}

/// One connection, until it ends; whether it delivered a message.
async fn session(
    feed: usize,
    spec: &FeedSpec,
    health: &FeedHealth,
    tx: &mpsc::Sender<Received>,
) -> bool {
    let idle = Duration::from_millis(spec.idle_timeout_ms.max(1));
    let connected =
        tokio::time::timeout(idle, tokio_tungstenite::connect_async(spec.url.as_str())).await;
    let mut ws = match connected {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            eprintln!(
                "pmargin: feed {}: cannot connect to {}: {e}",
                spec.name, spec.url
            );
            return false;
        }
        Err(_) => {
            eprintln!(
                "pmargin: feed {}: no connection to {} within {idle:?}",
                spec.name, spec.url
            );
            return false;
        }
    };
    health.connected.store(true, Relaxed);
    FeedHealth::add(&health.connects, 1);
    for hello in spec.hello() {
        if let Err(e) = ws.send(Message::text(hello)).await {
            eprintln!("pmargin: feed {}: subscribe: {e}", spec.name);
            FeedHealth::add(&health.disconnects, 1);
            return false;
        }
    }
    let mut delivered = false;
    loop {
        let next = match tokio::time::timeout(idle, ws.next()).await {
            Ok(next) => next,
            Err(_) => {
                eprintln!(
                    "pmargin: feed {}: no message for {idle:?}; reconnecting",
                    spec.name
                );
                break;
            }
        };
        let text = match next {
            Some(Ok(Message::Text(text))) => text.to_string(),
            Some(Ok(Message::Binary(bytes))) => match String::from_utf8(bytes.to_vec()) {
                Ok(text) => text,
                Err(_) => {
                    FeedHealth::add(&health.malformed, 1);
                    continue;
                }
            },
            Some(Ok(Message::Close(_))) | None => {
                eprintln!(
                    "pmargin: feed {}: closed by the venue; reconnecting",
                    spec.name
                );
                break;
            }
            // Pings are answered by the library on the next read.
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                eprintln!("pmargin: feed {}: {e}; reconnecting", spec.name);
                break;
            }
        };
        delivered = true;
        let recv_ms = now_ms();
        health.last_message_ms.store(recv_ms, Relaxed);
        FeedHealth::add(&health.messages, 1);
        let msg = Received {
            feed,
            recv_ms,
            at: Instant::now(),
            text,
        };
        match tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => FeedHealth::add(&health.rejected, 1),
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
    FeedHealth::add(&health.disconnects, 1);
    delivered
}
