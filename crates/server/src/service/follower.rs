//! The writer's other half on a node of a replicated deployment ([`crate::service::ha`]): while
//! it does not lead, it applies the stream as it grows (the follower's feed) and refuses the
//! writes that reach it; once the lease is its own and the whole log applied, it leads. After
//! a commit whose outcome is unknown, it rolls the engine back to the last event it knows is in
//! the log and follows again from there.

use crate::error::ServiceError;
use crate::replicated::store::{last_seq, tail};
use crate::replicated::Nats;
use crate::service::ha::Ha;
use crate::service::replay::replayed;
use crate::service::state::{AppState, Command};
use crate::service::stream::apply_event;
use crate::store::LoggedEvent;
use futures_util::StreamExt;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a follower waits for the next event before it looks at its queue and its lease.
pub const FOLLOW_WAIT: Duration = Duration::from_millis(50);

/// A feed silent this long is checked against the stream's end (and restarted when behind).
const FEED_STALL: Duration = Duration::from_secs(1);

/// Events applied per round at most (the engine's lock is taken per event).
const FOLLOW_BATCH: usize = 4096;

/// Events the feed reads ahead of the writer.
const FEED_AHEAD: usize = 16_384;

/// The stream read from a given event on (an ordered consumer on the NATS runtime).
pub(crate) struct Feed {
    rx: tokio::sync::mpsc::Receiver<Result<LoggedEvent, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Feed {
    fn start(nats: &Nats, from: u64) -> Feed {
        let (tx, rx) = tokio::sync::mpsc::channel(FEED_AHEAD);
        let stream = nats.events.clone();
        let task = nats.spawn(async move {
            let mut messages = match tail(&stream, from).await {
                Ok(m) => m,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            while let Some(m) = messages.next().await {
                let decoded = m.map_err(|e| format!("NATS feed: {e}")).and_then(|m| {
                    let seq = m
                        .info()
                        .map_err(|e| format!("NATS feed: {e}"))?
                        .stream_sequence;
                    serde_json::from_slice::<LoggedEvent>(&m.payload)
                        .map_err(|e| format!("replicated log: message {seq}: {e}"))
                        .and_then(|e| {
                            if e.seq == seq {
                                Ok(e)
                            } else {
                                Err(format!(
                                    "replicated log: message {seq} holds event {}",
                                    e.seq
                                ))
                            }
                        })
                });
                let failed = decoded.is_err();
                if tx.send(decoded).await.is_err() || failed {
                    return;
                }
            }
        });
        Feed { rx, task }
    }
}

/// The writer's state of a replicated node.
pub(crate) struct Follower {
    pub(crate) ha: Arc<Ha>,
    feed: Option<Feed>,
    /// When the last feed error was reported (reported once a second at most).
    complained: Option<Instant>,
    /// When the feed last brought an event or was found level with the stream.
    fed: Instant,
    /// A roll-back could not read the log (a NATS server gone mid-call): the engine may hold
    /// events the log does not, so nothing is applied or led until a retry succeeds.
    unrolled: bool,
}

impl Follower {
    pub(crate) fn new(ha: Arc<Ha>) -> Follower {
        Follower {
            ha,
            feed: None,
            complained: None,
            fed: Instant::now(),
            unrolled: false,
        }
    }

    fn complain(&mut self, what: &str) {
        if self
            .complained
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            eprintln!("pmargin: node {}: {what}", self.ha.node_id());
            self.complained = Some(Instant::now());
        }
    }

    /// One round of a node that does not lead: applies what the feed brought (waiting up to
    /// [`FOLLOW_WAIT`] for it), refuses the queued writes; and when the lease is this node's
    /// and the log holds nothing it has not applied, starts leading. Returns false on a stop.
    pub(crate) fn step(&mut self, state: &AppState, rx: &mpsc::Receiver<Command>) -> bool {
        if self.unrolled && !self.retry_roll_back(state) {
            std::thread::sleep(FOLLOW_WAIT);
            return !refuse_queued(state, rx);
        }
        let nats = self.ha.nats.clone();
        let next = state.committed() + 1;
        let feed = self.feed.get_or_insert_with(|| Feed::start(&nats, next));
        let mut events = Vec::new();
        let mut failed = None;
        let first = nats_wait(&nats, &mut feed.rx, FOLLOW_WAIT);
        let mut next_item = first;
        while let Some(item) = next_item.take() {
            match item {
                Ok(e) => events.push(e),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
            if events.len() < FOLLOW_BATCH {
                next_item = feed.rx.try_recv().ok();
            }
        }
        let brought = !events.is_empty();
        if let Err(e) = apply_logged(state, events) {
            failed = Some(e);
        }
        if let Some(e) = failed {
            // The feed restarts from the last applied event.
            self.feed = None;
            self.complain(&e);
        }
        if brought {
            self.fed = Instant::now();
        } else if self.fed.elapsed() >= FEED_STALL {
            // An ordered consumer on a server that was killed can stay silent without an
            // error: behind the stream for this long, the feed starts again.
            self.fed = Instant::now();
            let stream = nats.events.clone();
            if let Ok(last) = nats.call(async move { last_seq(&stream).await }) {
                if last > state.committed() {
                    self.feed = None;
                    self.complain("the feed fell silent behind the stream: reading it again");
                }
            }
        }
        let stop = refuse_queued(state, rx);
        if !stop && self.ha.lease_held() {
            let stream = nats.events.clone();
            match nats.call(async move { last_seq(&stream).await }) {
                Ok(last) if last <= state.committed() => {
                    self.feed = None;
                    self.ha.set_leading(true);
                }
                Ok(_) => {}
                Err(e) => self.complain(&e),
            }
        }
        !stop
    }

    /// After a commit whose outcome is unknown: stops leading and rolls the engine back to the
    /// last event known to be in the log; the feed then applies whatever the log holds after
    /// it (this node's events whose acknowledgement was lost, or another leader's).
    pub(crate) fn roll_back(&mut self, state: &AppState) {
        self.ha.set_leading(false);
        self.feed = None;
        self.unrolled = true;
        self.retry_roll_back(state);
    }

    /// Rolls the engine back to the last event known to be in the log; true once done. Until
    /// then the node reports the failure and takes no write (each round tries again).
    fn retry_roll_back(&mut self, state: &AppState) -> bool {
        match rebuild_until(state, state.committed()) {
            Ok(()) => {
                self.unrolled = false;
                *state.failed.write().unwrap_or_else(|p| p.into_inner()) = None;
                true
            }
            Err(e) => {
                self.complain(&format!("cannot roll the engine back yet: {e}"));
                *state.failed.write().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("roll-back after a failed commit: {e}"));
                false
            }
        }
    }
}

/// Waits up to `wait` for the feed's next item (from the writer thread, not a runtime).
fn nats_wait<T>(nats: &Nats, rx: &mut tokio::sync::mpsc::Receiver<T>, wait: Duration) -> Option<T> {
    if let Ok(item) = rx.try_recv() {
        return Some(item);
    }
    nats.block_on(async { tokio::time::timeout(wait, rx.recv()).await.ok().flatten() })
}

/// Refuses every queued write (this node does not lead: the HTTP layer forwards writes, so
/// these come from the node's own tasks or a race with a change of leader); true on a stop.
fn refuse_queued(state: &AppState, rx: &mpsc::Receiver<Command>) -> bool {
    loop {
        match rx.try_recv() {
            Ok(Command::Submit(s)) => {
                state.metrics.refused("not_leader");
                let _ = s.reply.send(Err(not_leader()));
            }
            Ok(Command::Stop) => return true,
            Err(mpsc::TryRecvError::Empty) => return false,
            Err(mpsc::TryRecvError::Disconnected) => return true,
        }
    }
}

/// The refusal of a write on a node that does not lead.
pub fn not_leader() -> ServiceError {
    ServiceError::unavailable("this node does not lead: retry shortly (the leader is changing)")
}

/// Applies logged events the engine does not hold yet (a follower's), with their stored
/// records: the stream messages and answers are the leader's, as after a recovery.
fn apply_logged(state: &AppState, events: Vec<LoggedEvent>) -> Result<(), String> {
    let mut last = None;
    let mut items = Vec::new();
    let mut stream_next = state.hub.next_seq();
    let mut result = Ok(());
    for logged in events {
        let t = Instant::now();
        let mut engine = state.engine.write().unwrap_or_else(|p| p.into_inner());
        if logged.seq <= engine.sequence() {
            // Read again after a feed restart.
            continue;
        }
        if logged.seq != engine.sequence() + 1 {
            result = Err(format!(
                "replicated log: event {} follows engine sequence {}",
                logged.seq,
                engine.sequence()
            ));
            break;
        }
        let applied = apply_event(&mut engine, &logged.event);
        let accepted = !applied
            .outputs
            .iter()
            .any(|o| matches!(o, pmargin_engine::Output::Rejected { .. }));
        state
            .reports
            .applied(engine.sequence(), &logged.event, true, state.committed());
        drop(engine);
        state.metrics.record_event(accepted, t.elapsed());
        if let Some(record) = &logged.record {
            if record.stream_seq == stream_next {
                let event_items = record.items(logged.seq);
                stream_next += event_items.len() as u64;
                items.extend(event_items);
            }
        }
        last = Some(logged.seq);
    }
    if let Some(seq) = last {
        state.hub.publish(items);
        state.set_committed(seq);
    }
    result
}

/// Rebuilds the engine from the log up to event `until` (the latest snapshot at or before it,
/// then the events after it).
fn rebuild_until(state: &AppState, until: u64) -> Result<(), String> {
    let engine = replayed(state, Some(until))?;
    if engine.sequence() != until {
        return Err(format!(
            "the log holds events up to {} only, {until} expected",
            engine.sequence()
        ));
    }
    let mut current = state.engine.write().unwrap_or_else(|p| p.into_inner());
    let from = current.sequence();
    *current = engine;
    state.reports.rolled_back(from, until);
    Ok(())
}
