//! The snapshot state: the engine as it was after a given event, so recovery replays only the
//! events after it.
//!
//! Format 2 carries the engine's own snapshot ([`EngineSnapshot`]): accounts, book order,
//! market, parameters, insurance fund, suspended underlyings, bad debt, the oracle's quotes,
//! index states and stable prices, and the engine's event counter. Restoring it and applying the
//! later events gives the same state and outputs, byte for byte, as a replay from genesis.
//!
//! Format 1 (written by earlier versions) kept only the engine's inputs and could not hold an
//! oracle. Such a document still reads, as a state that is not [`State::restorable`]: recovery
//! then replays the whole log, which is slower but exact.

use crate::{Result, StoreError};
use pmargin_engine::{Engine, EngineSnapshot};
use serde::{Deserialize, Serialize};

/// Version of the [`State`] document written now.
pub const STATE_FORMAT: u32 = 2;

/// A snapshot of the engine after some event (serde JSON in the `snapshots` table).
///
/// Unknown fields are ignored on purpose: a format-1 document then reads with `engine` absent,
/// which marks it as not restorable rather than as a corrupt database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineSnapshot>,
}

impl State {
    /// The engine's state now.
    pub fn capture(engine: &Engine) -> State {
        State {
            format: STATE_FORMAT,
            engine: Some(engine.snapshot()),
        }
    }

    /// Whether [`State::restore`] gives back the engine (false for a format-1 document).
    pub fn restorable(&self) -> bool {
        self.format == STATE_FORMAT && self.engine.is_some()
    }

    /// Re-creates the engine. Refused if the snapshot is not [`State::restorable`].
    pub fn restore(&self) -> Result<Engine> {
        match (&self.engine, self.format) {
            (Some(snapshot), STATE_FORMAT) => {
                Engine::restore(snapshot.clone()).map_err(|e| StoreError::Engine(e.to_string()))
            }
            _ => Err(StoreError::NotRestorable(format!(
                "snapshot format {} holds no engine state (format {STATE_FORMAT} does)",
                self.format
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
