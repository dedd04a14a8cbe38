//! The service layer: the state ([`state`]), the writer ([`writer`]), snapshots
//! ([`snapshots`]), replay and recovery ([`replay`], [`recovery`]), the report cache
//! ([`cache`]) and the heavy reads ([`reports`], on the [`heavy`] pool), governance
//! ([`governance`], [`committee`]), settlement messages ([`settlement`]), attested external positions ([`external`]) and the
//! stream hub ([`stream`]). Nothing here knows HTTP: the HTTP layer ([`crate::http`]) calls into it,
//! never the reverse.
//!
//! Dependencies run one way, from the top of this list to the bottom: `recovery` → `writer`
//! → `replay` → `snapshots` → `state` → {`cache`, `heavy`, `governance`, `settlement`,
//! `stream`}; `committee` and `reports` → `state`.

pub mod cache;
pub mod committee;
pub mod external;
pub mod follower;
pub mod governance;
pub mod ha;
pub mod heavy;
pub mod recovery;
pub mod replay;
pub mod reports;
pub mod settlement;
pub mod snapshots;
pub mod state;
pub mod stream;
pub mod writer;
