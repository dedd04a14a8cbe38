//! The outgoing stream: margin changes, liquidations, oracle-health changes, each with a
//! sequence number. Numbers are assigned in log order from genesis, so replaying the event
//! log from scratch yields the same messages with the same numbers: that is the fallback when
//! a client resumes from before the in-memory ring.

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
    pub items: Vec<Item>,
}

fn health_of(engine: &Engine, underlying: &str) -> Option<(Health, Option<f64>)> {
    engine
        .oracle()
        .and_then(|o| o.state(underlying))
        .map(|s| (s.health, s.price))
}

/// Applies an event and derives its stream items (deterministically).
pub fn apply_event(engine: &mut Engine, event: &Event) -> Applied {
    let watched = match event {
        Event::Quote { underlying, .. } => {
            Some((underlying.clone(), health_of(engine, underlying)))
        }
        _ => None,
    };
    let outputs = engine.apply(event);
    let event_seq = engine.sequence();
    let mut items = Vec::new();
    for o in &outputs {
        let accounts = match o {
            Output::Rejected { .. } => continue,
            Output::MarginChange { account, .. }
            | Output::LiquidationFill { account, .. }
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
    if let Some((underlying, before)) = watched {
        let after = health_of(engine, &underlying);
        if let Some((health, price)) = after {
            if before.map(|b| b.0) != Some(health) {
                items.push(Item {
                    event_seq,
                    accounts: Vec::new(),
                    body: json!({ "type": "oracle_health", "underlying": underlying, "health": health, "price": price }),
                });
            }
        }
    }
    Applied { outputs, items }
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
        let (tx, _) = broadcast::channel(4096);
        Hub {
            ring: Mutex::new(Ring {
                messages: VecDeque::new(),
                next: 1,
                capacity: capacity.max(1),
            }),
            tx,
        }
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

/// Messages `from <= seq < until` regenerated by replaying `events` on `engine` (a fresh
/// engine at genesis): the fallback for a resume from before the ring.
pub fn regenerate(
    engine: &mut Engine,
    events: &[Event],
    from: u64,
    until: u64,
) -> Vec<Arc<StreamMsg>> {
    let mut seq = 1;
    let mut out = Vec::new();
    for e in events {
        for item in apply_event(engine, e).items {
            if seq >= from && seq < until {
                out.push(Arc::new(finish(seq, item)));
            }
            seq += 1;
        }
        if seq >= until {
            break;
        }
    }
    out
}
