//! # pmargin-engine: the real-time risk engine
//!
//! A stateful engine that keeps every account's margin true as prices tick and acts when an
//! account fails. It is driven only by [`event::Event`]s, applied in order by
//! [`engine::Engine::apply`], and answers with [`event::Output`]s: the same events always give
//! the same state and outputs. The [`oracle`] turns quotes from several venues into index
//! prices and says when a price cannot be trusted (liquidations are then suspended).

pub mod engine;
pub mod event;
pub mod oracle;

pub use engine::{AccountRisk, Engine, EngineConfig, EngineError};
pub use event::{Event, Output};
