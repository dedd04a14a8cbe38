//! Crash test: the server runs as a child process (this test binary re-run in child mode),
//! takes concurrent deposits and trades with idempotency keys, and is killed with SIGKILL at
//! pseudo-random moments. After each restart every acknowledged event is in the log (a retry
//! with its key is answered from the log, same sequence), and the state equals a fresh replay
//! of the log.

mod common;

use common::*;
use pmargin_server::demo::demo_genesis;
use pmargin_server::state::genesis_engine;
use pmargin_server::store::{SqliteStore, Store};
use pmargin_server::{start, ServerConfig};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "PMARGIN_CRASH_CHILD_DIR";

/// Child mode: serve from the data directory until killed (or 60 s at most).
#[test]
#[ignore]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut cfg = ServerConfig::new("127.0.0.1:0", Some(dir.into()), demo_genesis());
        cfg.admin_key = Some(ADMIN.into());
        let running = start(cfg).await.unwrap();
        println!(
            "LISTENING {} RECOVERED {}",
            running.addr, running.recovered_events
        );
        std::io::stdout().flush().unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

fn spawn_child(dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("child exited before listening")
            .unwrap();
        if let Some(pos) = line.find("LISTENING ") {
            break line[pos + "LISTENING ".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
        }
    };
    (child, addr)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_and_state_equals_a_fresh_replay() {
    let dir = std::env::temp_dir().join(format!("pmargin-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64);
    let mut acked: Vec<(u64, u64)> = Vec::new(); // (request id, sequence)
    let mut next_id = 0u64;
    let deadline = Instant::now() + Duration::from_secs(40);
    let rounds = 6;
    for round in 0..rounds {
        if Instant::now() > deadline {
            break;
        }
        let (mut child, addr) = spawn_child(&dir);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        // Everything acknowledged before is there: a retry is answered from the log.
        for &(id, seq) in &acked {
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
        // Load from 8 concurrent clients, killed at a random moment.
        let stop_at = Instant::now() + Duration::from_millis(100 + rng.next() % 400);
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let client = client.clone();
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
                            if let Ok(b) = resp.json::<Value>().await {
                                if let Some(seq) = b["sequence"].as_u64() {
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
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
        next_id += 100_000_000;
    }
    assert!(
        acked.len() > 20,
        "too few events acknowledged: {}",
        acked.len()
    );
    // Final restart: the recovered state equals a fresh replay of the log.
    let (mut child, addr) = spawn_child(&dir);
    let client = reqwest::Client::new();
    let listed: Value = client
        .get(format!("http://{addr}/v1/accounts"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let mut store = SqliteStore::open(&dir).unwrap();
    let log = store.events_from(0).unwrap();
    let mut engine = genesis_engine(&store.genesis().unwrap().unwrap()).unwrap();
    for e in &log {
        engine.apply(&e.event);
    }
    assert_eq!(listed["sequence"].as_u64(), Some(engine.sequence()));
    assert!(acked.iter().all(|(_, seq)| *seq <= engine.sequence()));
    let fresh: Vec<Value> = engine
        .risks()
        .map(|(id, r)| json!({ "id": id, "equity": r.equity, "margin_balance": r.margin_balance, "initial_margin": r.initial_margin,
                               "maintenance_margin": r.maintenance_margin, "status": r.status }))
        .collect();
    assert_eq!(listed["accounts"].as_array().unwrap(), &fresh);
    eprintln!(
        "crash test: {} acknowledged events over {rounds} kills, log of {}",
        acked.len(),
        log.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
