//! # pmargin-engine: the real-time risk engine
//!
//! A stateful engine that keeps every account's margin true as prices tick and acts when an
//! account fails. It is driven only by [`event::Event`]s, applied in order by
//! [`engine::Engine::apply`], and answers with [`event::Output`]s: the same events always give
//! the same state and outputs. The [`oracle`] turns quotes from several venues into index
//! prices and says when a price cannot be trusted (liquidations are then suspended).
//! A refused event changes nothing; why it was refused is a [`RejectReason`] (its text is the
//! reason an [`Output::Rejected`] carries, its [`RejectReason::label`] a short stable name).
//!
//! ## Snapshots and recovery
//!
//! [`Engine::snapshot`] returns an [`EngineSnapshot`]: everything the events made of the
//! engine (configuration, parameter set, market, every account's balances and positions in
//! the engine's order, the insurance fund, the sequence number, suspended underlyings, bad
//! debt, and the oracle's quotes, index and stable prices and pending circuit-breaker
//! candidates). It is `serde` serializable; with `serde_json` (`float_roundtrip`, enabled for
//! the workspace) every number round-trips exactly. [`Engine::restore`] rebuilds the engine
//! from it, recomputing risk arrays and every account's figures. Recovery is then the latest
//! snapshot plus the events after it: restoring the snapshot taken after event `k` (its
//! `sequence` is `k`) and applying events `k+1..n` gives the same outputs and the same state,
//! byte for byte, as applying `1..n` from genesis.
//!
//! ```no_run
//! # use pmargin_engine::{Engine, EngineSnapshot, Event};
//! # fn recover(engine: &Engine, later: &[Event]) -> Result<(), Box<dyn std::error::Error>> {
//! let json = serde_json::to_string(&engine.snapshot())?;
//! // ... crash ...
//! let snapshot: EngineSnapshot = serde_json::from_str(&json)?;
//! let mut engine = Engine::restore(snapshot)?;
//! for event in later {
//!     engine.apply(event);
//! }
//! # Ok(())
//! # }
//! ```

pub mod engine;
pub mod event;
pub mod oracle;
mod prefetch;
pub mod rejection;

pub use engine::{AccountRisk, Engine, EngineConfig, EngineError, EngineSnapshot};
pub use event::{Event, Output};
pub use rejection::{RejectReason, Rejection};
