//! Mixed load test of the risk service.
//!
//! ```sh
//! # against a running server (its own process; see scripts/loadtest.sh):
//! cargo run --release -p pmargin-server --example load -- --url http://127.0.0.1:8080 --key KEY
//! # or an in-process server on a temporary data directory:
//! cargo run --release -p pmargin-server --example load -- --clients 100 --seconds 30
//! ```
//!
//! `clients` concurrent clients loop for `seconds`, each request chosen in a fixed cycle of ten:
//! 8 GETs of an account's margin report (rotating over every account), 1 what-if (one of a few
//! trades on a rotating account) and 1 durable write, alternately a trade between two funded
//! load accounts and a deposit of 1 USDC into the client's own account, each with an
//! `Idempotency-Key`. It reports throughput, p50/p99 latency per kind, every error, and checks
//! that no acknowledged write was lost: the engine sequence moved by exactly the number of
//! writes answered, and every client's account holds exactly its acknowledged deposits.

use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Trading pairs of funded accounts (`load-a-i` trades with `load-b-i`).
const PAIRS: usize = 10;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `http://host:port` of the server.
    pub base: String,
    /// An admin API key.
    pub key: String,
    pub clients: usize,
    pub duration: Duration,
    /// Distinguishes idempotency keys and deposit accounts of runs against one data directory.
    pub run: String,
}

#[derive(Debug, Default)]
pub struct Kind {
    /// Latencies of the successful requests, in milliseconds.
    pub ms: Vec<f64>,
    pub errors: usize,
}

impl Kind {
    fn merge(&mut self, other: Kind) {
        self.ms.extend(other.ms);
        self.errors += other.errors;
    }

    /// The `p` quantile (0..1) of the latencies, in milliseconds.
    pub fn pct(&mut self, p: f64) -> f64 {
        if self.ms.is_empty() {
            return 0.0;
        }
        self.ms.sort_by(f64::total_cmp);
        self.ms[((self.ms.len() as f64 - 1.0) * p).round() as usize]
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub clients: usize,
    pub seconds: f64,
    pub get: Kind,
    pub what_if: Kind,
    pub trade: Kind,
    pub deposit: Kind,
    /// Error messages (the first few).
    pub samples: Vec<String>,
    pub sequence_before: u64,
    pub sequence_after: u64,
    /// Writes answered 200 (acknowledged durable).
    pub acked: u64,
    /// Writes answered 422 (refused by the engine; not logged).
    pub refused: u64,
    /// Acknowledged writes missing from the engine (sequence or balances).
    pub lost: u64,
    /// Deposit accounts whose balance differs from their acknowledged deposits.
    pub balance_mismatches: Vec<String>,
}

impl Report {
    pub fn requests(&self) -> usize {
        self.get.ms.len() + self.what_if.ms.len() + self.trade.ms.len() + self.deposit.ms.len()
    }

    pub fn errors(&self) -> usize {
        self.get.errors + self.what_if.errors + self.trade.errors + self.deposit.errors
    }

    pub fn print(&mut self) {
        let total = self.requests() + self.errors();
        println!(
            "{} clients, {:.1} s: {total} requests, {:.0} req/s, {} errors",
            self.clients,
            self.seconds,
            total as f64 / self.seconds,
            self.errors()
        );
        for (name, k) in [
            ("GET account", &mut self.get),
            ("what-if", &mut self.what_if),
            ("trade", &mut self.trade),
            ("deposit", &mut self.deposit),
        ] {
            let (p50, p99) = (k.pct(0.5), k.pct(0.99));
            println!(
                "  {name:12} n={:7}  errors {:3}  p50 {p50:7.3} ms  p99 {p99:7.3} ms",
                k.ms.len(),
                k.errors,
            );
        }
        println!(
            "  writes acknowledged {}, refused {}; engine sequence {} -> {} (+{}); lost {}",
            self.acked,
            self.refused,
            self.sequence_before,
            self.sequence_after,
            self.sequence_after - self.sequence_before,
            self.lost
        );
        for m in &self.balance_mismatches {
            println!("  balance mismatch: {m}");
        }
        for s in &self.samples {
            println!("  error: {s}");
        }
    }
}

async fn json_of(resp: reqwest::Response) -> Result<Value, String> {
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

async fn sequence(http: &reqwest::Client, base: &str) -> Result<u64, String> {
    let v = json_of(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .map_err(|e| e.to_string())?,
    )
    .await?;
    v["sequence"]
        .as_u64()
        .ok_or_else(|| format!("no sequence in /healthz: {v}"))
}

/// Funds the trading pairs (once per data directory) and lists the accounts to read.
async fn setup(http: &reqwest::Client, cfg: &LoadConfig) -> Result<Vec<String>, String> {
    for i in 0..PAIRS {
        for side in ["a", "b"] {
            let account = format!("load-{side}-{i}");
            let resp = http
                .post(format!("{}/v1/events", cfg.base))
                .bearer_auth(&cfg.key)
                .header("Idempotency-Key", format!("load-fund-{account}"))
                .json(
                    &json!({"type":"deposit","account":account,"asset":"USDC","amount":10_000_000}),
                )
                .send()
                .await
                .map_err(|e| e.to_string())?;
            json_of(resp).await?;
        }
    }
    let list = json_of(
        http.get(format!("{}/v1/accounts", cfg.base))
            .bearer_auth(&cfg.key)
            .send()
            .await
            .map_err(|e| e.to_string())?,
    )
    .await?;
    let ids: Vec<String> = list["accounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["id"].as_str())
                .filter(|id| !id.starts_with("load-dep-"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return Err("the server has no accounts".into());
    }
    Ok(ids)
}

struct ClientResult {
    get: Kind,
    what_if: Kind,
    trade: Kind,
    deposit: Kind,
    acked: u64,
    refused: u64,
    deposits: u64,
    samples: Vec<String>,
}

async fn client(c: usize, cfg: LoadConfig, accounts: Vec<String>, until: Instant) -> ClientResult {
    let http = reqwest::Client::new();
    let base = &cfg.base;
    let mut r = ClientResult {
        get: Kind::default(),
        what_if: Kind::default(),
        trade: Kind::default(),
        deposit: Kind::default(),
        acked: 0,
        refused: 0,
        deposits: 0,
        samples: Vec::new(),
    };
    let mut i = c; // clients start at different points of the cycle
    while Instant::now() < until {
        i += 1;
        let t = Instant::now();
        let pick = &accounts[(i / 10 + c) % accounts.len()];
        let (req, kind) = match i % 10 {
            0 if (i / 10).is_multiple_of(2) => {
                let pair = c % PAIRS;
                let size = if (i / 20).is_multiple_of(2) { 0.01 } else { -0.01 };
                (
                    http.post(format!("{base}/v1/events"))
                        .header("Idempotency-Key", format!("{}-t-{c}-{i}", cfg.run))
                        .json(&json!({"type":"trade","account":format!("load-a-{pair}"),"instrument":"BTC-PERPETUAL",
                                      "size":size,"price":91540,"counterparty":format!("load-b-{pair}")})),
                    2,
                )
            }
            0 => (
                http.post(format!("{base}/v1/events"))
                    .header("Idempotency-Key", format!("{}-d-{c}-{i}", cfg.run))
                    .json(&json!({"type":"deposit","account":format!("load-dep-{}-{c}", cfg.run),"asset":"USDC","amount":1})),
                3,
            ),
            5 => {
                let size = [1.0, -1.0, 0.5, -0.5][(i / 10) % 4];
                (
                    http.post(format!("{base}/v1/what-if")).json(
                        &json!({"account":pick,"trades":[{"instrument":"BTC-PERPETUAL","size":size}]}),
                    ),
                    1,
                )
            }
            _ => (http.get(format!("{base}/v1/accounts/{pick}")), 0),
        };
        let outcome = match req.bearer_auth(&cfg.key).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(_) if status == 200 => Ok(()),
                    Ok(body) => Err((status, String::from_utf8_lossy(&body).into_owned())),
                    Err(e) => Err((status, e.to_string())),
                }
            }
            Err(e) => Err((0, e.to_string())),
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let k = match kind {
            0 => &mut r.get,
            1 => &mut r.what_if,
            2 => &mut r.trade,
            _ => &mut r.deposit,
        };
        match outcome {
            Ok(()) => {
                k.ms.push(ms);
                if kind >= 2 {
                    r.acked += 1;
                }
                if kind == 3 {
                    r.deposits += 1;
                }
            }
            Err((status, text)) => {
                k.errors += 1;
                if kind >= 2 && status == 422 {
                    r.refused += 1;
                }
                if r.samples.len() < 3 {
                    r.samples.push(format!("{status}: {text}"));
                }
            }
        }
    }
    r
}

/// Runs the mixed load against `cfg.base` and checks that no acknowledged write was lost.
pub async fn run(cfg: LoadConfig) -> Result<Report, String> {
    let http = reqwest::Client::new();
    let accounts = setup(&http, &cfg).await?;
    let before = sequence(&http, &cfg.base).await?;
    let start = Instant::now();
    let until = start + cfg.duration;
    let tasks: Vec<_> = (0..cfg.clients)
        .map(|c| tokio::spawn(client(c, cfg.clone(), accounts.clone(), until)))
        .collect();
    let mut report = Report {
        clients: cfg.clients,
        sequence_before: before,
        ..Report::default()
    };
    let mut deposits = Vec::with_capacity(cfg.clients);
    for t in tasks {
        let r = t.await.map_err(|e| e.to_string())?;
        report.get.merge(r.get);
        report.what_if.merge(r.what_if);
        report.trade.merge(r.trade);
        report.deposit.merge(r.deposit);
        report.acked += r.acked;
        report.refused += r.refused;
        deposits.push(r.deposits);
        for s in r.samples {
            if report.samples.len() < 10 {
                report.samples.push(s);
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.sequence_after = sequence(&http, &cfg.base).await?;
    // Every write answered 200 is one logged event (a refusal, 422, is not logged); nothing
    // else writes meanwhile (run the server without the demo price feed).
    let moved = report.sequence_after - report.sequence_before;
    report.lost = report.acked.saturating_sub(moved);
    // Every acknowledged deposit is in its account.
    for (c, n) in deposits.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        let id = format!("load-dep-{}-{c}", cfg.run);
        let resp = http
            .get(format!("{}/v1/accounts/{id}", cfg.base))
            .bearer_auth(&cfg.key)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let held = json_of(resp).await.map(|v| v["engine"]["equity"].as_f64());
        match held {
            Ok(Some(x)) if x == *n as f64 => {}
            other => {
                let held = other.ok().flatten().unwrap_or(0.0);
                report.lost += n.saturating_sub(held.max(0.0) as u64);
                report
                    .balance_mismatches
                    .push(format!("{id}: {n} deposits acknowledged, equity {held}"));
            }
        }
    }
    Ok(report)
}

#[allow(dead_code)]
#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut clients = 100;
    let mut seconds = 30.0;
    let mut url = None;
    let mut key = std::env::var("PMARGIN_KEY").ok();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match a.as_str() {
            "--clients" => clients = value().parse().expect("--clients N"),
            "--seconds" => seconds = value().parse().expect("--seconds S"),
            "--url" => url = Some(value()),
            "--key" => key = Some(value()),
            _ => {
                eprintln!("usage: load [--clients N] [--seconds S] [--url http://HOST:PORT --key ADMIN_KEY]");
                std::process::exit(2);
            }
        }
    }
    let run_id = format!("{:x}", chrono::Utc::now().timestamp_millis());
    let mut server = None;
    let dir = std::env::temp_dir().join(format!("pmargin-load-{}", std::process::id()));
    let (base, key) = match url {
        Some(u) => (
            u.trim_end_matches('/').to_string(),
            key.expect("--key (or PMARGIN_KEY) with --url"),
        ),
        None => {
            use pmargin_server::demo::demo_genesis;
            use pmargin_server::{start, ServerConfig};
            let mut cfg = ServerConfig::new("127.0.0.1:0", Some(dir.clone()), demo_genesis());
            cfg.admin_key = Some("load-admin-key-0123456789abcdef".into());
            // One key writes the whole load: beyond a venue's default rate limit.
            cfg.limits.writes_per_second = 1e6;
            cfg.limits.write_burst = 1e6;
            let s = start(cfg).await.expect("server");
            let base = format!("http://{}", s.addr);
            server = Some(s);
            (base, "load-admin-key-0123456789abcdef".to_string())
        }
    };
    let cfg = LoadConfig {
        base,
        key,
        clients,
        duration: Duration::from_secs_f64(seconds),
        run: run_id,
    };
    let result = run(cfg).await;
    if let Some(s) = server {
        s.stop().await.expect("stop");
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(mut report) => {
            report.print();
            if report.errors() > 0 || report.lost > 0 {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("load: {e}");
            std::process::exit(2);
        }
    }
}
