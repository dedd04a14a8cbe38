//! The governance state in the database: the committee, every proposal with its approvals and
//! state, and every parameter version that was in force (schema version 3).
//!
//! The rows are kept generic (JSON documents per row) so this crate needs no governance
//! types; the service converts its governance state to [`GovernanceRows`] and back. A change
//! ([`GovernanceChange`]) is written in one transaction together with its audit entry, so
//! when [`Store::save_governance`] returns the change and its audit trail are durable.
//!
//! Tables (v2 `proposals` and `param_versions`, extended by migration 3):
//! - `governance`: one row, the committee (JSON) and, from migration 5, the guardian's latest
//!   emergency episode (`emergency`, JSON; NULL when there was none);
//! - `proposals`: one row per proposal: the proposal document, `status` (`pending`,
//!   `activated`, `superseded`, `cancelled`), `state` (the full state as JSON), submission
//!   time and, from migration 5, `quorum_ms`, the moment the M-th approval arrived (the
//!   timelock runs from it);
//! - `proposal_approvals`: the approvals of each proposal in the order they came;
//! - `param_versions`: each version in force, with how it came into force (`activation`).

use crate::{seq_i64, seq_u64, Result, Store, StoreError};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde_json::Value;

/// Migration 3: the governance state (see the module docs).
pub const MIGRATION: &str = "CREATE TABLE governance (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        committee TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
     );
     ALTER TABLE proposals ADD COLUMN state TEXT;
     CREATE TABLE proposal_approvals (
        proposal_id TEXT NOT NULL REFERENCES proposals(id),
        position INTEGER NOT NULL,
        member TEXT NOT NULL,
        signature TEXT NOT NULL,
        PRIMARY KEY (proposal_id, position)
     );
     ALTER TABLE param_versions ADD COLUMN activation TEXT;";

/// Migration 5: when each proposal reached quorum, and the guardian's emergency episode.
pub const MIGRATION_QUORUM_EMERGENCY: &str = "ALTER TABLE proposals ADD COLUMN quorum_ms INTEGER;
     ALTER TABLE governance ADD COLUMN emergency TEXT;";

/// One approval: a member id and its signature (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRow {
    pub member: String,
    pub signature: String,
}

/// One proposal with its approvals.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposalRow {
    pub id: u64,
    /// The proposal document.
    pub proposal: Value,
    pub submitted_ms: i64,
    /// When the M-th valid approval arrived (`None` before, and in rows written before
    /// migration 5).
    pub quorum_ms: Option<i64>,
    /// `pending`, `activated`, `superseded` or `cancelled` (for queries).
    pub status: String,
    /// The full state document.
    pub state: Value,
    pub approvals: Vec<ApprovalRow>,
}

/// One parameter version that was in force.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRow {
    pub version: u64,
    pub params: Value,
    pub activated_ms: i64,
    /// How it came into force (a JSON document; `None` in rows written before migration 3).
    pub activation: Option<Value>,
    /// The proposal that put it in force, if any.
    pub proposal_id: Option<u64>,
}

/// The stored governance state.
#[derive(Debug, Clone, PartialEq)]
pub struct GovernanceRows {
    pub committee: Value,
    /// The guardian's latest emergency episode, if any.
    pub emergency: Option<Value>,
    /// By id.
    pub proposals: Vec<ProposalRow>,
    /// Oldest first.
    pub versions: Vec<VersionRow>,
}

/// What one governance step changed.
#[derive(Debug, Clone, Copy)]
pub struct GovernanceChange<'a> {
    pub ts_ms: i64,
    /// The committee (written when given).
    pub committee: Option<&'a Value>,
    /// The emergency episode (written when given; JSON `null` clears it). Written only with
    /// a committee row present (in the same change or before).
    pub emergency: Option<&'a Value>,
    /// Proposals added or changed (approvals replaced by the given list).
    pub proposals: &'a [ProposalRow],
    /// Versions that came into force (new versions only).
    pub versions: &'a [VersionRow],
    /// An audit entry written in the same transaction: key id, action, detail.
    pub audit: Option<(Option<&'a str>, &'a str, &'a Value)>,
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("governance: {what}"))
}

impl Store {
    /// Writes a governance change and its audit entry in one transaction; durable on return.
    pub fn save_governance(&mut self, change: &GovernanceChange<'_>) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(committee) = change.committee {
            tx.execute(
                "INSERT INTO governance (id, committee, updated_ms) VALUES (1, ?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET committee = excluded.committee, updated_ms = excluded.updated_ms",
                params![committee.to_string(), change.ts_ms],
            )?;
        }
        if let Some(emergency) = change.emergency {
            let text = (!emergency.is_null()).then(|| emergency.to_string());
            let updated = tx.execute(
                "UPDATE governance SET emergency = ?1, updated_ms = ?2 WHERE id = 1",
                params![text, change.ts_ms],
            )?;
            if updated != 1 {
                return Err(corrupt("an emergency record without a committee row"));
            }
        }
        for p in change.proposals {
            let id = p.id.to_string();
            tx.execute(
                "INSERT INTO proposals (id, proposal, status, created_ms, updated_ms, state, quorum_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET proposal = excluded.proposal, status = excluded.status,
                    updated_ms = excluded.updated_ms, state = excluded.state,
                    quorum_ms = excluded.quorum_ms",
                params![
                    id,
                    p.proposal.to_string(),
                    p.status,
                    p.submitted_ms,
                    change.ts_ms,
                    p.state.to_string(),
                    p.quorum_ms
                ],
            )?;
            tx.execute(
                "DELETE FROM proposal_approvals WHERE proposal_id = ?1",
                [&id],
            )?;
            for (i, a) in p.approvals.iter().enumerate() {
                tx.execute(
                    "INSERT INTO proposal_approvals (proposal_id, position, member, signature) VALUES (?1, ?2, ?3, ?4)",
                    params![id, i as i64, a.member, a.signature],
                )?;
            }
        }
        for v in change.versions {
            tx.execute(
                "INSERT INTO param_versions (version, params, activated_ms, proposal_id, activation) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    seq_i64(v.version)?,
                    v.params.to_string(),
                    v.activated_ms,
                    v.proposal_id.map(|id| id.to_string()),
                    v.activation.as_ref().map(Value::to_string)
                ],
            )?;
        }
        if let Some((key_id, action, detail)) = change.audit {
            tx.execute(
                "INSERT INTO audit (ts_ms, key_id, action, detail) VALUES (?1, ?2, ?3, ?4)",
                params![change.ts_ms, key_id, action, detail.to_string()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The stored governance state; `None` until a committee was saved.
    pub fn load_governance(&self) -> Result<Option<GovernanceRows>> {
        let row: Option<(String, Option<String>)> = self
            .conn
            .query_row(
                "SELECT committee, emergency FROM governance WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((committee, emergency)) = row else {
            return Ok(None);
        };
        let committee = serde_json::from_str(&committee).map_err(corrupt)?;
        let emergency = emergency
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(|e| corrupt(format!("emergency: {e}")))?;
        let mut proposals = Vec::new();
        {
            let mut stmt = self.conn.prepare(
                "SELECT id, proposal, created_ms, status, state, quorum_ms FROM proposals WHERE state IS NOT NULL",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            })?;
            let mut approvals = self.conn.prepare(
                "SELECT member, signature FROM proposal_approvals WHERE proposal_id = ?1 ORDER BY position",
            )?;
            for row in rows {
                let (id_text, proposal, submitted_ms, status, state, quorum_ms) = row?;
                let id: u64 = id_text
                    .parse()
                    .map_err(|_| corrupt(format!("proposal id `{id_text}`")))?;
                let list = approvals
                    .query_map([&id_text], |r| {
                        Ok(ApprovalRow {
                            member: r.get(0)?,
                            signature: r.get(1)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                proposals.push(ProposalRow {
                    id,
                    proposal: serde_json::from_str(&proposal)
                        .map_err(|e| corrupt(format!("proposal {id}: {e}")))?,
                    submitted_ms,
                    quorum_ms,
                    status,
                    state: serde_json::from_str(&state)
                        .map_err(|e| corrupt(format!("proposal {id}: {e}")))?,
                    approvals: list,
                });
            }
        }
        proposals.sort_by_key(|p| p.id);
        let mut versions = Vec::new();
        {
            let mut stmt = self.conn.prepare(
                "SELECT version, params, activated_ms, proposal_id, activation FROM param_versions ORDER BY version",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?;
            for row in rows {
                let (version, params, activated_ms, proposal_id, activation) = row?;
                let version = seq_u64(version)?;
                versions.push(VersionRow {
                    version,
                    params: serde_json::from_str(&params)
                        .map_err(|e| corrupt(format!("version {version}: {e}")))?,
                    activated_ms,
                    activation: activation
                        .map(|a| serde_json::from_str(&a))
                        .transpose()
                        .map_err(|e| corrupt(format!("version {version}: {e}")))?,
                    proposal_id: proposal_id.and_then(|p| p.parse().ok()),
                });
            }
        }
        Ok(Some(GovernanceRows {
            committee,
            emergency,
            proposals,
            versions,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MIGRATIONS, SCHEMA_VERSION};
    use serde_json::json;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pmargin-store-gov-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn proposal(id: u64, approvals: usize) -> ProposalRow {
        ProposalRow {
            id,
            proposal: json!({ "id": id, "rationale": "wider" }),
            submitted_ms: 100 + id as i64,
            quorum_ms: None,
            status: "pending".into(),
            state: json!({ "state": "pending" }),
            approvals: (0..approvals)
                .map(|i| ApprovalRow {
                    member: format!("m{i}"),
                    signature: format!("{i:02x}"),
                })
                .collect(),
        }
    }

    #[test]
    fn governance_round_trips_and_changes_are_upserts() {
        let dir = temp_dir("roundtrip");
        let mut s = Store::open(&dir).unwrap();
        assert_eq!(s.load_governance().unwrap(), None);
        let committee = json!({ "members": [], "threshold": 2 });
        let genesis = VersionRow {
            version: 1,
            params: json!({ "version": 1 }),
            activated_ms: 5,
            activation: Some(json!({ "via": "genesis" })),
            proposal_id: None,
        };
        let detail = json!({ "x": 1 });
        s.save_governance(&GovernanceChange {
            ts_ms: 5,
            committee: Some(&committee),
            emergency: None,
            proposals: &[proposal(1, 1)],
            versions: std::slice::from_ref(&genesis),
            audit: Some((Some("admin"), "governance", &detail)),
        })
        .unwrap();
        // Approval added, activated, a version through it.
        let mut p = proposal(1, 2);
        p.status = "activated".into();
        p.state = json!({ "state": "activated", "at_ms": 9 });
        let v2 = VersionRow {
            version: 2,
            params: json!({ "version": 2 }),
            activated_ms: 9,
            activation: Some(json!({ "via": "proposal", "id": 1 })),
            proposal_id: Some(1),
        };
        s.save_governance(&GovernanceChange {
            ts_ms: 9,
            committee: None,
            emergency: None,
            proposals: &[p.clone(), proposal(2, 0)],
            versions: std::slice::from_ref(&v2),
            audit: None,
        })
        .unwrap();
        // A version cannot be written twice (the transaction rolls back entirely).
        assert!(s
            .save_governance(&GovernanceChange {
                ts_ms: 10,
                committee: None,
                emergency: None,
                proposals: &[proposal(3, 0)],
                versions: std::slice::from_ref(&v2),
                audit: None,
            })
            .is_err());
        drop(s);
        let s = Store::open(&dir).unwrap();
        let rows = s.load_governance().unwrap().unwrap();
        assert_eq!(rows.committee, committee);
        assert_eq!(rows.proposals, vec![p, proposal(2, 0)]);
        assert_eq!(rows.versions, vec![genesis, v2]);
        let audit = s.audit_list(0, 10).unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].action, "governance");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn quorum_moments_and_the_emergency_episode_round_trip() {
        let dir = temp_dir("quorum");
        let mut s = Store::open(&dir).unwrap();
        let committee = json!({ "threshold": 2 });
        // An emergency before any committee row has nowhere to go: refused, nothing written.
        let episode = json!({ "version": 2, "base_version": 1, "state": "pending" });
        assert!(s
            .save_governance(&GovernanceChange {
                ts_ms: 1,
                committee: None,
                emergency: Some(&episode),
                proposals: &[proposal(1, 0)],
                versions: &[],
                audit: None,
            })
            .is_err());
        assert_eq!(s.load_governance().unwrap(), None);
        let mut p = proposal(1, 2);
        p.quorum_ms = Some(1_234);
        s.save_governance(&GovernanceChange {
            ts_ms: 2,
            committee: Some(&committee),
            emergency: Some(&episode),
            proposals: std::slice::from_ref(&p),
            versions: &[],
            audit: None,
        })
        .unwrap();
        drop(s);
        let mut s = Store::open(&dir).unwrap();
        let rows = s.load_governance().unwrap().unwrap();
        assert_eq!(rows.proposals, vec![p.clone()]);
        assert_eq!(rows.emergency, Some(episode));
        // Cancelled, and the episode cleared with JSON null; a change without `emergency`
        // leaves it as it is.
        p.status = "cancelled".into();
        p.state = json!({ "state": "cancelled", "at_ms": 3, "by": ["a", "b"] });
        p.quorum_ms = None;
        s.save_governance(&GovernanceChange {
            ts_ms: 3,
            committee: None,
            emergency: Some(&Value::Null),
            proposals: std::slice::from_ref(&p),
            versions: &[],
            audit: None,
        })
        .unwrap();
        let rows = s.load_governance().unwrap().unwrap();
        assert_eq!((rows.proposals, rows.emergency), (vec![p], None));
        let count = |status: &str| -> i64 {
            s.conn
                .query_row(
                    "SELECT COUNT(*) FROM proposals WHERE status = ?1",
                    [status],
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert_eq!((count("cancelled"), count("pending")), (1, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_version_2_database_migrates_and_keeps_its_rows() {
        let dir = temp_dir("migrate");
        {
            // A database as the previous build left it: schema version 2, with rows.
            let conn = rusqlite::Connection::open(dir.join(crate::DB_FILE)).unwrap();
            for (i, sql) in MIGRATIONS[..2].iter().enumerate() {
                conn.execute_batch(sql).unwrap();
                conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                    .unwrap();
            }
            conn.execute(
                "INSERT INTO proposals (id, proposal, status, created_ms, updated_ms) VALUES ('p-old', '{}', 'pending', 1, 1)",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO param_versions (version, params, activated_ms, proposal_id) VALUES (1, '{\"version\":1}', 1, NULL)",
                [],
            )
            .unwrap();
        }
        let mut s = Store::open(&dir).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        const { assert!(SCHEMA_VERSION >= 3) };
        // Old rows are still there; the pre-migration proposal has no state and is not loaded
        // as governance state, the old version has no activation.
        let rows: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM proposals", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        assert_eq!(s.load_governance().unwrap(), None);
        let committee = json!({ "threshold": 1 });
        s.save_governance(&GovernanceChange {
            ts_ms: 2,
            committee: Some(&committee),
            emergency: None,
            proposals: &[proposal(7, 1)],
            versions: &[],
            audit: None,
        })
        .unwrap();
        let rows = s.load_governance().unwrap().unwrap();
        assert_eq!(rows.proposals, vec![proposal(7, 1)]);
        assert_eq!(rows.versions.len(), 1);
        assert_eq!(rows.versions[0].activation, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
