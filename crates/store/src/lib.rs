//! # pmargin-store: durable storage of the risk service
//!
//! One SQLite database, `pmargin.db` in the data directory, in WAL mode with `synchronous=FULL`
//! and foreign keys on, readable by its owner only (0600: it holds the API keys' hashes). It
//! holds everything the service keeps:
//!
//! - `genesis`: the state the event log starts from (one JSON document, written once).
//! - `events`: the event log. An event's sequence number is its position in the log (1, 2, ...);
//!   [`Store::append_event`] returns only after the transaction holding it has committed, so an
//!   event acknowledged to a client is durable. An idempotency key is unique: the same key again
//!   returns the original sequence number and stores nothing. An event carries what the service
//!   derived when it applied it (its outputs, a [`Record`]), so answers, the stream and
//!   settlement after a restart need no engine.
//! - `snapshots`: the engine's and the service's [`State`] after some event, so a restart need
//!   not replay the whole log.
//! - `governance`, `proposals`, `proposal_approvals`, `param_versions` (see [`GovernanceRows`]),
//!   `audit` and `api_keys` (records holding keyed hashes only).
//!
//! Two files stay beside the database on purpose (the server writes them): `key_secret`, the
//! HMAC key the API keys' hashes are made with, and `admin_key`, the admin key a first start
//! made. Both are secrets an operator handles apart from the data: a copy of the database (a
//! backup, a support bundle) must not carry the secret that makes its hashes testable, nor a
//! working key.
//!
//! The schema is versioned with `PRAGMA user_version`; [`MIGRATIONS`] are applied in order, each
//! in its own transaction, when the store opens.

mod governance;
mod state;

pub use governance::{ApprovalRow, GovernanceChange, GovernanceRows, ProposalRow, VersionRow};

pub use state::{ServiceState, State, STATE_FORMAT};

use pmargin_engine::{Event, Output};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "pmargin.db";

/// Schema migrations; migration `i` (0-based) takes the database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // v1: the event log and snapshots.
    "CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        idempotency_key TEXT UNIQUE,
        key_id TEXT,
        event TEXT NOT NULL,
        outputs TEXT
     );
     CREATE TABLE snapshots (
        seq INTEGER PRIMARY KEY,
        state TEXT NOT NULL
     );",
    // v2: the service's tables.
    "CREATE TABLE proposals (
        id TEXT PRIMARY KEY,
        proposal TEXT NOT NULL,
        status TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
     );
     CREATE INDEX proposals_status ON proposals(status);
     CREATE TABLE param_versions (
        version INTEGER PRIMARY KEY,
        params TEXT NOT NULL,
        activated_ms INTEGER NOT NULL,
        proposal_id TEXT REFERENCES proposals(id)
     );
     CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        key_id TEXT,
        action TEXT NOT NULL,
        detail TEXT NOT NULL
     );
     CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        hash BLOB NOT NULL,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER
     );",
    // v3: the governance state (committee, approvals, proposal states, how versions came in).
    governance::MIGRATION,
    // v4: what the service derived from each event, beside its outputs, so a restart starts
    // from a snapshot instead of replaying from genesis (see `Record`). Rows written before
    // have NULL here until the service backfills them; the index finds those rows, and the
    // event holding a given stream message.
    "ALTER TABLE events ADD COLUMN stream_seq INTEGER;
     ALTER TABLE events ADD COLUMN stream_extra TEXT;
     ALTER TABLE events ADD COLUMN params_version INTEGER;
     CREATE INDEX events_stream_seq ON events(stream_seq);",
    // v5: when each proposal reached quorum, and the guardian's emergency episode.
    governance::MIGRATION_QUORUM_EMERGENCY,
    // v6: the genesis and the API keys in the database (earlier builds kept them in
    // `genesis.json` and `keys.json`). The v2 `api_keys` table, never written, is replaced by
    // one holding the server's key records whole.
    "DROP TABLE api_keys;
     CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
     );
     CREATE TABLE genesis (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        genesis TEXT NOT NULL,
        created_ms INTEGER NOT NULL
     );",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("schema: {0}")]
    Schema(String),
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("snapshot cannot be restored: {0}")]
    NotRestorable(String),
    #[error("engine: {0}")]
    Engine(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An event to append, with what the service knows about it.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub event: &'a Event,
    /// A client's key: a second event with the same key is not stored.
    pub idempotency_key: Option<&'a str>,
    /// The API key that submitted it.
    pub key_id: Option<&'a str>,
    pub ts_ms: i64,
    /// The engine's outputs, if the event was applied before it was stored.
    pub outputs: Option<&'a [Output]>,
    /// What the service derived from it (stored only with `outputs`).
    pub record: Option<&'a Record>,
}

impl<'a> NewEvent<'a> {
    pub fn new(event: &'a Event, ts_ms: i64) -> Self {
        NewEvent {
            event,
            idempotency_key: None,
            key_id: None,
            ts_ms,
            outputs: None,
            record: None,
        }
    }
}

/// What the service derived when it applied an event, besides the engine's outputs: kept with
/// the event (schema v4) so that, after a restart, the service answers a retried request,
/// serves its stream and signs settlement messages from the log without an engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The number of the event's first stream message (the next number if it made none).
    pub stream_seq: u64,
    /// Stream message bodies the outputs do not give (oracle health changes).
    pub stream_extra: Vec<serde_json::Value>,
    /// The parameter version in force after the event.
    pub params_version: u64,
}

/// An audit entry to commit with a batch of events ([`Store::append_batch_audited`]).
#[derive(Debug, Clone, Copy)]
pub struct NewAudit<'a> {
    pub ts_ms: i64,
    pub key_id: Option<&'a str>,
    pub action: &'a str,
    /// The detail as JSON text.
    pub detail: &'a str,
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// The idempotency key was already used: `seq` is the original event's, nothing was stored.
    pub duplicate: bool,
    /// A duplicate whose event differs from the original (a client reusing a key for another
    /// request): nothing was stored; the service should refuse it.
    pub conflict: bool,
}

/// One event of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub ts_ms: i64,
    pub idempotency_key: Option<String>,
    pub key_id: Option<String>,
    pub event: Event,
    pub outputs: Option<Vec<Output>>,
    /// `None` for an event written before schema v4 and not backfilled.
    pub record: Option<Record>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: u64,
    pub ts_ms: i64,
    pub key_id: Option<String>,
    pub action: String,
    pub detail: serde_json::Value,
}

/// The store. Not `Sync`: a service shares it behind a mutex or owns it in one writer task.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// Creates the database file readable and writable by its owner only, or narrows an existing
/// one to that. SQLite gives its `-wal` and `-shm` files the database file's mode.
fn owner_only(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::metadata(path) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(path)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn seq_u64(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative sequence number {v}")))
}

fn seq_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("sequence number {v} out of range")))
}

struct EventRow {
    seq: i64,
    ts_ms: i64,
    idempotency_key: Option<String>,
    key_id: Option<String>,
    event: String,
    outputs: Option<String>,
    stream_seq: Option<i64>,
    stream_extra: Option<String>,
    params_version: Option<i64>,
}

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        seq: r.get(0)?,
        ts_ms: r.get(1)?,
        idempotency_key: r.get(2)?,
        key_id: r.get(3)?,
        event: r.get(4)?,
        outputs: r.get(5)?,
        stream_seq: r.get(6)?,
        stream_extra: r.get(7)?,
        params_version: r.get(8)?,
    })
}

fn decode_event(row: EventRow) -> Result<StoredEvent> {
    let seq = seq_u64(row.seq)?;
    let event = serde_json::from_str(&row.event)
        .map_err(|e| StoreError::Corrupt(format!("event {seq}: {e}")))?;
    let outputs = match row.outputs {
        Some(o) => Some(
            serde_json::from_str(&o)
                .map_err(|e| StoreError::Corrupt(format!("outputs of event {seq}: {e}")))?,
        ),
        None => None,
    };
    let record = match (row.stream_seq, row.params_version) {
        (Some(stream_seq), Some(params_version)) => {
            let number = |v: i64, what: &str| {
                u64::try_from(v)
                    .map_err(|_| StoreError::Corrupt(format!("{what} of event {seq}: {v}")))
            };
            let stream_extra = match row.stream_extra {
                Some(t) => serde_json::from_str(&t).map_err(|e| {
                    StoreError::Corrupt(format!("stream_extra of event {seq}: {e}"))
                })?,
                None => Vec::new(),
            };
            Some(Record {
                stream_seq: number(stream_seq, "stream_seq")?,
                stream_extra,
                params_version: number(params_version, "params_version")?,
            })
        }
        (None, None) => None,
        _ => {
            return Err(StoreError::Corrupt(format!(
                "event {seq}: stream_seq and params_version must be both set or both NULL"
            )))
        }
    };
    Ok(StoredEvent {
        seq,
        ts_ms: row.ts_ms,
        idempotency_key: row.idempotency_key,
        key_id: row.key_id,
        event,
        outputs,
        record,
    })
}

const EVENT_COLUMNS: &str =
    "seq, ts_ms, idempotency_key, key_id, event, outputs, stream_seq, stream_extra, params_version";

/// A record's columns: `stream_seq`, `stream_extra` (NULL when empty), `params_version`.
fn record_columns(record: Option<&Record>) -> Result<(Option<i64>, Option<String>, Option<i64>)> {
    let Some(r) = record else {
        return Ok((None, None, None));
    };
    let extra = match r.stream_extra.as_slice() {
        [] => None,
        list => Some(serde_json::to_string(list)?),
    };
    Ok((
        Some(seq_i64(r.stream_seq)?),
        extra,
        Some(seq_i64(r.params_version)?),
    ))
}

impl Store {
    /// Opens the store in `dir`, creating the directory and the database on first start, and
    /// brings the schema up to [`SCHEMA_VERSION`].
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DB_FILE);
        owner_only(&path)?;
        let conn = Connection::open(&path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Schema(format!(
                "could not switch to WAL journal mode (got {mode})"
            )));
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Store { conn, path };
        store.migrate()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// A pragma's value (for checks: `journal_mode`, `synchronous`, `foreign_keys`).
    pub fn pragma(&self, name: &str) -> Result<String> {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::Invalid(format!("not a pragma name: {name}")));
        }
        Ok(self
            .conn
            .query_row(&format!("PRAGMA {name}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })?)
    }

    fn migrate(&mut self) -> Result<()> {
        let current = self.schema_version()?;
        if current > SCHEMA_VERSION {
            return Err(StoreError::Schema(format!(
                "the database is at schema version {current}, newer than this build's {SCHEMA_VERSION}"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Another process may have migrated in the meantime.
            let now: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if now as usize > i {
                continue;
            }
            tx.execute_batch(sql)
                .map_err(|e| StoreError::Schema(format!("migration to version {}: {e}", i + 1)))?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
            tx.commit()?;
        }
        Ok(())
    }

    // ----- the event log -----

    /// Appends one event; returns once it is durable (its transaction has committed).
    pub fn append_event(
        &mut self,
        event: &Event,
        idempotency_key: Option<&str>,
        key_id: Option<&str>,
        ts_ms: i64,
    ) -> Result<Appended> {
        self.append(&NewEvent {
            event,
            idempotency_key,
            key_id,
            ts_ms,
            outputs: None,
            record: None,
        })
    }

    /// Appends one event with everything known about it.
    pub fn append(&mut self, event: &NewEvent<'_>) -> Result<Appended> {
        Ok(self.append_batch(std::slice::from_ref(event))?.remove(0))
    }

    /// Group commit: appends the events in order in one transaction (one disk sync for all);
    /// returns once all are durable. Duplicates (also within the batch) are reported per event.
    pub fn append_batch(&mut self, events: &[NewEvent<'_>]) -> Result<Vec<Appended>> {
        self.append_batch_audited(events, &[])
    }

    /// Group commit of events and the audit entries that go with them: one transaction, so one
    /// disk sync for the whole batch, and either all of it is durable or none of it. Returns
    /// once committed, like [`Store::append_batch`].
    pub fn append_batch_audited(
        &mut self,
        events: &[NewEvent<'_>],
        audit: &[NewAudit<'_>],
    ) -> Result<Vec<Appended>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(events.len());
        if !audit.is_empty() {
            let mut insert = tx.prepare_cached(
                "INSERT INTO audit (ts_ms, key_id, action, detail) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for a in audit {
                insert.execute(params![a.ts_ms, a.key_id, a.action, a.detail])?;
            }
        }
        {
            let mut last: i64 =
                tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
            let mut find =
                tx.prepare_cached("SELECT seq, event FROM events WHERE idempotency_key = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (seq, ts_ms, idempotency_key, key_id, event, outputs, stream_seq, stream_extra, params_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for e in events {
                let json = serde_json::to_string(e.event)?;
                if let Some(key) = e.idempotency_key {
                    let found: Option<(i64, String)> = find
                        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    if let Some((seq, original)) = found {
                        out.push(Appended {
                            seq: seq_u64(seq)?,
                            duplicate: true,
                            conflict: original != json,
                        });
                        continue;
                    }
                }
                let outputs = e.outputs.map(serde_json::to_string).transpose()?;
                if e.record.is_some() && outputs.is_none() {
                    return Err(StoreError::Invalid(format!(
                        "event {}: a record is stored only with the outputs",
                        last + 1
                    )));
                }
                let (stream_seq, stream_extra, params_version) = record_columns(e.record)?;
                last += 1;
                insert.execute(params![
                    last,
                    e.ts_ms,
                    e.idempotency_key,
                    e.key_id,
                    json,
                    outputs,
                    stream_seq,
                    stream_extra,
                    params_version
                ])?;
                out.push(Appended {
                    seq: seq_u64(last)?,
                    duplicate: false,
                    conflict: false,
                });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// The sequence number of the event stored under an idempotency key.
    pub fn idempotent_seq(&self, key: &str) -> Result<Option<u64>> {
        let seq: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM events WHERE idempotency_key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()?;
        seq.map(seq_u64).transpose()
    }

    /// The event stored under an idempotency key.
    pub fn event_by_key(&self, key: &str) -> Result<Option<StoredEvent>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE idempotency_key = ?1");
        let row = self
            .conn
            .prepare_cached(&sql)?
            .query_row([key], event_row)
            .optional()?;
        row.map(decode_event).transpose()
    }

    /// The first event without its [`Record`] (written before schema v4, or appended without
    /// one), if any.
    pub fn first_unrecorded(&self) -> Result<Option<u64>> {
        // Through the stream_seq index: cheap when every event has its record.
        let seq: Option<i64> = self.conn.query_row(
            "SELECT MIN(seq) FROM events WHERE stream_seq IS NULL",
            [],
            |r| r.get(0),
        )?;
        seq.map(seq_u64).transpose()
    }

    /// Stores the outputs and records of events already in the log (computed by replaying a
    /// log written before schema v4), in one transaction.
    pub fn set_records(&mut self, records: &[(u64, &[Output], &Record)]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut update = tx.prepare_cached(
                "UPDATE events SET outputs = ?2, stream_seq = ?3, stream_extra = ?4, params_version = ?5 WHERE seq = ?1",
            )?;
            for (seq, outputs, record) in records {
                let (stream_seq, stream_extra, params_version) = record_columns(Some(record))?;
                let n = update.execute(params![
                    seq_i64(*seq)?,
                    serde_json::to_string(outputs)?,
                    stream_seq,
                    stream_extra,
                    params_version
                ])?;
                if n != 1 {
                    return Err(StoreError::Invalid(format!("no event {seq} to record")));
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The event holding stream message `msg` (by the stored records): the last event whose
    /// first message is at most `msg`. `None` if every recorded event starts after it.
    pub fn event_of_stream_message(&self, msg: u64) -> Result<Option<u64>> {
        let seq: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM events WHERE stream_seq <= ?1 ORDER BY stream_seq DESC, seq DESC LIMIT 1",
                [seq_i64(msg)?],
                |r| r.get(0),
            )
            .optional()?;
        seq.map(seq_u64).transpose()
    }

    /// The last event's sequence number (0 for an empty log).
    pub fn last_seq(&self) -> Result<u64> {
        seq_u64(
            self.conn
                .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?,
        )
    }

    pub fn event(&self, seq: u64) -> Result<Option<StoredEvent>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?1");
        let row = self
            .conn
            .query_row(&sql, [seq_i64(seq)?], event_row)
            .optional()?;
        row.map(decode_event).transpose()
    }

    /// Every event after `seq`, in order.
    pub fn events_after(&self, seq: u64) -> Result<Vec<StoredEvent>> {
        let mut out = Vec::new();
        self.for_each_event_after(seq, |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }

    /// At most `limit` events after `seq`, in order (paging, a stream's resume).
    pub fn events_range(&self, seq: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        let sql =
            format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![seq_i64(seq)?, limit], event_row)?;
        rows.map(|r| decode_event(r?)).collect()
    }

    /// At most `limit` events after `seq` whose stored outputs contain `needle` (or that have
    /// no stored outputs), in order, and the last event the search covered: the last match of a
    /// full page, else the log's last event. The search runs in SQLite, so a log of millions of
    /// events is scanned without decoding the ones that do not match.
    pub fn events_with_outputs_containing(
        &self,
        seq: u64,
        limit: usize,
        needle: &str,
    ) -> Result<(Vec<StoredEvent>, u64)> {
        let last = self.last_seq()?;
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 AND seq <= ?2 \
             AND (outputs IS NULL OR instr(outputs, ?3) > 0) ORDER BY seq LIMIT ?4"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(
            params![seq_i64(seq)?, seq_i64(last)?, needle, limit_sql],
            event_row,
        )?;
        let events: Vec<StoredEvent> = rows.map(|r| decode_event(r?)).collect::<Result<_>>()?;
        let through = match events.last() {
            Some(e) if events.len() >= limit => e.seq,
            _ => last.max(seq),
        };
        Ok((events, through))
    }

    /// Calls `f` on every event after `seq`, in order, without holding the log in memory.
    pub fn for_each_event_after(
        &self,
        seq: u64,
        mut f: impl FnMut(StoredEvent) -> Result<()>,
    ) -> Result<()> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([seq_i64(seq)?])?;
        let mut expected = seq + 1;
        while let Some(row) = rows.next()? {
            let e = decode_event(event_row(row)?)?;
            if e.seq != expected {
                return Err(StoreError::Corrupt(format!(
                    "event log has a gap: {} follows {}",
                    e.seq,
                    expected - 1
                )));
            }
            expected += 1;
            f(e)?;
        }
        Ok(())
    }

    // ----- snapshots -----

    /// Stores the engine's state after event `seq` (0: before any event). Replaces a snapshot
    /// at the same sequence number.
    pub fn save_snapshot(&mut self, seq: u64, state: &State) -> Result<()> {
        self.save_snapshot_json(seq, &serde_json::to_string(state)?)
    }

    /// [`Store::save_snapshot`] of a [`State`] already serialized (so a service can serialize
    /// a large state without holding whatever guards the store). The text is checked only when
    /// read back: a document that does not parse makes [`Store::latest_snapshot`] fail.
    pub fn save_snapshot_json(&mut self, seq: u64, json: &str) -> Result<()> {
        let last = self.last_seq()?;
        if seq > last {
            return Err(StoreError::Invalid(format!(
                "snapshot at {seq} is beyond the last event {last}"
            )));
        }
        self.conn.execute(
            "INSERT OR REPLACE INTO snapshots (seq, state) VALUES (?1, ?2)",
            params![seq_i64(seq)?, json],
        )?;
        Ok(())
    }

    /// The most recent snapshot and the sequence number of the event it follows.
    pub fn latest_snapshot(&self) -> Result<Option<(u64, State)>> {
        let row: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT seq, state FROM snapshots ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((seq, json)) => {
                let seq = seq_u64(seq)?;
                let state = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("snapshot {seq}: {e}")))?;
                Ok(Some((seq, state)))
            }
        }
    }

    /// Sequence numbers of the stored snapshots, ascending.
    pub fn snapshot_seqs(&self) -> Result<Vec<u64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq FROM snapshots ORDER BY seq")?;
        let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
        rows.map(|r| seq_u64(r?)).collect()
    }

    /// Deletes all but the `keep` most recent snapshots; returns how many were deleted.
    pub fn prune_snapshots(&mut self, keep: usize) -> Result<usize> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        Ok(self.conn.execute("DELETE FROM snapshots WHERE seq NOT IN (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?1)", [keep])?)
    }

    // ----- audit trail -----

    /// Appends to the audit trail (durable on return); returns the entry's id.
    pub fn audit(
        &mut self,
        ts_ms: i64,
        key_id: Option<&str>,
        action: &str,
        detail: &serde_json::Value,
    ) -> Result<u64> {
        self.conn.execute(
            "INSERT INTO audit (ts_ms, key_id, action, detail) VALUES (?1, ?2, ?3, ?4)",
            params![ts_ms, key_id, action, detail.to_string()],
        )?;
        seq_u64(self.conn.last_insert_rowid())
    }

    /// At most `limit` audit entries after id `after`, oldest first.
    pub fn audit_list(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let mut stmt = self.conn.prepare("SELECT id, ts_ms, key_id, action, detail FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![seq_i64(after)?, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        rows.map(|r| {
            let (id, ts_ms, key_id, action, detail) = r?;
            Ok(AuditEntry {
                id: seq_u64(id)?,
                ts_ms,
                key_id,
                action,
                detail: serde_json::from_str(&detail)?,
            })
        })
        .collect()
    }

    // ----- API keys and genesis -----

    /// Stores an API key's record (a JSON document holding only the key's keyed hash, never
    /// the key) under its id, replacing the record of the same id (a revocation); durable on
    /// return.
    pub fn put_api_key(&mut self, id: &str, record: &str, ts_ms: i64) -> Result<()> {
        put_api_key(&self.conn, id, record, ts_ms)
    }

    /// Every API key record (revoked ones included), by id.
    pub fn api_keys(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT record FROM api_keys ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The state the event log starts from (a JSON document), once stored.
    pub fn genesis(&self) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT genesis FROM genesis WHERE id = 1", [], |r| r.get(0))
            .optional()?)
    }

    /// Stores the genesis document. It is written once: the event log's meaning depends on it,
    /// so a second one is refused.
    pub fn set_genesis(&mut self, genesis: &str, ts_ms: i64) -> Result<()> {
        set_genesis(&self.conn, genesis, ts_ms)
    }

    /// Stores a genesis (if given and none is stored) and API key records (those whose id is
    /// not stored yet) in one transaction: the one-time import of a data directory whose
    /// earlier build kept them in files. A stored record is never replaced, so an import run
    /// again cannot undo a revocation.
    pub fn import_genesis_and_keys(
        &mut self,
        genesis: Option<&str>,
        keys: &[(String, String)],
        ts_ms: i64,
    ) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(g) = genesis {
            let stored: Option<String> = tx
                .query_row("SELECT genesis FROM genesis WHERE id = 1", [], |r| r.get(0))
                .optional()?;
            if stored.is_none() {
                set_genesis(&tx, g, ts_ms)?;
            }
        }
        for (id, record) in keys {
            tx.execute(
                "INSERT INTO api_keys (id, record, updated_ms) VALUES (?1, ?2, ?3) ON CONFLICT(id) DO NOTHING",
                params![id, record, ts_ms],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

fn put_api_key(conn: &Connection, id: &str, record: &str, ts_ms: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO api_keys (id, record, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET record = excluded.record, updated_ms = excluded.updated_ms",
        params![id, record, ts_ms],
    )?;
    Ok(())
}

fn set_genesis(conn: &Connection, genesis: &str, ts_ms: i64) -> Result<()> {
    let n = conn.execute(
        "INSERT INTO genesis (id, genesis, created_ms) VALUES (1, ?1, ?2) ON CONFLICT(id) DO NOTHING",
        params![genesis, ts_ms],
    )?;
    if n == 0 {
        return Err(StoreError::Invalid(
            "the database already holds its genesis; it is written once".into(),
        ));
    }
    Ok(())
}
