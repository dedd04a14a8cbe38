//! The outgoing stream: margin changes, liquidations, oracle-health changes, each with a
//! sequence number. Numbers are assigned in log order from genesis. Each logged event keeps
//! the number of its first message and what its messages are made of ([`EventRecord`]), so
//! a client resuming from before the in-memory ring gets the same messages with the same
//! numbers from the log ([`stored_messages`]), and a restart goes on numbering where it was.

use crate::store::{EventRecord, LoggedEvent, Store};
use pmargin_engine::oracle::Health;
use pmargin_engine::{Engine, Event, Output};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// One stream message, serialized once.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamMsg {
    pub seq: u64,
    /// Accounts the message is about (empty: market-wide, e.g. oracle health).
    pub accounts: Vec<String>,
    pub json: Arc<str>,
}

/// A message before it has its number.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub event_seq: u64,
    pub accounts: Vec<String>,
    pub body: Value,
}

/// What applying one event produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub outputs: Vec<Output>,
    /// Stream message bodies that do not come from the outputs (oracle health changes).
    pub extra: Vec<Value>,
}

fn health_of(engine: &Engine, underlying: &str) -> Option<(Health, Option<f64>)> {
    engine
        .oracle()
        .and_then(|o| o.state(underlying))
        .map(|s| (s.health, s.price))
}

/// Applies a logged event and derives what its stream messages need beyond the outputs
/// (deterministically). A refusal counts in the engine's sequence, as it did in logs written
/// before refusals were left out of them.
pub fn apply_event(engine: &mut Engine, event: &Event) -> Applied {
    applied_with(engine, event, |e, ev| e.apply(ev))
}

/// [`apply_event`] of a new event: a refusal leaves the sequence as it was (it is not logged).
pub fn apply_new_event(engine: &mut Engine, event: &Event) -> Applied {
    applied_with(engine, event, |e, ev| e.apply_accepted(ev))
}

fn applied_with(
    engine: &mut Engine,
    event: &Event,
    apply: impl FnOnce(&mut Engine, &Event) -> Vec<Output>,
) -> Applied {
    let watched: Vec<String> = match event {
        Event::Quote { underlying, .. } => vec![underlying.clone()],
        Event::OracleTick { .. } => engine
            .oracle()
            .map(|o| o.underlyings().map(str::to_string).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let before: Vec<_> = watched.iter().map(|u| health_of(engine, u)).collect();
    let outputs = apply(engine, event);
    let mut extra = Vec::new();
    for (underlying, before) in watched.into_iter().zip(before) {
        if let Some((health, price)) = health_of(engine, &underlying) {
            if before.map(|b| b.0) != Some(health) {
                extra.push(json!({ "type": "oracle_health", "underlying": underlying, "health": health, "price": price }));
            }
        }
    }
    Applied { outputs, extra }
}

/// The stream items of event `event_seq`: one per output but refusals, then the `extra`
/// bodies (market-wide). The one definition for live messages and those read from the log.
pub fn items(event_seq: u64, outputs: &[Output], extra: &[Value]) -> Vec<Item> {
    let mut items = Vec::new();
    for o in outputs {
        let accounts = match o {
            Output::Rejected { .. } => continue,
            Output::MarginChange { account, .. }
            | Output::LiquidationFill { account, .. }
            | Output::LiquidationSeize { account, .. }
            | Output::CloseOut { account, .. }
            | Output::Deleveraged { account, .. }
            | Output::Settled { account, .. } => vec![account.clone()],
            Output::LiquidationsSuspended { .. } => Vec::new(),
        };
        let body = serde_json::to_value(o).unwrap_or(Value::Null);
        items.push(Item {
            event_seq,
            accounts,
            body,
        });
    }
    items.extend(extra.iter().map(|body| Item {
        event_seq,
        accounts: Vec::new(),
        body: body.clone(),
    }));
    items
}

impl EventRecord {
    /// The stream items of the logged event `event_seq`.
    pub fn items(&self, event_seq: u64) -> Vec<Item> {
        items(event_seq, &self.outputs, &self.stream_extra)
    }
}

fn finish(seq: u64, item: Item) -> StreamMsg {
    let mut body = item.body;
    if let Value::Object(map) = &mut body {
        map.insert("seq".into(), json!(seq));
        map.insert("event_seq".into(), json!(item.event_seq));
    }
    StreamMsg {
        seq,
        accounts: item.accounts,
        json: Arc::from(body.to_string()),
    }
}

struct Ring {
    messages: VecDeque<Arc<StreamMsg>>,
    next: u64,
    capacity: usize,
}

/// The bounded ring of recent messages plus the live broadcast.
pub struct Hub {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<StreamMsg>>,
}

/// What a (re)connecting subscriber gets: the backlog it asked for, the number of the oldest
/// message still in memory, and a receiver for everything after the backlog.
pub struct Subscription {
    pub backlog: Vec<Arc<StreamMsg>>,
    pub oldest: u64,
    pub next: u64,
    pub rx: broadcast::Receiver<Arc<StreamMsg>>,
}

impl Hub {
    pub fn new(capacity: usize) -> Hub {
        Hub::resume(capacity, 1)
    }

    /// An empty ring whose next message gets number `next` (a restart's).
    pub fn resume(capacity: usize, next: u64) -> Hub {
        let (tx, _) = broadcast::channel(4096);
        Hub {
            ring: Mutex::new(Ring {
                messages: VecDeque::new(),
                next,
                capacity: capacity.max(1),
            }),
            tx,
        }
    }

    /// Puts already published messages back into the ring, in front of those it holds: as
    /// many of the newest as fit. Live messages may have filled it meanwhile (then none
    /// fits); while there is room, `messages` must end just before the ring's oldest.
    pub fn prepend(&self, messages: Vec<Arc<StreamMsg>>) -> Result<(), String> {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let room = ring.capacity.saturating_sub(ring.messages.len());
        if room == 0 {
            return Ok(());
        }
        let first = ring.messages.front().map_or(ring.next, |m| m.seq);
        if let Some(last) = messages.last() {
            if last.seq + 1 != first {
                return Err(format!(
                    "stored messages end at {} but the ring starts at {first}",
                    last.seq
                ));
            }
        }
        for m in messages.into_iter().rev().take(room) {
            ring.messages.push_front(m);
        }
        Ok(())
    }

    /// Numbers and publishes items, in order.
    pub fn publish(&self, items: Vec<Item>) {
        if items.is_empty() {
            return;
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        for item in items {
            let msg = Arc::new(finish(ring.next, item));
            ring.next += 1;
            if ring.messages.len() == ring.capacity {
                ring.messages.pop_front();
            }
            ring.messages.push_back(msg.clone());
            let _ = self.tx.send(msg);
        }
    }

    /// The next sequence number to be assigned.
    pub fn next_seq(&self) -> u64 {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).next
    }

    /// Subscribes and returns the ring's messages with `seq >= from` (atomically with the
    /// subscription, so nothing falls between backlog and live).
    pub fn subscribe(&self, from: u64) -> Subscription {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        let oldest = ring.messages.front().map_or(ring.next, |m| m.seq);
        let backlog = ring
            .messages
            .iter()
            .filter(|m| m.seq >= from)
            .cloned()
            .collect();
        Subscription {
            backlog,
            oldest,
            next: ring.next,
            rx,
        }
    }

    /// Ring messages with `seq >= from`.
    pub fn since(&self, from: u64) -> (Vec<Arc<StreamMsg>>, u64) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = ring.messages.front().map_or(ring.next, |m| m.seq);
        (
            ring.messages
                .iter()
                .filter(|m| m.seq >= from)
                .cloned()
                .collect(),
            oldest,
        )
    }
}

/// Events read from the store at a time (with the store locked) while reading stored
/// messages.
const PAGE: usize = 256;

/// The messages of `logged`, an event of the log, numbered from its record; an error if it has
/// none.
pub fn messages_of(logged: &LoggedEvent) -> Result<Vec<Arc<StreamMsg>>, String> {
    let record = logged.record.as_ref().ok_or_else(|| {
        format!(
            "event log: event {} has no stored record (logged by an earlier build; a restart stores it)",
            logged.seq
        )
    })?;
    Ok(record
        .items(logged.seq)
        .into_iter()
        .zip(record.stream_seq..)
        .map(|(item, n)| Arc::new(finish(n, item)))
        .collect())
}

/// Messages `from <= seq < until` read from the log's records (before the in-memory ring), the
/// store locked one page of events at a time so ingest goes on meanwhile.
pub fn stored_messages(
    store: &Mutex<Box<dyn Store>>,
    from: u64,
    until: u64,
) -> Result<Vec<Arc<StreamMsg>>, String> {
    let lock = || store.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::new();
    if from >= until {
        return Ok(out);
    }
    let mut seq = lock().event_of_stream_message(from)?.unwrap_or(1);
    let mut expected: Option<u64> = None;
    loop {
        let page = lock().events_page(seq, PAGE)?;
        let Some(last) = page.last() else {
            break;
        };
        seq = last.seq + 1;
        for logged in &page {
            let stream_seq = logged.record.as_ref().map(|r| r.stream_seq);
            if let (Some(want), Some(got)) = (expected, stream_seq) {
                if want != got {
                    return Err(format!(
                        "event log: event {} starts at stream message {got}, {want} expected",
                        logged.seq
                    ));
                }
            }
            let messages = messages_of(logged)?;
            expected = Some(stream_seq.unwrap_or(0) + messages.len() as u64);
            for m in messages {
                if m.seq >= until {
                    return Ok(out);
                }
                if m.seq >= from {
                    out.push(m);
                }
            }
        }
    }
    Ok(out)
}
