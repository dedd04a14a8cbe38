//! [`NatsStore`]: the server's [`Store`] over the replicated log (see [`super`]).

use super::{Names, Nats};
use crate::auth::KeyRecord;
use crate::store::{AuditEntry, EventRecord, Genesis, LoggedEvent, Store, StoreResult};
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use futures_util::StreamExt;
use pmargin_governance::Governance;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Audit entries per message: a batch's trail is split so no message nears the 1 MiB
/// payload limit.
const AUDIT_PER_MESSAGE: usize = 256;

const GENESIS_KEY: &str = "genesis";
const GOVERNANCE_KEY: &str = "governance";
const SNAPSHOT_OBJECT: &str = "snapshot";

/// Connects to the cluster (on a blocking thread: the connection waits for a server) and
/// opens the log's store.
pub async fn open(config: super::EventLogConfig) -> StoreResult<Box<dyn Store>> {
    let nats = tokio::task::spawn_blocking(move || Nats::connect(config))
        .await
        .map_err(|e| format!("NATS: {e}"))??;
    Ok(Box::new(NatsStore::new(nats)))
}

/// The store of a node of a replicated deployment.
#[derive(Debug)]
pub struct NatsStore {
    nats: Arc<Nats>,
}

impl NatsStore {
    pub fn new(nats: Arc<Nats>) -> NatsStore {
        NatsStore { nats }
    }

    pub fn nats(&self) -> &Arc<Nats> {
        &self.nats
    }
}

/// The subject an event is published to: its idempotency key's own (hashed: a key may hold
/// any character), so the stream finds the event holding a key.
pub fn event_subject(names: &Names, idempotency_key: Option<&str>) -> String {
    match idempotency_key {
        Some(k) => {
            let digest = Sha256::digest(k.as_bytes());
            format!("{}.ev.k.{}", names.subject, hex::encode(&digest[..16]))
        }
        None => format!("{}.ev.n", names.subject),
    }
}

fn decode(seq: u64, payload: &[u8]) -> StoreResult<LoggedEvent> {
    let e: LoggedEvent = serde_json::from_slice(payload)
        .map_err(|e| format!("replicated log: message {seq}: {e}"))?;
    if e.seq != seq {
        return Err(format!(
            "replicated log: message {seq} holds event {}: the log was written by two writers",
            e.seq
        ));
    }
    Ok(e)
}

/// The stream's last sequence number (0 when empty).
pub async fn last_seq(stream: &Stream) -> StoreResult<u64> {
    let info = stream
        .get_info()
        .await
        .map_err(|e| format!("NATS stream info: {e}"))?;
    Ok(info.state.last_sequence)
}

/// The events `from..=until` of the stream, in order, through an ordered consumer (one
/// request for the lot, not one per event).
pub async fn read_range(stream: &Stream, from: u64, until: u64) -> StoreResult<Vec<LoggedEvent>> {
    let from = from.max(1);
    if until < from {
        return Ok(Vec::new());
    }
    let mut messages = tail(stream, from).await?;
    let mut out = Vec::with_capacity(usize::try_from(until - from + 1).unwrap_or(0).min(1 << 20));
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| format!("NATS read: {e}"))?;
        let seq = m
            .info()
            .map_err(|e| format!("NATS read: {e}"))?
            .stream_sequence;
        if seq > until {
            break;
        }
        out.push(decode(seq, &m.payload)?);
        if seq == until {
            break;
        }
    }
    Ok(out)
}

/// Every message of the stream from `from` on, as they come (the follower's feed).
pub async fn tail(
    stream: &Stream,
    from: u64,
) -> StoreResult<async_nats::jetstream::consumer::pull::Ordered> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| format!("NATS consumer: {e}"))?;
    consumer
        .messages()
        .await
        .map_err(|e| format!("NATS consumer: {e}"))
}

async fn kv_get<T: serde::de::DeserializeOwned>(
    kv: &async_nats::jetstream::kv::Store,
    key: &str,
) -> StoreResult<Option<T>> {
    let Some(bytes) = kv
        .get(key)
        .await
        .map_err(|e| format!("NATS KV {key}: {e}"))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("NATS KV {key}: {e}"))
}

async fn kv_put<T: serde::Serialize>(
    kv: &async_nats::jetstream::kv::Store,
    key: &str,
    value: &T,
) -> StoreResult<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    kv.put(key, bytes.into())
        .await
        .map(|_| ())
        .map_err(|e| format!("NATS KV {key}: {e}"))
}

fn key_name(id: &str) -> String {
    format!("key.{}", hex::encode(id.as_bytes()))
}

/// Publishes the audit entries (in messages of [`AUDIT_PER_MESSAGE`]); the acknowledgements to
/// wait for.
async fn publish_audit(nats: &Nats, audit: &[AuditEntry]) -> StoreResult<Vec<PublishAckFuture>> {
    let subject = format!("{}.audit", nats.names().subject);
    let mut acks = Vec::new();
    for chunk in audit.chunks(AUDIT_PER_MESSAGE) {
        let body = serde_json::to_vec(chunk).map_err(|e| e.to_string())?;
        acks.push(
            nats.js
                .send_publish(
                    subject.clone(),
                    PublishMessage::build().payload(body.into()),
                )
                .await
                .map_err(|e| format!("NATS audit publish: {e}"))?,
        );
    }
    Ok(acks)
}

impl Store for NatsStore {
    fn durable(&self) -> bool {
        true
    }

    fn genesis(&mut self) -> StoreResult<Option<Genesis>> {
        let meta = self.nats.meta.clone();
        self.nats
            .call(async move { kv_get(&meta, GENESIS_KEY).await })
    }

    /// Written once, by whichever node starts first: a node that finds another genesis
    /// stored refuses to start on it.
    fn init(&mut self, genesis: &Genesis) -> StoreResult<()> {
        let meta = self.nats.meta.clone();
        let ours = genesis.clone();
        self.nats.call(async move {
            let bytes = serde_json::to_vec(&ours).map_err(|e| e.to_string())?;
            if meta.create(GENESIS_KEY, bytes.into()).await.is_ok() {
                return Ok(());
            }
            match kv_get::<Genesis>(&meta, GENESIS_KEY).await? {
                Some(stored) if stored == ours => Ok(()),
                Some(_) => Err("the replicated log already holds another genesis".into()),
                None => Err("NATS KV genesis: cannot be created nor read".into()),
            }
        })
    }

    /// Publishes every event with the stream sequence it must land after (the previous
    /// event's), pipelined, then waits for every acknowledgement: JetStream sends one once the
    /// stream's quorum stored the message. If any fails, the caller must treat the whole batch
    /// as of unknown outcome (a later event's publish expected an earlier one's place).
    fn commit(&mut self, events: &[LoggedEvent], audit: &[AuditEntry]) -> StoreResult<()> {
        if events.is_empty() && audit.is_empty() {
            return Ok(());
        }
        let names = self.nats.names();
        let mut bodies = Vec::with_capacity(events.len());
        for e in events {
            let body = serde_json::to_vec(e).map_err(|e| e.to_string())?;
            bodies.push((
                e.seq,
                event_subject(&names, e.idempotency_key.as_deref()),
                Bytes::from(body),
            ));
        }
        let audit = audit.to_vec();
        let nats = self.nats.clone();
        self.nats.call(async move {
            let mut acks = Vec::with_capacity(bodies.len() + 1);
            for (seq, subject, body) in bodies {
                let publish = PublishMessage::build()
                    .payload(body)
                    .expected_last_sequence(seq - 1);
                let ack = nats
                    .js
                    .send_publish(subject, publish)
                    .await
                    .map_err(|e| format!("NATS publish of event {seq}: {e}"))?;
                acks.push((seq, ack));
            }
            let audit_acks = publish_audit(&nats, &audit).await?;
            for (seq, ack) in acks {
                let stored = ack
                    .await
                    .map_err(|e| format!("NATS publish of event {seq}: {e}"))?;
                if stored.sequence != seq {
                    return Err(format!(
                        "NATS publish of event {seq}: stored at stream sequence {}",
                        stored.sequence
                    ));
                }
            }
            for ack in audit_acks {
                ack.await.map_err(|e| format!("NATS audit publish: {e}"))?;
            }
            Ok(())
        })
    }

    fn events_from(&mut self, from: u64) -> StoreResult<Vec<LoggedEvent>> {
        let stream = self.nats.events.clone();
        self.nats.call(async move {
            let last = last_seq(&stream).await?;
            read_range(&stream, from, last).await
        })
    }

    fn events_page(&mut self, from: u64, limit: usize) -> StoreResult<Vec<LoggedEvent>> {
        let stream = self.nats.events.clone();
        self.nats.call(async move {
            let last = last_seq(&stream).await?;
            let until = last.min(from.max(1).saturating_add(limit as u64).saturating_sub(1));
            read_range(&stream, from, until).await
        })
    }

    /// Every event is published with its record.
    fn first_unrecorded(&mut self) -> StoreResult<Option<u64>> {
        Ok(None)
    }

    fn put_records(&mut self, records: &[(u64, EventRecord)]) -> StoreResult<()> {
        match records.first() {
            None => Ok(()),
            Some((seq, _)) => Err(format!(
                "replicated log: event {seq} cannot be amended (the log is written with its records)"
            )),
        }
    }

    /// A binary search over the log (stream numbers grow with the events): a few direct gets
    /// rather than a read of the whole log.
    fn event_of_stream_message(&mut self, msg: u64) -> StoreResult<Option<u64>> {
        let stream = self.nats.events.clone();
        self.nats.call(async move {
            let (mut lo, mut hi) = (1u64, last_seq(&stream).await?);
            let mut found = None;
            while lo <= hi {
                let mid = lo + (hi - lo) / 2;
                let m = stream
                    .get_raw_message(mid)
                    .await
                    .map_err(|e| format!("NATS get {mid}: {e}"))?;
                let e = decode(mid, &m.payload)?;
                let starts = e.record.as_ref().map_or(u64::MAX, |r| r.stream_seq);
                if starts <= msg {
                    found = Some(mid);
                    lo = mid + 1;
                } else if mid == 0 {
                    break;
                } else {
                    hi = mid - 1;
                }
            }
            Ok(found)
        })
    }

    fn finds_keys(&self) -> bool {
        true
    }

    fn event_by_key(&mut self, key: &str) -> StoreResult<Option<LoggedEvent>> {
        let stream = self.nats.events.clone();
        let subject = event_subject(&self.nats.names(), Some(key));
        let key = key.to_string();
        self.nats.call(async move {
            use async_nats::jetstream::stream::LastRawMessageErrorKind;
            match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => {
                    let e = decode(m.sequence, &m.payload)?;
                    // Two keys whose hashes share 128 bits: the stored key decides.
                    Ok((e.idempotency_key.as_deref() == Some(key.as_str())).then_some(e))
                }
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(format!("NATS idempotency look-up: {e}")),
            }
        })
    }

    fn keeps_snapshots(&self) -> bool {
        true
    }

    fn latest_snapshot(&mut self) -> StoreResult<Option<(u64, pmargin_store::State)>> {
        let store = self.nats.snapshots.clone();
        let text = self.nats.call(async move {
            use async_nats::jetstream::object_store::GetErrorKind;
            let mut object = match store.get(SNAPSHOT_OBJECT).await {
                Ok(o) => o,
                Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(format!("NATS snapshot: {e}")),
            };
            let mut text = String::new();
            object
                .read_to_string(&mut text)
                .await
                .map_err(|e| format!("NATS snapshot: {e}"))?;
            Ok(Some(text))
        })?;
        let Some(text) = text else { return Ok(None) };
        // The object is the sequence number, a newline, and the state document.
        let (seq, json) = text
            .split_once('\n')
            .ok_or("NATS snapshot: no sequence line")?;
        let seq: u64 = seq
            .parse()
            .map_err(|e| format!("NATS snapshot: sequence line: {e}"))?;
        let state = serde_json::from_str(json).map_err(|e| format!("NATS snapshot {seq}: {e}"))?;
        Ok(Some((seq, state)))
    }

    /// Replaces the snapshot (an object store writes the new one whole before it replaces the
    /// old: a crash meanwhile leaves the old one).
    fn save_snapshot(&mut self, seq: u64, json: &str) -> StoreResult<()> {
        let store = self.nats.snapshots.clone();
        let mut body = format!("{seq}\n").into_bytes();
        body.extend_from_slice(json.as_bytes());
        self.nats.call(async move {
            store
                .put(SNAPSHOT_OBJECT, &mut body.as_slice())
                .await
                .map(|_| ())
                .map_err(|e| format!("NATS snapshot {seq}: {e}"))
        })
    }

    fn audit_entries(&mut self) -> StoreResult<Vec<AuditEntry>> {
        let stream = self.nats.audit.clone();
        self.nats.call(async move {
            let last = last_seq(&stream).await?;
            let mut out = Vec::new();
            if last == 0 {
                return Ok(out);
            }
            let mut messages = tail(&stream, 1).await?;
            while let Some(m) = messages.next().await {
                let m = m.map_err(|e| format!("NATS audit read: {e}"))?;
                let seq = m
                    .info()
                    .map_err(|e| format!("NATS audit read: {e}"))?
                    .stream_sequence;
                let list: Vec<AuditEntry> = serde_json::from_slice(&m.payload)
                    .map_err(|e| format!("NATS audit message {seq}: {e}"))?;
                out.extend(list);
                if seq >= last {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn replicated(&self) -> Option<Arc<Nats>> {
        Some(self.nats.clone())
    }

    fn keys(&mut self) -> StoreResult<Vec<KeyRecord>> {
        let meta = self.nats.meta.clone();
        self.nats.call(async move { read_keys(&meta).await })
    }

    fn put_key(&mut self, key: &KeyRecord) -> StoreResult<()> {
        let meta = self.nats.meta.clone();
        let record = key.clone();
        self.nats
            .call(async move { kv_put(&meta, &key_name(&record.id), &record).await })
    }

    fn governance(&mut self) -> StoreResult<Option<Governance>> {
        let meta = self.nats.meta.clone();
        self.nats
            .call(async move { kv_get(&meta, GOVERNANCE_KEY).await })
    }

    /// The whole state in one value, then its audit entry.
    fn put_governance(
        &mut self,
        _prev: Option<&Governance>,
        next: &Governance,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let meta = self.nats.meta.clone();
        let next = next.clone();
        let audit = vec![audit.clone()];
        let nats = self.nats.clone();
        self.nats.call(async move {
            kv_put(&meta, GOVERNANCE_KEY, &next).await?;
            for ack in publish_audit(&nats, &audit).await? {
                ack.await.map_err(|e| format!("NATS audit publish: {e}"))?;
            }
            Ok(())
        })
    }
}

/// Every API key record in the bucket.
pub async fn read_keys(meta: &async_nats::jetstream::kv::Store) -> StoreResult<Vec<KeyRecord>> {
    let mut names = meta
        .keys()
        .await
        .map_err(|e| format!("NATS KV keys: {e}"))?;
    let mut wanted = Vec::new();
    while let Some(k) = names.next().await {
        let k = k.map_err(|e| format!("NATS KV keys: {e}"))?;
        if k.starts_with("key.") {
            wanted.push(k);
        }
    }
    wanted.sort();
    let mut out = Vec::with_capacity(wanted.len());
    for k in wanted {
        if let Some(record) = kv_get::<KeyRecord>(meta, &k).await? {
            out.push(record);
        }
    }
    Ok(out)
}
