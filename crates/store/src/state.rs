//! The snapshot state: the engine and the service as they were after a given event, so a
//! restart replays only the events after it.
//!
//! One format, [`STATE_FORMAT`]: the engine's own snapshot ([`EngineSnapshot`]: accounts, book
//! order, market, parameters, insurance fund, suspended underlyings, bad debt, the oracle's
//! quotes, index states and stable prices, the event counter) and what the service keeps beside
//! it ([`ServiceState`]). Restoring it and applying the later events gives the same state and
//! outputs, byte for byte, as a replay from genesis.
//!
//! Formats 1 and 2 were written by development builds before 0.1.0 and are not read: no
//! deployed data holds them. A snapshot that does not read or restore is no loss, only time:
//! the service then replays the log from genesis, which is always exact.

use crate::{Result, StoreError};
use pmargin_engine::{Engine, EngineSnapshot};
use serde::{Deserialize, Serialize};

/// Version of the [`State`] document (the number continues that of the development builds'
/// formats, so their documents are told apart rather than misread).
pub const STATE_FORMAT: u32 = 3;

/// A snapshot after some event (serde JSON in the `snapshots` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    pub engine: EngineSnapshot,
    pub service: ServiceState,
}

/// What the risk service needs beside the engine to continue from a snapshot exactly as it
/// would have after replaying the log from genesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceState {
    /// The number the next stream message gets.
    pub stream_next: u64,
    /// Events of the log up to the snapshot that the engine applied, and that it refused.
    pub events_applied: u64,
    pub events_rejected: u64,
}

impl State {
    /// The engine's state now, with the service's part.
    pub fn capture(engine: &Engine, service: ServiceState) -> State {
        State {
            format: STATE_FORMAT,
            engine: engine.snapshot(),
            service,
        }
    }

    /// Re-creates the engine. Refused for a document of another format.
    pub fn restore(&self) -> Result<Engine> {
        if self.format != STATE_FORMAT {
            return Err(StoreError::NotRestorable(format!(
                "snapshot format {} (this build reads format {STATE_FORMAT})",
                self.format
            )));
        }
        Engine::restore(self.engine.clone()).map_err(|e| StoreError::Engine(e.to_string()))
    }
}
