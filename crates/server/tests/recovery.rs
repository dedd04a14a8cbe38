//! Recovery from the latest snapshot plus the later events: a restarted server answers,
//! streams and signs exactly as one that never stopped. The reference is a server on a memory
//! store fed the same requests without interruption; the durable server is abandoned (as in a
//! crash: no final snapshot) after a periodic snapshot, restarted, and compared with it.

mod common;

use common::*;
use futures_util::StreamExt;
use pmargin_server::demo::demo_genesis;
use pmargin_server::settlement::SettlementConfig;
use pmargin_server::state::genesis_engine;
use pmargin_server::store::{LoggedEvent, SqliteStore, Store};
use pmargin_server::{start, Running, ServerConfig};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const SECRET: [u8; 32] = [5; 32];

fn config(dir: Option<&Path>, ring: usize, every: u64) -> ServerConfig {
    let mut cfg = ServerConfig::new("127.0.0.1:0", dir.map(Path::to_path_buf), demo_genesis());
    cfg.admin_key = Some(ADMIN.into());
    cfg.ring_capacity = ring;
    cfg.snapshot_every = every;
    cfg.settlement = SettlementConfig {
        chain_id: 8453,
        verifying_contract: [0x42; 20],
        signing_key: Some(SECRET),
    };
    cfg
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pmargin-recovery-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Request `i` of a fixed script (all as events, with an idempotency key each): deposits,
/// trades with a counterparty, a refused withdrawal, price spikes that liquidate short
/// perpetuals, oracle quotes that change the index's health, funding and a vol move.
fn request(i: usize) -> Value {
    match i {
        0 => json!({"type":"deposit","account":"dave","asset":"USDC","amount":1000}),
        1 => {
            json!({"type":"trade","account":"dave","instrument":"BTC-PERPETUAL","size":-0.08,"price":91540,"counterparty":"basis-fund"})
        }
        2 => json!({"type":"deposit","account":"erin","asset":"USDC","amount":1000}),
        3 => {
            json!({"type":"trade","account":"erin","instrument":"BTC-PERPETUAL","size":-0.08,"price":91540,"counterparty":"basis-fund"})
        }
        4 => json!({"type":"withdrawal","account":"erin","asset":"USDC","amount":100000}),
        5 => json!({"type":"price","underlying":"BTC","price":99000}),
        12 => json!({"type":"funding","instrument":"BTC-PERPETUAL","rate":0.0001}),
        15 => json!({"type":"vol","underlying":"BTC","vol":0.7}),
        30 => json!({"type":"deposit","account":"hank","asset":"USDC","amount":1000}),
        31 => {
            json!({"type":"trade","account":"hank","instrument":"ETH-PERPETUAL","size":-2,"price":3050,"counterparty":"basis-fund"})
        }
        32 => json!({"type":"price","underlying":"ETH","price":3700}),
        _ => match i % 4 {
            // Three venues, some quotes late enough to leave the others stale.
            0 => {
                let source = ["a", "b", "c"][i % 3];
                let ts = 1_000 * i as i64 + if i.is_multiple_of(12) { 40_000 } else { 0 };
                json!({"type":"quote","source":source,"underlying":"BTC","price":99_000 + 7 * i,"ts_ms":ts})
            }
            1 => {
                let account = ["dave", "erin", "frank", "gina"][(i / 4) % 4];
                json!({"type":"deposit","account":account,"asset":"USDC","amount":100 + i})
            }
            2 => {
                // (At the mark: after request 32 moves ETH to 3,700, a fill at 3,050 would be
                // outside the engine's price band.)
                let price = if i > 32 { 3700 } else { 3050 };
                json!({"type":"trade","account":"frank","instrument":"ETH-PERPETUAL","size":if i % 8 == 2 { 0.1 } else { -0.1 },"price":price,"counterparty":"basis-fund"})
            }
            _ => json!({"type":"price","underlying":"SOL","price":140 + i % 9}),
        },
    }
}

/// Posts request `i`; the status, whether it was answered as a replay, and the body's text.
async fn post(r: &Running, i: usize) -> (u16, bool, String) {
    post_body(r, i, &request(i)).await
}

async fn post_body(r: &Running, i: usize, body: &Value) -> (u16, bool, String) {
    let resp = reqwest::Client::new()
        .post(url(r, "/v1/events"))
        .bearer_auth(ADMIN)
        .header("Idempotency-Key", format!("k{i}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    (resp.status().as_u16(), replayed, resp.text().await.unwrap())
}

async fn get(r: &Running, path: &str) -> Value {
    let (status, body) = send(reqwest::Client::new().get(url(r, path)).bearer_auth(ADMIN)).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Every stream message from `from` on (until the last one published), as the text sent.
async fn stream_from(r: &Running, from: u64) -> Vec<String> {
    let last = r.state.hub.next_seq() - 1;
    let mut req = format!("ws://{}/v1/stream?from_seq={from}", r.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
    let mut ws = tokio_tungstenite::connect_async(req).await.unwrap().0;
    let mut out = Vec::new();
    let mut next = from;
    while next <= last {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["seq"].as_u64(), Some(next), "{t}");
                next += 1;
                out.push(t.to_string());
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("stream from {from} ended at {next} of {last}: {other:?}"),
        }
    }
    out
}

/// The engine a fresh replay of the stored log gives.
fn fresh_replay(store: &mut dyn Store) -> pmargin_engine::Engine {
    let mut engine = genesis_engine(&store.genesis().unwrap().unwrap()).unwrap();
    for e in store.events_from(0).unwrap() {
        engine.apply(&e.event);
    }
    engine
}

async fn wait_for_snapshot(r: &Running, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seq = r.state.metrics.snapshot_seq();
        if seq >= at_least {
            return seq;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot at {at_least} or later"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The ring's messages once the background refill after a restart has put back those from
/// `oldest` on.
async fn ring_from(r: &Running, oldest: u64) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ring, first) = r.state.hub.since(0);
        if first == oldest {
            return ring.iter().map(|m| m.json.to_string()).collect();
        }
        assert!(
            first > oldest && Instant::now() < deadline,
            "the ring starts at {first}, {oldest} expected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// As a crash leaves it: no clean stop, so no final snapshot (the abandoned writer stays idle).
/// A page of liquidation instructions without what depends on the time each event was logged
/// (the message's timestamp, its digest and signature), and those times by event.
fn untimed(page: &Value) -> (Value, Vec<(u64, u64)>) {
    let mut page = page.clone();
    let mut times = Vec::new();
    for item in page["liquidations"].as_array_mut().unwrap() {
        let seq = item["event_seq"].as_u64().unwrap();
        let signed = item["signed"].as_object_mut().unwrap();
        signed.remove("digest");
        signed.remove("signature");
        let time = signed["message"]
            .as_object_mut()
            .unwrap()
            .remove("timestamp")
            .unwrap();
        times.push((seq, time.as_str().unwrap().parse().unwrap()));
    }
    (page, times)
}

fn abandon(r: Running) {
    drop(r);
}

const PART_A: usize = 25;
const TOTAL: usize = 45;

/// Events the log holds after these answers: the accepted ones (a refused event changes
/// nothing and is not logged).
fn logged_count(answers: &[(u16, bool, String)]) -> usize {
    answers.iter().filter(|a| a.0 == 200).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_a_snapshot_answers_streams_and_signs_as_an_uninterrupted_server() {
    let dir = temp_dir("snapshot");
    // The reference: never stopped, a ring holding every message.
    let reference = start(config(None, 100_000, 0)).await.unwrap();
    let mut answers = Vec::new();
    let mut after_a = String::new();
    for i in 0..TOTAL {
        answers.push(post(&reference, i).await);
        if i + 1 == PART_A {
            let engine = reference.state.engine().snapshot();
            let accounts = get(&reference, "/v1/accounts").await;
            let applied = reference.state.metrics.counts().0;
            after_a = serde_json::to_string(&(engine, accounts, applied)).unwrap();
        }
    }
    let ref_liquidations = get(&reference, "/v1/liquidations").await;
    let ref_stream = stream_from(&reference, 1).await;
    assert!(
        answers.iter().any(|a| a.0 == 422) && answers.iter().all(|a| a.0 == 200 || a.0 == 422),
        "{answers:?}"
    );
    let kinds = ref_stream.join("\n");
    for kind in ["oracle_health", "liquidation_fill", "margin_change"] {
        assert!(kinds.contains(kind), "no {kind} in the script's stream");
    }

    // The durable server: snapshots every 10 events, a ring of 4 (resumes read the log).
    let a = start(config(Some(&dir), 4, 10)).await.unwrap();
    assert_eq!(a.snapshot_seq, None);
    for (i, answer) in answers.iter().enumerate().take(PART_A) {
        assert_eq!(&post(&a, i).await, answer, "request {i}");
    }
    let liquidations_a = get(&a, "/v1/liquidations").await;
    let snapshot = wait_for_snapshot(&a, 20).await;
    let logged_a = logged_count(&answers[..PART_A]);
    assert!(snapshot < logged_a as u64, "{snapshot}");
    abandon(a);

    let b = start(config(Some(&dir), 4, 10)).await.unwrap();
    assert_eq!(b.snapshot_seq, Some(snapshot));
    assert_eq!(b.replayed_events as u64, logged_a as u64 - snapshot);
    assert_eq!(b.recovered_events, logged_a);
    // The state equals a fresh replay of the log and the uninterrupted server's.
    let fresh = {
        let mut store = SqliteStore::open(&dir).unwrap();
        fresh_replay(&mut store).snapshot()
    };
    let engine = b.state.engine().snapshot();
    assert_eq!(engine, fresh, "restarted vs a fresh replay");
    let accounts = get(&b, "/v1/accounts").await;
    assert_eq!(
        serde_json::to_string(&(engine, accounts, b.state.metrics.counts().0)).unwrap(),
        after_a,
        "restarted vs uninterrupted: engine, accounts, events applied"
    );
    // Liquidations signed before the crash, the same after.
    assert!(
        !liquidations_a["liquidations"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{liquidations_a}"
    );
    assert_eq!(get(&b, "/v1/liquidations").await, liquidations_a);
    // Retries of requests from before and after the snapshot: the original answers.
    for (i, (status, _, body)) in answers.iter().enumerate().take(PART_A) {
        if *status == 200 {
            let retried = post(&b, i).await;
            assert_eq!(retried, (*status, true, body.clone()), "retry of {i}");
        }
        // (A refusal was not logged: a retry of it would be judged again, as a new request.)
    }
    let (status, _, body) = post_body(&b, 0, &request(2)).await;
    assert_eq!(
        status, 422,
        "a key from before the snapshot with another body: {body}"
    );
    assert!(body.contains("Idempotency-Key"), "{body}");
    // Going on: the same answers as the uninterrupted server's.
    for (i, answer) in answers.iter().enumerate().skip(PART_A) {
        assert_eq!(&post(&b, i).await, answer, "request {i} after the restart");
    }
    // Each server logs events at its own wall time, and an instruction carries its event's
    // logged time (so do its digest and signature): the restarted server's instructions are
    // the reference's but for those, carry the times of its own log, and the ones from before
    // the crash are still the very messages signed then.
    let after = get(&b, "/v1/liquidations").await;
    let (untimed, times) = untimed(&after);
    assert_eq!(untimed, self::untimed(&ref_liquidations).0);
    let logged = SqliteStore::open(&dir).unwrap().events_from(1).unwrap();
    assert!(!times.is_empty());
    for (seq, time) in times {
        let event = logged.iter().find(|e| e.seq == seq).unwrap();
        assert_eq!(
            time,
            (event.ts_ms / 1000) as u64,
            "instruction of event {seq}"
        );
    }
    let before = liquidations_a["liquidations"].as_array().unwrap();
    assert_eq!(
        &after["liquidations"].as_array().unwrap()[..before.len()],
        &before[..]
    );
    // The stream: resumed from before the snapshot, after it, and from the ring.
    let total = ref_stream.len() as u64;
    assert_eq!(b.state.hub.next_seq() - 1, total);
    for from in [1, total / 3, total / 2, total - 1] {
        assert_eq!(
            stream_from(&b, from).await,
            ref_stream[from as usize - 1..],
            "stream from {from}"
        );
    }
    b.stop().await.unwrap();

    // A clean stop took a final snapshot: nothing to replay, and a large ring is refilled from
    // the log as the reference's ring was filled live.
    let c = start(config(Some(&dir), 100_000, 10)).await.unwrap();
    assert_eq!(
        (c.snapshot_seq, c.replayed_events),
        (Some(logged_count(&answers[..TOTAL]) as u64), 0)
    );
    assert_eq!(ring_from(&c, 1).await, ref_stream);
    assert_eq!(post(&c, 3).await.2, answers[3].2);
    assert_eq!(
        c.state.metrics.counts().0,
        reference.state.metrics.counts().0,
        "events applied"
    );
    c.stop().await.unwrap();
    // A ring smaller than the log keeps the newest messages.
    let d = start(config(Some(&dir), 7, 10)).await.unwrap();
    assert_eq!(
        ring_from(&d, total - 6).await,
        ref_stream[total as usize - 7..]
    );
    d.stop().await.unwrap();
    reference.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A data directory as a build before records left it: schema v3, the log of `reference`
/// without the records (no outputs either), the genesis in `genesis.json`.
fn write_old_dir(dir: &Path, reference: &Running) {
    let log: Vec<LoggedEvent> = reference
        .state
        .store
        .lock()
        .unwrap()
        .events_from(0)
        .unwrap()
        .into_iter()
        .map(|e| LoggedEvent { record: None, ..e })
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("genesis.json"),
        serde_json::to_string_pretty(&demo_genesis()).unwrap(),
    )
    .unwrap();
    // Schema v3: no record columns.
    let conn = rusqlite::Connection::open(dir.join(pmargin_store::DB_FILE)).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL").unwrap();
    for m in &pmargin_store::MIGRATIONS[..3] {
        conn.execute_batch(m).unwrap();
    }
    conn.execute_batch("PRAGMA user_version = 3").unwrap();
    for e in log {
        conn.execute(
            "INSERT INTO events (seq, ts_ms, idempotency_key, key_id, event, outputs) VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
            rusqlite::params![
                e.seq as i64,
                e.ts_ms,
                e.idempotency_key,
                e.key_id,
                serde_json::to_string(&e.event).unwrap()
            ],
        )
        .unwrap();
    }
}

/// A log written before events carried their records starts (replaying from genesis), gains
/// the records, and then answers, streams and signs as the uninterrupted reference; the next
/// start goes on from a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_log_without_records_starts_and_is_upgraded() {
    const N: usize = 36;
    let reference = start(config(None, 100_000, 0)).await.unwrap();
    let mut answers = Vec::new();
    for i in 0..N {
        answers.push(post(&reference, i).await);
    }
    let ref_stream = stream_from(&reference, 1).await;
    let ref_liquidations = get(&reference, "/v1/liquidations").await;
    let dir = temp_dir("old");
    write_old_dir(&dir, &reference);
    let n = logged_count(&answers);
    // One more request, to be applied after the upgrade.
    answers.push(post(&reference, N).await);
    assert_eq!(answers[N].0, 200, "{:?}", answers[N]);
    let open = |ring| start(config(Some(&dir), ring, 10));
    let a = open(4).await.unwrap();
    assert_eq!(
        (a.snapshot_seq, a.replayed_events, a.recovered_events),
        (None, n, n)
    );
    // The records are stored now.
    let mut store = pmargin_server::store::open_dir(&dir).unwrap();
    assert_eq!(store.first_unrecorded().unwrap(), None);
    assert!(store
        .events_from(0)
        .unwrap()
        .iter()
        .all(|e| e.record.is_some()));
    drop(store);
    let db = pmargin_store::Store::open(&dir).unwrap();
    assert_eq!(db.schema_version().unwrap(), pmargin_store::SCHEMA_VERSION);
    // The genesis file was imported.
    assert!(db.genesis().unwrap().is_some());
    assert!(!dir.join("genesis.json").exists());
    assert!(dir.join("genesis.json.imported").exists());
    drop(db);
    for i in [0, 4, 5, N - 1] {
        if answers[i].0 != 200 {
            continue;
        }
        let (status, replayed, body) = post(&a, i).await;
        assert!(replayed, "request {i} applied again");
        assert_eq!((status, body), (answers[i].0, answers[i].2.clone()), "{i}");
    }
    assert_eq!(stream_from(&a, 1).await, ref_stream);
    assert_eq!(get(&a, "/v1/liquidations").await, ref_liquidations);
    // The upgraded log takes new events.
    assert_eq!(post(&a, N).await, answers[N], "a new event");
    // The long replay was worth a snapshot at once.
    assert_eq!(wait_for_snapshot(&a, n as u64).await, n as u64);
    abandon(a);
    let b = open(100_000).await.unwrap();
    assert_eq!(
        (b.snapshot_seq, b.replayed_events, b.recovered_events),
        (Some(n as u64), 1, n + 1)
    );
    assert_eq!(
        ring_from(&b, 1).await,
        stream_from(&reference, 1).await,
        "the ring after the restart"
    );
    for i in [1, N] {
        let (_, replayed, body) = post(&b, i).await;
        assert!(replayed, "request {i} applied again");
        assert_eq!(body, answers[i].2, "{i}");
    }
    b.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    reference.stop().await.unwrap();
}

/// A data directory of the build before keys and genesis moved into the database: both in
/// `genesis.json` and `keys.json` beside it. The first start imports them and renames the
/// files; a key made before works, a key revoked before stays revoked. Files put back (as
/// after a crash between the import and the renames) change nothing: a stored record wins, so
/// a revocation made after the import is not undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_builds_genesis_and_key_files_are_imported_once() {
    let dir = temp_dir("import");
    let client = reqwest::Client::new();
    let make_key = |r: &Running| {
        client
            .post(url(r, "/v1/keys"))
            .bearer_auth(ADMIN)
            .json(&json!({"role": "read_only"}))
    };
    let revoke = |r: &Running, id: &str| {
        client
            .delete(url(r, &format!("/v1/keys/{id}")))
            .bearer_auth(ADMIN)
    };
    let status_with = |r: &Running, key: &str| {
        let req = client.get(url(r, "/v1/accounts")).bearer_auth(key);
        async move { send(req).await.0 }
    };
    let a = start(config(Some(&dir), 100, 0)).await.unwrap();
    assert_eq!(post(&a, 0).await.0, 200);
    let (s, live) = send(make_key(&a)).await;
    assert_eq!(s, 201, "{live}");
    let (s, gone) = send(make_key(&a)).await;
    assert_eq!(s, 201, "{gone}");
    let (s, b) = send(revoke(&a, gone["id"].as_str().unwrap())).await;
    assert_eq!(s, 200, "{b}");
    let accounts = get(&a, "/v1/accounts").await;
    a.stop().await.unwrap();

    // The previous layout: the rows out of the database, into the files that build wrote.
    let db_path = dir.join(pmargin_store::DB_FILE);
    let conn = rusqlite::Connection::open(&db_path).unwrap();
    let genesis: String = conn
        .query_row("SELECT genesis FROM genesis", [], |r| r.get(0))
        .unwrap();
    let records: Vec<Value> = conn
        .prepare("SELECT record FROM api_keys ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|t| serde_json::from_str(&t.unwrap()).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "admin, live, gone");
    conn.execute_batch("DELETE FROM genesis; DELETE FROM api_keys;")
        .unwrap();
    drop(conn);
    let (genesis_file, keys_file) = (dir.join("genesis.json"), dir.join("keys.json"));
    let imported = |p: &Path| PathBuf::from(format!("{}.imported", p.display()));
    std::fs::write(&genesis_file, &genesis).unwrap();
    std::fs::write(&keys_file, Value::Array(records).to_string()).unwrap();

    let live_key = live["key"].as_str().unwrap();
    let gone_key = gone["key"].as_str().unwrap();
    let b = start(config(Some(&dir), 100, 0)).await.unwrap();
    assert_eq!(get(&b, "/v1/accounts").await, accounts);
    assert_eq!(status_with(&b, live_key).await, 200);
    assert_eq!(status_with(&b, gone_key).await, 401, "a revoked key");
    b.stop().await.unwrap();
    assert!(!genesis_file.exists() && imported(&genesis_file).exists());
    assert!(!keys_file.exists() && imported(&keys_file).exists());
    let db = pmargin_store::Store::open(&dir).unwrap();
    assert_eq!(db.genesis().unwrap(), Some(genesis));
    assert_eq!(db.api_keys().unwrap().len(), 3);
    drop(db);

    // Revoked after the import; then the files are back, as if the renames had not happened.
    let c = start(config(Some(&dir), 100, 0)).await.unwrap();
    let (s, b) = send(revoke(&c, live["id"].as_str().unwrap())).await;
    assert_eq!(s, 200, "{b}");
    c.stop().await.unwrap();
    std::fs::rename(imported(&genesis_file), &genesis_file).unwrap();
    std::fs::rename(imported(&keys_file), &keys_file).unwrap();
    let d = start(config(Some(&dir), 100, 0)).await.unwrap();
    assert_eq!(
        status_with(&d, live_key).await,
        401,
        "the revocation stands"
    );
    assert_eq!(status_with(&d, gone_key).await, 401);
    assert_eq!(status_with(&d, ADMIN).await, 200);
    d.stop().await.unwrap();
    assert!(!keys_file.exists() && imported(&keys_file).exists());
    let _ = std::fs::remove_dir_all(&dir);
}
