//! Where the service keeps what must survive a restart: the genesis state, the event log (with
//! idempotency keys, and with each event what applying it produced: [`EventRecord`]), engine
//! snapshots, the governance state, the audit trail and the API keys' records (keyed hashes
//! only).
//!
//! [`Store`] is the seam: the server speaks only this trait (a test wraps it to inject storage
//! failures). [`SqliteStore`] is the durable store: everything in pmargin-store's database.
//! [`MemoryStore`] keeps nothing across restarts (a server without a data directory: tests,
//! demos).
//!
//! A data directory written by the build before (genesis and keys in `genesis.json` and
//! `keys.json` beside the database) is imported once when the store opens, and the files are
//! renamed `*.imported` ([`IMPORTED_FILES`]).

use crate::auth::KeyRecord;
use pmargin_engine::{EngineConfig, Event, Output};
use pmargin_governance::{
    Activation, Approval, Committee, EmergencyRecord, Governance, ProposalRecord, VersionRecord,
};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub type StoreResult<T> = Result<T, String>;

/// The state the log starts from: the input texts (docs/FORMATS.md) and the engine settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub portfolio: String,
    pub market: String,
    pub params: String,
    pub config: EngineConfig,
}

/// One applied event. `seq` equals the engine's sequence after applying it. A refused event
/// is not logged (it changed nothing, and takes no number); logs written before that rule
/// hold refusals with their numbers, and replaying them refuses them again, so sequences stay
/// aligned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggedEvent {
    pub seq: u64,
    pub ts_ms: i64,
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Hex SHA-256 of the request body that carried the event (with an idempotency key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_hash: Option<String>,
    pub event: Event,
    /// What applying it produced; `None` for an event logged by a build that did not keep it
    /// (recovery then replays from genesis and stores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<EventRecord>,
}

/// What applying a logged event produced, logged with it (in the same commit) so that the
/// answer to a retried request, the stream and the liquidation instructions come from the log
/// without an engine, however old the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRecord {
    pub outputs: Vec<Output>,
    /// The number of the event's first stream message (the next number if it made none).
    pub stream_seq: u64,
    /// Stream message bodies the outputs do not give (oracle health changes), in order after
    /// those of the outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stream_extra: Vec<serde_json::Value>,
    /// The parameter version in force after the event.
    pub params_version: u64,
}

/// One write, by whom, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    pub ts_ms: i64,
    pub key_id: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    #[serde(default)]
    pub detail: serde_json::Value,
}

pub trait Store: Send {
    /// Whether a committed write survives a crash.
    fn durable(&self) -> bool;
    fn genesis(&mut self) -> StoreResult<Option<Genesis>>;
    fn init(&mut self, genesis: &Genesis) -> StoreResult<()>;
    /// Appends events and audit entries; returns once they are durable.
    fn commit(&mut self, events: &[LoggedEvent], audit: &[AuditEntry]) -> StoreResult<()>;
    /// Every logged event with `seq >= from`, in order.
    fn events_from(&mut self, from: u64) -> StoreResult<Vec<LoggedEvent>>;
    /// At most `limit` logged events with `seq >= from`, in order.
    fn events_page(&mut self, from: u64, limit: usize) -> StoreResult<Vec<LoggedEvent>> {
        let mut events = self.events_from(from)?;
        events.truncate(limit);
        Ok(events)
    }
    /// At most `limit` logged events with `seq >= from` that may hold a liquidation fill or a
    /// seizure (every event whose record has one, and any event without a record), in order,
    /// and the last event the search covered (the log's last one, unless the page is full).
    fn liquidation_events_page(
        &mut self,
        from: u64,
        limit: usize,
    ) -> StoreResult<(Vec<LoggedEvent>, u64)> {
        let mut found = Vec::new();
        let mut through = from.saturating_sub(1);
        for e in self.events_from(from)? {
            through = e.seq;
            let fills = e.record.as_ref().is_none_or(|r| {
                r.outputs.iter().any(|o| {
                    matches!(
                        o,
                        Output::LiquidationFill { .. } | Output::LiquidationSeize { .. }
                    )
                })
            });
            if fills {
                found.push(e);
                if found.len() >= limit {
                    break;
                }
            }
        }
        Ok((found, through))
    }
    /// The first logged event without its [`EventRecord`], if any.
    fn first_unrecorded(&mut self) -> StoreResult<Option<u64>> {
        Ok(self
            .events_from(0)?
            .iter()
            .find(|e| e.record.is_none())
            .map(|e| e.seq))
    }
    /// Adds the records of logged events that lack them (`(seq, record)`), durably.
    fn put_records(&mut self, records: &[(u64, EventRecord)]) -> StoreResult<()>;
    /// The sequence number of the logged event holding stream message `msg`: the last one
    /// whose first message is at most `msg` (`None`: all start after it).
    fn event_of_stream_message(&mut self, msg: u64) -> StoreResult<Option<u64>> {
        Ok(self
            .events_from(0)?
            .iter()
            .take_while(|e| e.record.as_ref().is_none_or(|r| r.stream_seq <= msg))
            .filter(|e| e.record.is_some())
            .map(|e| e.seq)
            .last())
    }
    /// Whether [`Store::event_by_key`] finds every logged idempotency key. Without it the
    /// service keeps every key's answer in memory (which needs the whole log at start).
    fn finds_keys(&self) -> bool {
        false
    }
    /// The logged event with this idempotency key (where [`Store::finds_keys`]).
    fn event_by_key(&mut self, _key: &str) -> StoreResult<Option<LoggedEvent>> {
        Ok(None)
    }
    /// Whether the store keeps engine snapshots (recovery then replays only the events after
    /// the latest).
    fn keeps_snapshots(&self) -> bool {
        false
    }
    /// The latest snapshot and the event it follows.
    fn latest_snapshot(&mut self) -> StoreResult<Option<(u64, pmargin_store::State)>> {
        Ok(None)
    }
    /// Stores a snapshot (a serialized [`pmargin_store::State`]) taken after event `seq`, and
    /// keeps only the latest few.
    fn save_snapshot(&mut self, seq: u64, _json: &str) -> StoreResult<()> {
        Err(format!("snapshot at {seq}: this store keeps no snapshots"))
    }
    fn audit_entries(&mut self) -> StoreResult<Vec<AuditEntry>>;
    /// The replicated log behind this store, if any: the node then leads or follows (see
    /// [`crate::service::ha`]).
    fn replicated(&self) -> Option<std::sync::Arc<crate::replicated::Nats>> {
        None
    }
    fn keys(&mut self) -> StoreResult<Vec<KeyRecord>>;
    /// Adds or replaces (by id) a key record, durably.
    fn put_key(&mut self, key: &KeyRecord) -> StoreResult<()>;
    /// The stored governance state (`None`: none stored yet).
    fn governance(&mut self) -> StoreResult<Option<Governance>>;
    /// Stores the governance state `next` (what changed since `prev`, the state stored before,
    /// if any) and its audit entry; returns once both are durable.
    fn put_governance(
        &mut self,
        prev: Option<&Governance>,
        next: &Governance,
        audit: &AuditEntry,
    ) -> StoreResult<()>;
}

/// Nothing survives a restart.
#[derive(Debug, Default)]
pub struct MemoryStore {
    genesis: Option<Genesis>,
    events: Vec<LoggedEvent>,
    audit: Vec<AuditEntry>,
    keys: Vec<KeyRecord>,
    governance: Option<Governance>,
}

impl Store for MemoryStore {
    fn durable(&self) -> bool {
        false
    }
    fn genesis(&mut self) -> StoreResult<Option<Genesis>> {
        Ok(self.genesis.clone())
    }
    fn init(&mut self, genesis: &Genesis) -> StoreResult<()> {
        self.genesis = Some(genesis.clone());
        Ok(())
    }
    fn commit(&mut self, events: &[LoggedEvent], audit: &[AuditEntry]) -> StoreResult<()> {
        self.events.extend_from_slice(events);
        self.audit.extend_from_slice(audit);
        Ok(())
    }
    fn events_from(&mut self, from: u64) -> StoreResult<Vec<LoggedEvent>> {
        Ok(self
            .events
            .iter()
            .filter(|e| e.seq >= from)
            .cloned()
            .collect())
    }
    fn put_records(&mut self, records: &[(u64, EventRecord)]) -> StoreResult<()> {
        for (seq, record) in records {
            let e = self
                .events
                .iter_mut()
                .find(|e| e.seq == *seq)
                .ok_or_else(|| format!("event log: no event {seq} to record"))?;
            e.record = Some(record.clone());
        }
        Ok(())
    }
    fn audit_entries(&mut self) -> StoreResult<Vec<AuditEntry>> {
        Ok(self.audit.clone())
    }
    fn keys(&mut self) -> StoreResult<Vec<KeyRecord>> {
        Ok(self.keys.clone())
    }
    fn put_key(&mut self, key: &KeyRecord) -> StoreResult<()> {
        self.keys.retain(|k| k.id != key.id);
        self.keys.push(key.clone());
        Ok(())
    }
    fn governance(&mut self) -> StoreResult<Option<Governance>> {
        Ok(self.governance.clone())
    }
    fn put_governance(
        &mut self,
        _prev: Option<&Governance>,
        next: &Governance,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        self.governance = Some(next.clone());
        self.audit.push(audit.clone());
        Ok(())
    }
}

/// The wall clock, for the informational times of key and genesis rows.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn io(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// Writes a file atomically and durably (temporary file, sync, rename, sync the directory).
pub fn write_file_atomic(path: &Path, text: &str) -> StoreResult<()> {
    write_atomic(path, text)
}

fn write_atomic(path: &Path, text: &str) -> StoreResult<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(text.as_bytes()).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn to_json<T: Serialize>(v: &T) -> StoreResult<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

fn proposal_row(r: &ProposalRecord) -> StoreResult<pmargin_store::ProposalRow> {
    Ok(pmargin_store::ProposalRow {
        id: r.proposal.id,
        proposal: to_json(&r.proposal)?,
        submitted_ms: r.submitted_ms,
        quorum_ms: r.quorum_ms,
        status: r.state.status().into(),
        state: to_json(&r.state)?,
        approvals: r
            .approvals
            .iter()
            .map(|a| pmargin_store::ApprovalRow {
                member: a.member.clone(),
                signature: hex::encode(a.signature),
            })
            .collect(),
    })
}

fn version_row(v: &VersionRecord) -> StoreResult<pmargin_store::VersionRow> {
    Ok(pmargin_store::VersionRow {
        version: v.version,
        params: to_json(&v.params)?,
        activated_ms: v.activated_ms,
        activation: Some(to_json(&v.activation)?),
        proposal_id: match &v.activation {
            Activation::Proposal { id, .. } => Some(*id),
            _ => None,
        },
    })
}

fn from_rows(rows: pmargin_store::GovernanceRows) -> StoreResult<Governance> {
    let bad = |what: String| format!("stored governance state: {what}");
    let committee: Committee =
        serde_json::from_value(rows.committee).map_err(|e| bad(format!("committee: {e}")))?;
    let history = rows
        .versions
        .into_iter()
        .map(|v| {
            let activation = match v.activation {
                Some(a) => serde_json::from_value(a)
                    .map_err(|e| bad(format!("version {}: {e}", v.version)))?,
                None => Activation::Genesis,
            };
            Ok(VersionRecord {
                version: v.version,
                activated_ms: v.activated_ms,
                activation,
                params: serde_json::from_value(v.params)
                    .map_err(|e| bad(format!("version {}: {e}", v.version)))?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let proposals = rows
        .proposals
        .into_iter()
        .map(|p| {
            let approvals = p
                .approvals
                .into_iter()
                .map(|a| {
                    let signature = hex::decode(&a.signature)
                        .ok()
                        .and_then(|b| <[u8; 64]>::try_from(b).ok())
                        .ok_or_else(|| bad(format!("proposal {}: approval signature", p.id)))?;
                    Ok(Approval {
                        member: a.member,
                        signature,
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(ProposalRecord {
                proposal: serde_json::from_value(p.proposal)
                    .map_err(|e| bad(format!("proposal {}: {e}", p.id)))?,
                submitted_ms: p.submitted_ms,
                quorum_ms: p.quorum_ms,
                approvals,
                state: serde_json::from_value(p.state)
                    .map_err(|e| bad(format!("proposal {}: {e}", p.id)))?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let emergency: Option<EmergencyRecord> = rows
        .emergency
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| bad(format!("emergency: {e}")))?;
    Governance::from_parts(committee, history, proposals, emergency).map_err(|e| bad(e.to_string()))
}

/// The durable store: pmargin-store's SQLite database (`pmargin.db`: WAL, full sync, versioned
/// schema, mode 0600) in the data directory holds the genesis, the event log, snapshots, the
/// governance state, the audit trail and the API key records. A batch of events is one SQLite
/// transaction (group commit), and [`Store::commit`] returns only after it has committed, so an
/// acknowledged event is durable.
pub struct SqliteStore {
    dir: PathBuf,
    db: pmargin_store::Store,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("dir", &self.dir)
            .finish()
    }
}

/// The audit action under which the server's [`AuditEntry`] lists are kept.
const AUDIT_ACTION: &str = "server_audit";

impl SqliteStore {
    pub fn open(dir: &Path) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut db =
            pmargin_store::Store::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        import_files(dir, &mut db)?;
        Ok(SqliteStore {
            dir: dir.to_path_buf(),
            db,
        })
    }

    /// The underlying database (snapshots, governance rows, the audit trail).
    pub fn db(&mut self) -> &mut pmargin_store::Store {
        &mut self.db
    }
}

/// The files an earlier build kept beside the database, imported once by [`SqliteStore::open`]
/// and then renamed with `.imported` appended (kept, not deleted, for the operator to check
/// and remove; `keys.json` keeps its 0600 mode).
pub const IMPORTED_FILES: [&str; 2] = ["genesis.json", "keys.json"];

/// Imports `genesis.json` and `keys.json` if present: checked as the server reads them, stored
/// in one transaction (a stored genesis and stored keys win: an import run again after a crash
/// before the renames changes nothing, and cannot undo a revocation), then renamed.
fn import_files(dir: &Path, db: &mut pmargin_store::Store) -> StoreResult<()> {
    let read = |name: &str| -> StoreResult<Option<String>> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    };
    let [genesis_file, keys_file] = IMPORTED_FILES;
    let (genesis, keys) = (read(genesis_file)?, read(keys_file)?);
    if genesis.is_none() && keys.is_none() {
        return Ok(());
    }
    let bad = |name: &str, e: serde_json::Error| format!("{}: {e}", dir.join(name).display());
    let genesis = genesis
        .map(|text| {
            let g: Genesis = serde_json::from_str(&text).map_err(|e| bad(genesis_file, e))?;
            serde_json::to_string(&g).map_err(|e| e.to_string())
        })
        .transpose()?;
    let keys = match keys {
        Some(text) => {
            let list: Vec<KeyRecord> =
                serde_json::from_str(&text).map_err(|e| bad(keys_file, e))?;
            list.iter()
                .map(|k| {
                    Ok((
                        k.id.clone(),
                        serde_json::to_string(k).map_err(|e| e.to_string())?,
                    ))
                })
                .collect::<StoreResult<Vec<_>>>()?
        }
        None => Vec::new(),
    };
    db.import_genesis_and_keys(genesis.as_deref(), &keys, wall_ms())
        .map_err(|e| {
            format!(
                "{}: importing {genesis_file} and {keys_file}: {e}",
                dir.display()
            )
        })?;
    for name in IMPORTED_FILES {
        let path = dir.join(name);
        if path.exists() {
            let done = dir.join(format!("{name}.imported"));
            std::fs::rename(&path, &done).map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}

impl Store for SqliteStore {
    fn durable(&self) -> bool {
        true
    }
    fn genesis(&mut self) -> StoreResult<Option<Genesis>> {
        let Some(text) = self.db.genesis().map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("stored genesis: {e}"))
    }
    fn init(&mut self, genesis: &Genesis) -> StoreResult<()> {
        let text = serde_json::to_string(genesis).map_err(|e| e.to_string())?;
        self.db
            .set_genesis(&text, wall_ms())
            .map_err(|e| e.to_string())
    }
    fn commit(&mut self, events: &[LoggedEvent], audit: &[AuditEntry]) -> StoreResult<()> {
        if events.is_empty() && audit.is_empty() {
            return Ok(());
        }
        let records: Vec<Option<pmargin_store::Record>> = events
            .iter()
            .map(|e| e.record.as_ref().map(db_record))
            .collect();
        let batch: Vec<pmargin_store::NewEvent<'_>> = events
            .iter()
            .zip(&records)
            .map(|(e, r)| pmargin_store::NewEvent {
                event: &e.event,
                idempotency_key: e.idempotency_key.as_deref(),
                key_id: Some(&e.key_id),
                ts_ms: e.ts_ms,
                outputs: e.record.as_ref().map(|r| r.outputs.as_slice()),
                record: r.as_ref(),
            })
            .collect();
        // The batch's audit entries are one row, in the events' transaction: one disk sync
        // per batch.
        let detail = match audit {
            [] => None,
            _ => Some(serde_json::to_string(audit).map_err(|e| e.to_string())?),
        };
        let rows: Vec<pmargin_store::NewAudit<'_>> = detail
            .iter()
            .map(|d| pmargin_store::NewAudit {
                ts_ms: audit[0].ts_ms,
                key_id: (audit.len() == 1).then(|| audit[0].key_id.as_str()),
                action: AUDIT_ACTION,
                detail: d,
            })
            .collect();
        let appended = self
            .db
            .append_batch_audited(&batch, &rows)
            .map_err(|e| e.to_string())?;
        for (logged, a) in events.iter().zip(&appended) {
            if a.duplicate || a.seq != logged.seq {
                return Err(format!(
                    "event log: event {} stored as {}{}",
                    logged.seq,
                    a.seq,
                    if a.duplicate { " (duplicate key)" } else { "" }
                ));
            }
        }
        Ok(())
    }
    fn events_from(&mut self, from: u64) -> StoreResult<Vec<LoggedEvent>> {
        let stored = self
            .db
            .events_after(from.saturating_sub(1))
            .map_err(|e| e.to_string())?;
        Ok(stored.into_iter().map(logged_of).collect())
    }
    fn events_page(&mut self, from: u64, limit: usize) -> StoreResult<Vec<LoggedEvent>> {
        let stored = self
            .db
            .events_range(from.saturating_sub(1), limit)
            .map_err(|e| e.to_string())?;
        Ok(stored.into_iter().map(logged_of).collect())
    }
    fn first_unrecorded(&mut self) -> StoreResult<Option<u64>> {
        self.db.first_unrecorded().map_err(|e| e.to_string())
    }
    fn liquidation_events_page(
        &mut self,
        from: u64,
        limit: usize,
    ) -> StoreResult<(Vec<LoggedEvent>, u64)> {
        // Outputs are stored as serde_json writes them: a fill or a seizure is an object
        // tagged `liquidation_fill` or `liquidation_seize` (and `liquidations_suspended` does
        // not match the prefix).
        let (stored, through) = self
            .db
            .events_with_outputs_containing(
                from.saturating_sub(1),
                limit,
                "\"type\":\"liquidation_",
            )
            .map_err(|e| e.to_string())?;
        Ok((stored.into_iter().map(logged_of).collect(), through))
    }
    fn put_records(&mut self, records: &[(u64, EventRecord)]) -> StoreResult<()> {
        let rows: Vec<(u64, &[Output], pmargin_store::Record)> = records
            .iter()
            .map(|(seq, r)| (*seq, r.outputs.as_slice(), db_record(r)))
            .collect();
        let refs: Vec<(u64, &[Output], &pmargin_store::Record)> =
            rows.iter().map(|(seq, o, r)| (*seq, *o, r)).collect();
        self.db.set_records(&refs).map_err(|e| e.to_string())
    }
    fn event_of_stream_message(&mut self, msg: u64) -> StoreResult<Option<u64>> {
        self.db
            .event_of_stream_message(msg)
            .map_err(|e| e.to_string())
    }
    fn finds_keys(&self) -> bool {
        true
    }
    fn event_by_key(&mut self, key: &str) -> StoreResult<Option<LoggedEvent>> {
        let found = self.db.event_by_key(key).map_err(|e| e.to_string())?;
        Ok(found.map(logged_of))
    }
    fn keeps_snapshots(&self) -> bool {
        true
    }
    fn latest_snapshot(&mut self) -> StoreResult<Option<(u64, pmargin_store::State)>> {
        self.db.latest_snapshot().map_err(|e| e.to_string())
    }
    /// The snapshot and the pruning of all but the [`SNAPSHOTS_KEPT`] latest.
    fn save_snapshot(&mut self, seq: u64, json: &str) -> StoreResult<()> {
        self.db
            .save_snapshot_json(seq, json)
            .map_err(|e| e.to_string())?;
        self.db
            .prune_snapshots(SNAPSHOTS_KEPT)
            .map_err(|e| e.to_string())?;
        Ok(())
    }
    fn audit_entries(&mut self) -> StoreResult<Vec<AuditEntry>> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let rows = self
                .db
                .audit_list(after, 10_000)
                .map_err(|e| e.to_string())?;
            let Some(last) = rows.last() else { break };
            after = last.id;
            for row in rows {
                if row.action == AUDIT_ACTION {
                    let list: Vec<AuditEntry> =
                        serde_json::from_value(row.detail).map_err(|e| e.to_string())?;
                    out.extend(list);
                }
            }
        }
        Ok(out)
    }
    fn keys(&mut self) -> StoreResult<Vec<KeyRecord>> {
        let records = self.db.api_keys().map_err(|e| e.to_string())?;
        records
            .iter()
            .map(|text| serde_json::from_str(text).map_err(|e| format!("stored API key: {e}")))
            .collect()
    }
    /// The record replaces the stored one of its id in one committed transaction: a
    /// revocation is durable when this returns.
    fn put_key(&mut self, key: &KeyRecord) -> StoreResult<()> {
        let text = serde_json::to_string(key).map_err(|e| e.to_string())?;
        self.db
            .put_api_key(&key.id, &text, wall_ms())
            .map_err(|e| e.to_string())
    }
    fn governance(&mut self) -> StoreResult<Option<Governance>> {
        match self.db.load_governance().map_err(|e| e.to_string())? {
            Some(rows) => from_rows(rows).map(Some),
            None => Ok(None),
        }
    }
    /// The changed proposals (with their approvals), the new versions, the committee when it
    /// changed and the audit entry, in one SQLite transaction.
    fn put_governance(
        &mut self,
        prev: Option<&Governance>,
        next: &Governance,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let committee = match prev {
            Some(p) if p.committee() == next.committee() => None,
            _ => Some(to_json(next.committee())?),
        };
        let emergency = match prev {
            Some(p) if p.emergency_record() == next.emergency_record() => None,
            _ => Some(to_json(&next.emergency_record())?),
        };
        let proposals = next
            .proposals()
            .filter(|r| prev.and_then(|p| p.proposal(r.proposal.id)) != Some(*r))
            .map(proposal_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let known = prev.map_or(0, |p| p.history().len());
        if next.history().len() < known {
            return Err("governance: the version history cannot shrink".into());
        }
        let versions = next.history()[known..]
            .iter()
            .map(version_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let detail = to_json(&[audit])?;
        self.db
            .save_governance(&pmargin_store::GovernanceChange {
                ts_ms: audit.ts_ms,
                committee: committee.as_ref(),
                emergency: emergency.as_ref(),
                proposals: &proposals,
                versions: &versions,
                audit: Some((Some(&audit.key_id), AUDIT_ACTION, &detail)),
            })
            .map_err(|e| e.to_string())
    }
}

/// Snapshots the SQLite store keeps: the latest, and one before it in case the latest cannot
/// be restored by a later build.
pub const SNAPSHOTS_KEPT: usize = 2;

fn db_record(r: &EventRecord) -> pmargin_store::Record {
    pmargin_store::Record {
        stream_seq: r.stream_seq,
        stream_extra: r.stream_extra.clone(),
        params_version: r.params_version,
    }
}

fn logged_of(e: pmargin_store::StoredEvent) -> LoggedEvent {
    let record = match (e.outputs, e.record) {
        (Some(outputs), Some(r)) => Some(EventRecord {
            outputs,
            stream_seq: r.stream_seq,
            stream_extra: r.stream_extra,
            params_version: r.params_version,
        }),
        _ => None,
    };
    LoggedEvent {
        seq: e.seq,
        ts_ms: e.ts_ms,
        key_id: e.key_id.unwrap_or_default(),
        request_hash: None,
        idempotency_key: e.idempotency_key,
        event: e.event,
        record,
    }
}
/// Opens the store of a data directory.
pub fn open_dir(dir: &Path) -> StoreResult<Box<dyn Store>> {
    Ok(Box::new(SqliteStore::open(dir)?))
}
