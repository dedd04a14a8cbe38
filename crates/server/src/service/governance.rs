//! Governed parameters: proposals with an impact report, committee approvals
//! (ed25519 over the deployment id and the proposal hash), cancellation by M members,
//! activation after quorum and the timelock counted from quorum, through the normal durable
//! event path (an `activate_params` event), and the guardian's bounded emergency path with its
//! ratification or lapse.
//!
//! Time comes from the [`Clock`] of [`crate::ServerConfig::governance_clock`] (the system
//! clock unless a test injects a [`pmargin_governance::ManualClock`]). Every signature names
//! the deployment id ([`crate::ServerConfig::deployment_id`], by default derived from the
//! settlement domain: [`default_deployment_id`]). An unratified emergency set lapses on a
//! timer ([`crate::service::committee::start_lapse_timer`], every [`LAPSE_CHECK_EVERY`]) and
//! before any governance write: the base set goes back in force through an `activate_params`
//! event, so a replay of the log reproduces it.
//!
//! This module holds the governance of a running service ([`Gov`]) and opens it at start; the
//! committee's acts on it are in [`crate::service::committee`].
//!
//! The committee is configured at start ([`crate::ServerConfig::committee`], or
//! `committee.json` in the data directory, or else the committee stored with the governance
//! state). The governance state (committee, proposals with their approvals, every parameter
//! version) is kept by the store: in the SQLite store, in tables written in one transaction
//! with the audit entry before the API answers (see [`crate::store::Store::put_governance`]).
//!
//! On start the stored state is loaded. If the event log is ahead of the stored governance state
//! (a crash between the activation event and the governance write) the version in force is
//! recorded: as the activation of the pending proposal with exactly those parameters, or
//! else as `recovered`. A stored state ahead of the event log is refused.

use crate::service::settlement::SettlementConfig;
use crate::store::{AuditEntry, Store};
use pmargin_core::Params;
use pmargin_governance::{Clock, Committee, Governance, SystemClock};
use serde_json::json;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex, OnceLock};

/// How often the lapse timer looks for an emergency set past its ratification window.
pub const LAPSE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The key id the service's own governance steps (a lapse) are logged and audited under.
pub const GOVERNANCE_KEY_ID: &str = "governance";

/// The deployment id when none is configured: `eip712:<chain id>:0x<verifying contract>`,
/// from the EIP-712 domain of the settlement messages. Two deployments that settle on
/// different chains or contracts (staging and production) therefore differ without any
/// setting; two that share a domain would accept each other's settlement messages anyway,
/// and must be told apart with `--deployment-id`.
pub fn default_deployment_id(settlement: &SettlementConfig) -> String {
    format!(
        "eip712:{}:0x{}",
        settlement.chain_id,
        hex::encode(settlement.verifying_contract)
    )
}

/// The governance of a running service.
pub struct Gov {
    pub state: tokio::sync::Mutex<Option<Governance>>,
    clock: OnceLock<Arc<dyn Clock>>,
    timer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The store lock of the service.
pub(crate) type StoreLock = Mutex<Box<dyn Store>>;

pub(crate) fn lock(store: &StoreLock) -> std::sync::MutexGuard<'_, Box<dyn Store>> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gov {
    pub fn disabled() -> Gov {
        Gov {
            state: tokio::sync::Mutex::new(None),
            clock: OnceLock::new(),
            timer: Mutex::new(None),
        }
    }

    /// Now, by the governance clock (the system clock until [`Gov::open`] sets one).
    pub fn now_ms(&self) -> i64 {
        self.clock
            .get()
            .map_or_else(|| SystemClock.now_ms(), |c| c.now_ms())
    }

    /// Starts the lapse timer with `spawn` (once); [`Gov::stop_timer`] ends it.
    pub fn start_timer(&self, spawn: impl FnOnce() -> tokio::task::JoinHandle<()>) {
        let mut timer = self.timer.lock().unwrap_or_else(|p| p.into_inner());
        if timer.is_none() {
            *timer = Some(spawn());
        }
    }

    pub fn stop_timer(&self) {
        if let Some(t) = self.timer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }

    /// Loads the governance state from the store, with the committee from `committee`,
    /// `<dir>/committee.json` or the store, and reconciles it with the engine's active
    /// parameters `active`. Binds every signature to `deployment_id` and reads time from
    /// `clock`. Installs the governance (once, at start); without any committee the
    /// governance stays disabled.
    pub async fn open(
        &self,
        store: &StoreLock,
        dir: Option<&FsPath>,
        committee: Option<Committee>,
        active: &Params,
        deployment_id: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<(), String> {
        let _ = self.clock.set(clock);
        let committee = match committee {
            Some(c) => Some(c),
            None => match dir.map(|d| d.join("committee.json")) {
                Some(path) if path.exists() => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    Some(
                        serde_json::from_str::<Committee>(&text)
                            .map_err(|e| format!("{}: {e}", path.display()))?,
                    )
                }
                _ => None,
            },
        };
        let stored = lock(store).governance()?;
        let prev = stored.clone();
        let loaded = stored;
        let now = self.now_ms();
        let mut notes = Vec::new();
        let g = match (loaded, committee) {
            (None, None) => return Ok(()),
            (None, Some(c)) => {
                notes.push("created".to_string());
                Governance::new(c, active.clone(), now).map_err(|e| format!("governance: {e}"))?
            }
            (Some(mut g), c) => {
                if let Some(c) = c.filter(|c| c != g.committee()) {
                    g.replace_committee(c, now)
                        .map_err(|e| format!("governance: committee: {e}"))?;
                    notes.push("committee replaced".into());
                }
                match active.version.cmp(&g.active_version()) {
                    std::cmp::Ordering::Equal => {}
                    std::cmp::Ordering::Greater => {
                        g.record_recovered(active.clone(), now)
                            .map_err(|e| format!("governance: {e}"))?;
                        notes.push(format!(
                            "version {} found in force in the event log recorded",
                            active.version
                        ));
                    }
                    std::cmp::Ordering::Less => {
                        return Err(format!(
                            "governance: the stored governance state has parameter version {} in force but the event log only reaches version {}; the database does not match the event log",
                            g.active_version(),
                            active.version
                        ))
                    }
                }
                g
            }
        };
        let mut g = g;
        let before = g.clone();
        g.set_deployment_id(deployment_id, now);
        if g.proposals().ne(before.proposals()) {
            notes.push(format!(
                "quorum moments re-derived for deployment `{deployment_id}`"
            ));
        }
        if !notes.is_empty() {
            let audit = AuditEntry {
                ts_ms: now,
                key_id: "system".into(),
                action: "governance_open".into(),
                target: "governance".into(),
                outcome: notes.join("; "),
                detail: json!({ "active_version": g.active_version(), "proposals": g.proposals().count() }),
            };
            lock(store).put_governance(prev.as_ref(), &g, &audit)?;
        }
        *self.state.lock().await = Some(g);
        Ok(())
    }
}
