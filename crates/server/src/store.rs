//! Where the service keeps what must survive a restart: the genesis state, the event log (with
//! idempotency keys), the audit trail and the API keys' hashes.
//!
//! [`Store`] is the seam: the server speaks only this trait. [`FileStore`] is a small durable
//! implementation (append-only JSON lines, `fsync` before an event is acknowledged, a torn last
//! line is dropped on open); [`MemoryStore`] keeps nothing across restarts (tests, demos).

use crate::auth::KeyRecord;
use pmargin_engine::{EngineConfig, Event};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub type StoreResult<T> = Result<T, String>;

/// The state the log starts from: the input texts (FORMATS.md) and the engine settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub portfolio: String,
    pub market: String,
    pub params: String,
    pub config: EngineConfig,
}

/// One applied event. `seq` equals the engine's sequence after applying it (a refused event
/// is logged too: replaying it refuses it again, so sequences stay aligned).
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
    fn audit_entries(&mut self) -> StoreResult<Vec<AuditEntry>>;
    fn keys(&mut self) -> StoreResult<Vec<KeyRecord>>;
    /// Adds or replaces (by id) a key record, durably.
    fn put_key(&mut self, key: &KeyRecord) -> StoreResult<()>;
}

/// Nothing survives a restart.
#[derive(Debug, Default)]
pub struct MemoryStore {
    genesis: Option<Genesis>,
    events: Vec<LoggedEvent>,
    audit: Vec<AuditEntry>,
    keys: Vec<KeyRecord>,
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
}

/// A directory of JSON files: `genesis.json`, `events.jsonl`, `audit.jsonl`, `keys.json`.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    events: File,
    audit: File,
}

fn io(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// Reads a JSON-lines file, truncating an incomplete or unreadable last line (a crash during
/// a write that was never acknowledged). A bad line elsewhere is an error.
fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path, file: &mut File) -> StoreResult<Vec<T>> {
    file.seek(SeekFrom::Start(0)).map_err(|e| io(path, e))?;
    let mut reader = BufReader::new(&*file);
    let mut out = Vec::new();
    let mut good_end = 0u64;
    let mut line = String::new();
    let mut torn = false;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|e| io(path, e))?;
        if n == 0 {
            break;
        }
        if !line.ends_with('\n') {
            torn = true;
            break;
        }
        match serde_json::from_str::<T>(line.trim_end()) {
            Ok(v) => out.push(v),
            Err(e) => {
                // Only the last line may be torn.
                let mut rest = String::new();
                reader.read_line(&mut rest).map_err(|e| io(path, e))?;
                if rest.is_empty() {
                    torn = true;
                    break;
                }
                return Err(format!("{}: line {}: {e}", path.display(), out.len() + 1));
            }
        }
        good_end += n as u64;
    }
    if torn {
        file.set_len(good_end).map_err(|e| io(path, e))?;
        file.sync_all().map_err(|e| io(path, e))?;
    }
    file.seek(SeekFrom::End(0)).map_err(|e| io(path, e))?;
    Ok(out)
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

impl FileStore {
    /// Opens (creating it if needed) the store in `dir`.
    pub fn open(dir: &Path) -> StoreResult<FileStore> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let open = |name: &str| {
            let path = dir.join(name);
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
                .map_err(|e| io(&path, e))
        };
        let mut store = FileStore {
            dir: dir.to_path_buf(),
            events: open("events.jsonl")?,
            audit: open("audit.jsonl")?,
        };
        // Drop torn tails now, so appends start on a line boundary.
        let _: Vec<LoggedEvent> = read_lines(&dir.join("events.jsonl"), &mut store.events)?;
        let _: Vec<AuditEntry> = read_lines(&dir.join("audit.jsonl"), &mut store.audit)?;
        Ok(store)
    }
}

/// Both durable stores keep the starting state as `genesis.json` in the data directory.
fn read_genesis(dir: &Path) -> StoreResult<Option<Genesis>> {
    let path = dir.join("genesis.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path, e)),
    }
}

fn write_genesis(dir: &Path, genesis: &Genesis) -> StoreResult<()> {
    let text = serde_json::to_string_pretty(genesis).map_err(|e| e.to_string())?;
    write_atomic(&dir.join("genesis.json"), &text)
}

impl Store for FileStore {
    fn durable(&self) -> bool {
        true
    }
    fn genesis(&mut self) -> StoreResult<Option<Genesis>> {
        read_genesis(&self.dir)
    }
    fn init(&mut self, genesis: &Genesis) -> StoreResult<()> {
        write_genesis(&self.dir, genesis)
    }
    fn commit(&mut self, events: &[LoggedEvent], audit: &[AuditEntry]) -> StoreResult<()> {
        let mut buf = Vec::new();
        for e in events {
            serde_json::to_writer(&mut buf, e).map_err(|e| e.to_string())?;
            buf.push(b'\n');
        }
        if !buf.is_empty() {
            let path = self.dir.join("events.jsonl");
            self.events.write_all(&buf).map_err(|e| io(&path, e))?;
            self.events.sync_data().map_err(|e| io(&path, e))?;
        }
        buf.clear();
        for a in audit {
            serde_json::to_writer(&mut buf, a).map_err(|e| e.to_string())?;
            buf.push(b'\n');
        }
        if !buf.is_empty() {
            let path = self.dir.join("audit.jsonl");
            self.audit.write_all(&buf).map_err(|e| io(&path, e))?;
            self.audit.sync_data().map_err(|e| io(&path, e))?;
        }
        Ok(())
    }
    fn events_from(&mut self, from: u64) -> StoreResult<Vec<LoggedEvent>> {
        let path = self.dir.join("events.jsonl");
        let all: Vec<LoggedEvent> = read_lines(&path, &mut self.events)?;
        Ok(all.into_iter().filter(|e| e.seq >= from).collect())
    }
    fn audit_entries(&mut self) -> StoreResult<Vec<AuditEntry>> {
        read_lines(&self.dir.join("audit.jsonl"), &mut self.audit)
    }
    fn keys(&mut self) -> StoreResult<Vec<KeyRecord>> {
        let path = self.dir.join("keys.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io(&path, e)),
        }
    }
    fn put_key(&mut self, key: &KeyRecord) -> StoreResult<()> {
        let mut keys = self.keys()?;
        keys.retain(|k| k.id != key.id);
        keys.push(key.clone());
        let text = serde_json::to_string_pretty(&keys).map_err(|e| e.to_string())?;
        write_atomic(&self.dir.join("keys.json"), &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_survives_reopen_and_drops_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("pmargin-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = FileStore::open(&dir).unwrap();
        let ev = |seq| LoggedEvent {
            seq,
            ts_ms: 1,
            key_id: "k".into(),
            idempotency_key: None,
            request_hash: None,
            event: Event::Liquidate,
        };
        s.commit(&[ev(1), ev(2)], &[]).unwrap();
        drop(s);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("events.jsonl"))
            .unwrap();
        f.write_all(b"{\"seq\":3,\"ts_").unwrap();
        drop(f);
        let mut s = FileStore::open(&dir).unwrap();
        assert_eq!(s.events_from(0).unwrap().len(), 2);
        s.commit(&[ev(3)], &[]).unwrap();
        assert_eq!(
            s.events_from(2)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The default durable store: pmargin-store's SQLite database (`pmargin.db`: WAL, full sync,
/// versioned schema) in the data directory holds the event log and the audit trail; the
/// genesis inputs and the API key records stay as `genesis.json` and `keys.json` beside it
/// (written atomically). A batch of events is one SQLite transaction (group commit), and
/// [`Store::commit`] returns only after it has committed, so an acknowledged event is durable.
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
        let db = pmargin_store::Store::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(SqliteStore {
            dir: dir.to_path_buf(),
            db,
        })
    }

    /// The underlying database (snapshots, proposals, parameter versions).
    pub fn db(&mut self) -> &mut pmargin_store::Store {
        &mut self.db
    }
}

impl Store for SqliteStore {
    fn durable(&self) -> bool {
        true
    }
    fn genesis(&mut self) -> StoreResult<Option<Genesis>> {
        read_genesis(&self.dir)
    }
    fn init(&mut self, genesis: &Genesis) -> StoreResult<()> {
        write_genesis(&self.dir, genesis)
    }
    fn commit(&mut self, events: &[LoggedEvent], audit: &[AuditEntry]) -> StoreResult<()> {
        if !events.is_empty() {
            let batch: Vec<pmargin_store::NewEvent<'_>> = events
                .iter()
                .map(|e| pmargin_store::NewEvent {
                    event: &e.event,
                    idempotency_key: e.idempotency_key.as_deref(),
                    key_id: Some(&e.key_id),
                    ts_ms: e.ts_ms,
                    outputs: None,
                })
                .collect();
            let appended = self.db.append_batch(&batch).map_err(|e| e.to_string())?;
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
        }
        if !audit.is_empty() {
            // One row (one transaction) per batch, not one per entry.
            let detail = serde_json::to_value(audit).map_err(|e| e.to_string())?;
            let key = (audit.len() == 1).then(|| audit[0].key_id.as_str());
            self.db
                .audit(audit[0].ts_ms, key, AUDIT_ACTION, &detail)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    fn events_from(&mut self, from: u64) -> StoreResult<Vec<LoggedEvent>> {
        let stored = self
            .db
            .events_after(from.saturating_sub(1))
            .map_err(|e| e.to_string())?;
        Ok(stored
            .into_iter()
            .map(|e| LoggedEvent {
                seq: e.seq,
                ts_ms: e.ts_ms,
                key_id: e.key_id.unwrap_or_default(),
                request_hash: None,
                idempotency_key: e.idempotency_key,
                event: e.event,
            })
            .collect())
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
        let path = self.dir.join("keys.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io(&path, e)),
        }
    }
    fn put_key(&mut self, key: &KeyRecord) -> StoreResult<()> {
        let mut keys = self.keys()?;
        keys.retain(|k| k.id != key.id);
        keys.push(key.clone());
        let text = serde_json::to_string_pretty(&keys).map_err(|e| e.to_string())?;
        write_atomic(&self.dir.join("keys.json"), &text)
    }
}

/// Which durable store a data directory uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// pmargin-store's SQLite database (the default).
    #[default]
    Sqlite,
    /// JSON-lines files (the earlier store).
    Files,
}

/// Opens the store of a data directory.
pub fn open_dir(dir: &Path, kind: StoreKind) -> StoreResult<Box<dyn Store>> {
    Ok(match kind {
        StoreKind::Sqlite => Box::new(SqliteStore::open(dir)?),
        StoreKind::Files => Box::new(FileStore::open(dir)?),
    })
}
