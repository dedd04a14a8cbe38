//! The snapshot state: the engine as it was after a given event, so recovery replays only the
//! events after it.
//!
//! Format 2 carries the engine's own snapshot ([`EngineSnapshot`]): accounts, book order,
//! market, parameters, insurance fund, suspended underlyings, bad debt, the oracle's quotes,
//! index states and stable prices, and the engine's event counter. Restoring it and applying the
//! later events gives the same state and outputs, byte for byte, as a replay from genesis.
//!
//! Format 3 adds what the service keeps beside the engine ([`ServiceState`]: the next stream
//! message number and its event counters), so the service too can start from the snapshot.
//! A format-2 document (no service part) still restores the engine.
//!
//! Format 1 (written by earlier versions) kept only the engine's inputs and could not hold an
//! oracle. Such a document still reads, as a state that is not [`State::restorable`]: recovery
//! then replays the whole log, which is slower but exact.

use crate::{Result, StoreError};
use pmargin_engine::{Engine, EngineSnapshot};
use serde::{Deserialize, Serialize};

/// Version of the [`State`] document written now.
pub const STATE_FORMAT: u32 = 3;

/// The formats whose engine state restores.
const RESTORABLE: std::ops::RangeInclusive<u32> = 2..=STATE_FORMAT;

/// A snapshot of the engine after some event (serde JSON in the `snapshots` table).
///
/// Unknown fields are ignored on purpose: a format-1 document then reads with `engine` absent,
/// which marks it as not restorable rather than as a corrupt database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineSnapshot>,
    /// The service's part (format 3 on; absent when the snapshot was taken without a service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceState>,
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
    /// The engine's state now.
    pub fn capture(engine: &Engine) -> State {
        State {
            format: STATE_FORMAT,
            engine: Some(engine.snapshot()),
            service: None,
        }
    }

    /// The same state with the service's part.
    pub fn with_service(mut self, service: ServiceState) -> State {
        self.service = Some(service);
        self
    }

    /// Whether [`State::restore`] gives back the engine (false for a format-1 document).
    pub fn restorable(&self) -> bool {
        RESTORABLE.contains(&self.format) && self.engine.is_some()
    }

    /// Re-creates the engine. Refused if the snapshot is not [`State::restorable`].
    pub fn restore(&self) -> Result<Engine> {
        match &self.engine {
            Some(snapshot) if self.restorable() => {
                Engine::restore(snapshot.clone()).map_err(|e| StoreError::Engine(e.to_string()))
            }
            _ => Err(StoreError::NotRestorable(format!(
                "snapshot format {} holds no engine state (formats {} to {} do)",
                self.format,
                RESTORABLE.start(),
                RESTORABLE.end()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_1_document_reads_as_not_restorable() {
        let old = r#"{"format":1,"engine_sequence":7,"config":{},"portfolio":{"source":"x","accounts":[]},"has_oracle":true}"#;
        let state: State = serde_json::from_str(old).expect("old snapshot reads");
        assert!(!state.restorable());
        assert!(matches!(state.restore(), Err(StoreError::NotRestorable(_))));
    }
}
