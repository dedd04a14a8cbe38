//! Load test on 127.0.0.1: `cargo run --release -p pmargin-server --example load -- [clients] [seconds]`.
//! Starts an in-process server with the demo book, then `clients` concurrent clients loop for
//! `seconds`: 80 % GET account, 10 % what-if, 10 % trades (deposits of 1 USDC with idempotency
//! keys). Reports throughput, p50/p99 latency per kind, errors, and checks no acked trade is lost.

use pmargin_server::demo::demo_genesis;
use pmargin_server::{start, ServerConfig};
use serde_json::json;
use std::time::{Duration, Instant};

const ADMIN: &str = "load-admin-key";

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let dir = std::env::temp_dir().join(format!("pmargin-load-{}", std::process::id()));
    let mut cfg = ServerConfig::new("127.0.0.1:0", Some(dir.clone()), demo_genesis());
    cfg.admin_key = Some(ADMIN.into());
    let server = start(cfg).await.unwrap();
    let base = format!("http://{}", server.addr);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let (mut get, mut what, mut write, mut errors, mut acked) = (Vec::new(), Vec::new(), Vec::new(), 0usize, 0usize);
            let mut i = 0usize;
            while Instant::now() < until {
                i += 1;
                let t = Instant::now();
                let (resp, bucket) = match i % 10 {
                    0 => (
                        http.post(format!("{base}/v1/events"))
                            .bearer_auth(ADMIN)
                            .header("Idempotency-Key", format!("load-{c}-{i}"))
                            .json(&json!({"type":"deposit","account":format!("load-{c}"),"asset":"USDC","amount":1}))
                            .send()
                            .await,
                        2,
                    ),
                    5 => (
                        http.post(format!("{base}/v1/what-if"))
                            .bearer_auth(ADMIN)
                            .json(&json!({"account":"vol-desk","trades":[{"instrument":"BTC-PERPETUAL","size":1}]}))
                            .send()
                            .await,
                        1,
                    ),
                    _ => (http.get(format!("{base}/v1/accounts/retail-btc")).bearer_auth(ADMIN).send().await, 0),
                };
                let ok = match resp {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if !ok {
                    errors += 1;
                } else {
                    [&mut get, &mut what, &mut write][bucket].push(ms);
                    if bucket == 2 {
                        acked += 1;
                    }
                }
            }
            (get, what, write, errors, acked)
        }));
    }
    let (mut get, mut what, mut write, mut errors, mut acked) =
        (Vec::new(), Vec::new(), Vec::new(), 0, 0);
    for t in tasks {
        let (g, w, x, e, a) = t.await.unwrap();
        get.extend(g);
        what.extend(w);
        write.extend(x);
        errors += e;
        acked += a;
    }
    let total = get.len() + what.len() + write.len();
    println!(
        "{clients} clients, {seconds} s: {total} requests, {:.0} req/s, {errors} errors",
        total as f64 / seconds as f64
    );
    for (name, v) in [
        ("GET account", &mut get),
        ("what-if", &mut what),
        ("durable deposit", &mut write),
    ] {
        println!(
            "  {name:16} n={:7}  p50 {:.3} ms  p99 {:.3} ms",
            v.len(),
            pct(v, 0.5),
            pct(v, 0.99)
        );
    }
    let sequence = server.state.engine().sequence() as usize;
    println!(
        "  acked deposits {acked}, engine sequence {sequence} (lost: {})",
        acked.saturating_sub(sequence)
    );
    server.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
