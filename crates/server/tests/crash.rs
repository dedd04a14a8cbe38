//! Crash test: the server runs as a child process (this test binary re-run in child mode),
//! takes concurrent deposits and trades with idempotency keys, and is killed with SIGKILL at
//! pseudo-random moments, many times (up to 40 rounds or 45 s). It snapshots every
//! [`SNAPSHOT_EVERY`] events, so restarts go on from a snapshot (taken at any moment, a kill
//! possibly in the middle of one). After each restart every acknowledged event is in the log
//! (under its key, same sequence; a retry with its key is answered from the log), and the
//! served state and stream numbering equal a fresh replay of the log.

mod common;

use common::*;
use pmargin_server::demo::demo_genesis;
use pmargin_server::state::genesis_engine;
use pmargin_server::store::{SqliteStore, Store};
use pmargin_server::stream::{apply_event, items};
use pmargin_server::{start, ServerConfig};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "PMARGIN_CRASH_CHILD_DIR";

/// Small, so that most rounds take snapshots and most restarts start from one.
const SNAPSHOT_EVERY: u64 = 40;

/// The name of the one test here: run with [`CHILD_ENV`] set it is the child (a server), else
/// the parent, so no run passes a test without the parent's checks.
const TEST_NAME: &str = "acknowledged_events_survive_sigkill_and_state_equals_a_fresh_replay";

/// Child mode: serve from the data directory until killed (exits after 60 s at most). A start
/// that fails panics, ending the child before it listens, which fails the parent.
async fn serve_as_child(dir: String) -> ! {
    let mut cfg = ServerConfig::new("127.0.0.1:0", Some(dir.into()), demo_genesis());
    cfg.admin_key = Some(ADMIN.into());
    cfg.snapshot_every = SNAPSHOT_EVERY;
    // The load below is one key's, far beyond a venue's default rate limit.
    cfg.limits.writes_per_second = 1e9;
    cfg.limits.write_burst = 1e9;
    let running = start(cfg).await.unwrap();
    // (On a line of its own: the harness has printed "test ... " without a newline.)
    println!(
        "\nLISTENING {} RECOVERED {} SNAPSHOT {} REPLAYED {}",
        running.addr,
        running.recovered_events,
        running.snapshot_seq.unwrap_or(0),
        running.replayed_events
    );
    std::io::stdout().flush().unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    std::process::exit(0)
}

/// A started child: the process, its address, and the snapshot its start went on from (0:
/// none).
fn spawn_child(dir: &std::path::Path) -> (Child, String, u64) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (addr, snapshot) = loop {
        let line = lines
            .next()
            .expect("child exited before listening")
            .unwrap();
        if let Some(pos) = line.find("LISTENING ") {
            let words: Vec<&str> = line[pos..].split_whitespace().collect();
            break (words[1].to_string(), words[5].parse().unwrap());
        }
    };
    (child, addr, snapshot)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn body(i: u64) -> Value {
    let acct = format!("crash-{}", i % 7);
    if i % 3 == 2 {
        json!({"type":"trade","account":acct,"instrument":"BTC-PERPETUAL","size":0.001,"price":91540,"counterparty":"basis-fund"})
    } else {
        json!({"type":"deposit","account":acct,"asset":"USDC","amount":100 + i})
    }
}

/// Rounds at most, and the wall-time budget of the rounds (CI may set them).
fn budget() -> (usize, Duration) {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        var("PMARGIN_CRASH_ROUNDS", 40) as usize,
        Duration::from_secs(var("PMARGIN_CRASH_SECS", 45)),
    )
}

/// The accounts as the service lists them and as a fresh replay of the stored log computes
/// them, with the sequence numbers; and the idempotency keys of the log with their sequences.
async fn compare_with_replay(
    client: &reqwest::Client,
    addr: &str,
    dir: &std::path::Path,
) -> (Value, Value, std::collections::HashMap<String, u64>) {
    let get = |path: &str| {
        client
            .get(format!("http://{addr}{path}"))
            .bearer_auth(ADMIN)
            .send()
    };
    let listed: Value = get("/v1/accounts").await.unwrap().json().await.unwrap();
    let health: Value = get("/healthz").await.unwrap().json().await.unwrap();
    // The service is idle (no writes while this runs): the log is what it recovered.
    let mut store = SqliteStore::open(dir).unwrap();
    let log = store.events_from(0).unwrap();
    let mut engine = genesis_engine(&store.genesis().unwrap().unwrap()).unwrap();
    let mut messages = 0;
    for e in &log {
        let applied = apply_event(&mut engine, &e.event);
        messages += items(e.seq, &applied.outputs, &applied.extra).len();
    }
    // (The listing is in account id order.)
    let mut risks: Vec<_> = engine.risks().collect();
    risks.sort_by(|a, b| a.0.cmp(b.0));
    let fresh: Vec<Value> = risks
        .into_iter()
        .map(|(id, r)| json!({ "id": id, "equity": r.equity, "margin_balance": r.margin_balance, "initial_margin": r.initial_margin,
                               "maintenance_margin": r.maintenance_margin, "status": r.status }))
        .collect();
    let keys = log
        .iter()
        .filter_map(|e| e.idempotency_key.clone().map(|k| (k, e.seq)))
        .collect();
    (
        json!({ "sequence": listed["sequence"], "accounts": listed["accounts"], "stream_sequence": health["stream_sequence"] }),
        json!({ "sequence": engine.sequence(), "accounts": fresh, "stream_sequence": messages }),
        keys,
    )
}

/// A retry of an acknowledged request is answered from the log with its original sequence.
async fn retry(client: &reqwest::Client, addr: &str, round: usize, id: u64, seq: u64) {
    let resp = client
        .post(format!("http://{addr}/v1/events"))
        .bearer_auth(ADMIN)
        .header("Idempotency-Key", format!("req-{id}"))
        .json(&body(id))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true"),
        "round {round}: request {id} lost"
    );
    let b: Value = resp.json().await.unwrap();
    assert_eq!(
        b["sequence"].as_u64(),
        Some(seq),
        "round {round}: request {id}"
    );
}

/// Up to 40 rounds or 45 s of rounds, whichever comes first (`PMARGIN_CRASH_ROUNDS`,
/// `PMARGIN_CRASH_SECS`). Each round: restart; every event acknowledged before any kill is in
/// the log under its idempotency key with its sequence (all of them checked in the log, the
/// last round's and a sample of older ones also by a retry over HTTP); the served state equals
/// a fresh replay of the log; then load from 8 clients and SIGKILL at a random moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_and_state_equals_a_fresh_replay() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        serve_as_child(dir).await;
    }
    let dir = std::env::temp_dir().join(format!("pmargin-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let seed = 0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64;
    let mut rng = Rng(seed);
    let mut acked: Vec<(u64, u64)> = Vec::new(); // (request id, sequence)
    let mut last_round = 0..0; // the indices in `acked` of the last round's acknowledgements
    let mut next_id = 0u64;
    let (max_rounds, budget) = budget();
    let began = Instant::now();
    // Generous: a loaded machine is slow, and a check must not fail for lack of time.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut rounds = 0;
    let mut checked_events = 0usize;
    let mut from_snapshot = 0;
    while rounds < max_rounds && began.elapsed() < budget {
        let (mut child, addr, snapshot) = spawn_child(&dir);
        from_snapshot += usize::from(snapshot > 0);
        // Everything acknowledged before is in the log, and the state is a fresh replay's.
        let (served, replayed, keys) = compare_with_replay(&client, &addr, &dir).await;
        assert_eq!(
            served, replayed,
            "round {rounds}: state differs from a fresh replay"
        );
        for &(id, seq) in &acked {
            assert_eq!(
                keys.get(&format!("admin/req-{id}")),
                Some(&seq),
                "round {rounds}: acknowledged request {id} (sequence {seq}) is not in the log"
            );
        }
        checked_events += acked.len();
        let mut sample: Vec<(u64, u64)> = acked[last_round.clone()].to_vec();
        for _ in 0..32.min(acked.len()) {
            sample.push(acked[(rng.next() % acked.len() as u64) as usize]);
        }
        for chunk in sample.chunks(16) {
            let checks = chunk
                .iter()
                .map(|&(id, seq)| retry(&client, &addr, rounds, id, seq));
            futures_util::future::join_all(checks).await;
        }
        // Load from 8 concurrent clients, killed at a random moment.
        let load_client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let stop_at = Instant::now() + Duration::from_millis(rng.next() % 500);
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let client = load_client.clone();
            let addr = addr.clone();
            let start = next_id + w * 1_000_000;
            tasks.push(tokio::spawn(async move {
                let mut ok = Vec::new();
                let mut id = start;
                loop {
                    let r = client
                        .post(format!("http://{addr}/v1/events"))
                        .bearer_auth(ADMIN)
                        .header("Idempotency-Key", format!("req-{id}"))
                        .json(&body(id))
                        .send()
                        .await;
                    match r {
                        Ok(resp) if resp.status().as_u16() < 500 => {
                            // Only accepted events are logged (a refusal changes nothing).
                            let accepted = resp.status().as_u16() == 200;
                            if let Ok(b) = resp.json::<Value>().await {
                                if let (true, Some(seq)) = (accepted, b["sequence"].as_u64()) {
                                    ok.push((id, seq));
                                }
                            }
                        }
                        _ => return ok,
                    }
                    id += 1;
                }
            }));
        }
        while Instant::now() < stop_at {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let before = acked.len();
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
        last_round = before..acked.len();
        next_id += 100_000_000;
        rounds += 1;
    }
    assert!(
        rounds >= 3,
        "only {rounds} rounds in {budget:?}: the machine is too slow for this test"
    );
    assert!(
        acked.len() > 20,
        "too few events acknowledged: {}",
        acked.len()
    );
    assert!(
        from_snapshot >= 2,
        "only {from_snapshot} of {rounds} restarts went on from a snapshot"
    );
    // Final restart: nothing acknowledged is lost, and the state equals a fresh replay.
    let (mut child, addr, _) = spawn_child(&dir);
    let (served, replayed, keys) = compare_with_replay(&client, &addr, &dir).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(served, replayed, "final: state differs from a fresh replay");
    for &(id, seq) in &acked {
        assert_eq!(
            keys.get(&format!("admin/req-{id}")),
            Some(&seq),
            "final: request {id}"
        );
    }
    // Straight to the process's stderr (past the test harness's capture): the CI log shows it.
    let _ = writeln!(
        std::io::stderr(),
        "crash test: {rounds} SIGKILL rounds in {:.1} s (budget {max_rounds} rounds / {budget:?}, seed {seed:#x}), \
         {from_snapshot} restarts from a snapshot; \
         {} acknowledged events, all in the log ({checked_events} look-ups over the rounds), log of {} events",
        began.elapsed().as_secs_f64(),
        acked.len(),
        replayed["sequence"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
